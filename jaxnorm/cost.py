"""What a step costs, from XLA's analysis of the compiled step (no run, no accelerator).

:func:`step_cost` compiles a function for the local backend (CPU here) from abstract inputs
and reads XLA's cost analysis (floating-point operations, a multiply-add counted as 2) and
memory analysis (argument, output and temporary buffers). XLA counts the body of a loop once
whatever its trip count, so every ``lax.scan`` in the step (A-FAN's attack, a scanned
epoch) is costed apart and added ``length - 1`` more times, recursively for nested scans;
``while`` loops with a trip count unknown at trace time stay counted once and are reported
in :attr:`StepCost.uncounted_loops`. Temporary bytes are the
activations and workspace the step keeps alive at once; on a GPU or TPU the buffer assignment
differs, so treat them as an estimate of the same order. :func:`run_seconds` turns a FLOP
count into the time it takes at a stated fraction of an accelerator's peak:

.. math:: t = \\frac{\\text{FLOPs per step} \\times \\text{steps}}{u \\cdot P}

with utilization :math:`u` (default 0.4) and peak :math:`P` of the precision the step runs in
(:data:`H100_SXM`). Small models rarely reach 40 % of a tensor-core peak, so read the result as
a lower bound on the time.

Example::

    from jaxnorm import cost
    c = cost.step_cost(train_step, abstract_state, abstract_batch)
    hours = cost.run_seconds(c.flops * 78_000, cost.H100_SXM) / 3600
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
from jax.extend import core as jax_core

from jaxnorm import portability


class StepCost(NamedTuple):
    """XLA's analysis of one compiled step.

    Attributes:
      flops: floating-point operations (a multiply-add is 2).
      transcendentals: exp, log, rsqrt, ... evaluations.
      bytes_accessed: bytes read and written by the step's operations.
      argument_bytes: the inputs (state and batch).
      output_bytes: the outputs.
      temp_bytes: temporaries alive at the peak (activations kept for the backward pass).
      uncounted_loops: ``while`` loops of unknown trip count, whose bodies count once.
    """

    flops: float
    transcendentals: float
    bytes_accessed: float
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    uncounted_loops: int = 0

    def __add__(self, other):  # the cost of running both steps
        return StepCost(*(a + b for a, b in zip(self, other)))

    def scaled(self, factor: float) -> 'StepCost':
        """The cost of ``factor`` such steps (memory fields unchanged: they are peaks)."""
        return self._replace(flops=self.flops * factor,
                             transcendentals=self.transcendentals * factor,
                             bytes_accessed=self.bytes_accessed * factor)


_OPERATIONS = ('flops', 'transcendentals', 'bytes accessed')


def _xla_analysis(jitted, *args, **kwargs):
    compiled = jitted.lower(*args, **kwargs).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0]
    return np.array([float(analysis.get(k, 0.0)) for k in _OPERATIONS]), compiled


def _loop_correction(jaxpr) -> tuple[np.ndarray, int]:
    """Operations XLA leaves out of ``jaxpr`` (scan bodies counted once), and the number of
    while loops whose trip count is unknown."""
    missing, uncounted = np.zeros(len(_OPERATIONS)), 0
    # A scan's body is costed below, with its own nested loops.
    for eqn in portability.equations(jaxpr, opaque=frozenset({'scan'})):
        if eqn.primitive.name == 'while':
            uncounted += 1
        if eqn.primitive.name != 'scan':
            continue
        body = eqn.params['jaxpr']
        counted, _ = _xla_analysis(
            jax.jit(jax_core.jaxpr_as_fun(body)),
            *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in body.in_avals])
        inner, inner_uncounted = _loop_correction(body.jaxpr)
        length = eqn.params['length']
        missing += (length - 1) * counted + length * inner
        uncounted += inner_uncounted
    return missing, uncounted


def step_cost(fn: Callable, *args: Any, **kwargs) -> StepCost:
    """Compile ``fn(*args, **kwargs)`` for the default backend and read its cost and memory.

    Args:
      fn: the step (jitted or not).
      *args: arrays or ``jax.ShapeDtypeStruct`` (nothing is allocated or run).

    Returns:
      A :class:`StepCost`, scan bodies counted ``length`` times.
    """
    jitted = fn if hasattr(fn, 'lower') else jax.jit(fn)
    counted, compiled = _xla_analysis(jitted, *args, **kwargs)
    missing, uncounted = _loop_correction(jax.make_jaxpr(jitted)(*args, **kwargs).jaxpr)
    flops, transcendentals, bytes_accessed = counted + missing
    memory = compiled.memory_analysis()
    return StepCost(flops=float(flops), transcendentals=float(transcendentals),
                    bytes_accessed=float(bytes_accessed),
                    argument_bytes=int(memory.argument_size_in_bytes),
                    output_bytes=int(memory.output_size_in_bytes),
                    temp_bytes=int(memory.temp_size_in_bytes), uncounted_loops=uncounted)


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, 'shape')))


class Accelerator(NamedTuple):
    """Peak dense FLOP/s of a named accelerator per precision, and where the figures are from."""

    name: str
    peak: Mapping[str, float]
    source: str


H100_SXM = Accelerator(
    name='NVIDIA H100 SXM5',
    # Dense figures: NVIDIA quotes TF32/BF16 tensor-core peaks "with sparsity", twice these.
    peak={'tf32': 494.7e12, 'bf16': 989.4e12, 'fp32': 66.9e12},
    source='NVIDIA H100 Tensor Core GPU datasheet (SXM5): TF32 989 and BF16 1,979 TFLOPS '
           'with 2:4 sparsity, halved for dense; FP32 (no tensor cores) 67 TFLOPS')


def run_seconds(total_flops: float, accelerator: Accelerator = H100_SXM, *,
                precision: str = 'tf32', utilization: float = 0.4) -> float:
    """Seconds to execute ``total_flops`` at ``utilization`` of ``accelerator``'s peak.

    ``tf32`` is what float32 convolutions and matmuls use on an H100 at JAX's default
    precision.

    Raises:
      ValueError: an unknown precision, or a utilization outside (0, 1].
    """
    if precision not in accelerator.peak:
        raise ValueError(f'{accelerator.name} has no {precision!r} peak; choose one of '
                         f'{sorted(accelerator.peak)}')
    if not 0.0 < utilization <= 1.0:
        raise ValueError(f'utilization must be in (0, 1], got {utilization}')
    return total_flops / (utilization * accelerator.peak[precision])
