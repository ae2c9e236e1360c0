"""CIFAR residual networks built from one :class:`BasicBlock`.

Three families share the block and the :class:`ResNet` trunk (3x3 stem conv -> norm -> act,
stages of BasicBlocks, the first block of every later stage with stride 2, global average
pool, Dense). Every one takes NHWC images or ``(N, L, C)`` sequences (MNIST-1D): the convs
get one spatial axis per input axis (3x3 kernels become 3-tap kernels), so ``resnet20`` on
sequences is the 1-D ResNet-20:

* ``resnet20/32/56``: He et al. (2016) CIFAR ResNets, 3 stages x n blocks at 16/32/64, with the
  parameter-free option-A shortcut (stride-2 subsampling + zero channel padding).
* ``resnet56_wide``: the Beyond-BatchNorm repo's ResNet-56, 32-wide stem, 32/64/128 stages and a
  3x3 strided projection conv + norm shortcut [code: BeyondBatchNorm ``models.py``].
* ``resnet18/34``: ImageNet ResNets with a CIFAR stem (3x3 conv 64, no max-pool) and
  1x1 projection conv + norm shortcuts, as in the common CIFAR versions.

Block options:

* ``skipinit``: the residual branch is multiplied by a learnable scalar ``skip_gain`` starting
  at 0, ``out = act(s * F(x) + shortcut(x))``, so every block starts as ``act(shortcut(x))``.
  A normalizer family with ``residual_scale`` (MimicNorm) gives every block that gain with its
  own start value instead (``1.2**2 / k`` for the k-th block); the two cannot be combined.
* ``preact``: pre-activation blocks, ``out = s * conv2(act2(norm2(conv1(act1(norm1(x)))))) +
  shortcut(x)`` with no activation after the sum. Following the Beyond-BatchNorm repo, a
  projection shortcut is ``conv(norm(x))`` (its own norm, no activation) and the stem and head
  are unchanged, so no extra norm precedes the pooling (He et al.'s pre-activation ResNets add
  one; this trunk does not). The zero-padding shortcut stays parameter-free on ``x``.
* ``act_before_sum``: the last activation moves onto the residual branch, before the sum,
  ``out = s * act2(norm2(conv2(act1(norm1(conv1(x)))))) + shortcut(x)`` (default False: the
  activation after the sum, as He et al.). This is the block the Beyond-BatchNorm repository
  ran WN and SkipInit with: with ``s = 0`` a block is exactly ``shortcut(x)`` (the identity
  inside a stage), so no activation acts on the identity path. Not combinable with ``preact``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import (MIN_IMAGE_SIZE, ConvNormAct, check_channels,
                                   check_image_input, classify, global_avg_pool, make_conv,
                                   resolve_norm, scale_width, spatial_dims)

SHORTCUTS = ('zero_pad', 'conv1x1', 'conv3x3')

# Architecture of each named residual model; the user-facing options are ResNet's other fields.
CONFIGS: dict[str, dict[str, Any]] = {
    'resnet20': dict(stage_sizes=(3, 3, 3), stage_widths=(16, 32, 64), stem_width=16,
                     shortcut='zero_pad'),
    'resnet32': dict(stage_sizes=(5, 5, 5), stage_widths=(16, 32, 64), stem_width=16,
                     shortcut='zero_pad'),
    'resnet56': dict(stage_sizes=(9, 9, 9), stage_widths=(16, 32, 64), stem_width=16,
                     shortcut='zero_pad'),
    'resnet56_wide': dict(stage_sizes=(9, 9, 9), stage_widths=(32, 64, 128), stem_width=32,
                          shortcut='conv3x3'),
    'resnet18': dict(stage_sizes=(2, 2, 2, 2), stage_widths=(64, 128, 256, 512),
                     stem_width=64, shortcut='conv1x1'),
    'resnet34': dict(stage_sizes=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512),
                     stem_width=64, shortcut='conv1x1'),
}

OPTIONS = ('skipinit', 'preact', 'width', 'shortcut', 'inner_channels', 'act_before_sum')


def zero_pad_shortcut(x, features: int, strides: int):
    """He et al.'s option-A shortcut: keep every ``strides``-th pixel, zero-pad channels.

    The new channels are appended after the existing ones (the position of the zero channels
    is immaterial under i.i.d. init of the following convs).

    Args:
      x: channels-last input ``(N, *spatial, C)`` (NHWC images or ``(N, L, C)`` sequences).
      features: output channels, at least ``x.shape[-1]``.
      strides: spatial subsampling factor, matching the branch's stride-2 conv (whose
        padding-1 windows are centred on the same even pixels).

    Returns:
      ``x[:, ::strides, ::strides]`` (every spatial axis) with ``features - C`` zero channels
      appended.
    """
    x = x[(slice(None), *[slice(None, None, strides)] * spatial_dims(x), slice(None))]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, features - x.shape[-1])])


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; the only residual block of the library.

    Attributes:
      spec: normalizer family.
      features: output channels.
      strides: stride of the first conv (and of the shortcut).
      shortcut: used only when the shape changes (stride or channels), else identity:
        ``'zero_pad'`` (option A), ``'conv1x1'`` or ``'conv3x3'`` (strided projection conv
        with a norm after it, or before it in pre-activation blocks).
      preact: pre-activation ordering (see the module docstring).
      skipinit: learnable residual-branch gain starting at 0.
      inner_features: output channels of ``conv1`` (input channels of ``conv2``); None means
        ``features``. The block's output width, fixed by the shortcut, is unaffected.
      skip_gain_init: start value of a learnable residual-branch gain ``skip_gain`` (None: no
        gain unless ``skipinit``, which starts it at 0).
      act_before_sum: ``out = s * act2(norm2(conv2(...))) + shortcut(x)``, the activation on
        the branch before the sum (see the module docstring); False: after the sum.
    """

    spec: NormSpec
    features: int
    strides: int = 1
    shortcut: str = 'conv1x1'
    preact: bool = False
    skipinit: bool = False
    inner_features: int | None = None
    skip_gain_init: float | None = None
    act_before_sum: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        spec = self.spec
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f'unknown shortcut {self.shortcut!r}; valid: {", ".join(SHORTCUTS)}')
        if self.skipinit and self.skip_gain_init is not None:
            raise ValueError('skipinit starts the residual gain at 0 and cannot be combined '
                             f'with skip_gain_init={self.skip_gain_init} (norm={spec.name!r})')
        if self.act_before_sum and self.preact:
            raise ValueError('act_before_sum moves the post-activation block\'s last activation '
                             'before the sum; pre-activation blocks (preact=True) have none')
        gain = 1.0
        if self.skipinit or self.skip_gain_init is not None:
            gain = self.param('skip_gain', nn.initializers.constant(self.skip_gain_init or 0.0),
                              ())
        inner = self.features if self.inner_features is None else self.inner_features
        dims = spatial_dims(x)
        if self.preact:
            branch = spec.norm(name='norm1')(x, train=train)
            branch = spec.act(name='act1')(branch, train=train)
            branch = make_conv(spec, inner, 3, self.strides, name='conv1',
                               spatial_dims=dims)(branch)
            branch = spec.norm(name='norm2')(branch, train=train)
            branch = spec.act(name='act2')(branch, train=train)
            branch = make_conv(spec, self.features, 3, name='conv2', spatial_dims=dims)(branch)
            return gain * branch + self._shortcut(x, train)
        branch = make_conv(spec, inner, 3, self.strides, name='conv1', spatial_dims=dims)(x)
        branch = spec.norm(name='norm1')(branch, train=train)
        branch = spec.act(name='act1')(branch, train=train)
        branch = make_conv(spec, self.features, 3, name='conv2', spatial_dims=dims)(branch)
        branch = spec.norm(name='norm2')(branch, train=train)
        if self.act_before_sum:
            return gain * spec.act(name='act2')(branch, train=train) + self._shortcut(x, train)
        return spec.act(name='act2')(gain * branch + self._shortcut(x, train), train=train)

    def _shortcut(self, x, train: bool):
        if self.strides == 1 and x.shape[-1] == self.features:
            return x
        if self.shortcut == 'zero_pad':
            return zero_pad_shortcut(x, self.features, self.strides)
        kernel_size = 1 if self.shortcut == 'conv1x1' else 3
        conv = make_conv(self.spec, self.features, kernel_size, self.strides,
                         name='shortcut_conv', spatial_dims=spatial_dims(x))
        norm = self.spec.norm(name='shortcut_norm')
        if self.preact:
            return conv(norm(x, train=train))
        return norm(conv(x), train=train)


