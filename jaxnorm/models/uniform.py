"""Probe networks of constant width (Beyond BatchNorm, arXiv:2106.05956): not named models of
:func:`jaxnorm.models.get_model`, since they exist to isolate one effect of depth.

* :func:`uniform_resnet`: one stage of residual blocks at one width (norm.md 1.6(b): 27 blocks
  of width 32), so every shortcut is the identity;
* :func:`uniform_cnn`: the repo's ``cfg_uniform``, a plain CNN of constant width without
  downsampling (the rank experiments, MimicNorm's init check).
"""
from __future__ import annotations

from typing import Any, Mapping

from jaxnorm.models.resnet import ResNet
from jaxnorm.models.vgg import VGG


def uniform_resnet(norm: str = 'bn', *, num_blocks: int = 27, width: int = 32,
                   num_classes: int = 10, norm_kwargs: Mapping[str, Any] | None = None,
                   skipinit: bool = False, preact: bool = False,
                   act_before_sum: bool = False) -> ResNet:
    """A post-activation ResNet of ``num_blocks`` BasicBlocks at one constant width.

    The deep ResNet of norm.md 1.6(b) (27 blocks of width 32): one stage, so every shortcut is
    the identity and nothing resets the residual stream's variance, unlike ``resnet56_wide``
    whose three stages (also 27 blocks) start with a conv + norm projection.
    ``act_before_sum`` puts each block's last activation on the branch before the sum (the
    Beyond-BatchNorm repository's WN/SkipInit block; :class:`jaxnorm.models.resnet.BasicBlock`).
    """
    return ResNet(num_classes=num_classes, stage_sizes=(num_blocks,), stage_widths=(width,),
                  stem_width=width, shortcut='conv3x3', norm=norm, norm_kwargs=norm_kwargs,
                  skipinit=skipinit, preact=preact, act_before_sum=act_before_sum,
                  model_name=f'uniform_resnet{num_blocks}')


def uniform_cnn(norm: str = 'bn', *, depth: int = 20, width: int = 64, num_classes: int = 10,
                norm_kwargs: Mapping[str, Any] | None = None) -> VGG:
    """The repo's ``cfg_uniform(depth)``: ``depth`` 3x3 conv-norm-act layers of ``width``
    channels, no downsampling, global average pool and Dense (non-residual)."""
    return VGG(num_classes=num_classes, layers=(width,) * depth, norm=norm,
               norm_kwargs=norm_kwargs, model_name=f'uniform_cnn{depth}')
