"""Prunable channels of the jaxnorm models, and their compacted (narrower) versions.

:func:`channel_groups` describes, as :class:`prune.ChannelGroup` data, which output channels
of a model can be pruned and which parameter slices go with each:

* ``vgg11/13``, ``vgg_cfg10``: every conv ``layerK``: its kernel's outputs (and conv bias), its
  normalizer's per-channel parameters and statistics, and the next conv's kernel inputs (the
  classifier's input rows after the last conv, which global pooling maps one-to-one).
* ``resnet*``: the block-internal channels only, ``stageS_blockB/conv1`` outputs with the
  normalizer after them and ``conv2``'s inputs. Block outputs are summed with identity and
  zero-padding shortcuts, so removing one would need the same channel removed from the whole
  stage; the stem is never pruned. This is the part flowandprune removes physically in its
  ResNet-56 (it masks block outputs instead) [code: ``pruner.py``].
* ``mlp``: every hidden Dense layer.

``mobilenet_v1`` is not supported (a depthwise layer ties its channels to its input's).

Only per-channel normalizers keep the masked and the compacted model identical (``bn``, ``vn``
and no normalizer, ``none``); the others mix channels in their statistics or reparameterize
whole kernels, and are refused.

:func:`compact_model` rebuilds the same family with explicit widths (the ``channels`` option of
VGG, ``inner_channels`` of ResNet, ``hidden`` of the MLP), the model whose variables
:func:`prune.compact` produces.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from jaxnorm.models.common import resolve_norm
from jaxnorm.models.mlp import MLP
from jaxnorm.models.resnet import ResNet
from jaxnorm.models.vgg import VGG
from prune.masks import ChannelGroup, Slot, check_groups, named_leaves

CHANNEL_LOCAL_NORMS = ('bn', 'vn', 'none')
CLASSIFIER = 'head'


def _layer_index(name: str, prefix: str) -> int:
    return int(name[len(prefix):])


def _producer(params_paths, stats_paths, module: str, norm: str, width: int, consumer: str,
              name: str) -> ChannelGroup:
    """Group of a layer whose conv/dense is ``module/kernel`` followed by norm ``norm``."""
    kernel = Slot(f'{module}/kernel', -1)
    slots = [kernel]
    slots += [Slot(p, 0) for p in params_paths
              if p == f'{module}/bias' or p.startswith(f'{norm}/')]
    slots.append(Slot(f'{consumer}/kernel', -2))
    stats = tuple(Slot(p, 0) for p in stats_paths if p.startswith(f'{norm}/'))
    return ChannelGroup(name, width, kernel, tuple(slots), stats)


def channel_groups(model: nn.Module, variables: Mapping[str, Any]) -> tuple[ChannelGroup, ...]:
    """The prunable channel groups of a jaxnorm model (see the module docstring).

    Args:
      model: a module from :func:`jaxnorm.models.get_model` (VGG, ResNet or MLP family).
      variables: its variables (``params`` and optionally ``batch_stats``).

    Returns:
      Groups in forward order, named after their layer (``'layer3'``,
      ``'stage2_block1/conv1'``, ``'dense1'``).

    Raises:
      ValueError: an unsupported model family or normalizer.
    """
    norm = resolve_norm(model.norm, model.norm_kwargs).name
    if norm not in CHANNEL_LOCAL_NORMS:
        raise ValueError(f'structured pruning needs a per-channel normalizer '
                         f'({", ".join(CHANNEL_LOCAL_NORMS)}); {norm!r} is not one')
    params = variables['params']
    params_paths, params_leaves, _ = named_leaves(params)
    stats_paths = named_leaves(variables.get('batch_stats', {}))[0]
    shapes = {path: np.shape(leaf) for path, leaf in zip(params_paths, params_leaves)}

    def width(path):
        return int(shapes[path][-1])

    groups = []
    if isinstance(model, VGG):
        layers = sorted((k for k in params if k.startswith('layer')),
                        key=lambda k: _layer_index(k, 'layer'))
        for layer, consumer in zip(layers, layers[1:] + [None]):
            consumer = f'{consumer}/conv' if consumer else CLASSIFIER
            groups.append(_producer(params_paths, stats_paths, f'{layer}/conv',
                                    f'{layer}/norm', width(f'{layer}/conv/kernel'), consumer,
                                    layer))
    elif isinstance(model, ResNet):
        norm_after_conv1 = 'norm2' if model.preact else 'norm1'
        blocks = sorted((k for k in params if k.startswith('stage')),
                        key=lambda k: tuple(int(x) for x in k[5:].split('_block')))
        for block in blocks:
            groups.append(_producer(params_paths, stats_paths, f'{block}/conv1',
                                    f'{block}/{norm_after_conv1}',
                                    width(f'{block}/conv1/kernel'), f'{block}/conv2',
                                    f'{block}/conv1'))
    elif isinstance(model, MLP):
        layers = sorted((k for k in params if k.startswith('dense')),
                        key=lambda k: _layer_index(k, 'dense'))
        for layer, consumer in zip(layers, layers[1:] + [CLASSIFIER]):
            norm_name = f'norm{_layer_index(layer, "dense")}'
            groups.append(_producer(params_paths, stats_paths, layer, norm_name,
                                    width(f'{layer}/kernel'), consumer, layer))
    else:
        raise ValueError(f'structured pruning supports the VGG, ResNet and MLP families, not '
                         f'{type(model).__name__}')
    groups = tuple(groups)
    check_groups(params, groups, variables.get('batch_stats'))
    return groups


def compact_model(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """``model`` with each group's channel count set to ``widths[group name]``.

    Args:
      model: the unpruned model.
      widths: ``{group name: channels}`` for every group of :func:`channel_groups` (e.g. the
        second output of :func:`prune.compact`).

    Returns:
      An unbound module of the same family and options with explicit per-layer widths.
    """
    def ordered(prefix_key):
        return tuple(int(widths[k]) for k in sorted(widths, key=prefix_key))

    if isinstance(model, VGG):
        return model.clone(channels=ordered(lambda k: _layer_index(k, 'layer')))
    if isinstance(model, ResNet):
        key = lambda k: tuple(int(x) for x in k[5:].split('/')[0].split('_block'))  # noqa: E731
        return model.clone(inner_channels=ordered(key))
    if isinstance(model, MLP):
        return model.clone(hidden=ordered(lambda k: _layer_index(k, 'dense')), width=1)
    raise ValueError(f'compaction supports the VGG, ResNet and MLP families, not '
                     f'{type(model).__name__}')


def kernel_positions(model: nn.Module, variables: Mapping[str, Any], x) -> dict[str, int]:
    """``{kernel path: output positions}`` (a conv's output height x width; 1 for Dense).

    Read from flax's captured intermediates under ``jax.eval_shape``: shapes only, nothing
    is computed. ``x`` is an input batch (one example suffices).
    """
    _, state = jax.eval_shape(
        lambda v, inputs: model.apply(v, inputs, train=False, capture_intermediates=True,
                                      mutable=['intermediates']), variables, x)
    suffix = '/__call__/0'
    outputs = {path[:-len(suffix)]: leaf for path, leaf in
               zip(*named_leaves(state['intermediates'])[:2]) if path.endswith(suffix)}
    positions = {}
    for path in named_leaves(variables['params'])[0]:
        module = path.rsplit('/', 1)[0]
        if path.endswith('/kernel') and module in outputs:
            shape = np.shape(outputs[module])
            positions[path] = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    return positions
