"""Multi-layer perceptrons: flatten -> (Dense -> dense norm -> act) x len(hidden) -> Dense.

Named configurations: ``mlp`` (256-256), ``mnist1d_mlp`` (the MNIST-1D paper's ``MLPBase``,
Greydanus arXiv:2011.14439 / the authors' ``notebooks/models.py``: 100-100 with the second
layer residual, ``h = h + act(dense2(h))``; 15,210 parameters on length-40 inputs with
``norm='none'``) and ``logistic`` (no hidden layer: multinomial logistic regression, 410
parameters on MNIST-1D).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from jaxnorm.layers import NormSpec, conv_kernel_init
from jaxnorm.models.common import check_floating_input, classify, resolve_norm, scale_width

CONFIGS: dict[str, dict[str, Any]] = {
    'mlp': {},
    'mnist1d_mlp': dict(hidden=(100, 100), residual=True),
    'logistic': dict(hidden=()),
}

OPTIONS = ('hidden', 'width', 'residual')


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
      residual: add each hidden layer's input to its output where the widths agree
        (``h = h + act(norm(dense(h)))``), as the MNIST-1D paper's MLP.
      model_name: name used in error messages.
    """

    num_classes: int
    hidden: Sequence[int] = (256, 256)
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    width: float = 1
    residual: bool = False
    model_name: str = 'mlp'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_floating_input(x, self.model_name)
        if x.ndim < 2:
            raise ValueError(f'{self.model_name} expects a batch of rank >= 2 (batch first), '
                             f'got shape {tuple(x.shape)}')
        spec = resolve_norm(self.norm, self.norm_kwargs)
        if spec.dense_norm is None:
            raise ValueError(f'norm {spec.name!r} defines no dense_norm, so it cannot build '
                             f'{self.model_name}')
        x = x.reshape(x.shape[0], -1)
        for index, base_width in enumerate(self.hidden, start=1):
            features = scale_width(base_width, self.width)
            h = nn.Dense(features, use_bias=spec.conv_bias, kernel_init=conv_kernel_init,
                         bias_init=nn.initializers.zeros, name=f'dense{index}')(x)
            h = spec.dense_norm(name=f'norm{index}')(h, train=train)
            h = spec.act(name=f'act{index}')(h, train=train)
            x = x + h if self.residual and x.shape[-1] == features else h
        return classify(spec, self.num_classes, x, train)
