"""Pruning schedules and filter selection: one-shot, iterative rounds, global ranking.

**Iterative schedule** [code: flowandprune ``main.py``]. To remove a fraction :math:`p` of the
filters in :math:`n` rounds, round :math:`k = 1..n` removes the fraction

.. math::

    r_k = \\frac{p}{k\\,p + n(1 - p)}

of the filters alive at its start. The product telescopes: after :math:`k` rounds the
surviving fraction is :math:`\\frac{n(1-p)}{n(1-p) + k\\,p}`, so its inverse grows linearly in
:math:`k` and reaches :math:`1/(1-p)` at :math:`k = n`. One round (:math:`n = 1`) is one-shot
pruning, :math:`r_1 = p`.

**Selection** [code: flowandprune ``pruner.py``]. All alive filters of all layers are ranked
by their raw scores together (no per-layer normalization, unlike JaxPruner's global pruners)
and the :math:`\\lfloor r\\,A \\rfloor` lowest are removed, :math:`A` the number alive. Each
layer keeps a minimum: its :math:`\\lfloor 0.05\\,w \\rfloor + 1` alive filters of highest
index (``protect='highest_index'``, the reference's choice, which ignores their scores) or of
highest score (``protect='highest_score'``), :math:`w` the layer's original width.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from prune.masks import check_ratio

PROTECT = ('highest_index', 'highest_score')
SCOPES = ('global', 'layer')


def _check_rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f'rounds must be a positive int, got {rounds!r}')
    return int(rounds)


def round_fractions(target: float, rounds: int) -> np.ndarray:
    """Fraction of the alive filters removed in each round, :math:`r_1 .. r_n` (float64).

    Args:
      target: overall fraction :math:`p` of filters to remove, in [0, 1).
      rounds: number of rounds :math:`n` (1 = one-shot).

    Example:
      >>> round_fractions(0.75, 3).round(4).tolist()
      [0.5, 0.3333, 0.25]
    """
    p, n = check_ratio(target, 'target'), _check_rounds(rounds)
    k = np.arange(1, n + 1, dtype=np.float64)
    return p / (k * p + n * (1.0 - p))


def surviving_fraction(target: float, rounds: int, completed: int) -> float:
    """Closed form :math:`n(1-p) / (n(1-p) + k p)` of the fraction alive after ``completed``
    of ``rounds`` rounds (before flooring filter counts)."""
    p, n = check_ratio(target, 'target'), _check_rounds(rounds)
    if not 0 <= completed <= n:
        raise ValueError(f'completed must be in [0, {n}], got {completed}')
    return n * (1.0 - p) / (n * (1.0 - p) + completed * p)


def protected(alive: np.ndarray, scores: np.ndarray, min_keep_fraction: float,
              protect: str) -> np.ndarray:
    """Bool vector of the alive filters of one layer that may not be removed."""
    width = alive.size
    keep = min(int(np.floor(min_keep_fraction * width)) + 1, int(alive.sum()))
    alive_index = np.flatnonzero(alive)
    if protect == 'highest_index':
        chosen = alive_index[::-1][:keep]
    else:
        chosen = alive_index[np.argsort(-scores[alive_index], kind='stable')][:keep]
    out = np.zeros(width, bool)
    out[chosen] = True
    return out


def select_survivors(scores: Mapping[str, np.ndarray], alive: Mapping[str, np.ndarray],
                     fraction: float, *, min_keep_fraction: float = 0.05,
                     protect: str = 'highest_index', scope: str = 'global'
                     ) -> dict[str, np.ndarray]:
    """Remove the lowest-scoring alive filters; return the new channel-alive vectors.

    Args:
      scores: ``{layer: scores (width,)}`` (higher = more important), e.g.
        :func:`prune.scores.filter_scores`.
      alive: ``{layer: bool (width,)}`` before this round; dead filters are never candidates.
      fraction: fraction of the alive filters to remove, in [0, 1): over all layers together
        (``scope='global'``) or in each layer (``scope='layer'``), floored to whole filters.
      min_keep_fraction: each layer keeps ``floor(min_keep_fraction * width) + 1`` alive
        filters (or all it has, if fewer).
      protect: which filters satisfy that minimum, see :data:`PROTECT`.
      scope: ``'global'`` (one ranking over every layer, raw scores) or ``'layer'``.

    Returns:
      ``{layer: bool (width,)}``, the alive vectors after removal.

    Raises:
      ValueError: ``fraction`` or ``min_keep_fraction`` outside [0, 1), unknown ``protect``
        or ``scope``, mismatched layers or widths, or a removal count that the per-layer
        minimum makes impossible.
    """
    fraction = check_ratio(fraction, 'fraction')
    min_keep_fraction = check_ratio(min_keep_fraction, 'min_keep_fraction')
    if protect not in PROTECT:
        raise ValueError(f'protect must be one of {PROTECT}, got {protect!r}')
    if scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
    if set(scores) != set(alive):
        raise ValueError(f'scores and alive name different layers: {sorted(scores)} vs '
                         f'{sorted(alive)}')
    layers = list(alive)
    alive = {name: np.asarray(alive[name], bool).copy() for name in layers}
    scores = {name: np.asarray(scores[name], np.float64) for name in layers}
    candidates = {}
    for name in layers:
        if scores[name].shape != alive[name].shape:
            raise ValueError(f'layer {name!r}: scores of shape {scores[name].shape} for '
                             f'{alive[name].size} filters')
        candidates[name] = alive[name] & ~protected(alive[name], scores[name],
                                                    min_keep_fraction, protect)
    pools = [layers] if scope == 'global' else [[name] for name in layers]
    for pool in pools:
        count = int(np.floor(fraction * sum(int(alive[n].sum()) for n in pool)))
        rows = [(scores[n][i], position, i) for position, n in enumerate(pool)
                for i in np.flatnonzero(candidates[n])]
        if count > len(rows):
            where = 'all layers' if scope == 'global' else f'layer {pool[0]!r}'
            raise ValueError(f'cannot remove {count} filters from {where}: only {len(rows)} '
                             'are not protected by the per-layer minimum '
                             f'(min_keep_fraction={min_keep_fraction})')
        for _, position, i in sorted(rows)[:count]:
            alive[pool[position]][i] = False
    return alive
