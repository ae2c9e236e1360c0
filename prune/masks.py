"""Pruning masks as pytrees mirroring the params, structured and unstructured.

A *mask tree* has exactly the params' tree structure, and each leaf is a ``bool`` (or
``uint8``) array of its parameter's shape: True / 1 keeps the entry, False / 0 prunes it.
Leaves that are never pruned are all-True. Masks are applied with :func:`apply_masks`, which
selects rather than multiplies, so a pruned entry is exactly ``+0.0`` (never ``-0.0`` or NaN).

**Structured pruning** removes whole output channels ("filters"). A :class:`ChannelGroup`
lists every parameter slice that belongs to one layer's channels: the producing kernel's
output axis, its bias, the following normalizer's per-channel scale and bias, and the next
layer's kernel input axis. A channel-alive vector per group then expands into a mask tree
(:func:`structured_masks`). Masking the normalizer's affine matters: a zeroed filter feeding
BatchNorm still emits BN's bias, and the next layer's input slice must go too, or magnitude
scores of that layer still count weights that no longer carry signal (flowandprune's
reference removes them physically). Channel groups are plain data, so any model can be
described; :mod:`jaxnorm.models.channels` describes the jaxnorm models.

**Unstructured pruning** keeps the top-scoring entries of the leaves selected by a path regex
and a minimum number of axes (:func:`select_leaves`, :func:`unstructured_masks`).

Paths are the tree keys joined by ``/`` (``'layer2/conv/kernel'``), as everywhere in jaxnorm
(:mod:`jaxnorm.trees`).

References:
  Lubana & Dick, `A Gradient Flow Framework for Analyzing Network Pruning
  <https://arxiv.org/abs/2009.11839>`_, ICLR 2021; the mask-tree design follows JaxPruner
  (Lee et al., `arXiv:2304.14082 <https://arxiv.org/abs/2304.14082>`_).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import check_like, is_placeholder, named_leaves, regex_mask


class Slot(NamedTuple):
    """One parameter (or statistic) leaf sliced by a channel group.

    Attributes:
      path: the leaf's path, keys joined by ``/``.
      axis: the leaf's axis indexed by the group's channels (``-1`` for a producing HWIO /
        ``(in, out)`` kernel, ``-2`` for a consuming one, ``0`` for a per-channel vector).
    """

    path: str
    axis: int


class ChannelGroup(NamedTuple):
    """The output channels of one prunable layer and everything removed with them.

    Attributes:
      name: the group's name (its layer), used as the key of channel-alive dicts.
      width: number of channels of the unpruned layer.
      filter: the producing kernel; its slice along ``filter.axis`` is the scored filter.
      params: every ``params`` slot removed with a channel, ``filter`` included.
      batch_stats: the ``batch_stats`` slots (running mean and variance), removed by
        :func:`prune.compact.compact` only.
    """

    name: str
    width: int
    filter: Slot
    params: tuple[Slot, ...]
    batch_stats: tuple[Slot, ...] = ()


def check_masks(params, masks) -> None:
    """Raise ``ValueError`` unless ``masks`` mirrors ``params`` (paths, shapes, 0/1 dtype).

    Missing and extra paths and wrong shapes are named by :func:`jaxnorm.trees.check_like`.
    """
    paths, leaves, _ = named_leaves(params, placeholders=True)
    for path, leaf, mask in zip(paths, leaves, check_like(params, masks, 'mask tree')):
        if is_placeholder(leaf):
            continue
        dtype = jnp.asarray(mask).dtype
        if dtype not in (jnp.bool_, jnp.uint8):
            raise ValueError(f'mask for {path!r} has dtype {dtype}; use bool or uint8')


def ones_masks(params) -> Any:
    """All-True masks mirroring ``params`` (nothing pruned)."""
    return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), jnp.bool_), params)


def apply_masks(params, masks) -> Any:
    """``params`` with every masked-out entry set to exactly 0 (jit-safe select)."""
    check_masks(params, masks)
    return jax.tree.map(lambda p, m: jnp.where(m != 0, p, jnp.zeros_like(p)), params, masks)


def count_kept(masks) -> int:
    """Number of kept (non-zero) mask entries over the whole tree."""
    return int(sum(int(np.count_nonzero(np.asarray(m))) for m in jax.tree.leaves(masks)))


def select_leaves(params, pattern: str = '.*', min_ndim: int = 2) -> Any:
    """Bool tree: True for leaves whose path matches ``pattern`` and with >= ``min_ndim`` axes.

    The default selects every kernel (biases and norm parameters have one axis). Exclude the
    classifier explicitly, e.g. ``pattern=r'^(?!head/)'`` (ShrinkBench and flowandprune do not
    prune it; JaxPruner's ndim filter alone would).

    Raises:
      ValueError: ``pattern`` is invalid or matches no leaf.
    """
    matched = regex_mask(pattern)(params)
    return jax.tree.map(lambda flag, p: bool(flag) and jnp.ndim(p) >= min_ndim, matched, params)


def check_groups(params, groups: Sequence[ChannelGroup], batch_stats=None) -> None:
    """Raise ``ValueError`` unless every slot of ``groups`` exists with the group's width."""
    trees = {'params': dict(zip(*named_leaves(params)[:2]))}
    if batch_stats is not None:
        trees['batch_stats'] = dict(zip(*named_leaves(batch_stats)[:2]))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f'channel group names must be unique, got {names}')
    for group in groups:
        if group.filter not in group.params:
            raise ValueError(f'group {group.name!r}: its filter slot must be among its params')
        slots = [('params', s) for s in group.params]
        if 'batch_stats' in trees:
            slots += [('batch_stats', s) for s in group.batch_stats]
        for collection, slot in slots:
            leaf = trees[collection].get(slot.path)
            if leaf is None:
                raise ValueError(f'group {group.name!r} names {collection} leaf {slot.path!r}, '
                                 'which does not exist')
            size = jnp.shape(leaf)[slot.axis]
            if size != group.width:
                raise ValueError(f'group {group.name!r} has width {group.width} but '
                                 f'{collection} leaf {slot.path!r} has {size} entries on '
                                 f'axis {slot.axis}')


