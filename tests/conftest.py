"""Test-wide JAX set-up: 8 simulated CPU devices, float32 matmuls at full precision."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_default_matmul_precision', 'highest')
