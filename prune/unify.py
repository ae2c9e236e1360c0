"""Micro-structured weight unification: blocks, selection, projection and storage accounting.

A constrained kernel is viewed as a matrix :math:`W \\in \\mathbb{R}^{\\text{out} \\times
\\text{fan\\_in}}` (flax layouts: a Dense ``(in, out)`` kernel is transposed, a conv ``HWIO``
kernel becomes ``O x (H W I)``) and tiled row-major into micro-blocks of ``block_shape =
(rows, cols)``: ``(1, 4)`` is four consecutive inputs of one output unit, ``(4, 4)`` spans four
outputs. Every block ends up in one of three states:

* **free** (code 0): its weights are trained and stored as float32;
* **unified** (code 1): :math:`w_i = s_i a_b` with :math:`s_i \\in \\{\\pm 1\\}` and one shared
  magnitude :math:`a_b \\ge 0`;
* **pruned** (code 2): all zero (unification with :math:`a_b = 0`).

The Euclidean projection of one block onto the unified set keeps the signs and takes
:math:`a_b = \\operatorname{mean}_{i \\in b} |w_i|` (for fixed signs, :math:`\\sum_i (|w_i| -
a)^2` is minimal at the mean; flipping a sign never helps). Its cost is the **unification
loss** :math:`C_u(b) = \\sum_i (|w_i| - a_b)^2`; pruning costs :math:`C_p(b) = \\lVert w_b
\\rVert^2 \\ge C_u(b)`. With ``n`` blocks in a pool (one layer, or all constrained layers for
``scope='global'``), ``round(prune_ratio n)`` blocks are pruned and ``round(unify_ratio n)``
unified. Two selection rules are offered:

* ``'greedy'`` [infer; jit-able, used inside :func:`prune.admm.admm`]: prune the smallest
  :math:`C_p`, then unify the smallest :math:`C_u` of the rest. It is the exact projection
  when only one of the ratios is non-zero (the costs separate per block), not always when both
  are (e.g. :math:`C_p = (1, 1.05)`, :math:`C_u = (0, 1)`).
* ``'exact'`` (numpy, concrete arrays): the minimum-cost assignment. Swapping the roles of a
  pruned block ``p`` and a unified block ``q`` changes the cost by :math:`d_q - d_p` with
  :math:`d = C_p - C_u`, so some optimum prunes only blocks that precede every unified block
  in the order of ``d``; the best split point is found with two heap sweeps.

Storage and compute accounting (the stored format, measured bits, multiplies) are in
:mod:`prune.unify_storage`.

Reconstructed choices [infer] (the paper's text beyond its abstract was not readable; no
public code): the reshape axis, the row-major tiling, the selection rules and losses, rounding
of the counts, padding with entries that are neither costed nor stored.

Reference:
  S. Lin, W. Jiang, W. Wang, K. Xu, Y. Wang, S. Liu, S. Li, `Efficient Micro-Structured
  Weight Unification and Pruning for Neural Network Compression
  <https://arxiv.org/abs/2106.08301>`_, 2021.
"""
from __future__ import annotations

import heapq
import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import named_leaves

FREE, UNIFIED, PRUNED = 0, 1, 2
SCOPES = ('layer', 'global')
METHODS = ('greedy', 'exact')


class UnifySpec(NamedTuple):
    """What is unified and how.

    Attributes:
      block_shape: ``(rows, cols)`` of a micro-block in the ``out x fan_in`` matrix.
      unify_ratio: fraction of the blocks of a pool unified (shared magnitude).
      prune_ratio: fraction of the blocks of a pool pruned (zero).
      scope: ``'layer'`` (the ratios hold in every layer) or ``'global'`` (one ranking of
        the raw costs over all constrained layers).
      pad: tile a matrix whose sides are not multiples of the block by padding the last
        blocks (padded entries are neither costed nor stored); False raises instead.
      pattern: regex (``re.search``) of the constrained leaf paths; only leaves with >= 2
        axes are taken. The default leaves the classifier ``head`` free.
    """

    block_shape: tuple[int, int] = (1, 4)
    unify_ratio: float = 0.5
    prune_ratio: float = 0.0
    scope: str = 'layer'
    pad: bool = False
    pattern: str = r'^(?!head/)'