def check_alive(groups: Sequence[ChannelGroup], alive: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate channel-alive vectors: one bool vector of the group's width per group, and no
    group with every channel pruned. Returns them as numpy bool arrays."""
    missing = [g.name for g in groups if g.name not in alive]
    unknown = sorted(set(alive) - {g.name for g in groups})
    if missing or unknown:
        raise ValueError(f'channel-alive dict does not match the groups: missing {missing}, '
                         f'unknown {unknown}')
    out = {}
    for group in groups:
        vector = np.asarray(alive[group.name]).astype(bool)
        if vector.shape != (group.width,):
            raise ValueError(f'alive vector of {group.name!r} has shape {vector.shape}, '
                             f'expected ({group.width},)')
        if not vector.any():
            raise ValueError(f'pruning every filter of layer {group.name!r} would disconnect '
                             'the network; keep at least one')
        out[group.name] = vector
    return out


def _along(vector: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``vector`` reshaped to broadcast along ``axis`` of an ``ndim``-axis array."""
    shape = [1] * ndim
    shape[axis] = vector.size
    return vector.reshape(shape)


def structured_masks(params, groups: Sequence[ChannelGroup], alive: Mapping[str, Any]) -> Any:
    """Mask tree removing the dead channels of every group from all of the group's slots.

    Args:
      params: the parameter tree.
      groups: channel groups (:func:`check_groups` is applied).
      alive: ``{group name: bool vector (width,)}``, True for kept channels.

    Returns:
      A bool mask tree; leaves outside every group are all-True. An entry shared by two
      groups (a kernel's input slice of one and output slice of the next) is kept only if
      both keep it.

    Raises:
      ValueError: a group slot is missing or of the wrong width, an alive vector is missing
        or misshaped, or a group would lose every channel.
    """
    check_groups(params, groups)
    alive = check_alive(groups, alive)
    paths, leaves, treedef = named_leaves(params)
    masks = {path: np.ones(np.shape(leaf), bool) for path, leaf in zip(paths, leaves)}
    for group in groups:
        for slot in group.params:
            mask = masks[slot.path]
            masks[slot.path] = mask & _along(alive[group.name], mask.ndim, slot.axis)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(masks[p]) for p in paths])


def channels_alive(masks, groups: Sequence[ChannelGroup]) -> dict[str, np.ndarray]:
    """Inverse of :func:`structured_masks`: a channel is alive if any entry of its filter is."""
    lookup = dict(zip(*named_leaves(masks)[:2]))
    alive = {}
    for group in groups:
        mask = np.asarray(lookup[group.filter.path]) != 0
        axis = group.filter.axis % mask.ndim
        alive[group.name] = mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))
    return alive


def check_ratio(ratio: float, name: str = 'ratio') -> float:
    """Return ``ratio`` as a float if it lies in [0, 1), else raise ``ValueError``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not (
            0.0 <= float(ratio) < 1.0):
        raise ValueError(f'{name} must be a number in [0, 1), got {ratio!r}')
    return float(ratio)


def unstructured_masks(scores, sparsity: float, select, *, scope: str = 'layer') -> Any:
    """Keep the highest-scoring entries of the selected leaves; prune the rest.

    Each selected leaf (``scope='layer'``), or all selected leaves together
    (``scope='global'``, raw scores, no per-layer normalization, as flowandprune ranks),
    keeps ``round(n * (1 - sparsity))`` entries, at least one. Ties keep the lower flat index,
    so the count is exact.

    Args:
      scores: tree mirroring params with a score per entry (e.g. from
        :func:`prune.scores.parameter_scores`); higher is more important.
      sparsity: fraction of the selected entries to prune, in [0, 1).
      select: bool tree (e.g. :func:`select_leaves`), or a prefix of one; unselected leaves
        stay all-True.
      scope: ``'layer'`` or ``'global'``.

    Returns:
      A bool mask tree.
    """
    sparsity = check_ratio(sparsity, 'sparsity')
    if scope not in ('layer', 'global'):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    _, leaves, treedef = named_leaves(scores)
    flags = check_like(scores, select, 'select tree', against='the scores', prefix=True)
    chosen = [i for i, flag in enumerate(flags) if flag]
    if not chosen:
        raise ValueError('select chooses no leaf to prune')
    masks = [jnp.ones(jnp.shape(leaf), jnp.bool_) for leaf in leaves]
    pools = [[i] for i in chosen] if scope == 'layer' else [chosen]
    for pool in pools:
        flat = jnp.concatenate([jnp.ravel(leaves[i]).astype(jnp.float32) for i in pool])
        keep = max(1, int(round(flat.size * (1.0 - sparsity))))
        # Stable sort of -score: ties keep the lower flat index.
        order = jnp.argsort(-flat, stable=True)
        kept = jnp.zeros(flat.size, jnp.bool_).at[order[:keep]].set(True)
        offset = 0
        for i in pool:
            size = int(np.prod(jnp.shape(leaves[i])))
            masks[i] = kept[offset:offset + size].reshape(jnp.shape(leaves[i]))
            offset += size
    return jax.tree_util.tree_unflatten(treedef, masks)
