"""The CIFAR ResNets of :mod:`jaxnorm.models.resnet` as flax.nnx modules, ``norm=`` pluggable.

Same topology, option names and variable names as the Linen :class:`jaxnorm.models.ResNet`
(``stem/{conv,norm,act}``, ``stage{s}_block{b}/{conv1,norm1,act1,conv2,norm2,act2,
shortcut_conv,shortcut_norm,skip_gain}``, ``head``, ``logit_norm``), built from the
:func:`jaxnorm.nnx.get_norm` registry, so a Linen model's variables load with
:func:`jaxnorm.nnx.from_linen_variables` and the forward passes agree. NNX needs the input
channels (``in_features``) and the number of spatial axes (``spatial_dims``: 2 for NHWC
images, 1 for (N, L, C) sequences) at construction. Train / eval: ``model.train()`` /
``model.eval()`` (see :mod:`jaxnorm.nnx`).

Example::

    model = resnet20(num_classes=10, in_features=3, norm='gn', rngs=nnx.Rngs(0))
    logits = model(images)                       # (N, 10)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from jaxnorm import nnx as jnnx
from jaxnorm.models.common import (MIN_IMAGE_SIZE, check_image_input, global_avg_pool,
                                   head_kernel_init, scale_width, spatial_dims as _dims)
from jaxnorm.models.resnet import CONFIGS, SHORTCUTS, zero_pad_shortcut


def make_conv(spec: jnnx.NormSpec, in_features: int, features: int, kernel_size: int,
              strides: int = 1, groups: int = 1, *, spatial_dims: int = 2,
              padding: int | None = None, rngs: nnx.Rngs) -> nnx.Module:
    """:func:`jaxnorm.models.common.make_conv` for NNX: the family's conv class, PyTorch
    padding ``kernel_size // 2``, the family's kernel init, zero bias when it has one."""
    pad = kernel_size // 2 if padding is None else padding
    return spec.conv(in_features, features, (kernel_size,) * spatial_dims,
                     (strides,) * spatial_dims, padding=((pad, pad),) * spatial_dims,
                     feature_group_count=groups, use_bias=spec.conv_bias,
                     kernel_init=spec.conv_init, bias_init=nn.initializers.zeros, rngs=rngs)


class ConvNormAct(nnx.Module):
    """conv -> norm -> activation (the stem), as :class:`jaxnorm.models.common.ConvNormAct`."""

    def __init__(self, spec: jnnx.NormSpec, in_features: int, features: int,
                 kernel_size: int = 3, strides: int = 1, *, spatial_dims: int = 2,
                 rngs: nnx.Rngs):
        self.conv = make_conv(spec, in_features, features, kernel_size, strides,
                              spatial_dims=spatial_dims, rngs=rngs)
        self.norm = spec.norm(features, rngs=rngs)
        self.act = spec.act(features, rngs=rngs)

    def __call__(self, x):
        return self.act(self.norm(self.conv(x)))


class BasicBlock(nnx.Module):
    """Two 3x3 convs with a shortcut, as :class:`jaxnorm.models.resnet.BasicBlock` (same
    options: ``shortcut``, ``preact``, ``skipinit``, ``skip_gain_init``)."""

    def __init__(self, spec: jnnx.NormSpec, in_features: int, features: int, strides: int = 1,
                 shortcut: str = 'conv1x1', preact: bool = False, skipinit: bool = False,
                 skip_gain_init: float | None = None, *, spatial_dims: int = 2,
                 rngs: nnx.Rngs):
        if shortcut not in SHORTCUTS:
            raise ValueError(f'unknown shortcut {shortcut!r}; valid: {", ".join(SHORTCUTS)}')
        if skipinit and skip_gain_init is not None:
            raise ValueError('skipinit starts the residual gain at 0 and cannot be combined '
                             f'with skip_gain_init={skip_gain_init} (norm={spec.name!r})')
        self.features, self.strides, self.preact = features, strides, preact
        self.shortcut = shortcut
        self.skip_gain = (nnx.Param(jnp.asarray(skip_gain_init or 0.0, jnp.float32))
                          if skipinit or skip_gain_init is not None else nnx.data(None))
        conv = dict(spatial_dims=spatial_dims, rngs=rngs)
        first = in_features if preact else features  # channels seen by norm1 / act1
        self.conv1 = make_conv(spec, in_features, features, 3, strides, **conv)
        self.norm1 = spec.norm(first, rngs=rngs)
        self.act1 = spec.act(first, rngs=rngs)
        self.conv2 = make_conv(spec, features, features, 3, **conv)
        self.norm2 = spec.norm(features, rngs=rngs)
        self.act2 = spec.act(features, rngs=rngs)
        self.projection = (shortcut != 'zero_pad'
                           and (strides != 1 or in_features != features))
        if self.projection:
            self.shortcut_conv = make_conv(spec, in_features, features,
                                           1 if shortcut == 'conv1x1' else 3, strides, **conv)
            self.shortcut_norm = spec.norm(in_features if preact else features, rngs=rngs)
        self.identity = strides == 1 and in_features == features

    def _shortcut(self, x):
        if self.identity:
            return x
        if not self.projection:
            return zero_pad_shortcut(x, self.features, self.strides)
        if self.preact:
            return self.shortcut_conv(self.shortcut_norm(x))
        return self.shortcut_norm(self.shortcut_conv(x))

    def _gain(self, branch):
        return branch if self.skip_gain is None else self.skip_gain[...] * branch

    def __call__(self, x):
        if self.preact:
            branch = self.conv1(self.act1(self.norm1(x)))
            branch = self.conv2(self.act2(self.norm2(branch)))
            return self._gain(branch) + self._shortcut(x)
        branch = self.act1(self.norm1(self.conv1(x)))
        branch = self.norm2(self.conv2(branch))
        return self.act2(self._gain(branch) + self._shortcut(x))


