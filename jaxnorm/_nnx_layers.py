"""Activation normalizers and activations as flax.nnx modules, re-exported by :mod:`jaxnorm.nnx`.

Each class is the NNX twin of the Linen module of the same name in :mod:`jaxnorm.layers`:
the same options and defaults, the same parameters, and the same call into
:mod:`jaxnorm.functional`. The option checks are the Linen twin's own (each constructor
builds the Linen module from the checked options once, so a bad ``momentum`` or ``epsilon``
fails with the same message), and the running averages use the Linen layers' update.
See :mod:`jaxnorm.nnx` for the conventions.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxnorm import _norm_layers as linen_norms
from jaxnorm import _stats
from jaxnorm import functional as F
from jaxnorm import layers as linen_layers
from jaxnorm import mimicnorm
from jaxnorm._norm_layers import _running_average

Initializer = Callable[..., jax.Array]


class _Parameterless(nnx.Module):
    """Shared constructor of the slots without parameters: ``(num_features=None, *, rngs=None)``,
    both ignored, so every registry factory is called the same way."""

    def __init__(self, num_features: int | None = None, *, rngs: nnx.Rngs | None = None):
        del rngs
        self.num_features = num_features


class Identity(_Parameterless):
    """The empty normalizer / activation slot."""

    def __call__(self, x):
        return x


class ReLU(_Parameterless):
    """``max(x, 0)`` (:func:`jax.nn.relu`)."""

    def __call__(self, x):
        return nn.relu(x)


class CenteredReLU(_Parameterless):
    """:func:`jaxnorm.functional.centered_relu`: ReLU with mean 0, variance 1 on N(0, 1)."""

    def __call__(self, x):
        return F.centered_relu(x)


class TLU(nnx.Module):
    """Thresholded Linear Unit ``max(x, tau)``, :func:`jaxnorm.functional.tlu` (arXiv:1911.09737).

    Args:
      num_features: channels C; ``tau`` has shape (C,).
      tau_init: initializer of tau (zeros: starts as ReLU).
      param_dtype: storage dtype of tau.
      rngs: ``nnx.Rngs`` for the initializer (``rngs.params()``).
    """

    def __init__(self, num_features: int, *, tau_init: Initializer = nn.initializers.zeros,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.num_features = num_features
        self.tau_init = tau_init
        self.param_dtype = param_dtype
        self.tau = nnx.Param(tau_init(rngs.params(), (num_features,), param_dtype))

    def __call__(self, x):
        _check_channels(self, x)
        return F.tlu(x, self.tau[...])


def _check_channels(module: nnx.Module, x: jax.Array) -> None:
    # Rank and dtype errors are left to the functional core, which names the function.
    if x.ndim >= 2 and x.shape[-1] != module.num_features:
        raise ValueError(f'{type(module).__name__} was built for num_features='
                         f'{module.num_features} channels, got input of shape '
                         f'{tuple(x.shape)} with {x.shape[-1]} on the last (channel) axis')


class _AffineNorm(nnx.Module):
    """Options and parameters shared by the normalizers with a per-channel affine.

    Args:
      num_features: channels C (the last axis of the input).
      epsilon: added to the variance (inside the square root).
      dtype: output dtype; None keeps the input's.
      param_dtype: storage dtype of the parameters (statistics are float32 regardless).
      use_scale: learn gamma (``self.scale``, an ``nnx.Param`` of shape (C,)).
      use_bias: learn beta (``self.bias``).
      scale_init: initializer of gamma.
      bias_init: initializer of beta.
      rngs: ``nnx.Rngs`` for the initializers (``rngs.params()``), as flax's nnx norms.
    """

    _linen: type[nn.Module]  # the Linen twin, whose checks run on the same options
    _linen_names: dict[str, str] = {}  # NNX attribute -> Linen variable name, where they differ

    def __init__(self, num_features: int, *, epsilon: float = 1e-5, dtype: Any = None,
                 param_dtype: Any = jnp.float32, use_scale: bool = True, use_bias: bool = True,
                 scale_init: Initializer = nn.initializers.ones,
                 bias_init: Initializer = nn.initializers.zeros, rngs: nnx.Rngs):
        self._linen(epsilon=epsilon)
        self.num_features = num_features
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_scale = use_scale
        self.use_bias = use_bias
        self.scale_init = scale_init
        self.bias_init = bias_init
        shape = (num_features,)
        self.scale = (nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale
                      else nnx.data(None))
        self.bias = (nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias
                     else nnx.data(None))

    def _scale_and_bias(self, x: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
        _check_channels(self, x)
        return (None if self.scale is None else self.scale[...],
                None if self.bias is None else self.bias[...])

    def _output(self, y: jax.Array) -> jax.Array:
        return y if self.dtype is None else y.astype(self.dtype)


class _RunningStatsNorm(_AffineNorm):
    """Options of the normalizers that keep batch statistics (BN, VN, EvoNorm-B0).

    Args:
      momentum: flax convention, ``running = momentum * running + (1 - momentum) * batch``
        (0.9 is torch's ``momentum=0.1``; flax's own default is 0.99).
      axis_name: named axis to average batch statistics over inside ``jax.shard_map``.
      use_running_average: normalize with the running statistics (eval) instead of the
        batch's (train, which also updates them). False by default, as ``nnx.BatchNorm``;
        ``model.eval()`` / ``model.train()`` set it, a call's argument overrides it.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.9, axis_name: Any = None,
                 use_running_average: bool | None = False, **options):
        self._linen(momentum=momentum)
        super().__init__(num_features, **options)
        self.momentum = momentum
        self.axis_name = axis_name
        self.use_running_average = use_running_average
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def _training(self, use_running_average: bool | None) -> bool:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average is None:
            raise ValueError(
                f'{type(self).__name__}: use_running_average is None; pass it to the '
                'constructor or the call, or set it with model.train() / model.eval()')
        return not use_running_average

    def _update(self, stat: nnx.BatchStat, batch: jax.Array) -> None:
        # stop_gradient as nnx.BatchNorm: the running average is state, not part of the loss.
        stat[...] = lax.stop_gradient(_running_average(stat[...], batch, self.momentum))

    def set_view(self, use_running_average: bool | None = None):
        """Used by ``nnx.view(model, use_running_average=...)``, as ``nnx.BatchNorm``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class BatchNorm(_RunningStatsNorm):
    """Batch Normalization (arXiv:1502.03167): :func:`jaxnorm.functional.batch_norm`.

    Train: batch mean and biased variance over (N, H, W) per channel, which also update
    ``self.mean`` / ``self.var`` (``nnx.BatchStat``); eval: those running averages.

    Args:
      running_mean_init: initial running mean; the Beyond-BatchNorm repo starts it at 1.
      running_var_unbiased: store the Bessel-corrected batch variance in the running average,
        as torch does (normalization always uses the biased one).
      **options: as :class:`_RunningStatsNorm` and :class:`_AffineNorm`.
    """

    _linen = linen_norms.BatchNorm

    def __init__(self, num_features: int, *, running_mean_init: float = 0.0,
                 running_var_unbiased: bool = False, **options):
        super().__init__(num_features, **options)
        self.running_mean_init = running_mean_init
        self.running_var_unbiased = running_var_unbiased
        self.mean = nnx.BatchStat(jnp.full((num_features,), running_mean_init, jnp.float32))

    def __call__(self, x, use_running_average: bool | None = None):
        scale, bias = self._scale_and_bias(x)
        if self._training(use_running_average):
            mean, var, stored_var = F.batch_norm_statistics(
                x, axis_name=self.axis_name, unbiased_running_var=self.running_var_unbiased)
            self._update(self.mean, mean)
            self._update(self.var, stored_var)
        else:
            mean, var = self.mean[...], self.var[...]
        return self._output(F.batch_norm(x, mean=mean, var=var, scale=scale, bias=bias,
                                         epsilon=self.epsilon))


class LogitBatchNorm(BatchNorm):
    """MimicNorm's last BN (:class:`jaxnorm.mimicnorm.LogitBatchNorm`): BatchNorm over the
    logits without scale or bias (arXiv:2010.09278)."""

    _linen = mimicnorm.LogitBatchNorm

    def __init__(self, num_features: int, *, use_scale: bool = False, use_bias: bool = False,
                 enabled: bool = True, **options):
        super().__init__(num_features, use_scale=use_scale, use_bias=use_bias, **options)
        self.enabled = enabled  # False: the identity (MimicNorm's weight-mean-only ablation)

    def __call__(self, x, use_running_average: bool | None = None):
        return super().__call__(x, use_running_average) if self.enabled else x


class VarianceNorm(_RunningStatsNorm):
    """Variance Normalization, BN without centering: :func:`jaxnorm.functional.variance_norm`.

    ``y = gamma * x / sqrt(sigma_B^2 + eps) + beta``; eval uses ``self.var`` (arXiv:2106.05956).
    """

    _linen = linen_norms.VarianceNorm

    def __call__(self, x, use_running_average: bool | None = None):
        scale, bias = self._scale_and_bias(x)
        if self._training(use_running_average):
            _, var = F.batch_moments(x, axis_name=self.axis_name)
            self._update(self.var, var)
        else:
            var = self.var[...]
        return self._output(F.variance_norm(x, var=var, scale=scale, bias=bias,
                                            epsilon=self.epsilon))


class EvoNormB0(_RunningStatsNorm):
    """EvoNorm-B0 (https://arxiv.org/abs/2004.02967): :func:`jaxnorm.functional.evonorm_b0`.

    Norm and activation in one (the act slot); ``self.v`` starts at 1; the batch variance is
    ``self.var`` in eval.

    Args:
      unbiased_instance_var: Bessel-corrected instance variance, as the Beyond-BatchNorm repo.
      v_init: initializer of v.
      **options: as :class:`_RunningStatsNorm` and :class:`_AffineNorm`.
    """

    _linen = linen_norms.EvoNormB0

    def __init__(self, num_features: int, *, unbiased_instance_var: bool = False,
                 v_init: Initializer = nn.initializers.ones, rngs: nnx.Rngs, **options):
        super().__init__(num_features, rngs=rngs, **options)
        self.unbiased_instance_var = unbiased_instance_var
        self.v_init = v_init
        self.v = nnx.Param(v_init(rngs.params(), (num_features,), self.param_dtype))

    def __call__(self, x, use_running_average: bool | None = None):
        scale, bias = self._scale_and_bias(x)
        if self._training(use_running_average):
            _, batch_var = F.batch_moments(x, axis_name=self.axis_name)
            self._update(self.var, batch_var)
        else:
            batch_var = self.var[...]
        return self._output(F.evonorm_b0(
            x, self.v[...], batch_var=batch_var, scale=scale, bias=bias, epsilon=self.epsilon,
            unbiased_instance_var=self.unbiased_instance_var))


class LayerNorm(_AffineNorm):
    """Layer Normalization, CNN definition: :func:`jaxnorm.functional.layer_norm`.

    Statistics over (H, W, C) per sample, gamma and beta per channel: GroupNorm with one
    group. On (N, C) input it is the usual LayerNorm (``nnx.LayerNorm(C)``).
    """

    _linen = linen_norms.LayerNorm

    def __call__(self, x):
        scale, bias = self._scale_and_bias(x)
        return self._output(F.layer_norm(x, scale=scale, bias=bias, epsilon=self.epsilon))


class InstanceNorm(_AffineNorm):
    """Instance Normalization (https://arxiv.org/abs/1607.08022):
    :func:`jaxnorm.functional.instance_norm`, statistics over (H, W); needs a spatial axis."""

    _linen = linen_norms.InstanceNorm

    def __call__(self, x):
        scale, bias = self._scale_and_bias(x)
        return self._output(F.instance_norm(x, scale=scale, bias=bias, epsilon=self.epsilon))


class _GroupedNorm(_AffineNorm):
    """Group options; G is resolved (and checked against C) at construction."""

    _function_name: str

    def __init__(self, num_features: int, *, num_groups: int | None = None,
                 group_size: int | None = None, unbiased: bool = False, **options):
        # The functional core's check and message, raised now rather than at the first call.
        _stats.resolve_num_groups(num_features, num_groups, group_size, self._function_name)
        super().__init__(num_features, **options)
        self.num_groups = num_groups
        self.group_size = group_size
        self.unbiased = unbiased


class GroupNorm(_GroupedNorm):
    """Group Normalization (arXiv:1803.08494): :func:`jaxnorm.functional.group_norm`.

    Args:
      num_groups: G; or ``group_size`` = C / G. Neither: the largest divisor of C up to 32.
      group_size: channels per group.
      unbiased: Bessel-corrected group variance, as the Beyond-BatchNorm repo.
      **options: as :class:`_AffineNorm`.
    """

    _linen = linen_norms.GroupNorm
    _function_name = 'group_norm'

    def __call__(self, x):
        scale, bias = self._scale_and_bias(x)
        return self._output(F.group_norm(
            x, num_groups=self.num_groups, group_size=self.group_size, scale=scale, bias=bias,
            epsilon=self.epsilon, unbiased=self.unbiased))


class EvoNormS0(_GroupedNorm):
    """EvoNorm-S0 (https://arxiv.org/abs/2004.02967): :func:`jaxnorm.functional.evonorm_s0`.

    Norm and activation in one (the act slot); groups as :class:`GroupNorm` (the
    Beyond-BatchNorm repo: ``num_groups=32``); ``self.v`` starts at 1.

    Args:
      v_init: initializer of v.
      **options: as :class:`GroupNorm`.
    """

    _linen = linen_norms.EvoNormS0
    _function_name = 'evonorm_s0'

    def __init__(self, num_features: int, *, v_init: Initializer = nn.initializers.ones,
                 rngs: nnx.Rngs, **options):
        super().__init__(num_features, rngs=rngs, **options)
        self.v_init = v_init
        self.v = nnx.Param(v_init(rngs.params(), (num_features,), self.param_dtype))

    def __call__(self, x):
        scale, bias = self._scale_and_bias(x)
        return self._output(F.evonorm_s0(
            x, self.v[...], num_groups=self.num_groups, group_size=self.group_size,
            scale=scale, bias=bias, epsilon=self.epsilon, unbiased=self.unbiased))


class FilterResponseNorm(_AffineNorm):
    """Filter Response Normalization (https://arxiv.org/abs/1911.09737):
    :func:`jaxnorm.functional.filter_response_norm`; pair with :class:`TLU`.

    ``y = gamma * x / sqrt(mean_{H,W}(x^2) + eps_eff) + beta``, ``eps_eff = epsilon +
    |learned_epsilon|`` when ``learn_epsilon``. The learned scalar is the attribute
    ``learned_epsilon`` (Linen: ``params['epsilon']``; the option ``epsilon`` keeps its name).

    Args:
      epsilon: the fixed floor of eps_eff (the paper's 1e-6).
      learn_epsilon: add a learned |epsilon| (a scalar ``nnx.Param``).
      learned_epsilon_init: its initial value (the Beyond-BatchNorm repo's 1e-5).
      **options: as :class:`_AffineNorm`.
    """

    _linen = linen_norms.FilterResponseNorm
    _linen_names = {'learned_epsilon': 'epsilon'}

    def __init__(self, num_features: int, *, epsilon: float = 1e-6, learn_epsilon: bool = True,
                 learned_epsilon_init: float = 1e-5, **options):
        super().__init__(num_features, epsilon=epsilon, **options)
        self.learn_epsilon = learn_epsilon
        self.learned_epsilon_init = learned_epsilon_init
        self.learned_epsilon = (
            nnx.Param(jnp.asarray(learned_epsilon_init, self.param_dtype)) if learn_epsilon
            else nnx.data(None))

    def __call__(self, x):
        scale, bias = self._scale_and_bias(x)
        epsilon = self.epsilon
        if self.learned_epsilon is not None:
            epsilon = epsilon + jnp.abs(self.learned_epsilon[...].astype(jnp.float32))
        return self._output(F.filter_response_norm(x, scale=scale, bias=bias, epsilon=epsilon))


# Linen module -> NNX twin, for the registry's translation and the tests.
LINEN_TWINS: dict[Any, type[nnx.Module]] = {
    linen_layers.Identity: Identity, linen_layers.ReLU: ReLU,
    linen_layers.CenteredReLU: CenteredReLU, linen_layers.TLU: TLU,
    linen_norms.BatchNorm: BatchNorm, linen_norms.LayerNorm: LayerNorm,
    linen_norms.InstanceNorm: InstanceNorm, linen_norms.GroupNorm: GroupNorm,
    linen_norms.FilterResponseNorm: FilterResponseNorm,
    linen_norms.VarianceNorm: VarianceNorm, linen_norms.EvoNormB0: EvoNormB0,
    linen_norms.EvoNormS0: EvoNormS0, mimicnorm.LogitBatchNorm: LogitBatchNorm,
}
