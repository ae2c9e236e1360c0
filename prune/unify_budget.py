"""Prune-only baselines of weight unification at a matched budget (arXiv:2106.08301).

The compression claim of micro-structured unification is that unifying *and* pruning blocks
keeps more accuracy than pruning alone **at the same cost**. Cost has two axes here, both
counted per constrained kernel:

* **stored bits**: unification as :mod:`prune.unify_storage` stores it (2-bit block codes,
  per unified block one float32 magnitude and one sign bit per entry, float32 free entries);
  a prune-only model as a kept/pruned **bitmask** (one bit per block: micro-structured block
  pruning; one bit per weight: unstructured magnitude pruning, i.e. 1x1 blocks), packed into
  bytes, plus the float32 kept entries;
* **multiplies** per example: a kept weight costs one per output position (``positions``), a
  pruned one none; a unified block row costs one (:func:`prune.unify_storage.multiplies`).

For a layer of ``n`` blocks of ``e`` entries with ``k`` kept (no padding),

.. math::

    \\text{bits}(k) = 8 \\lceil n / 8 \\rceil + 32\\, e\\, k, \\qquad
    \\text{multiplies}(k) = \\text{positions} \\cdot e\\, k .

One pruning ratio cannot match two budgets exactly (their rates per kept block differ), so
:func:`matched_prune_ratio` gives the baseline the **smallest** pruning budget that is at
least the unified model's on **both** axes: the ratio ``p = (n_L - K) / n_L`` of the
largest layer ``L`` (the same ``p``, rounded per layer by :func:`prune.unify.block_counts`,
in every constrained layer), with ``K`` the fewest blocks of ``L`` kept for which the model's
totals reach both targets. One block fewer in ``L`` misses a target: the binding budget is
met within one block of the largest layer, the other one exceeded (by at most the gap between
the two rates), which favours the baseline. The baselines are selected, trained and
projected with :mod:`prune.unify` itself (``UnifySpec(block, 0, p)``: the blocks of smallest
L2 norm pruned, the exact Euclidean projection; with ``(1, 1)`` blocks, magnitude pruning).

Reference: Lin et al., arXiv:2106.08301 (the comparison with pruning is the paper's; the
formats and the matching rule are [infer]: its compression-ratio definition was not
readable).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxnorm.trees import named_leaves
from prune.unify import PRUNED, Grid, UnifySpec, block_counts, check_spec, constrained

FORMATS = {'block': None, 'unstructured': (1, 1)}  # None: the unification's block shape


def baseline_block(fmt: str, block_shape) -> tuple[int, int]:
    """The block shape of prune-only format ``fmt`` (``'block'``: ``block_shape``;
    ``'unstructured'``: 1x1)."""
    if fmt not in FORMATS:
        raise ValueError(f'unknown prune-only format {fmt!r}; choose from {sorted(FORMATS)}')
    return tuple(FORMATS[fmt] or block_shape)


def _check_unpadded(g: Grid, block_shape, path: str) -> int:
    br, bc = block_shape
    if g.rows % br or g.cols % bc:
        raise ValueError(f'{path!r}: a {g.rows} x {g.cols} matrix is not tiled by '
                         f'{br} x {bc} blocks; the matched budget needs whole blocks')
    return br * bc


def layer_cost(n_blocks: int, entries: int, kept: int, positions: int = 1) -> tuple[int, int]:
    """``(bits, multiplies)`` of a prune-only layer: ``n_blocks`` blocks of ``entries``
    weights, ``kept`` of them kept (module docstring)."""
    if not 0 <= kept <= n_blocks:
        raise ValueError(f'kept must be in [0, {n_blocks}], got {kept}')
    return 8 * -(-n_blocks // 8) + 32 * entries * kept, positions * entries * kept


def prune_only_report(params, codes, spec: UnifySpec, *,
                      positions: Mapping[str, int] | None = None) -> dict[str, int]:
    """Measured ``{'bits', 'multiplies', 'kept'}`` of a prune-only model over the kernels of
    ``spec``: a packed bitmask (``np.packbits``) of its blocks and the float32 entries of the
    kept blocks, as arrays; ``codes`` may only prune (ValueError on a unified block)."""
    spec = check_spec(spec)
    grids = constrained(params, spec)
    lookup = dict(zip(*named_leaves(params)[:2]))
    positions = positions or {}
    bits = mults = kept_total = 0
    for path, g in grids.items():
        entries = _check_unpadded(g, spec.block_shape, path)
        c = np.asarray(codes[path])
        if np.any((c != 0) & (c != PRUNED)):
            raise ValueError(f'{path!r}: a prune-only model has free (0) and pruned (2) blocks '
                             'only')
        kept = c != PRUNED
        matrix = np.asarray(lookup[path], np.float32).reshape(-1, g.shape[-1]).T
        br, bc = spec.block_shape
        blocks = matrix.reshape(g.block_rows, br, g.block_cols, bc).transpose(0, 2, 1, 3)
        values = blocks.reshape(g.n_blocks, entries)[kept].astype(np.float32)
        bits += 8 * (np.packbits(kept).nbytes + values.nbytes)
        mults += int(positions.get(path, 1)) * values.size
        kept_total += int(kept.sum())
    return {'bits': int(bits), 'multiplies': int(mults), 'kept': kept_total}


def matched_prune_ratio(params, spec: UnifySpec, target_bits: int, target_multiplies: int, *,
                        positions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The pruning ratio of a prune-only baseline with ``spec``'s block shape whose bits and
    multiplies, summed over ``spec``'s kernels, are the fewest that reach both targets.

    Args:
      params: the params tree (shapes only).
      spec: the baseline's geometry (block shape, pattern; its ratios are ignored).
      target_bits, target_multiplies: the unified model's totals over the same kernels
        (:func:`prune.unify_storage.storage_report`'s ``stored_bits`` and ``multiplies``).
      positions: ``{kernel path: output positions}`` (default 1).

    Returns:
      ``{'prune_ratio', 'bits', 'multiplies', 'kept', 'fewer'}``: the ratio, the totals it
      gives (``bits >= target_bits`` and ``multiplies >= target_multiplies``), the kept blocks
      per layer, and ``fewer``, the totals with one block fewer kept in the largest layer
      (each missing a target unless nothing is kept there).

    Raises:
      ValueError: the targets exceed the dense cost, or a kernel is not tiled by whole blocks.
    """
    spec = check_spec(spec)
    grids = constrained(params, spec)
    positions = positions or {}
    geometry = {p: (g.n_blocks, _check_unpadded(g, spec.block_shape, p),
                    int(positions.get(p, 1))) for p, g in grids.items()}
    largest = max(geometry, key=lambda p: geometry[p][0])
    n_largest = geometry[largest][0]

    def totals(kept_largest: int):
        ratio = (n_largest - kept_largest) / n_largest
        kept = {p: n - block_counts(n, UnifySpec(spec.block_shape, 0.0, ratio))[1]
                for p, (n, _, _) in geometry.items()}
        costs = [layer_cost(n, e, kept[p], pos) for p, (n, e, pos) in geometry.items()]
        return ratio, sum(c[0] for c in costs), sum(c[1] for c in costs), kept

    def enough(kept_largest: int) -> bool:
        _, bits, mults, _ = totals(kept_largest)
        return bits >= target_bits and mults >= target_multiplies

    if not enough(n_largest):
        raise ValueError(f'targets {target_bits} bits / {target_multiplies} multiplies exceed '
                         'the dense prune-only model')
    low, high = 0, n_largest  # enough(high); the smallest such K by bisection (monotone)
    if enough(low):
        high = low
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    ratio, bits, mults, kept = totals(high)
    fewer = totals(high - 1)[1:3] if high > 0 else None
    return {'prune_ratio': ratio, 'bits': bits, 'multiplies': mults, 'kept': kept,
            'fewer': fewer}
