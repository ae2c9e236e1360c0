"""How close a ResNet-20 train step gets to the machine's fp32 matmul peak, and where it loses.

``bench.py peak`` measures, round-robin in one process: a square fp32 matmul (the peak), one
3x3 conv at ResNet-20's first-stage shape split into its forward, input-gradient and
kernel-gradient convolutions, the last-stage conv forward+backward (what XLA's convolutions
reach alone), and ResNet-20 train steps (BN, and without any normalizer, plus the forward
pass alone). FLOPs come from XLA's cost analysis of each compiled program, so the achieved
GFLOP/s of the step count what XLA actually executes; the nominal ResNet-20 figure (40.8 M
multiply-adds forward per 32x32 image, so about 245 MFLOP for forward+backward) is printed
beside it.

``--xla-flags`` reruns the step measurement in a fresh process per candidate ``XLA_FLAGS``
value (flags are read once, when the backend starts), so those rows are sequential, not
round-robin: compare them on an idle machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from bench_timing import make_train_step
from jaxnorm.losses import mean_cross_entropy
from jaxnorm.models import get_model
from jaxnorm.timing import median_times, threaded

NOMINAL_FORWARD_MACS = 40.8e6  # ResNet-20, one 32x32 image, forward (He et al.'s count)
CANDIDATE_FLAGS = ('--xla_cpu_enable_fast_math=true', '--xla_cpu_use_xnnpack=true',
                   '--xla_cpu_use_onednn=true', '--xla_cpu_use_fusion_emitters=false',
                   '--xla_cpu_enable_concurrency_optimized_scheduler=true')


def compiled_flops(fn, *args) -> float:
    """FLOPs of ``fn(*args)`` from XLA's cost analysis of the compiled program."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get('flops', 0.0))


def matmul_call(n: int):
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    fn = jax.jit(jnp.dot)
    return (lambda: fn(a, b)), 2.0 * n ** 3


def conv_call(batch: int, size: int, channels: int, part: str):
    """One 3x3 SAME conv: ``forward``, ``input_grad``, ``kernel_grad`` or ``fwd+bwd`` (all)."""
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
    w = jax.random.normal(jax.random.key(1), (3, 3, channels, channels))
    g = jax.random.normal(jax.random.key(2), (batch, size, size, channels))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    programs = {
        'forward': lambda x, w, g: conv(x, w),
        'input_grad': lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
        'kernel_grad': lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
        'fwd+bwd': lambda x, w, g: jax.vjp(conv, x, w)[1](g),
    }
    fn = jax.jit(programs[part])
    return (lambda: fn(x, w, g)), compiled_flops(programs[part], x, w, g)


def step_call(norm: str, batch: int, size: int):
    step, state = make_train_step(get_model('resnet20', norm=norm, num_classes=10), batch, size)
    return threaded(step, state), compiled_flops(step, *state)


def forward_call(batch: int, size: int):
    model = get_model('resnet20', norm='bn', num_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    variables = model.init(jax.random.key(1), x[:1])

    def forward(variables):
        logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
        return mean_cross_entropy(logits, jnp.zeros(batch, jnp.int32))
    fn = jax.jit(forward)
    return (lambda: fn(variables)), compiled_flops(forward, variables)


def measure(batch: int, size: int, matmul_n: int, repeats: int, warmup: int) -> dict:
    """Median ms, XLA FLOPs and GFLOP/s of every program, and the step's fraction of peak."""
    programs = {
        f'matmul {matmul_n}^2': matmul_call(matmul_n),
        **{f'conv3x3 16ch {size}x{size} {part}': conv_call(batch, size, 16, part)
           for part in ('forward', 'input_grad', 'kernel_grad')},
        f'conv3x3 64ch {max(size // 4, 1)}x{max(size // 4, 1)} fwd+bwd':
            conv_call(batch, max(size // 4, 1), 64, 'fwd+bwd'),
        'resnet20 bn forward': forward_call(batch, size),
        'resnet20 none step': step_call('none', batch, size),
        'resnet20 bn step': step_call('bn', batch, size),
    }
    ms = median_times({k: call for k, (call, _) in programs.items()}, repeats, warmup)
    rows = {k: {'ms': ms[k], 'gflop': flops / 1e9, 'gflops_per_s': flops / ms[k] / 1e6}
            for k, (_, flops) in programs.items()}
    peak = rows[f'matmul {matmul_n}^2']['gflops_per_s']
    for row in rows.values():
        row['fraction_of_peak'] = row['gflops_per_s'] / peak
    step = rows['resnet20 bn step']
    nominal = 3 * 2 * NOMINAL_FORWARD_MACS * batch * (size / 32) ** 2  # backward ~ 2x forward
    return {'rows': rows, 'peak_gflops_per_s': peak,
            'step_fraction_of_peak': step['fraction_of_peak'],
            'step_fraction_of_peak_nominal_flops': nominal / step['ms'] / 1e6 / peak}


def sweep_flags(args) -> list[dict]:
    """The step measurement in a fresh process per XLA_FLAGS candidate (and the default)."""
    results = []
    for flags in ('',) + CANDIDATE_FLAGS:
        env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') + ' ' + flags).strip())
        command = [sys.executable, os.path.join(os.path.dirname(__file__), 'bench.py'), 'peak',
                   '--batch-size', str(args.batch_size), '--image-size', str(args.image_size),
                   '--repeats', str(args.repeats), '--warmup', str(args.warmup),
                   '--matmul-size', str(args.matmul_size), '--json-stdout']
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            results.append({'flags': flags or '(default)', 'error': done.stderr.strip()[-300:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append({'flags': flags or '(default)', **result})
    return results