class ResNet(nnx.Module):
    """CIFAR ResNet trunk, as :class:`jaxnorm.models.resnet.ResNet`: stem, stages of
    :class:`BasicBlock` (stride 2 at the first block of every later stage), global average
    pool, ``head`` (PyTorch's Linear init), the family's ``logit_norm`` if any.

    Args:
      num_classes: classifier outputs.
      in_features: input channels.
      stage_sizes, stage_widths, stem_width, shortcut, norm, norm_kwargs, skipinit, preact,
        width, model_name: as the Linen ``ResNet``.
      spatial_dims: 2 for NHWC images, 1 for (N, L, C) sequences.
      rngs: ``nnx.Rngs`` for every initializer.
    """

    def __init__(self, num_classes: int, in_features: int, *, stage_sizes: Sequence[int],
                 stage_widths: Sequence[int], stem_width: int, shortcut: str = 'conv1x1',
                 norm: str | jnnx.NormSpec = 'bn', norm_kwargs: Mapping[str, Any] | None = None,
                 skipinit: bool = False, preact: bool = False, width: float = 1,
                 spatial_dims: int = 2, model_name: str = 'resnet', rngs: nnx.Rngs):
        spec = jnnx.get_norm(norm, **dict(norm_kwargs or {}))
        self.model_name, self.spatial_dims = model_name, spatial_dims
        channels = scale_width(stem_width, width)
        self.stem = ConvNormAct(spec, in_features, channels, spatial_dims=spatial_dims,
                                rngs=rngs)
        names, index = [], 0
        for stage, (num_blocks, base_width) in enumerate(zip(stage_sizes, stage_widths)):
            features = scale_width(base_width, width)
            for block in range(num_blocks):
                index += 1
                gain = None if spec.residual_scale is None else spec.residual_scale(index)
                names.append(f'stage{stage + 1}_block{block + 1}')
                setattr(self, names[-1], BasicBlock(
                    spec, channels, features, 2 if stage > 0 and block == 0 else 1, shortcut,
                    preact, skipinit, gain, spatial_dims=spatial_dims, rngs=rngs))
                channels = features
        self.block_names = tuple(names)
        self.head = nnx.Linear(channels, num_classes, kernel_init=head_kernel_init,
                               bias_init=nn.initializers.zeros, rngs=rngs)
        self.logit_norm = (nnx.data(None) if spec.logit_norm is None
                           else spec.logit_norm(num_classes, rngs=rngs))

    def __call__(self, x):
        check_image_input(x, MIN_IMAGE_SIZE, self.model_name, sequences=True)
        if _dims(x) != self.spatial_dims:
            raise ValueError(f'{self.model_name} was built for spatial_dims='
                             f'{self.spatial_dims}, got input of shape {tuple(x.shape)}')
        x = self.stem(x)
        for name in self.block_names:
            x = getattr(self, name)(x)
        logits = self.head(global_avg_pool(x))
        return logits if self.logit_norm is None else self.logit_norm(logits)


def resnet(name: str, *, num_classes: int, in_features: int = 3,
           norm: str | jnnx.NormSpec = 'bn', norm_kwargs: Mapping[str, Any] | None = None,
           rngs: nnx.Rngs, **options) -> ResNet:
    """A named residual model of :data:`jaxnorm.models.resnet.CONFIGS` (``resnet20``,
    ``resnet32``, ``resnet56``, ``resnet56_wide``, ``resnet18``, ``resnet34``) in NNX.

    ``options``: ``skipinit``, ``preact``, ``width``, ``shortcut``, ``spatial_dims``.
    """
    if name not in CONFIGS:
        raise ValueError(f'unknown residual model {name!r}; valid names: '
                         f'{", ".join(CONFIGS)}')
    return ResNet(num_classes, in_features, norm=norm, norm_kwargs=norm_kwargs,
                  model_name=name, rngs=rngs, **{**CONFIGS[name], **options})


def resnet20(*, num_classes: int, in_features: int = 3, norm: str | jnnx.NormSpec = 'bn',
             norm_kwargs: Mapping[str, Any] | None = None, rngs: nnx.Rngs,
             **options) -> ResNet:
    """He et al.'s CIFAR ResNet-20 (3 stages x 3 BasicBlocks, 16/32/64, option-A zero-pad
    shortcuts) in NNX; see :func:`resnet`."""
    return resnet('resnet20', num_classes=num_classes, in_features=in_features, norm=norm,
                  norm_kwargs=norm_kwargs, rngs=rngs, **options)


__all__ = ['BasicBlock', 'ConvNormAct', 'ResNet', 'make_conv', 'resnet', 'resnet20']
