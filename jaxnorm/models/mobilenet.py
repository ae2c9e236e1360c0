"""MobileNet-V1 for CIFAR (Howard et al. 2017, with the common CIFAR stem).

Stem 3x3 conv 32 with stride 1 (the ImageNet model uses stride 2), then 13 depthwise-separable
blocks (3x3 depthwise conv -> norm -> act -> 1x1 conv -> norm -> act), global average pool
and Dense. This is the layout of the widely used CIFAR MobileNet (3.2M parameters with BN and
10 classes).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import (MIN_IMAGE_SIZE, ConvNormAct, check_image_input, classify,
                                   global_avg_pool, resolve_norm, scale_width)

# Output channels of each block's pointwise conv; (C, 2) blocks downsample in the depthwise conv.
BLOCKS = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)

CONFIGS: dict[str, dict[str, Any]] = {'mobilenet_v1': {}}

OPTIONS = ('width',)


class MobileNetV1(nn.Module):
    """CIFAR MobileNet-V1.

    Attributes:
      num_classes: classifier outputs.
      norm: registry name or :class:`NormSpec`.
      norm_kwargs: options of the registry entry.
      width: multiplier of every layer's channels, the paper's alpha (int or float, rounded).
      model_name: name used in error messages.
    """

    num_classes: int
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    width: float = 1
    model_name: str = 'mobilenet_v1'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_image_input(x, MIN_IMAGE_SIZE, self.model_name)
        spec = resolve_norm(self.norm, self.norm_kwargs)
        x = ConvNormAct(spec, scale_width(32, self.width), name='stem')(x, train=train)
        for index, entry in enumerate(BLOCKS, start=1):
            base_width, strides = entry if isinstance(entry, tuple) else (entry, 1)
            channels = x.shape[-1]
            x = ConvNormAct(spec, channels, strides=strides, groups=channels,
                            name=f'block{index}_depthwise')(x, train=train)
            x = ConvNormAct(spec, scale_width(base_width, self.width), kernel_size=1,
                            name=f'block{index}_pointwise')(x, train=train)
        return classify(spec, self.num_classes, global_avg_pool(x), train)
