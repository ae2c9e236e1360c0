"""``bench.py seeds``: S seeds in one vmapped engine step against the same S steps in turn.

Both variants are the engine's own steps (:func:`jaxnorm.train.compile_steps` with and without
``num_seeds``) on the same run config, digits batches and one device. One "round" advances
every seed by one optimizer step: a single call of the seed-batched step, or S calls of the
one-seed step, each blocked on before the next like a loop over seeds would be (the
sequential runs of a seed sweep). The rounds are timed round-robin (:mod:`jaxnorm.timing`)
after a warm-up that compiles, so compile time, data loading and evaluation are excluded.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxnorm import config as config_lib
from jaxnorm import data, parallel, timing, train


class SeedTiming(NamedTuple):
    """One model's row: milliseconds per round (every seed one step) and the speed-up."""

    model: str
    num_seeds: int
    batch_size: int
    batched_ms: float
    sequential_ms: float

    @property
    def speedup(self) -> float:
        return self.sequential_ms / self.batched_ms


def time_seeds(model: str, *, num_seeds: int = 8, batch_size: int = 64, repeats: int = 10,
               data_dir: str | None = None) -> SeedTiming:
    """Time one round of ``num_seeds`` seeds of ``model`` on digits, batched and in turn."""
    cfg = config_lib.apply_overrides(config_lib.default_config(),
                                     {'model': model, 'batch_size': batch_size})
    splits = data.load_standardized('digits', data_dir=data_dir)
    input_shape = splits.train.images.shape[1:]
    steps_per_epoch = len(splits.train) // batch_size
    net, extensions, tx = train.build(cfg, input_shape, splits.num_classes, steps_per_epoch)
    mesh = parallel.data_mesh(jax.devices()[:1])
    seeds = list(range(num_seeds))
    rows = np.random.default_rng(0).permutation(len(splits.train))
    batches = [{'image': splits.train_images[rows[k * batch_size:(k + 1) * batch_size]],
                'label': splits.train_labels[rows[k * batch_size:(k + 1) * batch_size]]}
               for k in seeds]

    one_step, _ = train.compile_steps(mesh, cfg.label_smoothing, extensions)
    states = [train.create_train_state(net, tx, input_shape, seed=seed, mesh=mesh,
                                       extensions=extensions) for seed in seeds]

    def in_turn():
        for k in seeds:
            states[k], metrics = one_step(states[k], batches[k])
            jax.block_until_ready(metrics)
        return metrics

    batched_step, _ = train.compile_steps(mesh, cfg.label_smoothing, extensions, num_seeds)
    stacked = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
    batched_state = train.create_train_state(net, tx, input_shape, seed=0, mesh=mesh,
                                             extensions=extensions, seeds=seeds)
    carried = [batched_state]

    def together():
        carried[0], metrics = batched_step(carried[0], stacked)
        return metrics

    times = timing.median_times({'batched': together, 'sequential': in_turn},
                                repeats=repeats, warmup=2)
    return SeedTiming(model, num_seeds, batch_size, times['batched'], times['sequential'])
