"""Multi-layer perceptron: flatten -> (Dense -> dense norm -> act) x len(hidden) -> Dense."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from jaxnorm.layers import NormSpec, conv_kernel_init
from jaxnorm.models.common import classify, resolve_norm, scale_width

CONFIGS: dict[str, dict[str, Any]] = {'mlp': {}}

OPTIONS = ('hidden', 'width')


class MLP(nn.Module):
    """MLP over flattened inputs, normalized with the family's ``dense_norm``.

    Hidden Dense layers use the conv init (Kaiming normal, fan_in) since they feed ReLU-like
    activations, and carry a bias exactly when the family's convs do (a bias before an
    activations-based normalizer is cancelled by its centering).

    Attributes:
      num_classes: classifier outputs.
      hidden: hidden layer sizes before the width multiplier.
      norm: registry name or :class:`NormSpec`.
      norm_kwargs: options of the registry entry.
      width: multiplier of every hidden size (int or float, rounded).
      model_name: name used in error messages.
    """

    num_classes: int
    hidden: Sequence[int] = (256, 256)
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    width: float = 1
    model_name: str = 'mlp'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim < 2:
            raise ValueError(f'{self.model_name} expects a batch of rank >= 2 (batch first), '
                             f'got shape {tuple(x.shape)}')
        spec = resolve_norm(self.norm, self.norm_kwargs)
        if spec.dense_norm is None:
            raise ValueError(f'norm {spec.name!r} defines no dense_norm, so it cannot build '
                             f'{self.model_name}')
        x = x.reshape(x.shape[0], -1)
        for index, base_width in enumerate(self.hidden, start=1):
            x = nn.Dense(scale_width(base_width, self.width), use_bias=spec.conv_bias,
                         kernel_init=conv_kernel_init, bias_init=nn.initializers.zeros,
                         name=f'dense{index}')(x)
            x = spec.dense_norm(name=f'norm{index}')(x, train=train)
            x = spec.act(name=f'act{index}')(x, train=train)
        return classify(spec, self.num_classes, x, train)