class Grid(NamedTuple):
    """Tiling of one kernel: its shape, the matrix sides and the number of blocks per side."""

    shape: tuple[int, ...]
    rows: int
    cols: int
    block_rows: int
    block_cols: int

    @property
    def n_blocks(self) -> int:
        return self.block_rows * self.block_cols


def check_spec(spec: UnifySpec) -> UnifySpec:
    """Return ``spec`` with a tuple block shape, or raise ``ValueError`` naming the problem."""
    shape = tuple(spec.block_shape)
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                              or s < 1 for s in shape):
        raise ValueError(f'block_shape must be two positive ints (rows, cols), got '
                         f'{spec.block_shape!r}')
    for name in ('unify_ratio', 'prune_ratio'):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
                0.0 <= float(value) <= 1.0):
            raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')
    total = float(spec.unify_ratio) + float(spec.prune_ratio)
    if total > 1.0 + 1e-12:
        raise ValueError(f'unify_ratio + prune_ratio = {spec.unify_ratio} + '
                         f'{spec.prune_ratio} = {total:g} exceeds 1')
    if spec.scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {spec.scope!r}')
    try:
        re.compile(spec.pattern)
    except re.error as error:
        raise ValueError(f'invalid pattern {spec.pattern!r}: {error}') from None
    return spec._replace(block_shape=(int(shape[0]), int(shape[1])))


