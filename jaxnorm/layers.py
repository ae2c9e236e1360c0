"""Flax (linen) normalization layers and the ``get_norm`` registry used by every model.

Every model in :mod:`jaxnorm.models` builds its conv -> norm -> activation stacks from a
:class:`NormSpec` returned by :func:`get_norm`, so a normalizer is chosen by name::

    spec = get_norm('bn', momentum=0.9)
    x = spec.conv(64, (3, 3), name='conv1')(x)
    x = spec.norm(name='norm1')(x, train=train)
    x = spec.act(name='act1')(x, train=train)

Norm and activation modules share the call signature ``(x, *, train: bool)`` so models never
special-case a normalizer: layers that keep no running statistics ignore ``train``.

The layers are thin shells over :mod:`jaxnorm.functional`. Shared conventions: channels-last input (N, *spatial, C): NHWC images, (N, L, C) sequences, or
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
``mimic``       Identity            ReLU              nn.Conv (4)      yes    Identity
==============  ==================  ================  ===============  =====  ==================

``wc`` (weight centering alone) is not one of the Beyond-BatchNorm paper's nine; it is the
repo's weight-centered conv, kept for MimicNorm-style experiments.

(1) Instance statistics of a single value per (sample, feature) are constant, so IN is
undefined on dense features. (2) The EvoNorm in the act slot also normalizes dense features:
S0 over groups of features, B0 with instance variance 0. (3) The reparameterization applies to
convs only; Dense layers stay plain. Options passed to :func:`get_norm` go to the module in
the norm slot, the act slot (EvoNorms) or the conv (``wn``, ``sws``) and are checked against
its fields. (4) MimicNorm (:mod:`jaxnorm.mimicnorm`) changes the architecture through the
spec's other fields: centred N(0, 2/fan_in) conv init (2.8/fan_in in plain CNNs), residual
gains 1.2**2/k and a BN without affine on the logits; its options are ``min_fan_in`` and the
logit BN's fields. Training must chain :func:`jaxnorm.mimicnorm.weight_mean_projection`
(``make_optimizer`` does). :data:`BEYOND_BN_REPO_OPTIONS` holds the options that reproduce the
Beyond-BatchNorm repo's variants.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import functional as F
from jaxnorm import mimicnorm
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
      conv_init: kernel initializer of every conv (residual networks and default).
      plain_conv_init: kernel initializer of the convs of non-residual CNNs (VGG); None: the
        same as ``conv_init``.
      residual_scale: ``k -> s`` gives each residual block (k counted from 1 over the whole
        network) a learnable branch gain ``skip_gain`` starting at ``s``; None: no gain.
      logit_norm: module factory applied to the classifier's logits (named ``logit_norm``);
        None: the logits are the head's output.
    """

    name: str
    norm: Callable[..., nn.Module]
    act: Callable[..., nn.Module]
    conv: Callable[..., nn.Module] = nn.Conv
    conv_bias: bool = False
    dense_norm: Callable[..., nn.Module] | None = None
    conv_init: Initializer = conv_kernel_init
    plain_conv_init: Initializer | None = None
    residual_scale: Callable[[int], float] | None = None
    logit_norm: Callable[..., nn.Module] | None = None


_SIMPLE_TYPES = {'bool': (bool,), 'int': (int,), 'float': (int, float), 'str': (str,)}


def _check_option_type(norm_name: str, field: dataclasses.Field, value: Any) -> None:
    """TypeError unless ``value`` fits a field annotated with simple types (``int | None``)."""
    names = re.findall(r'\w+', str(field.type))
    if not names or not set(names) <= {*_SIMPLE_TYPES, 'None', 'Optional'}:
        return  # callables, dtypes, axis names: left to the module
    if value is None and ('None' in names or 'Optional' in names):
        return
    allowed = tuple(t for name in names for t in _SIMPLE_TYPES.get(name, ()))
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        raise TypeError(f'norm {norm_name!r}: option {field.name}={value!r} must be '
                        f'{" or ".join(names)}, got {type(value).__name__}')


def _configured(module: type[nn.Module], norm_name: str, options: dict[str, Any]):
    """``functools.partial(module, **options)`` after checking the options are its fields,
    of the fields' types, and accepted by the module's own checks."""
    fields = {f.name: f for f in dataclasses.fields(module)} if options else {}
    unknown = sorted(set(options) - set(fields) - {'parent', 'name'})
    if unknown:
        valid = sorted(set(f.name for f in dataclasses.fields(module)) - {'parent', 'name'})
        raise TypeError(f'norm {norm_name!r} got unknown options {unknown}; '
                        f'{module.__name__} accepts {valid}')
    for key, value in options.items():
        _check_option_type(norm_name, fields[key], value)
    required = [f for f in fields.values() if f.init and f.name not in ('parent', 'name')
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if options and not required:
        module(**options)  # the module's own range checks (momentum, epsilon) run now
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


def _mimic(*, min_fan_in: int = mimicnorm.MIN_FAN_IN, **options) -> NormSpec:
    """MimicNorm (arXiv:2010.09278): centred convs with biases, no body norm, residual
    scales 1.2**2 / k, N(0, 2 / fan_in) convs (2.8 in plain CNNs) and the last BN on the
    logits (``options``: :class:`jaxnorm.mimicnorm.LogitBatchNorm` fields)."""
    return NormSpec(
        'mimic', Identity, ReLU, conv_bias=True, dense_norm=Identity,
        conv_init=mimicnorm.centered_kernel_init(mimicnorm.RESIDUAL_GAIN, min_fan_in),
        plain_conv_init=mimicnorm.centered_kernel_init(mimicnorm.PLAIN_GAIN, min_fan_in),
        residual_scale=mimicnorm.residual_scale_init,
        logit_norm=_configured(mimicnorm.LogitBatchNorm, 'mimic', options))


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
    'mimic': _mimic,
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
