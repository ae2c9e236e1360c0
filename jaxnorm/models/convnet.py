"""Plain CNNs without pooling: (conv -> norm -> act) per layer, flatten, Dense.

Two named configurations:

* ``mnist1d_cnn``: the MNIST-1D paper's ``ConvBase`` (Greydanus, arXiv:2011.14439; the
  authors' ``notebooks/models.py``): three convs of 25 channels, kernel 5 / 3 / 3, stride 2,
  padding 1, ReLU, flatten (25 x 5 = 125 on length-40 sequences: 40 -> 19 -> 10 -> 5) and a
  Dense classifier. With ``norm='none'`` it has the authors' 5,210 parameters.
* ``cnn_small``: a small image CNN, 3x3 convs of 16, 32 (stride 2) and 64 (stride 2) channels,
  padding 1, flatten, Dense (the shape of the small CNNs of the pruning experiments).

Both take any number of spatial axes (``(N, L, C)`` sequences, NHWC images): each conv gets
one kernel axis per input axis. The convs use the family's plain-network init (as VGG).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import (ConvNormAct, check_floating_input, classify,
                                   plain_network_spec, resolve_norm, scale_width)

# Per conv layer: (output channels, kernel size, stride, padding).
CONFIGS: dict[str, dict[str, Any]] = {
    'mnist1d_cnn': dict(layers=((25, 5, 2, 1), (25, 3, 2, 1), (25, 3, 2, 1))),
    'cnn_small': dict(layers=((16, 3, 1, 1), (32, 3, 2, 1), (64, 3, 2, 1))),
}

OPTIONS = ('width',)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a conv along one axis: ``floor((size + 2 p - k) / s) + 1``."""
    return (size + 2 * padding - kernel_size) // stride + 1


class ConvNet(nn.Module):
    """Stack of conv-norm-act layers, flattened into a Dense classifier ``head``.

    Attributes:
      num_classes: classifier outputs.
      layers: ``(features, kernel_size, stride, padding)`` per conv.
      norm: registry name or :class:`NormSpec`.
      norm_kwargs: options of the registry entry.
      width: multiplier of every conv's channels (int or float, rounded).
      model_name: name used in error messages.
    """

    num_classes: int
    layers: Sequence[tuple[int, int, int, int]]
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    width: float = 1
    model_name: str = 'convnet'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_floating_input(x, self.model_name)
        if x.ndim < 3:
            raise ValueError(f'{self.model_name} expects a channels-last batch (N, *spatial, C) '
                             f'with at least one spatial axis, got shape {tuple(x.shape)}')
        sides = x.shape[1:-1]
        for features, kernel_size, stride, padding in self.layers:
            sides = tuple(conv_output_size(side, kernel_size, stride, padding)
                          for side in sides)
        if min(sides) < 1:
            raise ValueError(f'{self.model_name}: input of spatial size {x.shape[1:-1]} is too '
                             'small for its convs (an output side would be empty)')
        spec = plain_network_spec(resolve_norm(self.norm, self.norm_kwargs))
        for index, (features, kernel_size, stride, padding) in enumerate(self.layers, start=1):
            x = ConvNormAct(spec, scale_width(features, self.width), kernel_size, stride,
                            padding=padding, name=f'layer{index}')(x, train=train)
        return classify(spec, self.num_classes, x.reshape(x.shape[0], -1), train)
