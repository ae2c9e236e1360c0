"""Normalizers as pure functions: no parameters, no state, channels last, jit-able.

Activation normalizers take ``x`` of shape (N, *spatial, C): NHWC images (N, H, W, C),
sequences (N, L, C), or (N, C) for a dense layer's output (no spatial axis). Wherever a
docstring says (H, W) it means every spatial axis. They take optional per-channel affine parameters ``scale`` (gamma) and ``bias``
(beta) of shape (C,). Statistics are reduced in float32 whatever the input dtype, with a two-pass
variance, and the result is returned in the input's dtype. Defaults are the standard definitions
(biased variance, as torch and flax); the Beyond-BatchNorm repo's variants are keyword options.

Weight reparameterizations take a flax kernel, HWIO (kh, kw, in, out) or (in, out), and act per
output filter, i.e. over every axis but the last.

Every function is a thin shell over :func:`jaxnorm._stats.moments` and
:func:`jaxnorm._stats.normalize`, and raises at trace time on a wrong rank, an integer dtype or
channels that cannot be split into the requested groups.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxnorm import _stats

# Gain making ReLU variance-preserving for N(0, 1) inputs once centered: Var[ReLU(z)] =
# 1/2 - 1/(2 pi) = (pi - 1) / (2 pi). Used by sWS (Brock et al., arXiv:2101.08692) and by the
# centered ReLU that the Beyond-BatchNorm code pairs with WeightNorm.
RELU_GAIN = math.sqrt(2.0 * math.pi / (math.pi - 1.0))
# E[ReLU(z)] for z ~ N(0, 1).
_RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)

Array = jax.Array


def _batch_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))


def _spatial_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1))


def batch_moments(x: Array, *, axis_name: Any = None,
                  unbiased: bool = False) -> tuple[Array, Array]:
    """Per-channel batch mean and variance over (N, H, W), float32, each of shape (C,).

    Args:
      x: (N, H, W, C) or (N, C).
      axis_name: named axis to average over (``jax.shard_map``), giving global-batch statistics.
        Under plain ``jit`` with a batch-sharded ``x`` the reduction is already global.
      unbiased: Bessel-corrected variance (what torch stores in ``running_var``).
    """
    _stats.check_activation(x, 'batch_moments')
    mean, var = _stats.moments(x, _batch_axes(x), unbiased=unbiased, axis_name=axis_name)
    return mean.reshape(-1), var.reshape(-1)


def batch_norm_statistics(x: Array, *, axis_name: Any = None,
                          unbiased_running_var: bool = False) -> tuple[Array, Array, Array]:
    """What a BatchNorm layer takes from a training batch: the per-channel mean and biased
    variance it normalizes with, and the variance its running average stores (the
    Bessel-corrected one, ``var * m / (m - 1)`` over ``m`` values per channel, when
    ``unbiased_running_var``, as torch; else the biased one, as flax)."""
    mean, var = batch_moments(x, axis_name=axis_name)
    if not unbiased_running_var:
        return mean, var, var
    return mean, var, batch_moments(x, axis_name=axis_name, unbiased=True)[1]


def batch_norm(x: Array, *, mean: Array | None = None, var: Array | None = None,
               scale: Array | None = None, bias: Array | None = None, epsilon: float = 1e-5,
               axis_name: Any = None) -> Array:
    """Batch Normalization (Ioffe & Szegedy, https://arxiv.org/abs/1502.03167).

    ``y = (x - mu_B) / sqrt(sigma_B^2 + eps) * gamma + beta`` with ``mu_B``, ``sigma_B^2`` the
    per-channel mean and biased variance over (N, H, W).

    Args:
      x: (N, H, W, C) or (N, C).
      mean, var: per-channel statistics to use instead of the batch's (e.g. running averages
        in eval mode); give both or neither.
      scale, bias: optional gamma, beta of shape (C,).
      epsilon: added to the variance.
      axis_name: see :func:`batch_moments`.
    """
    _stats.check_activation(x, 'batch_norm')
    if (mean is None) != (var is None):
        raise ValueError('batch_norm: give both mean and var, or neither (batch statistics)')
    if mean is None:
        mean, var = _stats.moments(x, _batch_axes(x), axis_name=axis_name)
    return _stats.normalize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias)


def layer_norm(x: Array, *, scale: Array | None = None, bias: Array | None = None,
               epsilon: float = 1e-5) -> Array:
    """Layer Normalization, CNN definition (Ba et al., https://arxiv.org/abs/1607.06450).

    ``y = (x - mu_n) / sqrt(sigma_n^2 + eps) * gamma_c + beta_c`` with statistics over (H, W, C)
    per sample and the affine per channel, as in the GroupNorm and Beyond-BatchNorm papers: this
    is :func:`group_norm` with one group. For (N, C) input it is the usual per-sample LayerNorm.
    """
    _stats.check_activation(x, 'layer_norm')
    mean, var = _stats.moments(x, tuple(range(1, x.ndim)))
    return _stats.normalize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias)


def instance_norm(x: Array, *, scale: Array | None = None, bias: Array | None = None,
                  epsilon: float = 1e-5) -> Array:
    """Instance Normalization (Ulyanov et al., https://arxiv.org/abs/1607.08022).

    ``y = (x - mu_nc) / sqrt(sigma_nc^2 + eps) * gamma_c + beta_c`` with statistics over (H, W)
    per sample and channel: :func:`group_norm` with group size 1. On (N, C) input every
    statistic covers one value, so the output is ``beta`` (degenerate but well defined).
    """
    _stats.check_activation(x, 'instance_norm', spatial=True)
    mean, var = _stats.moments(x, _spatial_axes(x))
    return _stats.normalize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias)


def group_norm(x: Array, *, num_groups: int | None = None, group_size: int | None = None,
               scale: Array | None = None, bias: Array | None = None, epsilon: float = 1e-5,
               unbiased: bool = False) -> Array:
    """Group Normalization (Wu & He, https://arxiv.org/abs/1803.08494).

    Channels are split into G contiguous groups; ``y = (x - mu_ng) / sqrt(sigma_ng^2 + eps) *
    gamma_c + beta_c`` with statistics over (H, W, C/G) per sample and group. G = 1 is
    :func:`layer_norm`, G = C is :func:`instance_norm`.

    Args:
      x: (N, H, W, C) or (N, C).
      num_groups: G; or give ``group_size`` = C / G. With neither, G = the largest divisor
        of C not above 32 (``min(32, C)`` whenever 32 divides C or C <= 32).
      scale, bias: optional gamma, beta of shape (C,).
      epsilon: added to the variance.
      unbiased: Bessel-corrected group variance, as the Beyond-BatchNorm repo (torch.var).
    """
    _stats.check_activation(x, 'group_norm')
    groups = _stats.resolve_num_groups(x.shape[-1], num_groups, group_size, 'group_norm')
    mean, var = _stats.moments(x, _spatial_axes(x), unbiased=unbiased, channel_groups=groups)
    return _stats.normalize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias)


def filter_response_norm(x: Array, *, scale: Array | None = None, bias: Array | None = None,
                         epsilon: float | Array = 1e-6) -> Array:
    """Filter Response Normalization (Singh & Krishnan, https://arxiv.org/abs/1911.09737).

    ``nu^2 = mean_{H,W}(x^2)``, ``y = gamma * x / sqrt(nu^2 + eps) + beta``, per sample and
    channel, without centering; follow it with :func:`tlu`. On (N, C) input nu^2 = x^2, which the
    paper handles with a learned epsilon (see :class:`jaxnorm.layers.FilterResponseNorm`).

    Args:
      epsilon: positive float or scalar array (a learned |eps| plus a floor).
    """
    _stats.check_activation(x, 'filter_response_norm')
    _, second_moment = _stats.moments(x, _spatial_axes(x), center=False)
    return _stats.normalize(x, None, second_moment, epsilon=epsilon, scale=scale, bias=bias)


def tlu(x: Array, tau: Array) -> Array:
    """Thresholded Linear Unit ``max(x, tau)``, tau per channel (arXiv:1911.09737)."""
    _stats.check_activation(x, 'tlu')
    return jnp.maximum(x, tau.astype(x.dtype))


def variance_norm(x: Array, *, var: Array | None = None, scale: Array | None = None,
                  bias: Array | None = None, epsilon: float = 1e-5,
                  axis_name: Any = None) -> Array:
    """Variance Normalization: BatchNorm without mean subtraction.

    ``y = gamma * x / sqrt(sigma_B^2 + eps) + beta`` with ``sigma_B^2`` the (centered, biased)
    per-channel batch variance over (N, H, W), as in the Beyond-BatchNorm code
    (Lubana et al., https://arxiv.org/abs/2106.05956).

    Args:
      var: per-channel variance to use instead of the batch's (running average in eval).
      axis_name: see :func:`batch_moments`.
    """
    _stats.check_activation(x, 'variance_norm')
    if var is None:
        _, var = _stats.moments(x, _batch_axes(x), axis_name=axis_name)
    return _stats.normalize(x, None, var, epsilon=epsilon, scale=scale, bias=bias)


def evonorm_b0(x: Array, v: Array, *, batch_var: Array | None = None,
               scale: Array | None = None, bias: Array | None = None, epsilon: float = 1e-5,
               axis_name: Any = None, unbiased_instance_var: bool = False) -> Array:
    """EvoNorm-B0 (Liu et al., https://arxiv.org/abs/2004.02967); replaces norm and ReLU.

    ``y = x / max(sqrt(sigma_B^2 + eps), v * x + sqrt(sigma_I^2 + eps)) * gamma + beta`` with
    ``sigma_B^2`` the biased batch variance over (N, H, W) per channel and ``sigma_I^2`` the
    instance variance over (H, W) per sample and channel. On (N, C) input sigma_I^2 = 0.

    Args:
      v: per-channel (C,) parameter (starts at 1).
      batch_var: per-channel variance to use instead of the batch's (running average in eval).
      axis_name: see :func:`batch_moments`.
      unbiased_instance_var: Bessel-corrected sigma_I^2, as the Beyond-BatchNorm repo.
    """
    _stats.check_activation(x, 'evonorm_b0')
    if batch_var is None:
        _, batch_var = _stats.moments(x, _batch_axes(x), axis_name=axis_name)
    _, instance_var = _stats.moments(x, _spatial_axes(x), unbiased=unbiased_instance_var)
    x32 = x.astype(jnp.float32)
    denominator = jnp.maximum(jnp.sqrt(batch_var + epsilon),
                              v.astype(jnp.float32) * x32 + jnp.sqrt(instance_var + epsilon))
    multiplier = 1.0 / denominator
    if scale is not None:
        multiplier = multiplier * scale.astype(jnp.float32)
    return _stats.affine(x32, multiplier, bias, x.dtype)


def evonorm_s0(x: Array, v: Array, *, num_groups: int | None = None,
               group_size: int | None = None, scale: Array | None = None,
               bias: Array | None = None, epsilon: float = 1e-5,
               unbiased: bool = False) -> Array:
    """EvoNorm-S0 (Liu et al., https://arxiv.org/abs/2004.02967); replaces norm and ReLU.

    ``y = x * sigmoid(v * x) / sqrt(sigma_g^2 + eps) * gamma + beta`` with ``sigma_g^2`` the
    group variance of ``x`` over (H, W, C/G) per sample, groups as in :func:`group_norm`.

    Args:
      v: per-channel (C,) parameter (starts at 1).
      num_groups, group_size: as :func:`group_norm` (same default G). The
        Beyond-BatchNorm repo always uses 32 groups: pass ``num_groups=32``.
      unbiased: Bessel-corrected group variance, as the Beyond-BatchNorm repo.
    """
    _stats.check_activation(x, 'evonorm_s0')
    groups = _stats.resolve_num_groups(x.shape[-1], num_groups, group_size, 'evonorm_s0')
    _, var = _stats.moments(x, _spatial_axes(x), unbiased=unbiased, channel_groups=groups)
    x32 = x.astype(jnp.float32)
    swished = x32 * jax.nn.sigmoid(v.astype(jnp.float32) * x32)
    return _stats.normalize(swished, None, var, epsilon=epsilon, scale=scale, bias=bias,
                            dtype=x.dtype)


def centered_relu(x: Array) -> Array:
    """ReLU shifted and scaled to mean 0, variance 1 for x ~ N(0, 1).

    ``phi(x) = sqrt(2 pi / (pi - 1)) * (ReLU(x) - 1 / sqrt(2 pi))``, the activation the
    Beyond-BatchNorm code (https://arxiv.org/abs/2106.05956) uses with WeightNorm.
    """
    _stats.check_activation(x, 'centered_relu')
    return (RELU_GAIN * (jax.nn.relu(x) - _RELU_MEAN)).astype(x.dtype)


def _fan_in_axes(kernel: Array) -> tuple[int, ...]:
    return tuple(range(kernel.ndim - 1))


def weight_norm(kernel: Array, scale: Array | None = None, *, epsilon: float = 1e-12,
                epsilon_on_norm: bool = False) -> Array:
    """Weight Normalization (Salimans & Kingma, https://arxiv.org/abs/1602.07868).

    ``w_o = g_o * v_o / ||v_o||_2`` per output filter o (norm over every axis but the last).

    Args:
      kernel: v, HWIO or (in, out).
      scale: g, shape (out,); None means 1 (unit-norm filters).
      epsilon: by default inside the root, ``sqrt(||v||^2 + eps)``; a guard for zero filters.
      epsilon_on_norm: use ``||v|| + eps`` instead, as the Beyond-BatchNorm repo (eps 1e-5).
    """
    _stats.check_kernel(kernel, 'weight_norm')
    axes = _fan_in_axes(kernel)
    fan_in = math.prod(kernel.shape[a] for a in axes)
    _, mean_square = _stats.moments(kernel, axes, center=False)
    squared_norm = mean_square * fan_in
    if not epsilon_on_norm:
        return _stats.normalize(kernel, None, squared_norm, epsilon=epsilon, scale=scale)
    multiplier = 1.0 / (jnp.sqrt(squared_norm) + epsilon)
    if scale is not None:
        multiplier = multiplier * scale.astype(jnp.float32)
    return _stats.affine(kernel.astype(jnp.float32), multiplier, None, kernel.dtype)


def scaled_weight_standardization(kernel: Array, gain: Array | None = None, *,
                                  epsilon: float = 1e-5, epsilon_on_std: bool = False,
                                  activation_gain: float = RELU_GAIN) -> Array:
    """Scaled Weight Standardization (Brock et al., https://arxiv.org/abs/2101.08692).

    ``w_o = gamma * g_o * (v_o - mean(v_o)) / (std(v_o) * sqrt(fan_in))`` per output filter,
    std biased; ``gamma`` = sqrt(2 pi / (pi - 1)) for ReLU. Weight Standardization without the
    gains is Qiao et al., https://arxiv.org/abs/1903.10520.

    Args:
      kernel: v, HWIO or (in, out); fan_in = product of all but the last axis.
      gain: g, learnable shape (out,); None means 1.
      epsilon: by default added to the variance, ``sqrt(var + eps)``.
      epsilon_on_std: use ``std + eps`` instead, as the Beyond-BatchNorm repo.
      activation_gain: gamma, the nonlinearity's gain.
    """
    _stats.check_kernel(kernel, 'scaled_weight_standardization')
    axes = _fan_in_axes(kernel)
    fan_in = math.prod(kernel.shape[a] for a in axes)
    mean, var = _stats.moments(kernel, axes)
    per_filter_gain = jnp.asarray(activation_gain / math.sqrt(fan_in), jnp.float32)
    if gain is not None:
        per_filter_gain = per_filter_gain * gain.astype(jnp.float32)
    if not epsilon_on_std:
        return _stats.normalize(kernel, mean, var, epsilon=epsilon, scale=per_filter_gain)
    multiplier = per_filter_gain / (jnp.sqrt(var) + epsilon)
    return _stats.affine(kernel.astype(jnp.float32) - mean, multiplier, None, kernel.dtype)


def weight_center(kernel: Array) -> Array:
    """Weight centering: ``w_o = v_o - mean(v_o)`` per output filter.

    The weight-centered conv of the Beyond-BatchNorm code and MimicNorm's weight-mean projection
    (Fei et al., https://arxiv.org/abs/2010.09278).
    """
    _stats.check_kernel(kernel, 'weight_center')
    mean, _ = _stats.moments(kernel, _fan_in_axes(kernel))
    return (kernel.astype(jnp.float32) - mean).astype(kernel.dtype)