class ResNet(nn.Module):
    """CIFAR ResNet trunk; the named models fix the architecture fields through ``CONFIGS``.

    Attributes:
      num_classes: classifier outputs.
      stage_sizes: BasicBlocks per stage.
      stage_widths: channels per stage before the width multiplier.
      stem_width: stem channels before the width multiplier.
      shortcut: shortcut kind when the shape changes (see :class:`BasicBlock`).
      norm: registry name or :class:`NormSpec`.
      norm_kwargs: options of the registry entry.
      skipinit: learnable residual gains starting at 0.
      preact: pre-activation blocks.
      width: multiplier of the stem and every stage width (int or float, rounded).
      inner_channels: explicit ``conv1`` output channels of every block, in order (a
        filter-pruned ResNet compacted by :mod:`prune.compact`); None: the stage widths.
        Only block-internal channels can change: the block outputs are tied together by the
        identity and zero-padding shortcuts.
      act_before_sum: every block's last activation before the residual sum (see
        :class:`BasicBlock`); default False (after the sum).
      model_name: name used in error messages.
    """

    num_classes: int
    stage_sizes: Sequence[int]
    stage_widths: Sequence[int]
    stem_width: int
    shortcut: str = 'conv1x1'
    norm: str | NormSpec = 'bn'
    norm_kwargs: Mapping[str, Any] | None = None
    skipinit: bool = False
    preact: bool = False
    width: float = 1
    inner_channels: Sequence[int] | None = None
    model_name: str = 'resnet'
    act_before_sum: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_image_input(x, MIN_IMAGE_SIZE, self.model_name, sequences=True)
        spec = resolve_norm(self.norm, self.norm_kwargs)
        x = ConvNormAct(spec, scale_width(self.stem_width, self.width), name='stem')(
            x, train=train)
        inner = iter([None] * sum(self.stage_sizes) if self.inner_channels is None else
                     check_channels(self.inner_channels, sum(self.stage_sizes), 'blocks',
                                    self.model_name))
        index = 0  # global 1-based block number, for the family's residual_scale
        for stage, (num_blocks, base_width) in enumerate(zip(self.stage_sizes,
                                                             self.stage_widths)):
            features = scale_width(base_width, self.width)
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                index += 1
                gain = None if spec.residual_scale is None else spec.residual_scale(index)
                x = BasicBlock(spec, features, strides, self.shortcut, self.preact,
                               self.skipinit, next(inner), gain, self.act_before_sum,
                               name=f'stage{stage + 1}_block{block + 1}')(x, train=train)
        return classify(spec, self.num_classes, global_avg_pool(x), train)
