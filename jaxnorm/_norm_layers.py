"""Activation normalizers as flax.linen modules, re-exported by :mod:`jaxnorm.layers`.

Each module is a thin shell over :mod:`jaxnorm.functional`: it creates the per-channel
parameters, keeps running statistics where the normalizer has them, and passes both to the
pure function. See :mod:`jaxnorm.layers` for the shared conventions and the registry.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import functional as F

Initializer = Callable[..., jax.Array]


class _AffineNorm(nn.Module):
    """Fields and parameters shared by the normalizers with a per-channel affine.

    Attributes:
      epsilon: added to the variance (inside the square root).
      dtype: output dtype; None keeps the input's.
      param_dtype: storage dtype of the parameters.
      use_scale: learn gamma (``params['scale']``).
      use_bias: learn beta (``params['bias']``).
      scale_init: initializer of gamma.
      bias_init: initializer of beta.
    """

    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    def __post_init__(self):
        if not self.epsilon >= 0:  # NaN fails too
            raise ValueError(f'{type(self).__name__}: epsilon must be >= 0 (it is added to a '
                             f'variance), got {self.epsilon}')
        super().__post_init__()

    def _scale_and_bias(self, channels: int) -> tuple[jax.Array | None, jax.Array | None]:
        scale = (self.param('scale', self.scale_init, (channels,), self.param_dtype)
                 if self.use_scale else None)
        bias = (self.param('bias', self.bias_init, (channels,), self.param_dtype)
                if self.use_bias else None)
        return scale, bias

    def _output(self, y: jax.Array) -> jax.Array:
        return y if self.dtype is None else y.astype(self.dtype)


def _running_average(running: jax.Array, batch: jax.Array, momentum: float) -> jax.Array:
    return momentum * running + (1.0 - momentum) * batch


class _RunningStatsNorm(_AffineNorm):
    """Fields of the normalizers that keep batch statistics (BN, VN, EvoNorm-B0).

    Attributes:
      momentum: flax convention, ``running = momentum * running + (1 - momentum) * batch``;
        the default 0.9 is torch's ``momentum=0.1`` (torch's convention is 1 - this value)
        and the Beyond-BatchNorm repo's keep fraction. flax's own default is 0.99.
      axis_name: named axis to average batch statistics over inside ``jax.shard_map`` (None:
        statistics of the local batch, i.e. per device under shard_map; under plain ``jit``
        with a batch-sharded input they are global anyway).
    """

    momentum: float = 0.9
    axis_name: Any = None

    def __post_init__(self):
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f'{type(self).__name__}: momentum must be in [0, 1] (the kept '
                             f'fraction of the running statistics, e.g. 0.9), got '
                             f'{self.momentum}')
        super().__post_init__()

    def _batch_axis_name(self) -> Any:
        # init runs outside shard_map, where the named axis is unbound; its statistics are
        # discarded anyway.
        return None if self.is_initializing() else self.axis_name

    def _running_var(self, channels: int) -> nn.Variable:
        return self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)


class BatchNorm(_RunningStatsNorm):
    """Batch Normalization (Ioffe & Szegedy, https://arxiv.org/abs/1502.03167).

    Train: ``y = (x - mu_B) / sqrt(sigma_B^2 + eps) * gamma + beta`` over (N, H, W) per channel
    (biased variance); eval: the running averages ``batch_stats['mean']``, ``['var']``.

    Attributes:
      running_mean_init: initial running mean; the Beyond-BatchNorm repo starts it at 1.
      running_var_unbiased: store the Bessel-corrected batch variance in the running average,
        as torch does (normalization always uses the biased one). Default: biased, as flax.
    """

    running_mean_init: float = 0.0
    running_var_unbiased: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        channels = x.shape[-1]
        running_mean = self.variable('batch_stats', 'mean', jnp.full, (channels,),
                                     self.running_mean_init, jnp.float32)
        running_var = self._running_var(channels)
        scale, bias = self._scale_and_bias(channels)
        if train:
            mean, var, stored_var = F.batch_norm_statistics(
                x, axis_name=self._batch_axis_name(),
                unbiased_running_var=self.running_var_unbiased)
            if not self.is_initializing():
                running_mean.value = _running_average(running_mean.value, mean, self.momentum)
                running_var.value = _running_average(running_var.value, stored_var,
                                                     self.momentum)
        else:
            mean, var = running_mean.value, running_var.value
        return self._output(F.batch_norm(x, mean=mean, var=var, scale=scale, bias=bias,
                                         epsilon=self.epsilon))


class VarianceNorm(_RunningStatsNorm):
    """Variance Normalization: :func:`jaxnorm.functional.variance_norm`, BN without centering.

    ``y = gamma * x / sqrt(sigma_B^2 + eps) + beta``; eval uses ``batch_stats['var']``.
    As in the Beyond-BatchNorm code (https://arxiv.org/abs/2106.05956).
    """

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        running_var = self._running_var(x.shape[-1])
        scale, bias = self._scale_and_bias(x.shape[-1])
        if train:
            _, var = F.batch_moments(x, axis_name=self._batch_axis_name())
            if not self.is_initializing():
                running_var.value = _running_average(running_var.value, var, self.momentum)
        else:
            var = running_var.value
        return self._output(F.variance_norm(x, var=var, scale=scale, bias=bias,
                                            epsilon=self.epsilon))


class EvoNormB0(_RunningStatsNorm):
    """EvoNorm-B0 (Liu et al., https://arxiv.org/abs/2004.02967): norm and activation in one.

    ``y = x / max(sqrt(sigma_B^2 + eps), v * x + sqrt(sigma_I^2 + eps)) * gamma + beta``;
    the batch variance is replaced by ``batch_stats['var']`` in eval. ``params['v']`` starts
    at 1. Goes in the act slot.

    Attributes:
      unbiased_instance_var: Bessel-corrected sigma_I^2, as the Beyond-BatchNorm repo.
      v_init: initializer of v.
    """

    unbiased_instance_var: bool = False
    v_init: Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        channels = x.shape[-1]
        running_var = self._running_var(channels)
        v = self.param('v', self.v_init, (channels,), self.param_dtype)
        scale, bias = self._scale_and_bias(channels)
        if train:
            _, batch_var = F.batch_moments(x, axis_name=self._batch_axis_name())
            if not self.is_initializing():
                running_var.value = _running_average(running_var.value, batch_var,
                                                     self.momentum)
        else:
            batch_var = running_var.value
        return self._output(F.evonorm_b0(
            x, v, batch_var=batch_var, scale=scale, bias=bias, epsilon=self.epsilon,
            unbiased_instance_var=self.unbiased_instance_var))


class LayerNorm(_AffineNorm):
    """Layer Normalization, CNN definition: :func:`jaxnorm.functional.layer_norm`.

    Statistics over (H, W, C) per sample, gamma and beta per channel: GroupNorm with one group
    (https://arxiv.org/abs/1607.06450, as used in arXiv:1803.08494 and arXiv:2106.05956).
    Equals ``flax.linen.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1)``.
    """

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        scale, bias = self._scale_and_bias(x.shape[-1])
        return self._output(F.layer_norm(x, scale=scale, bias=bias, epsilon=self.epsilon))


class InstanceNorm(_AffineNorm):
    """Instance Normalization (https://arxiv.org/abs/1607.08022): statistics over (H, W).

    GroupNorm with group size 1; equals ``flax.linen.InstanceNorm``.
    """

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        scale, bias = self._scale_and_bias(x.shape[-1])
        return self._output(F.instance_norm(x, scale=scale, bias=bias, epsilon=self.epsilon))


class GroupNorm(_AffineNorm):
    """Group Normalization (Wu & He, https://arxiv.org/abs/1803.08494).

    Attributes:
      num_groups: G; or set ``group_size`` = C / G. Neither: the largest divisor of C up to
        32, i.e. the paper's 32 groups, with one channel per group below 32 channels.
      group_size: channels per group.
      unbiased: Bessel-corrected group variance, as the Beyond-BatchNorm repo (torch.var).
    """

    num_groups: int | None = None
    group_size: int | None = None
    unbiased: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        scale, bias = self._scale_and_bias(x.shape[-1])
        return self._output(F.group_norm(
            x, num_groups=self.num_groups, group_size=self.group_size, scale=scale, bias=bias,
            epsilon=self.epsilon, unbiased=self.unbiased))


class EvoNormS0(_AffineNorm):
    """EvoNorm-S0 (Liu et al., https://arxiv.org/abs/2004.02967): norm and activation in one.

    ``y = x * sigmoid(v * x) / sqrt(sigma_g^2 + eps) * gamma + beta`` with GroupNorm's groups;
    ``params['v']`` starts at 1. Goes in the act slot.

    Attributes:
      num_groups: G; or set ``group_size``. Neither: the largest divisor of C up to 32. The
        Beyond-BatchNorm repo hard-codes 32 groups (``num_groups=32``), which needs C divisible by 32.
      group_size: channels per group.
      unbiased: Bessel-corrected group variance, as the Beyond-BatchNorm repo.
      v_init: initializer of v.
    """

    num_groups: int | None = None
    group_size: int | None = None
    unbiased: bool = False
    v_init: Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        v = self.param('v', self.v_init, (x.shape[-1],), self.param_dtype)
        scale, bias = self._scale_and_bias(x.shape[-1])
        return self._output(F.evonorm_s0(
            x, v, num_groups=self.num_groups, group_size=self.group_size, scale=scale,
            bias=bias, epsilon=self.epsilon, unbiased=self.unbiased))


class FilterResponseNorm(_AffineNorm):
    """Filter Response Normalization (Singh & Krishnan, https://arxiv.org/abs/1911.09737).

    ``y = gamma * x / sqrt(mean_{H,W}(x^2) + eps_eff) + beta`` with ``eps_eff = epsilon +
    |params['epsilon']|`` when ``learn_epsilon``: the paper learns epsilon, which matters when
    H = W = 1 (dense layers), where the normalization alone is nearly sign(x). Pair with
    :class:`TLU`.

    Attributes:
      epsilon: the fixed floor of eps_eff (the paper's constant 1e-6).
      learn_epsilon: add a learned |epsilon| (a scalar).
      learned_epsilon_init: its initial value (the Beyond-BatchNorm repo's 1e-5).
    """

    epsilon: float = 1e-6
    learn_epsilon: bool = True
    learned_epsilon_init: float = 1e-5

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        scale, bias = self._scale_and_bias(x.shape[-1])
        epsilon = self.epsilon
        if self.learn_epsilon:
            learned = self.param('epsilon', nn.initializers.constant(self.learned_epsilon_init),
                                 (), self.param_dtype)
            epsilon = epsilon + jnp.abs(learned.astype(jnp.float32))
        return self._output(F.filter_response_norm(x, scale=scale, bias=bias, epsilon=epsilon))
