"""Test-wide JAX set-up: 8 simulated CPU devices, float32 matmuls at full precision, and one
XLA compilation cache for the session.

Many tests build the same model and step in new ``jax.jit`` objects (each ``fit`` compiles its
own), which JAX's in-memory cache does not share; the persistent cache, keyed by the program
itself, does. It lives in a temporary folder (inherited by the tests' subprocesses through the
environment) and is removed at exit, so no run sees another's executables.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='jaxnorm-tests-xla-')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_default_matmul_precision', 'highest')
