"""VGGs with a logit temperature: ``vgg3``, a VGG whose downsampling fits 8x8 inputs, and
``vgg13_tempered``, VGG-13 itself (the gradient-flow pruning reference's networks: Lubana &
Dick, arXiv:2009.11839).

**Why this network** [infer]. VGG-13 on 32x32 CIFAR (the paper's model) runs its last conv
pair on 2x2 maps: five 2x2 max-pools, 32 -> 16 -> 8 -> 4 -> 2 -> 1, with the last pool
after the last conv. ``vgg3`` keeps that on 8x8 digits: one 3x3 conv per VGG-13 stage
for its first three stages (base widths 64, 128, 256), separated by two 2x2 max-pools, so
the convs run on 8x8, 4x4 and 2x2 maps and every tap of every 3x3 kernel sees data (on a
1x1 map with padding 1 only the centre tap does: ``vgg_cfg10``'s four stride-2 convs leave
layers 7-10 there on digits). One conv per stage, not VGG-13's two, is the CPU budget's
choice (the two-conv version costs 2.8x as much per image on XLA:CPU). Conv -> norm -> ReLU
as the library's VGGs (the reference puts BN after the ReLU), global average pool, Dense.

**Temperature** [code: flowandprune ``main.py``, ``--T`` default 5]. The reference divides
the logits by ``T`` for training *and* testing (and its gradient scores use the same
tempered loss): ``logits = head(features) / temperature``. The argmax, hence accuracy, does
not depend on ``T``; the cross-entropy and its gradients do.

:class:`TemperedVGG` is a :class:`jaxnorm.models.vgg.VGG` (so :mod:`jaxnorm.models.channels`
prunes it like any VGG); :func:`jaxnorm.models.get_model` builds it as ``vgg3`` and
``vgg13_tempered`` (options ``width``, ``channels``, ``temperature``).
"""
from __future__ import annotations

import flax.linen as nn

from jaxnorm.models.vgg import CONFIGS, POOL, VGG

NAME = 'vgg3'
# One conv per stage of VGG-13's first three stages, without the last pool.
LAYERS = (64, POOL, 128, POOL, 256)
# The paper's VGG-13 itself (32x32 inputs) with the temperature option, for --scale paper.
NAME_VGG13 = 'vgg13_tempered'
OPTIONS = ('width', 'channels', 'temperature')


class TemperedVGG(VGG):
    """:class:`VGG` whose logits are divided by ``temperature`` (> 0)."""

    temperature: float = 1.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if not self.temperature > 0:
            raise ValueError(f'{self.model_name}: temperature must be positive, got '
                             f'{self.temperature!r}')
        return super().__call__(x, train=train) / self.temperature


def last_feature_side(input_side: int, layers=LAYERS) -> int:
    """Side of the last conv's output map for a square ``input_side`` input (each 2x2 pool
    floors, the stride-1 padded convs keep the side; a stride-2 conv halves, rounding up)."""
    side = int(input_side)
    for entry in layers:
        if entry == POOL:
            side //= 2
        elif isinstance(entry, tuple) and entry[1] == 2:
            side = -(-side // 2)
    return side


# name -> fixed architecture fields, for the model registry.
CONFIGS_TEMPERED = {NAME: {'layers': LAYERS}, NAME_VGG13: dict(CONFIGS['vgg13'])}

__all__ = ['LAYERS', 'NAME', 'NAME_VGG13', 'TemperedVGG', 'last_feature_side', 'CONFIGS_TEMPERED']
