"""Sparsity, parameter and FLOP accounting per layer, in ShrinkBench's conventions.

ShrinkBench (Blalock et al., arXiv:2003.03033) reports two numbers beside accuracy:

* **compression ratio** = all parameters / non-zero parameters, counting the parameters that
  are never pruned (biases, normalizers, the classifier) in both;
* **theoretical speed-up** = dense multiply-accumulates / remaining multiply-accumulates of the
  conv and dense layers, where a kernel entry costs one MAC per output position (a conv's
  output height x width, 1 for a dense layer), so a pruned entry saves exactly that.

The classifier is not pruned by choice (``classifier`` pattern, marked ``prunable: False``),
but its input rows still lose the entries of pruned channels, which the counts show. Lubana &
Dick report the fraction of *filters* pruned instead; :func:`filter_report` gives it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from jaxnorm.trees import named_leaves
from prune.masks import check_masks


def layer_report(params, masks=None, *, positions: Mapping[str, int] | None = None,
                 classifier: str = r'^head/') -> dict[str, Any]:
    """Per-kernel and total parameter, sparsity and (with ``positions``) FLOP counts.

    Args:
      params: parameter tree.
      masks: mask tree (kept = non-zero mask entries); None counts the non-zero parameters.
      positions: ``{kernel path: output positions}`` (e.g.
        :func:`jaxnorm.models.channels.kernel_positions`); kernels missing from it count 1.
        None leaves FLOPs out.
      classifier: regex (``re.search``) of the paths never chosen for pruning.

    Returns:
      ``{'layers': {path: {...}}, 'total': {...}}``. A layer (every leaf with >= 2 axes) has
      ``params``, ``kept``, ``sparsity``, ``prunable`` and, with positions, ``flops`` and
      ``flops_kept`` (MACs per example). The total has ``params``, ``kept``, ``compression``,
      ``prunable_sparsity`` and, with positions, ``flops``, ``flops_kept`` and ``speedup``.
    """
    paths, leaves, _ = named_leaves(params)
    if masks is not None:
        check_masks(params, masks)
        kept_counts = [int(np.count_nonzero(np.asarray(m))) for m in named_leaves(masks)[1]]
    else:
        kept_counts = [int(np.count_nonzero(np.asarray(p))) for p in leaves]
    layers = {}
    total = {'params': 0, 'kept': 0}
    prunable = {'params': 0, 'kept': 0}
    flops = {'flops': 0, 'flops_kept': 0}
    for path, leaf, kept in zip(paths, leaves, kept_counts):
        size = int(np.size(leaf))
        total['params'] += size
        total['kept'] += kept
        if np.ndim(leaf) < 2:
            continue
        is_prunable = re.search(classifier, path) is None
        row = {'params': size, 'kept': kept, 'sparsity': 1.0 - kept / size,
               'prunable': is_prunable}
        if is_prunable:
            prunable['params'] += size
            prunable['kept'] += kept
        if positions is not None:
            per_entry = int(positions.get(path, 1))
            row.update(flops=size * per_entry, flops_kept=kept * per_entry)
            flops['flops'] += row['flops']
            flops['flops_kept'] += row['flops_kept']
        layers[path] = row
    total['compression'] = total['params'] / max(total['kept'], 1)
    total['prunable_sparsity'] = 1.0 - prunable['kept'] / max(prunable['params'], 1)
    if positions is not None:
        total.update(flops, speedup=flops['flops'] / max(flops['flops_kept'], 1))
    return {'layers': layers, 'total': total}


def filter_report(alive: Mapping[str, Any]) -> dict[str, Any]:
    """Filters kept per layer and the overall fraction removed (Lubana & Dick's ratio).

    Args:
      alive: ``{layer: bool (width,)}``.

    Returns:
      ``{'kept': {layer: int}, 'width': {layer: int}, 'fraction_pruned': float}``.
    """
    kept = {name: int(np.asarray(v).sum()) for name, v in alive.items()}
    width = {name: int(np.size(v)) for name, v in alive.items()}
    fraction = 1.0 - sum(kept.values()) / max(sum(width.values()), 1)
    return {'kept': kept, 'width': width, 'fraction_pruned': fraction}
