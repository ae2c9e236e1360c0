"""Measurements of the MimicNorm section (:mod:`jaxnorm.papers.mimicnorm`): the engine's
compiled train-step memory (and time) and the init cosine of deep features; nothing here
trains or decides a check."""
from __future__ import annotations

import functools

import jax
import numpy as np

from jaxnorm import config as config_lib, parallel, theory, timing, train
from jaxnorm.models import uniform_cnn


def memory_and_time(config, models, norms, arm, batch: int, size: int, timed: bool,
                    repeats: int) -> dict:
    """Per (model, norm): compiled train-step bytes of ``config``'s optimizer with ``arm(model,
    norm, 1.0)`` (full width) at ``batch`` x ``size`` x ``size`` x 3, and (``timed``) the
    median step time (ms) at that size, measured round-robin. ``scripts/bench.py`` times
    steps on its own."""
    out, calls = {}, {}
    for name in models:
        for norm in norms:
            run = config_lib.apply_overrides(config, arm(name, norm, 1.0))
            out[name, norm], compiled = step_memory(run, batch, size, timed=timed)
            if timed:
                state, inputs = step_inputs(run, batch, size)
                calls[name, norm] = timing.threaded(
                    lambda s, c=compiled, b=inputs: c(s, b), [state])
    if calls:
        for key, ms in timing.median_times(calls, repeats=repeats, warmup=1).items():
            out[key]['ms'] = ms
    return out


def step_memory(config, batch: int, size: int, num_classes: int = 10, *,
                timed: bool = True) -> tuple[dict, object]:
    """XLA's temp / argument / output bytes of the engine's compiled train step
    (``train.train_step`` with the run's extensions: MimicNorm's projection) for ``config``
    at ``batch`` x ``size`` x ``size`` x 3, and the compiled step; compiled, never run.
    A step that will not be ``timed`` is compiled without LLVM's optimizations: the bytes are
    XLA's buffer assignment, the same at every backend optimization level, and the compile
    takes half the time."""
    shapes = jax.eval_shape(lambda: step_inputs(config, batch, size, num_classes))
    model, extensions, _ = train.build(config, (size, size, 3), num_classes, 1)
    step = functools.partial(train.train_step, label_smoothing=config.label_smoothing,
                             extensions=tuple(extensions))
    compiled = jax.jit(step).lower(*shapes).compile(
        None if timed else {'xla_backend_optimization_level': 0})
    mem = compiled.memory_analysis()
    return {'temp': mem.temp_size_in_bytes, 'argument': mem.argument_size_in_bytes,
            'output': mem.output_size_in_bytes}, compiled


def step_inputs(config, batch: int, size: int, num_classes: int = 10):
    """``(train state, batch)`` of the engine's train step for ``config`` on one device."""
    shape = (size, size, 3)
    model, extensions, tx = train.build(config, shape, num_classes, 1)
    state = train.create_train_state(model, tx, shape, seed=0, extensions=extensions,
                                     mesh=parallel.data_mesh(jax.devices()[:1]))
    images = jax.random.normal(jax.random.key(0), (batch, *shape))
    labels = jax.random.randint(jax.random.key(1), (batch,), 0, num_classes)
    return state, {'image': images, 'label': labels}


def init_cosine(seeds: list[int], norms, depth: int = 20, width: int = 64
                ) -> dict[str, np.ndarray]:
    """Mean pairwise cosine of the last conv layer's output at init, per norm and seed."""
    out = {}
    for norm in norms:
        model = uniform_cnn(norm, depth=depth, width=width)
        images = jax.random.normal(jax.random.key(0), (32, 8, 8, 3))
        variables = model.init(jax.random.key(0), images)
        names, _ = theory.probe_layers(model, variables, images, layers='blocks')
        layer = names.index(f'layer{depth}')  # mimic's logit BN is probed too: skip it
        probe = jax.jit(lambda v, x: theory.probe_arrays(model, v, x)['cosine'][layer])
        values = []
        for seed in seeds:
            k_init, k_x = jax.random.split(jax.random.key(seed))
            x = jax.random.normal(k_x, images.shape)
            values.append(float(probe(model.init(k_init, x), x)))
        out[norm] = np.asarray(values)
    return out
