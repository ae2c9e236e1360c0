"""Physical compaction: a filter-pruned model's variables as a smaller dense model's.

Masking a channel (:func:`prune.masks.structured_masks`) zeroes its filter, its normalizer's
per-channel parameters and the next layer's input slice, so the channel contributes exactly
nothing downstream. Deleting those slices therefore leaves the function unchanged while every
affected layer gets cheaper: a layer losing a fraction :math:`a` of its inputs and :math:`b` of
its outputs keeps :math:`(1-a)(1-b)` of its multiply-accumulates. With per-channel
normalizers (BatchNorm in train or eval mode, no normalizer) the compacted model's outputs
equal the masked model's up to float rounding; normalizers whose statistics mix channels
(LayerNorm, GroupNorm) do not have this property and are refused by the model glue
(:mod:`jaxnorm.models.channels`).

The slicing is generic over :class:`prune.masks.ChannelGroup` descriptions; building the
smaller module (same family, fewer channels) is the model library's job
(``jaxnorm.models.channels.compact_model``).

Example::

    alive = prune.channels_alive(masks, groups)
    small_vars, widths = prune.compact({'params': p, 'batch_stats': s}, groups, alive)
    small_model = channels.compact_model(model, widths)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import named_leaves
from prune.masks import ChannelGroup, check_alive, check_groups


def compact(variables: Mapping[str, Any], groups: Sequence[ChannelGroup],
            alive: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Delete the dead channels of every group from ``params`` and ``batch_stats``.

    Args:
      variables: ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` optional; other
        collections are passed through unchanged).
      groups: channel groups of the model.
      alive: ``{group name: bool (width,)}``, e.g. :func:`prune.masks.channels_alive`.

    Returns:
      ``(new_variables, widths)``: the same tree structure with smaller leaves, and
      ``{group name: channels kept}``.

    Raises:
      ValueError: a slot missing or of the wrong width, a malformed alive dict, or a group
        with no channel left.
    """
    if 'params' not in variables:
        raise ValueError("variables must hold a 'params' collection")
    batch_stats = variables.get('batch_stats')
    check_groups(variables['params'], groups, batch_stats)
    alive = check_alive(groups, alive)
    out = dict(variables)
    for collection in ('params', 'batch_stats'):
        if collection not in variables:
            continue
        paths, leaves, treedef = named_leaves(variables[collection])
        lookup = dict(zip(paths, leaves))
        for group in groups:
            kept = jnp.asarray(np.flatnonzero(alive[group.name]))
            slots = group.params if collection == 'params' else group.batch_stats
            for path, axis in slots:
                lookup[path] = jnp.take(lookup[path], kept, axis=axis)
        out[collection] = jax.tree_util.tree_unflatten(treedef, [lookup[p] for p in paths])
    widths = {group.name: int(alive[group.name].sum()) for group in groups}
    return out, widths
