"""Weight-reparameterized convolutions, re-exported by :mod:`jaxnorm.layers`.

Each class is ``flax.linen.Conv`` with every constructor argument unchanged, plus the options
of its reparameterization. The stored ``params['kernel']`` is the raw weight v (initialized by
``kernel_init`` as usual); the convolution uses the reparameterized weight computed from it in
the forward pass, so gradients flow through the reparameterization and an optimizer updates v.
This is done by intercepting ``param('kernel', ...)``, the one place ``nn.Conv`` reads its
kernel, which keeps padding, strides, dilation, feature groups and masks exactly flax's.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import functional as F


class _ReparameterizedConv(nn.Conv):
    """``nn.Conv`` whose kernel passes through :meth:`reparameterize` before use."""

    def param(self, name: str, init_fn: Callable[..., Any], *init_args, **init_kwargs):
        value = super().param(name, init_fn, *init_args, **init_kwargs)
        return self.reparameterize(value) if name == 'kernel' else value

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        raise NotImplementedError


class WeightNormConv(_ReparameterizedConv):
    """Conv with Weight Normalization (Salimans & Kingma, https://arxiv.org/abs/1602.07868).

    ``w_o = g_o * v_o / ||v_o||`` per output filter; see :func:`jaxnorm.functional.weight_norm`.

    Attributes:
      scale_init: initializer of g (``params['scale']``, shape (out,)). None (default) starts g
        at ||v_o||, so the initial effective weight is the ``kernel_init`` draw (torch's and
        Equinox's choice; the paper's data-dependent init is not implemented). The
        Beyond-BatchNorm repo and ``flax.linen.WeightNorm`` start g at 1 (unit-norm filters):
        pass ``nn.initializers.ones``.
      epsilon: guard inside the root, ``sqrt(||v||^2 + eps)``.
      epsilon_on_norm: use ``||v|| + eps`` instead (Beyond-BatchNorm repo, with eps 1e-5).
    """

    scale_init: Callable[..., jax.Array] | None = None
    epsilon: float = 1e-12
    epsilon_on_norm: bool = False

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        scale_init = self.scale_init or _filter_norm_init(kernel)
        scale = self.param('scale', scale_init, (kernel.shape[-1],), self.param_dtype)
        return F.weight_norm(kernel, scale, epsilon=self.epsilon,
                             epsilon_on_norm=self.epsilon_on_norm)


def _filter_norm_init(kernel: jax.Array) -> Callable[..., jax.Array]:
    def init(key, shape, dtype=jnp.float32):
        del key
        norms = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32)),
                                 axis=tuple(range(kernel.ndim - 1))))
        return norms.reshape(shape).astype(dtype)
    return init


class ScaledWSConv(_ReparameterizedConv):
    """Conv with Scaled Weight Standardization (Brock et al., https://arxiv.org/abs/2101.08692).

    ``w_o = gamma * g_o * (v_o - mean(v_o)) / (std(v_o) * sqrt(fan_in))``, gamma the ReLU gain;
    see :func:`jaxnorm.functional.scaled_weight_standardization`.

    Attributes:
      gain_init: initializer of g (``params['gain']``, shape (out,)); ones.
      epsilon: added to the filter variance.
      epsilon_on_std: add it to the std instead (Beyond-BatchNorm repo).
      activation_gain: gamma; sqrt(2 pi / (pi - 1)) for ReLU.
    """

    gain_init: Callable[..., jax.Array] = nn.initializers.ones
    epsilon: float = 1e-5
    epsilon_on_std: bool = False
    activation_gain: float = F.RELU_GAIN

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        gain = self.param('gain', self.gain_init, (kernel.shape[-1],), self.param_dtype)
        return F.scaled_weight_standardization(
            kernel, gain, epsilon=self.epsilon, epsilon_on_std=self.epsilon_on_std,
            activation_gain=self.activation_gain)


class CenteredConv(_ReparameterizedConv):
    """Conv with weight centering, ``w_o = v_o - mean(v_o)`` per output filter.

    See :func:`jaxnorm.functional.weight_center` (Beyond-BatchNorm's weight-centered conv,
    MimicNorm's weight mean, https://arxiv.org/abs/2010.09278).
    """

    def reparameterize(self, kernel: jax.Array) -> jax.Array:
        return F.weight_center(kernel)
