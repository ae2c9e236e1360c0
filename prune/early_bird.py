"""Early-Bird tickets: stop dense training once the pruning mask stops changing.

After every epoch the channel mask the pruner would choose now (You et al.: a *global*
threshold on the normalizers' :math:`|\\gamma|` at the target fraction :math:`p`,
:func:`global_channel_mask`) joins a FIFO of the last ``window`` masks. The distance of two
masks is the normalized Hamming distance, the fraction of channels whose bit differs,

.. math::

    d(m, m') = \\frac{1}{N} \\sum_{c=1}^{N} [m_c \\ne m'_c],

and the ticket is declared at the first epoch whose FIFO is full and in which the distances
between the newest mask and each of the ``window - 1`` older ones are all :math:`\\le` the
threshold. Reference values: window 5, threshold 0.1 [code: ``Early-Bird-Tickets/main.py``].

OrthoReg (arXiv:2009.05014) compares its pruned Early-Bird tickets with these; its own code
prunes at a fixed epoch (25) instead of measuring the distance.

Masks are any pytree of bool arrays with the same structure: channel-alive dicts
(``{layer: bool (width,)}``) or full mask trees.

References:
  You et al., `Drawing Early-Bird Tickets <https://arxiv.org/abs/1909.11957>`_, ICLR 2020.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from prune.masks import check_ratio


def mask_distance(a: Any, b: Any) -> float:
    """Normalized Hamming distance: fraction of entries of two mask trees that differ.

    Raises:
      ValueError: the trees differ in structure or in a leaf's shape.
    """
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        raise ValueError(f'masks have different structures: {tree_a} vs {tree_b}')
    differ = total = 0
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x) != 0, np.asarray(y) != 0
        if x.shape != y.shape:
            raise ValueError(f'mask leaves have shapes {x.shape} and {y.shape}')
        differ += int(np.count_nonzero(x != y))
        total += x.size
    if total == 0:
        raise ValueError('masks have no entries')
    return differ / total


def global_channel_mask(scores: Mapping[str, Any], fraction: float) -> dict[str, np.ndarray]:
    """Keep the ``N - floor(fraction * N)`` highest-scoring channels over all layers.

    One global threshold on raw scores, no per-layer minimum (the Early-Bird mask); ties keep
    the channel that comes first (layer order, then index).

    Args:
      scores: ``{layer: scores (width,)}``, e.g. :func:`prune.bn_scale_scores`.
      fraction: fraction of all channels pruned, in [0, 1).

    Returns:
      ``{layer: bool (width,)}``.
    """
    fraction = check_ratio(fraction, 'fraction')
    names = list(scores)
    flat = np.concatenate([np.asarray(scores[n], np.float64).ravel() for n in names])
    keep = flat.size - int(np.floor(fraction * flat.size))
    kept = np.zeros(flat.size, bool)
    kept[np.argsort(-flat, kind='stable')[:keep]] = True
    out, offset = {}, 0
    for n in names:
        size = np.size(scores[n])
        out[n] = kept[offset:offset + size]
        offset += size
    return out


def window_distances(window: Sequence[Any]) -> np.ndarray:
    """Distances from the newest mask (last) to each older one in ``window`` (oldest first)."""
    return np.array([mask_distance(window[-1], old) for old in window[:-1]])


def find_ticket(masks: Sequence[Any], *, window: int = 5, threshold: float = 0.1
                ) -> int | None:
    """First epoch (1-based: ``masks[e - 1]`` is the mask after epoch ``e``) at which an
    Early-Bird ticket is declared, or None.

    Args:
      masks: one mask tree per epoch, in order.
      window: FIFO length (>= 2); the first possible ticket is at epoch ``window``.
      threshold: the largest allowed distance (>= 0).

    Example:
      >>> find_ticket([{'a': np.array([1, 0])}] * 5)
      5
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f'window must be an int >= 2, got {window!r}')
    if not threshold >= 0:
        raise ValueError(f'threshold must be >= 0, got {threshold!r}')
    for epoch in range(window, len(masks) + 1):
        if np.all(window_distances(masks[epoch - window:epoch]) <= threshold):
            return epoch
    return None


__all__ = ['find_ticket', 'global_channel_mask', 'mask_distance', 'window_distances']
