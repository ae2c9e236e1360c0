"""Weight-reparameterized convolutions as flax.nnx modules, re-exported by :mod:`jaxnorm.nnx`.

Each class is ``flax.nnx.Conv`` with every constructor argument unchanged (``rngs`` required),
plus the options of its reparameterization, as the Linen twins in :mod:`jaxnorm._convs`.
``self.kernel`` holds the raw weight v; the forward pass runs ``nnx.Conv``'s own
``__call__`` with the reparameterized weight in its place (then the mask and the dtype
promotion, as the Linen convs), so padding, strides, dilation, feature groups and masks are
exactly flax's and gradients flow through the reparameterization to v.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from flax import nnx

from jaxnorm import _convs as linen_convs
from jaxnorm import functional as F


class _KernelView:
    """The conv as ``nnx.Conv.__call__`` reads it, with ``kernel`` replaced (a plain array,
    which supports the ``kernel[...]`` read)."""

    def __init__(self, conv: nnx.Conv, kernel: jax.Array):
        self._conv = conv
        self.kernel = kernel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conv, name)


class _ReparameterizedConv(nnx.Conv):
    """``nnx.Conv`` whose kernel passes through :meth:`reparameterize` before use."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        kernel = self.reparameterize(self.kernel[...])
        return nnx.Conv.__call__(_KernelView(self, kernel), inputs, out_sharding)

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        raise NotImplementedError


class WeightNormConv(_ReparameterizedConv):
    """Conv with Weight Normalization (https://arxiv.org/abs/1602.07868):
    ``w_o = g_o * v_o / ||v_o||``, :func:`jaxnorm.functional.weight_norm`.

    Args:
      scale_init: initializer of g (``self.scale``, shape (out,)); None starts g at ||v_o||,
        so the initial effective weight is the ``kernel_init`` draw; ``nn.initializers.ones``
        gives unit-norm filters (Beyond-BatchNorm repo, ``flax.linen.WeightNorm``).
      epsilon: guard inside the root, ``sqrt(||v||^2 + eps)``.
      epsilon_on_norm: use ``||v|| + eps`` instead (Beyond-BatchNorm repo, with eps 1e-5).
      *args, **conv_kwargs: ``nnx.Conv``'s (``in_features, out_features, kernel_size, ...,
        rngs``).
    """

    def __init__(self, *args, scale_init: Callable[..., jax.Array] | None = None,
                 epsilon: float = 1e-12, epsilon_on_norm: bool = False, rngs: nnx.Rngs,
                 **conv_kwargs):
        super().__init__(*args, rngs=rngs, **conv_kwargs)
        self.epsilon = epsilon
        self.epsilon_on_norm = epsilon_on_norm
        self.scale_init = scale_init
        init = scale_init or linen_convs._filter_norm_init(self.kernel[...])
        self.scale = nnx.Param(init(rngs.params(), (self.out_features,), self.param_dtype))

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        return F.weight_norm(kernel, self.scale[...], epsilon=self.epsilon,
                             epsilon_on_norm=self.epsilon_on_norm)


class ScaledWSConv(_ReparameterizedConv):
    """Conv with Scaled Weight Standardization (https://arxiv.org/abs/2101.08692):
    :func:`jaxnorm.functional.scaled_weight_standardization`.

    Args:
      gain_init: initializer of g (``self.gain``, shape (out,)); ones.
      epsilon: added to the filter variance.
      epsilon_on_std: add it to the std instead (Beyond-BatchNorm repo).
      activation_gain: gamma; sqrt(2 pi / (pi - 1)) for ReLU.
      *args, **conv_kwargs: ``nnx.Conv``'s.
    """

    def __init__(self, *args, gain_init: Callable[..., jax.Array] = nn.initializers.ones,
                 epsilon: float = 1e-5, epsilon_on_std: bool = False,
                 activation_gain: float = F.RELU_GAIN, rngs: nnx.Rngs, **conv_kwargs):
        super().__init__(*args, rngs=rngs, **conv_kwargs)
        self.gain_init = gain_init
        self.epsilon = epsilon
        self.epsilon_on_std = epsilon_on_std
        self.activation_gain = activation_gain
        self.gain = nnx.Param(gain_init(rngs.params(), (self.out_features,), self.param_dtype))

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        return F.scaled_weight_standardization(
            kernel, self.gain[...], epsilon=self.epsilon, epsilon_on_std=self.epsilon_on_std,
            activation_gain=self.activation_gain)


class CenteredConv(_ReparameterizedConv):
    """Conv with weight centering ``w_o = v_o - mean(v_o)``,
    :func:`jaxnorm.functional.weight_center` (Beyond-BatchNorm's weight-centered conv,
    MimicNorm's weight mean, arXiv:2010.09278)."""

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        return F.weight_center(kernel)


LINEN_TWINS: dict[Any, type[nnx.Module]] = {
    nn.Conv: nnx.Conv, linen_convs.WeightNormConv: WeightNormConv,
    linen_convs.ScaledWSConv: ScaledWSConv, linen_convs.CenteredConv: CenteredConv,
}
