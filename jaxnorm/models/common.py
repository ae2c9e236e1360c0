"""Pieces shared by every model: norm resolution, conv construction, input checks, head.

Convs follow the PyTorch geometry of the reference CIFAR models: symmetric padding of
``kernel_size // 2`` rather than flax's ``'SAME'``. For a stride-2 3x3 conv on an even input
``'SAME'`` pads (0, 1), which moves every sampling window one pixel relative to PyTorch's
(1, 1) and misaligns it with the ``x[:, ::2, ::2]`` subsampling of parameter-free shortcuts.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from jaxnorm.layers import NormSpec, get_norm

# PyTorch's nn.Linear default for the classifier: uniform(+-1/sqrt(fan_in)). The papers'
# code keeps that default while re-initializing every conv.
head_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def resolve_norm(norm: str | NormSpec, norm_kwargs: Mapping[str, Any] | None) -> NormSpec:
    """Turn a model's ``norm`` / ``norm_kwargs`` attributes into a :class:`NormSpec`."""
    return get_norm(norm, **dict(norm_kwargs or {}))


def plain_network_spec(spec: NormSpec) -> NormSpec:
    """``spec`` with the conv init of non-residual CNNs (``spec.plain_conv_init``) if it has one."""
    if spec.plain_conv_init is None:
        return spec
    return dataclasses.replace(spec, conv_init=spec.plain_conv_init)


def scale_width(base: int, width: float) -> int:
    """Channels of a layer whose reference width is ``base`` under multiplier ``width``."""
    if width <= 0:
        raise ValueError(f'width multiplier must be positive, got {width}')
    return max(1, int(round(base * width)))


def check_channels(channels, expected: int, what: str, model_name: str) -> list[int]:
    """Validate an explicit per-layer channel list (one positive int per layer)."""
    channels = list(channels)
    if len(channels) != expected:
        raise ValueError(f'{model_name} has {expected} {what}, but {len(channels)} channel '
                         f'counts were given')
    for index, count in enumerate(channels):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f'{model_name}: channel count {index} must be a positive int, '
                             f'got {count!r}')
    return channels


def make_conv(spec: NormSpec, features: int, kernel_size: int, strides: int = 1,
              groups: int = 1, name: str | None = None, *, spatial_dims: int = 2,
              padding: int | None = None) -> nn.Module:
    """A conv of the normalizer family's conv class with the library's init.

    Args:
      spec: the normalizer family; decides the conv class and whether it has a bias.
      features: output channels.
      kernel_size: side of the kernel, the same along every spatial axis.
      strides: spatial stride.
      groups: ``feature_group_count``; the input channel count gives a depthwise conv.
      name: submodule name.
      spatial_dims: number of spatial axes of the input: 2 for NHWC images, 1 for
        ``(N, L, C)`` sequences.
      padding: zeros added on each side of every spatial axis; None: ``kernel_size // 2``.

    Returns:
      An unbound conv module: ``spec.conv_init`` kernel (Kaiming-normal fan_in unless the
      family says otherwise), zero bias when it has one.
    """
    pad = kernel_size // 2 if padding is None else padding
    return spec.conv(
        features, (kernel_size,) * spatial_dims, strides=(strides,) * spatial_dims,
        padding=((pad, pad),) * spatial_dims, feature_group_count=groups,
        use_bias=spec.conv_bias, kernel_init=spec.conv_init,
        bias_init=nn.initializers.zeros, name=name)


def spatial_dims(x) -> int:
    """Number of spatial axes of a channels-last batch ``(N, *spatial, C)``."""
    return x.ndim - 2


class ConvNormAct(nn.Module):
    """conv -> norm -> activation, the unit of every stem and of the plain CNNs.

    Attributes:
      spec: normalizer family.
      features: output channels.
      kernel_size: side of the kernel (along every spatial axis of the input).
      strides: spatial stride.
      groups: ``feature_group_count`` of the conv (input channels for depthwise).
      activate: apply the activation slot; false leaves conv -> norm.
      padding: zeros per side of every spatial axis; None: ``kernel_size // 2``.
    """

    spec: NormSpec
    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    activate: bool = True
    padding: int | None = None

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = make_conv(self.spec, self.features, self.kernel_size, self.strides, self.groups,
                      name='conv', spatial_dims=spatial_dims(x), padding=self.padding)(x)
        x = self.spec.norm(name='norm')(x, train=train)
        if self.activate:
            x = self.spec.act(name='act')(x, train=train)
        return x


# Floor on the input side of the CNNs: the smallest images the library ships (digits, 8x8).
# Below it a 3x3 stem mostly reads zero padding. Stride-2 convs with padding 1 map a 1x1
# map to 1x1, so deep conv-downsampled models run at 8x8 with 1x1 late stages.
MIN_IMAGE_SIZE = 8


def check_floating_input(x, model_name: str) -> None:
    """Raise a ``TypeError`` for integer (e.g. uint8 image) inputs, which models would
    otherwise silently treat as values in [0, 255]."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f'{model_name} expects floating inputs, got {x.dtype}: convert and '
                        'scale them first, e.g. x.astype(np.float32) / 255 and standardize '
                        '(jaxnorm.data does both)')


def check_image_input(x, min_size: int, model_name: str, *,
                      sequences: bool = False) -> None:
    """Raise a ``ValueError`` unless ``x`` is an NHWC batch with both sides >= ``min_size``.

    With ``sequences``, ``(N, L, C)`` batches with ``L >= min_size`` are accepted as well.
    """
    check_floating_input(x, model_name)
    ranks = (3, 4) if sequences else (4,)
    if x.ndim not in ranks:
        expected = 'NHWC images (rank 4) or (N, L, C) sequences (rank 3)' if sequences else \
            'NHWC images of rank 4'
        raise ValueError(f'{model_name} expects {expected}, got shape {tuple(x.shape)}')
    sides = x.shape[1:-1]
    if min(sides) < min_size:
        raise ValueError(
            f'{model_name} needs inputs of at least {"x".join([str(min_size)] * len(sides))}, '
            f'got {"x".join(map(str, sides))}')


def global_avg_pool(x):
    """Mean over the spatial axes of a channels-last batch ``(N, *spatial, C)``."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def classifier(num_classes: int) -> nn.Module:
    """The Dense classifier named ``head``, with PyTorch's default kernel init and zero bias."""
    return nn.Dense(num_classes, kernel_init=head_kernel_init,
                    bias_init=nn.initializers.zeros, name='head')


def classify(spec: NormSpec, num_classes: int, features, train: bool):
    """Logits: the ``head`` classifier, then the family's ``logit_norm`` if it has one.

    Call inside a compact module, which then owns ``head`` (and ``logit_norm``).
    """
    logits = classifier(num_classes)(features)
    if spec.logit_norm is None:
        return logits
    return spec.logit_norm(name='logit_norm')(logits, train=train)
