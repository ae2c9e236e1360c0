"""Paired statistics over seeds: intervals, one-sided tests, Holm control and power.

Seeds (or independently trained networks) are the unit of replication: every function takes
one number per seed and arm, pairs them by seed and works on the differences
``d_i = a_i - b_i``. Nothing here knows about training; it is numpy and scipy only.

References: Student's t interval and test (scipy.stats.ttest_rel); Efron & Tibshirani, *An
Introduction to the Bootstrap* (1993), percentile interval; Holm, "A simple sequentially
rejective multiple test procedure", Scand. J. Statist. 6 (1979); power of the one-sided
paired t-test from the noncentral t distribution.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats as scipy_stats

METHODS = ('t', 'bootstrap')


class Interval(NamedTuple):
    """A two-sided interval for the mean paired difference.

    Attributes:
        mean: mean of the differences.
        low, high: the interval's ends.
        sd: sample standard deviation of the differences (ddof 1; 0 for one seed).
        n: number of seeds.
        confidence: two-sided coverage, e.g. 0.9 (each end a one-sided 95 % bound).
        method: ``'t'`` or ``'bootstrap'``.
    """

    mean: float
    low: float
    high: float
    sd: float
    n: int
    confidence: float
    method: str


def differences(a: Sequence[float], b: Sequence[float] | None = None) -> np.ndarray:
    """``a - b`` per seed as float64 (``a`` itself when ``b`` is None).

    Raises:
        ValueError: the arms differ in length, are empty, or hold non-finite values.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    if b is not None and np.size(b) != a.size:
        raise ValueError(f'paired arms need one value per seed each; got {a.size} and '
                         f'{np.size(b)} values')
    d = a if b is None else a - np.asarray(b, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError('no seeds: a paired statistic needs at least one value per arm')
    if not np.all(np.isfinite(d)):
        raise ValueError(f'non-finite values among the paired differences {d.tolist()}; '
                         'a diverged run must be handled before the test')
    return d


def finite_pairs(a: Sequence[float], b: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(a, b, dropped)`` without the seeds where either arm is not finite (a diverged run).

    Raises:
        ValueError: the arms differ in length.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    if b is None:
        keep = np.isfinite(a)
        return a[keep], None, int((~keep).sum())
    b = np.asarray(b, dtype=np.float64).ravel()
    if b.size != a.size:
        raise ValueError(f'paired arms need one value per seed each; got {a.size} and '
                         f'{b.size} values')
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep], int((~keep).sum())


def paired_interval(a: Sequence[float], b: Sequence[float] | None = None, *,
                    confidence: float = 0.9, method: str = 't', resamples: int = 10_000,
                    seed: int = 0) -> Interval:
    """Interval for the mean of ``a - b`` (or of ``a``), by Student's t or the bootstrap.

    t: ``mean +- t_{(1 + c) / 2, n - 1} * sd / sqrt(n)``. Bootstrap: the percentile interval
    of ``resamples`` means of seeds drawn with replacement (``seed`` fixes the draw). With one
    seed, or zero spread, the interval collapses to the mean.

    Args:
        a, b: per-seed values of the two arms, paired by position.
        confidence: two-sided coverage in (0, 1).
        method: ``'t'`` or ``'bootstrap'``.
        resamples: bootstrap resamples.
        seed: bootstrap RNG seed.
    """
    if method not in METHODS:
        raise ValueError(f'unknown interval method {method!r}; expected one of {METHODS}')
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must lie in (0, 1), got {confidence}')
    d = differences(a, b)
    n, mean = d.size, float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if n == 1 or sd == 0:
        return Interval(mean, mean, mean, sd, n, confidence, method)
    if method == 't':
        half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n)
        return Interval(mean, mean - half, mean + half, sd, n, confidence, method)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(mean, float(low), float(high), sd, n, confidence, method)


def p_greater(a: Sequence[float], b: Sequence[float] | None = None, *,
              null: float = 0.0) -> float:
    """One-sided p-value of the paired t-test of ``mean(a - b) > null``.

    Equals ``scipy.stats.ttest_rel(a - null, b, alternative='greater').pvalue``. Zero spread
    gives 0 when the mean exceeds ``null`` and 1 otherwise.
    """
    d = differences(a, b) - null
    n = d.size
    sd = d.std(ddof=1) if n > 1 else 0.0
    if sd == 0:
        return 0.0 if d.mean() > 0 else 1.0
    statistic = d.mean() / (sd / np.sqrt(n))
    return float(scipy_stats.t.sf(statistic, n - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject cell i at level alpha iff adjusted <= alpha).

    The k-th smallest p-value is multiplied by ``m - k + 1``, made non-decreasing along the
    sorted order and capped at 1; this controls the family-wise error rate over ``m`` cells.
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = p.size
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the one-sided paired t-test at level ``alpha`` against a true mean ``effect``.

    ``P(T > t_{1 - alpha, n - 1})`` with ``T`` noncentral t, ``n - 1`` degrees of freedom and
    noncentrality ``effect / (sd / sqrt(n))``.
    """
    if n < 2:
        raise ValueError(f'a paired t-test needs at least 2 seeds, got {n}')
    if sd <= 0:
        raise ValueError(f'sd must be positive, got {sd}')
    critical = scipy_stats.t.ppf(1 - alpha, n - 1)
    return float(scipy_stats.nct.sf(critical, n - 1, effect / (sd / np.sqrt(n))))


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05,
                              target_power: float = 0.8) -> float:
    """Smallest true mean difference the one-sided paired t-test detects with ``target_power``.

    Solved exactly on the noncentral t (:func:`power`); for large ``n`` it tends to the normal
    approximation ``(z_{1 - alpha} + z_{power}) * sd / sqrt(n)``.

    Args:
        sd: paired standard deviation, e.g. from a pilot run.
        n: seeds.
    """
    scale = sd / np.sqrt(n)
    upper = 20 * scale
    # Few seeds at a small alpha put the critical t far out (df = 1: t_{0.996} ~ 80).
    while power(upper, sd, n, alpha=alpha) < target_power:
        upper *= 4
    return float(optimize.brentq(
        lambda effect: power(effect, sd, n, alpha=alpha) - target_power, 0.0, upper,
        xtol=1e-12 * max(scale, 1e-300)))


def seeds_needed(effect: float, sd: float, *, alpha: float = 0.05, target_power: float = 0.8,
                 max_seeds: int = 1000) -> int:
    """Fewest seeds (>= 2) whose one-sided paired t-test reaches ``target_power`` at ``effect``.

    Raises:
        ValueError: ``effect`` is not positive, or more than ``max_seeds`` would be needed.
    """
    if effect <= 0:
        raise ValueError(f'the effect to detect must be positive, got {effect}')
    for n in range(2, max_seeds + 1):
        if power(effect, sd, n, alpha=alpha) >= target_power:
            return n
    raise ValueError(f'more than {max_seeds} seeds needed to detect {effect} with paired sd {sd}')
