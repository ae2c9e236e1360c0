"""Private numerics shared by every normalizer in :mod:`jaxnorm.functional`.

Two helpers do all the arithmetic: :func:`moments` computes statistics and :func:`normalize`
applies them. The public functions only choose the reduction axes and the formula's pieces, so
float32 reductions, the numerically stable variance and the cross-device mean live in one place.
The remaining helpers validate inputs at trace time so that a wrong shape or dtype fails with a
message naming the function and the offending value instead of a broadcasting error deep in XLA.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

# The GroupNorm paper's default group count (Wu & He, arXiv:1803.08494, section 4).
DEFAULT_NUM_GROUPS = 32


def check_activation(x: jax.Array, fn_name: str, *, spatial: bool = False) -> None:
    """Raises unless ``x`` is a floating channels-last array (N, *spatial, C) of rank >= 2.

    (N, C) is a dense layer's output, (N, L, C) a sequence, (N, H, W, C) an image, (N, D, H,
    W, C) a volume: the statistics only distinguish the batch, spatial and channel axes.
    With ``spatial`` at least one spatial axis is required (per-example, per-channel
    statistics of an (N, C) input would normalize every entry by itself, to 0).
    """
    if x.ndim < 2 or (spatial and x.ndim < 3):
        needs = ('NHWC (N, H, W, C) or sequences (N, L, C): it needs a spatial axis' if spatial
                 else 'NHWC (N, H, W, C), sequences (N, L, C) or dense (N, C)')
        raise ValueError(f'{fn_name} expects channels-last input (N, *spatial, C): {needs}; '
                         f'got shape {tuple(x.shape)} (rank {x.ndim})')
    _check_floating(x, fn_name)


def check_kernel(kernel: jax.Array, fn_name: str) -> None:
    """Raises unless ``kernel`` is a floating flax kernel: HWIO, or (in, out) for Dense."""
    if kernel.ndim < 2:
        raise ValueError(
            f'{fn_name} expects a kernel with the output filters on the last axis, e.g. HWIO '
            f'(kh, kw, in, out) or (in, out); got shape {tuple(kernel.shape)} (rank {kernel.ndim})')
    _check_floating(kernel, fn_name)


def _check_floating(x: jax.Array, fn_name: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f'{fn_name} needs a floating-point input, got dtype {x.dtype}; cast it first, '
            f'e.g. x.astype(jnp.float32) (integer images also need scaling to [0, 1])')


def resolve_num_groups(channels: int, num_groups: int | None, group_size: int | None,
                       fn_name: str) -> int:
    """Number of channel groups G for a grouped normalizer, validated against C.

    Args:
      channels: C, the size of the last axis.
      num_groups: G, or None.
      group_size: C / G, or None. At most one of ``num_groups`` and ``group_size`` may be given.
      fn_name: used in error messages.

    Returns:
      G. With neither argument, the largest divisor of C not above 32: the GroupNorm paper's 32
      groups when 32 divides C, one group per channel for layers narrower than 32 (so narrow
      CIFAR ResNets work without configuration), and e.g. 25 for C = 100 (MNIST-1D's MLP).

    Raises:
      ValueError: both arguments given, a non-positive value, or C not divisible into the groups.
    """
    if num_groups is not None and group_size is not None:
        raise ValueError(f'{fn_name}: give num_groups or group_size, not both '
                         f'(got num_groups={num_groups}, group_size={group_size})')
    if group_size is not None:
        if group_size <= 0 or channels % group_size:
            raise ValueError(
                f'{fn_name}: channels C={channels} are not divisible into groups of size '
                f'{group_size} (group_size must divide C)')
        return channels // group_size
    if num_groups is None:
        return max(g for g in range(1, min(DEFAULT_NUM_GROUPS, channels) + 1)
                   if channels % g == 0)
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(
            f'{fn_name}: channels C={channels} are not divisible by num_groups G={num_groups}; '
            f'choose G dividing C, or pass group_size')
    return num_groups


def moments(x: jax.Array, axes: Sequence[int], *, center: bool = True,
            unbiased: bool = False, axis_name: Any = None,
            channel_groups: int | None = None) -> tuple[jax.Array | None, jax.Array]:
    """Mean and variance of ``x`` over ``axes`` in float32, keeping the reduced axes.

    The variance is two-pass, ``mean((x - mean(x))**2)``, not ``E[x^2] - E[x]^2``: the latter
    cancels catastrophically when |mean| >> std (for x = 1e4 + N(0, 1) in float32 it is off by
    orders of magnitude and can go negative). A mean of squares cannot be negative, so no
    clamp is needed.

    Args:
      x: input of any floating dtype; reduced in float32.
      axes: axes to reduce; must not include the last (channel) axis when ``channel_groups``
        is given.
      center: if False, skip the mean and return ``(None, mean(x**2))``, the uncentered second
        moment (Filter Response Normalization's nu^2).
      unbiased: multiply the variance by n / (n - 1) (Bessel; torch.var's default), with n the
        number of pooled elements over all devices. n = 1 gives variance 0, not NaN.
      axis_name: named axis (``jax.shard_map``/``vmap``) to average the statistics over with
        ``lax.pmean``, giving statistics of the global batch. Equal per-device sizes assumed.
      channel_groups: also pool the per-channel statistics over this many contiguous groups
        of the last axis (GroupNorm); every channel then holds its group's statistics.

    Returns:
      ``(mean, var)``, float32, with size-1 reduced axes; mean is None when ``center`` is False.
    """
    x32 = x.astype(jnp.float32)
    if center:
        mean = jnp.mean(x32, axis=tuple(axes), keepdims=True)
        if axis_name is not None:
            mean = lax.pmean(mean, axis_name)
        # Deviations from a constant c = stop_gradient(mean) spare the backward pass a full
        # reduction over x (about 20% of a BatchNorm forward+backward on CPU). Since
        # var = E[(x - c)^2] - (E[x] - c)^2 for *any* constant c, subtracting the second term
        # (exactly 0 in value) keeps every derivative exact, Hessians included; without it
        # first derivatives are right but second ones (jvp of grad) are not.
        constant = lax.stop_gradient(mean)
        deviation = x32 - constant
    else:
        mean, deviation = None, x32
    var = jnp.mean(jnp.square(deviation), axis=tuple(axes), keepdims=True)
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    if center:
        var = var - jnp.square(mean - constant)
    count = math.prod(x.shape[a] for a in axes)
    if channel_groups is not None:
        mean, var = _pool_channel_groups(mean, var, channel_groups)
        count *= x.shape[-1] // channel_groups
    if unbiased:
        if axis_name is not None:
            count *= lax.axis_size(axis_name)
        var = var * (count / max(count - 1, 1))
    return mean, var


def _pool_channel_groups(mean: jax.Array | None, var: jax.Array,
                         groups: int) -> tuple[jax.Array | None, jax.Array]:
    """Statistics of groups of equal-sized channels from the channels' own statistics.

    Exact by the law of total variance: var_group = mean(var_c) + mean((mean_c -
    mean_group)^2). Reducing per channel first, then over C/G values, is about twice as fast on
    CPU as reducing a (..., G, C/G) view over its non-contiguous axes, and no less accurate.
    """
    shape = var.shape
    split = functools.partial(jnp.reshape, shape=(*shape[:-1], groups, shape[-1] // groups))

    def per_channel(group_stat):
        return jnp.broadcast_to(group_stat, split(var).shape).reshape(shape)

    within = jnp.mean(split(var), axis=-1, keepdims=True)
    if mean is None:
        return None, per_channel(within)
    channel_means = split(mean)
    group_mean = jnp.mean(channel_means, axis=-1, keepdims=True)
    # As in moments: spread about a constant, minus the (zero-valued) square of the mean's
    # offset from it, is exact to every order of differentiation and cheap to backpropagate.
    constant = lax.stop_gradient(group_mean)
    between = (jnp.mean(jnp.square(channel_means - constant), axis=-1, keepdims=True)
               - jnp.square(group_mean - constant))
    return per_channel(group_mean), per_channel(within + between)


def normalize(x: jax.Array, mean: jax.Array | None, var: jax.Array, *, epsilon: Any,
              scale: jax.Array | None = None, bias: jax.Array | None = None,
              dtype: Any = None) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias``, computed in float32.

    Args:
      x: input; upcast to float32 (a no-op for float32 inputs).
      mean: broadcastable to ``x``, or None to skip centering.
      var: broadcastable to ``x``.
      epsilon: float or scalar array (FRN learns it), added to ``var`` inside the square root.
      scale: optional per-channel gain, broadcastable to ``x``.
      bias: optional per-channel shift, broadcastable to ``x``.
      dtype: output dtype; defaults to ``x.dtype``.
    """
    y = x.astype(jnp.float32)
    if mean is not None:
        y = y - mean
    # Folding the gain into the per-channel multiplier keeps one full-size multiply.
    multiplier = lax.rsqrt(var + epsilon)
    if scale is not None:
        multiplier = multiplier * scale.astype(jnp.float32)
    return affine(y, multiplier, bias, x.dtype if dtype is None else dtype)


def affine(y: jax.Array, multiplier: jax.Array | None, bias: jax.Array | None,
           dtype: Any) -> jax.Array:
    """``y * multiplier + bias`` (either optional), cast to ``dtype``."""
    if multiplier is not None:
        y = y * multiplier
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y.astype(dtype)
