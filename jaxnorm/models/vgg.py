"""Plain (non-residual) CNNs: CIFAR VGG-11/13 and the Beyond-BatchNorm ``cfg_10`` network.

A layer list holds three kinds of entries:

* ``C`` (int): 3x3 conv with C channels, stride 1, then norm and activation;
* ``(C, 2)``: the same with stride 2 (Beyond-BatchNorm downsamples with strided convs);
* ``'M'``: 2x2 max-pool with stride 2 (floor mode, as PyTorch's ``MaxPool2d(2, 2)``).

The head is a global average pool and one Dense layer, as in the common CIFAR VGGs (where a
32x32 input leaves a 1x1x512 map, so flattening and pooling coincide) and in Beyond-BatchNorm.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import (MIN_IMAGE_SIZE, ConvNormAct, check_channels,
                                   check_image_input, classify, global_avg_pool,
                                   plain_network_spec, resolve_norm, scale_width)

POOL = 'M'

CONFIGS: dict[str, dict[str, Any]] = {
    # Simonyan & Zisserman's configurations 'A' and 'B' with their max-pools.
    'vgg11': dict(layers=(64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)),
    'vgg13': dict(layers=(64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL,
                          512, 512, POOL)),
    # [code: BeyondBatchNorm config.py, cfg_10]
    'vgg_cfg10': dict(layers=(64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2),
                              512, 512)),
}

OPTIONS = ('width', 'channels')


def min_input_size(layers: Sequence[Any]) -> int:
    """Smallest input side for which every floor-mode max-pool still has a 2x2 window."""
    return max(MIN_IMAGE_SIZE, 2 ** sum(entry == POOL for entry in layers))


class VGG(nn.Module):
    """Stack of conv-norm-act layers and max-pools, then global average pool and Dense.

    Attributes:
      num_classes: classifier outputs.
      layers: layer list (see the module docstring).
      norm: registry name or :class:`NormSpec`.
      norm_kwargs: options of the registry entry.
      width: multiplier of every conv's channels (int or float, rounded).
      channels: explicit output channels of every conv, in order, overriding the layer list's
        widths and ``width`` (a filter-pruned VGG compacted by :mod:`prune.compact`); None
        keeps the layer list.
      model_name: name used in error messages.
    """

    num_classes: int
    layers: Sequence[Any]
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    width: float = 1
    channels: Sequence[int] | None = None
    model_name: str = 'vgg'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_image_input(x, min_input_size(self.layers), self.model_name)
        spec = plain_network_spec(resolve_norm(self.norm, self.norm_kwargs))
        convs = [entry if isinstance(entry, tuple) else (entry, 1)
                 for entry in self.layers if entry != POOL]
        widths = [scale_width(base_width, self.width) for base_width, _ in convs]
        if self.channels is not None:
            widths = check_channels(self.channels, len(convs), 'convs', self.model_name)
        conv_index = 0
        for entry in self.layers:
            if entry == POOL:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            strides = convs[conv_index][1]
            x = ConvNormAct(spec, widths[conv_index], strides=strides,
                            name=f'layer{conv_index + 1}')(x, train=train)
            conv_index += 1
        return classify(spec, self.num_classes, global_avg_pool(x), train)
