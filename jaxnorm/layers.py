"""Flax (linen) normalization layers and the ``get_norm`` registry used by every model.

Every model in :mod:`jaxnorm.models` builds its conv -> norm -> activation stacks from a
:class:`NormSpec` returned by :func:`get_norm`, so a normalizer is chosen by name::

    spec = get_norm('bn', momentum=0.9)
    x = spec.conv(64, (3, 3), name='conv1')(x)
    x = spec.norm(name='norm1')(x, train=train)
    x = spec.act(name='act1')(x, train=train)

Norm and activation modules share the call signature ``(x, *, train: bool)`` so models never
special-case a normalizer: layers that keep no running statistics ignore ``train``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming-normal, fan_in, ReLU gain: std = sqrt(2 / fan_in), as torch's kaiming_normal_.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


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


class BatchNorm(nn.Module):
    """BatchNorm over (N, H, W) per channel with running statistics in ``batch_stats``.

    ``momentum`` follows the flax convention: ``running = momentum * running + (1 - momentum) *
    batch``; torch's ``momentum=0.1`` is ``momentum=0.9`` here (the default, as in the papers'
    PyTorch code). Placeholder over ``flax.linen.BatchNorm``; the normalizer issue replaces it
    with the shared float32 statistics helpers.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.BatchNorm(
            use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
            dtype=self.dtype, param_dtype=self.param_dtype, scale_init=self.scale_init,
            use_fast_variance=False, name='bn')(x)


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


def _bn(**kw) -> NormSpec:
    return NormSpec('bn', functools.partial(BatchNorm, **kw), ReLU,
                    dense_norm=functools.partial(BatchNorm, **kw))


def _none(**kw) -> NormSpec:
    if kw:
        raise TypeError(f"norm 'none' takes no options, got {sorted(kw)}")
    return NormSpec('none', Identity, ReLU, conv_bias=True, dense_norm=Identity)


_REGISTRY: dict[str, Callable[..., NormSpec]] = {'bn': _bn, 'none': _none}


def norm_names() -> tuple[str, ...]:
    """Registered normalizer names."""
    return tuple(_REGISTRY)


def get_norm(name: str | NormSpec, **kw) -> NormSpec:
    """Resolve a normalizer by registry name (options in ``kw``) into a :class:`NormSpec`."""
    if isinstance(name, NormSpec):
        if kw:
            raise TypeError('options cannot be applied to an already built NormSpec')
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**kw)