def grid(shape, spec: UnifySpec, path: str = 'kernel') -> Grid:
    """The tiling of a kernel of ``shape``; raises ``ValueError`` when it cannot be tiled."""
    spec = check_spec(spec)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f'{path!r} has shape {shape}; unification needs a kernel with >= 2 '
                         'axes')
    rows, cols = shape[-1], int(np.prod(shape[:-1]))
    br, bc = spec.block_shape
    if rows < br or cols < bc:
        raise ValueError(f'{path!r} is a {rows} x {cols} (out x fan_in) matrix, too small for '
                         f'one {br} x {bc} block')
    if not spec.pad and (rows % br or cols % bc):
        raise ValueError(f'block shape {br} x {bc} does not divide the {rows} x {cols} '
                         f'(out x fan_in) matrix of {path!r}; pass pad=True or pick a divisor')
    return Grid(shape, rows, cols, -(-rows // br), -(-cols // bc))


def kernel_matrix(kernel):
    """A flax kernel (``(in, out)`` or ``HWIO``) as the ``out x fan_in`` matrix."""
    return jnp.reshape(kernel, (-1, jnp.shape(kernel)[-1])).T


def matrix_kernel(matrix, shape):
    """Inverse of :func:`kernel_matrix`."""
    return jnp.reshape(matrix.T, shape)


def to_blocks(kernel, g: Grid, block_shape):
    """``(n_blocks, rows * cols)`` view of a kernel, zero-padded, blocks row-major."""
    br, bc = block_shape
    m = kernel_matrix(kernel)
    m = jnp.pad(m, ((0, g.block_rows * br - g.rows), (0, g.block_cols * bc - g.cols)))
    m = m.reshape(g.block_rows, br, g.block_cols, bc).transpose(0, 2, 1, 3)
    return m.reshape(g.n_blocks, br * bc)


def from_blocks(blocks, g: Grid, block_shape):
    """Inverse of :func:`to_blocks` (padding dropped)."""
    br, bc = block_shape
    m = blocks.reshape(g.block_rows, g.block_cols, br, bc).transpose(0, 2, 1, 3)
    m = m.reshape(g.block_rows * br, g.block_cols * bc)[:g.rows, :g.cols]
    return matrix_kernel(m, g.shape)


def valid_entries(g: Grid, block_shape) -> np.ndarray:
    """Bool ``(n_blocks, rows * cols)``: True for real (not padded) entries."""
    br, bc = block_shape
    m = np.zeros((g.block_rows * br, g.block_cols * bc), bool)
    m[:g.rows, :g.cols] = True
    m = m.reshape(g.block_rows, br, g.block_cols, bc).transpose(0, 2, 1, 3)
    return m.reshape(g.n_blocks, br * bc)


def block_stats(blocks, valid):
    """``(magnitude, unification loss C_u, pruning loss C_p)`` per block, float32.

    The magnitude is the mean |w| over the real entries; when they all have the same |w| it is
    that value exactly, so projecting a projected block changes no bit.
    """
    a = jnp.abs(blocks.astype(jnp.float32))
    count = jnp.maximum(valid.sum(axis=1), 1)
    mean = jnp.where(valid, a, 0.0).sum(axis=1) / count
    high = jnp.where(valid, a, -jnp.inf).max(axis=1)
    low = jnp.where(valid, a, jnp.inf).min(axis=1)
    magnitude = jnp.where(high == low, high, mean)
    c_u = jnp.where(valid, (a - magnitude[:, None]) ** 2, 0.0).sum(axis=1)
    c_p = jnp.where(valid, a ** 2, 0.0).sum(axis=1)
    return magnitude, c_u, c_p


def block_counts(n_blocks: int, spec: UnifySpec) -> tuple[int, int]:
    """``(n_unify, n_prune)`` of a pool of ``n_blocks`` (rounded; never more than the pool)."""
    n_prune = int(round(spec.prune_ratio * n_blocks))
    n_unify = min(int(round(spec.unify_ratio * n_blocks)), n_blocks - n_prune)
    return n_unify, n_prune


def select_greedy(c_u, c_p, n_unify: int, n_prune: int):
    """Codes (int8): prune the ``n_prune`` smallest ``c_p``, then unify the ``n_unify``
    smallest ``c_u`` of the rest (ties: lower index first). Jit-able (static counts)."""
    n = c_u.shape[0]
    codes = jnp.zeros(n, jnp.int8)
    pruned = jnp.argsort(c_p, stable=True)[:n_prune]
    codes = codes.at[pruned].set(PRUNED)
    rest = jnp.where(codes == PRUNED, jnp.inf, c_u)
    unified = jnp.argsort(rest, stable=True)[:n_unify]
    return codes.at[unified].set(UNIFIED)


def _smallest_prefix_sums(costs: np.ndarray, k: int) -> np.ndarray:
    """``out[t]`` = sum of the ``k`` smallest of ``costs[:t]`` (inf when ``t < k``)."""
    out = np.full(costs.size + 1, np.inf)
    if k == 0:
        out[:] = 0.0
        return out
    heap, total = [], 0.0  # max-heap of the k smallest (negated)
    for t, c in enumerate(costs, start=1):
        if len(heap) < k:
            heapq.heappush(heap, -c)
            total += c
        elif c < -heap[0]:
            total += c + heapq.heapreplace(heap, -c)
        if len(heap) == k:
            out[t] = total
    return out


def select_exact(c_u, c_p, n_unify: int, n_prune: int) -> np.ndarray:
    """Codes of a minimum-cost choice of ``n_prune`` pruned and ``n_unify`` unified blocks.

    Some optimum prunes only blocks that precede all unified ones in the order of
    ``d = c_p - c_u``; for each split point ``t`` the best choice is the ``n_prune`` smallest
    ``c_p`` before ``t`` and the ``n_unify`` smallest ``c_u`` after it.
    """
    c_u, c_p = np.asarray(c_u, np.float64), np.asarray(c_p, np.float64)
    n = c_u.size
    order = np.argsort(c_p - c_u, kind='stable')
    before = _smallest_prefix_sums(c_p[order], n_prune)
    after = _smallest_prefix_sums(c_u[order][::-1], n_unify)[::-1]
    t = int(np.argmin(before + after))
    codes = np.zeros(n, np.int8)
    head, tail = order[:t], order[t:]
    codes[head[np.argsort(c_p[head], kind='stable')[:n_prune]]] = PRUNED
    codes[tail[np.argsort(c_u[tail], kind='stable')[:n_unify]]] = UNIFIED
    return codes


def constrained(params, spec: UnifySpec) -> dict[str, Grid]:
    """``{path: Grid}`` of the leaves ``spec`` constrains (raises on untileable ones)."""
    spec = check_spec(spec)
    paths, leaves, _ = named_leaves(params)
    grids = {path: grid(np.shape(leaf), spec, path) for path, leaf in zip(paths, leaves)
             if np.ndim(leaf) >= 2 and re.search(spec.pattern, path)}
    if not grids:
        raise ValueError(f'pattern {spec.pattern!r} selects no kernel (leaf with >= 2 axes)')
    return grids


def _pools(grids: Mapping[str, Grid], spec: UnifySpec) -> list[list[str]]:
    return [[p] for p in grids] if spec.scope == 'layer' else [list(grids)]


def select_blocks(params, spec: UnifySpec, method: str = 'greedy') -> dict[str, Any]:
    """``{path: int8 codes (n_blocks,)}``: 0 free, 1 unified, 2 pruned.

    ``'greedy'`` works under ``jit``; ``'exact'`` needs concrete arrays (see the module doc).
    """
    if method not in METHODS:
        raise ValueError(f'method must be one of {METHODS}, got {method!r}')
    spec = check_spec(spec)
    grids = constrained(params, spec)
    lookup = dict(zip(*named_leaves(params)[:2]))
    stats = {}
    for path, g in grids.items():
        blocks = to_blocks(lookup[path], g, spec.block_shape)
        stats[path] = block_stats(blocks, jnp.asarray(valid_entries(g, spec.block_shape)))[1:]
    codes = {}
    for pool in _pools(grids, spec):
        c_u = jnp.concatenate([stats[p][0] for p in pool])
        c_p = jnp.concatenate([stats[p][1] for p in pool])
        n_unify, n_prune = block_counts(int(c_u.shape[0]), spec)
        chosen = (select_greedy(c_u, c_p, n_unify, n_prune) if method == 'greedy' else
                  jnp.asarray(select_exact(c_u, c_p, n_unify, n_prune)))
        offset = 0
        for p in pool:
            codes[p] = chosen[offset:offset + grids[p].n_blocks]
            offset += grids[p].n_blocks
    return codes


def project_kernel(kernel, codes, g: Grid, block_shape):
    """One kernel with its unified blocks set to ``sign(w) mean|w|`` and pruned blocks to 0
    (a zero weight in a unified block takes the + sign)."""
    blocks = to_blocks(kernel, g, block_shape)
    valid = jnp.asarray(valid_entries(g, block_shape))
    magnitude = block_stats(blocks, valid)[0].astype(blocks.dtype)[:, None]
    unified = jnp.where(blocks < 0, -magnitude, magnitude)
    code = jnp.asarray(codes)[:, None]
    out = jnp.where(code == UNIFIED, unified, jnp.where(code == PRUNED, 0, blocks))
    return from_blocks(jnp.where(valid, out, 0), g, block_shape).astype(kernel.dtype)


def project(params, spec: UnifySpec, *, method: str = 'greedy', codes=None):
    """Euclidean projection of ``params`` onto the unified set of ``spec``.

    Args:
      params: parameter tree.
      spec: :class:`UnifySpec`.
      method: block selection, ``'greedy'`` (jit-able) or ``'exact'``; ignored with ``codes``.
      codes: fixed ``{path: codes}`` (e.g. from :func:`select_blocks`): project onto the set
        with that selection (used to re-tie weights after retraining).

    Returns:
      The params tree, constrained kernels projected, other leaves unchanged. Idempotent.

    Example:
      >>> w = {'k': jnp.array([[1.0], [-3.0], [0.5], [2.5]])}  # (in=4, out=1): one 1x4 block
      >>> project(w, UnifySpec((1, 4), unify_ratio=1.0, pattern='k'))['k'].ravel().tolist()
      [1.75, -1.75, 1.75, 1.75]
    """
    spec = check_spec(spec)
    grids = constrained(params, spec)
    if codes is None:
        codes = select_blocks(params, spec, method)
    paths, leaves, treedef = named_leaves(params)
    out = [project_kernel(leaf, codes[path], grids[path], spec.block_shape)
           if path in grids else leaf for path, leaf in zip(paths, leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def distance(params, other, spec: UnifySpec) -> float:
    """Squared Euclidean distance between the constrained kernels of two trees."""
    a, b = dict(zip(*named_leaves(params)[:2])), dict(zip(*named_leaves(other)[:2]))
    return float(sum(jnp.sum((a[p].astype(jnp.float32) - b[p].astype(jnp.float32)) ** 2)
                     for p in constrained(params, spec)))
