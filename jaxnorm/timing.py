"""Round-robin wall-clock timing of jitted calls, shared by the benchmarks and the experiments.

Variants measured side by side are called in turn (round-robin) after a warm-up, so background
load slows them alike and their ratios hold even on a busy machine; :func:`threaded` turns a
step ``state -> (state..., outputs)`` into a zero-argument call that carries its state along.

Example::

    calls = {'bn': threaded(bn_step, bn_state), 'mimic': threaded(mimic_step, mimic_state)}
    milliseconds = median_times(calls, repeats=10, warmup=1)
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def threaded(step: Callable, state) -> Callable[[], Any]:
    """A zero-argument call of ``step(*state)`` that feeds the step's first outputs (the new
    state) into the next call; it returns every output, so timing blocks on all of them."""
    state = list(state)

    def call():
        outputs = step(*state)
        state[:] = outputs[:len(state)]
        return outputs
    return call


def median_times(calls: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each zero-argument call, timed round-robin after warm-up."""
    for _ in range(warmup):  # the first call compiles
        jax.block_until_ready([call() for call in calls.values()])
    times = {key: [] for key in calls}
    for _ in range(repeats):  # round-robin: background load hits every variant alike
        for key, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * statistics.median(t) for key, t in times.items()}
