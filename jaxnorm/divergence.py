"""Divergence detection for the training loop: the first step that went wrong, and why.

A step is bad when its loss is NaN or infinite, when any gradient entry is, or when its loss
exceeds ``factor`` times a reference: the larger of the median of the last ``window`` good
losses and the initial loss (the first step's, then the median of the first ``warmup``), so
that a loss near zero late in training does not make an ordinary noisy batch look like a
blow-up. The last rule catches a run that blows up through finite values (a loss of
1e23 before the first NaN), which the first two would only notice epochs later, after
checkpoints of a ruined state were written.

The loop checks each epoch's per-step losses before it evaluates or saves anything, so a
diverging epoch is never checkpointed. Example::

    guard = DivergenceGuard(factor=1e3)
    bad = guard.first_bad_step(losses, grads_finite)   # None, or (index, reason)
"""
from __future__ import annotations

import collections
import math
from typing import Sequence

import numpy as np


class DivergenceError(FloatingPointError):
    """Training diverged; nothing from the diverging epoch was saved.

    Attributes:
      epoch: the 1-based epoch in which it happened.
      step: the global optimizer step (1-based) of the first bad step.
      last_good_epoch: the newest checkpoint on disk (all of them passed the guard), or None.
    """

    def __init__(self, message: str, *, epoch: int, step: int, last_good_epoch: int | None):
        super().__init__(message)
        self.epoch, self.step, self.last_good_epoch = epoch, step, last_good_epoch


class DivergenceGuard:
    """Flags the first bad step of each epoch (module docstring).

    Args:
      factor: a finite loss above ``factor`` x the reference loss is bad; None turns the
        relative rule off (non-finite losses and gradients are always bad).
      window: how many of the latest good losses the running median is taken over.
      warmup: good steps whose median becomes the initial reference (the first step's loss
        stands for it until then).
    """

    def __init__(self, factor: float | None = 1e3, *, window: int = 200, warmup: int = 20):
        if factor is not None and not factor > 1:
            raise ValueError(f'divergence factor must be > 1 (or None to turn the relative '
                             f'rule off), got {factor}')
        if not 1 <= warmup <= window:
            raise ValueError(f'need 1 <= warmup <= window, got warmup {warmup} and window '
                             f'{window}')
        self.factor, self.warmup = factor, warmup
        self._recent = collections.deque(maxlen=window)
        self._initial: float | None = None

    def check(self, loss: float, grads_finite: bool = True) -> str | None:
        """Why the step with this loss is bad, or None (a good loss joins the window)."""
        loss = float(loss)
        if not math.isfinite(loss):
            return f'the loss is {loss}'
        if not grads_finite:
            return 'a gradient entry is NaN or infinite'
        if self.factor is not None and self._initial is not None:
            reference = max(float(np.median(self._recent)), self._initial)
            if loss > self.factor * reference:
                return (f'the loss {loss:.4g} is above {self.factor:g} x the reference loss '
                        f'{reference:.4g}')
        self._recent.append(loss)
        if self._initial is None or len(self._recent) == self.warmup:
            self._initial = float(np.median(self._recent))
        return None

    def first_bad_step(self, losses: Sequence[float], grads_finite: Sequence[bool] | None = None
                       ) -> tuple[int, str] | None:
        """The index and reason of the first bad step of a sequence, or None."""
        flags = [True] * len(losses) if grads_finite is None else grads_finite
        for index, (loss, finite) in enumerate(zip(losses, flags)):
            reason = self.check(loss, bool(finite))
            if reason is not None:
                return index, reason
        return None
