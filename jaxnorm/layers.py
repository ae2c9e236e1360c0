"""Flax (linen) normalization layers and the ``get_norm`` registry used by every model.

Every model in :mod:`jaxnorm.models` builds its conv -> norm -> activation stacks from a
:class:`NormSpec` returned by :func:`get_norm`, so a normalizer is chosen by name::

    spec = get_norm('bn', momentum=0.9)
    x = spec.conv(64, (3, 3), name='conv1')(x)
    x = spec.norm(name='norm1')(x, train=train)
    x = spec.act(name='act1')(x, train=train)

Norm and activation modules share the call signature ``(x, *, train: bool)`` so models never
special-case a normalizer: layers that keep no running statistics ignore ``train``.

The layers are thin shells over :mod:`jaxnorm.functional`. Shared conventions: NHWC input, or
(N, C) after a Dense layer; per-channel ``scale`` (gamma) and ``bias`` (beta) in ``params``;
running statistics in ``batch_stats``, updated only when ``train`` and not during ``init``;
statistics in float32; ``param_dtype`` is the parameters' storage dtype and ``dtype`` the
output dtype (None keeps the input's dtype, unlike flax, which promotes bf16 inputs with
float32 parameters to float32).

Registry (``conv_bias``: whether convs carry a bias; ``dense_norm``: after an MLP's Dense):

==============  ==================  ================  ===============  =====  ==================
name            norm slot           act slot          conv             bias   dense_norm
==============  ==================  ================  ===============  =====  ==================
``bn``          BatchNorm           ReLU              nn.Conv          no     BatchNorm
``ln``          LayerNorm           ReLU              nn.Conv          no     LayerNorm
``in``          InstanceNorm        ReLU              nn.Conv          no     Identity (1)
``gn``          GroupNorm           ReLU              nn.Conv          no     GroupNorm
``frn``         FilterResponseNorm  TLU               nn.Conv          no     FilterResponseNorm
``vn``          VarianceNorm        ReLU              nn.Conv          no     VarianceNorm
``evonorm_b0``  Identity            EvoNormB0         nn.Conv          no     Identity (2)
``evonorm_s0``  Identity            EvoNormS0         nn.Conv          no     Identity (2)
``wn``          Identity            CenteredReLU      WeightNormConv   yes    Identity (3)
``sws``         Identity            ReLU              ScaledWSConv     yes    Identity (3)
``wc``          Identity            ReLU              CenteredConv     yes    Identity (3)
``none``        Identity            ReLU              nn.Conv          yes    Identity
==============  ==================  ================  ===============  =====  ==================

``wc`` (weight centering alone) is not one of the Beyond-BatchNorm paper's nine; it is the
repo's weight-centered conv, kept for MimicNorm-style experiments.

(1) Instance statistics of a single value per (sample, feature) are constant, so IN is
undefined on dense features. (2) The EvoNorm in the act slot also normalizes dense features:
S0 over groups of features, B0 with instance variance 0. (3) The reparameterization applies to
convs only; Dense layers stay plain. Options passed to :func:`get_norm` go to the module in
the norm slot, the act slot (EvoNorms) or the conv (``wn``, ``sws``) and are checked against
its fields. :data:`BEYOND_BN_REPO_OPTIONS` holds the options that reproduce the
Beyond-BatchNorm repo's variants.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import functional as F
from jaxnorm._convs import CenteredConv, ScaledWSConv, WeightNormConv
from jaxnorm._norm_layers import (BatchNorm, EvoNormB0, EvoNormS0, FilterResponseNorm,
                                  GroupNorm, InstanceNorm, LayerNorm, VarianceNorm)

# Kaiming-normal, fan_in, ReLU gain: std = sqrt(2 / fan_in), as torch's kaiming_normal_.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

Initializer = Callable[..., jax.Array]


class Identity(nn.Module):
    """The empty normalizer / activation slot."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return x


class ReLU(nn.Module):
    """ReLU with the shared ``(x, *, train)`` signature."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.relu(x)


class CenteredReLU(nn.Module):
    """:func:`jaxnorm.functional.centered_relu`: ReLU with mean 0, variance 1 on N(0, 1)."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return F.centered_relu(x)


class TLU(nn.Module):
    """Thresholded Linear Unit ``max(x, tau)`` with learned per-channel tau (arXiv:1911.09737).

    Attributes:
      tau_init: initializer of tau (zeros: starts as ReLU).
      param_dtype: storage dtype of tau.
    """

    tau_init: Initializer = nn.initializers.zeros
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        tau = self.param('tau', self.tau_init, (x.shape[-1],), self.param_dtype)
        return F.tlu(x, tau)


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """What a model needs to build one normalizer family.

    Attributes:
      name: registry name.
      norm: module factory for the normalizer slot (called with ``name=``).
      act: module factory for the activation slot; EvoNorms and FRN's TLU live here.
      conv: conv module class (``nn.Conv`` or a weight-reparameterized conv).
      conv_bias: whether convs carry a bias (true for weight-only normalizers).
      dense_norm: module factory used after hidden Dense layers of an MLP.
    """

    name: str
    norm: Callable[..., nn.Module]
    act: Callable[..., nn.Module]
    conv: Callable[..., nn.Module] = nn.Conv
    conv_bias: bool = False
    dense_norm: Callable[..., nn.Module] | None = None


def _configured(module: type[nn.Module], norm_name: str, options: dict[str, Any]):
    """``functools.partial(module, **options)`` after checking the options are its fields."""
    valid = {f.name for f in dataclasses.fields(module)} - {'parent', 'name'}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f'norm {norm_name!r} got unknown options {unknown}; '
                        f'{module.__name__} accepts {sorted(valid)}')
    return functools.partial(module, **options) if options else module


def _plain_conv_family(name: str, norm: type[nn.Module], *, act=ReLU, dense=True):
    def build(**options) -> NormSpec:
        configured = _configured(norm, name, options)
        return NormSpec(name, configured, act, dense_norm=configured if dense else Identity)
    return build


def _act_family(name: str, act: type[nn.Module]):
    def build(**options) -> NormSpec:
        return NormSpec(name, Identity, _configured(act, name, options), dense_norm=Identity)
    return build


def _conv_family(name: str, conv: type[nn.Module], *, act=ReLU):
    def build(**options) -> NormSpec:
        return NormSpec(name, Identity, act, conv=_configured(conv, name, options),
                        conv_bias=True, dense_norm=Identity)
    return build


def _none(**options) -> NormSpec:
    if options:
        raise TypeError(f"norm 'none' takes no options, got {sorted(options)}")
    return NormSpec('none', Identity, ReLU, conv_bias=True, dense_norm=Identity)


_REGISTRY: dict[str, Callable[..., NormSpec]] = {
    'bn': _plain_conv_family('bn', BatchNorm),
    'ln': _plain_conv_family('ln', LayerNorm),
    'in': _plain_conv_family('in', InstanceNorm, dense=False),
    'gn': _plain_conv_family('gn', GroupNorm),
    'frn': _plain_conv_family('frn', FilterResponseNorm, act=TLU),
    'vn': _plain_conv_family('vn', VarianceNorm),
    'evonorm_b0': _act_family('evonorm_b0', EvoNormB0),
    'evonorm_s0': _act_family('evonorm_s0', EvoNormS0),
    'wn': _conv_family('wn', WeightNormConv, act=CenteredReLU),
    'sws': _conv_family('sws', ScaledWSConv),
    'wc': _conv_family('wc', CenteredConv),
    'none': _none,
}

# Options reproducing the Beyond-BatchNorm repo (arXiv:2106.05956, EkdeepSLubana/BeyondBatchNorm)
# where it departs from the standard definitions: get_norm(name, **BEYOND_BN_REPO_OPTIONS[name]).
BEYOND_BN_REPO_OPTIONS: dict[str, dict[str, Any]] = {
    'bn': {'running_mean_init': 1.0},
    'gn': {'unbiased': True},
    'frn': {'epsilon': 0.0},
    'evonorm_b0': {'unbiased_instance_var': True},
    'evonorm_s0': {'unbiased': True, 'num_groups': 32},
    'wn': {'epsilon': 1e-5, 'epsilon_on_norm': True, 'scale_init': nn.initializers.ones},
    'sws': {'epsilon_on_std': True},
}


def norm_names() -> tuple[str, ...]:
    """Registered normalizer names."""
    return tuple(_REGISTRY)


def get_norm(name: str | NormSpec, **kw) -> NormSpec:
    """Resolve a normalizer by registry name (options in ``kw``) into a :class:`NormSpec`.

    Raises:
      ValueError: unknown name (the message lists the valid ones).
      TypeError: an option the family's configurable module does not have.
    """
    if isinstance(name, NormSpec):
        if kw:
            raise TypeError('options cannot be applied to an already built NormSpec')
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**kw)


__all__ = [
    'BEYOND_BN_REPO_OPTIONS', 'BatchNorm', 'CenteredConv', 'CenteredReLU', 'EvoNormB0',
    'EvoNormS0', 'FilterResponseNorm', 'GroupNorm', 'Identity', 'InstanceNorm', 'LayerNorm',
    'NormSpec', 'ReLU', 'ScaledWSConv', 'TLU', 'VarianceNorm', 'WeightNormConv',
    'conv_kernel_init', 'get_norm', 'norm_names',
]
