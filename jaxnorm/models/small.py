"""The small image CNN of the pruning experiments (lottery tickets, weight unification, OrthoReg).

:class:`SmallCNN` is a few 3x3 convs (the first at stride 1, every later one at stride 2), each
followed by the normalizer family's norm and activation slots, then a Dense ``head`` on the
flattened or globally averaged features::

    SmallCNN(10, features=(16, 32, 32))                       # lottery: no norm, flatten
    SmallCNN(10)                                              # unification: 16/32/64
    SmallCNN(10, norm='bn', global_pool=True, patch_convs=True)  # OrthoReg

It differs from the registry's ``cnn_small`` (:class:`jaxnorm.models.ConvNet`) on purpose:
its layers are flax's defaults, as in the reference code these experiments follow: every conv
has a bias and a LeCun-normal kernel with ``'SAME'`` padding, and the head is LeCun-normal
too. Parameters are named ``conv{i}`` (``kernel``, ``bias``), ``norm{i}`` (``scale``, ``bias``
where the normalizer has them) and ``head``; the experiments' masks and channel groups name
these paths.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import check_floating_input, resolve_norm


class PatchConv(nn.Module):
    """3x3 ``'SAME'`` conv with a flax HWIO ``kernel`` and a ``bias``, computed as
    ``patches @ kernel``.

    The same function and parameters as ``nn.Conv(features, (3, 3), strides)`` (up to
    rounding), but ``jax.vmap`` over per-seed weights turns it into batched matmuls instead of
    grouped convolutions, which are slow on CPU.
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        kernel = self.param('kernel', nn.initializers.lecun_normal(),
                            (3, 3, x.shape[-1], self.features))
        bias = self.param('bias', nn.initializers.zeros, (self.features,))
        patches = jax.lax.conv_general_dilated_patches(
            x, (3, 3), (self.strides, self.strides), 'SAME',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        # Patch features are ordered (in, h, w); the kernel's rows are (h, w, in).
        return patches @ kernel.transpose(2, 0, 1, 3).reshape(-1, self.features) + bias


class SmallCNN(nn.Module):
    """3x3 conv -> norm -> activation per entry of ``features``, then the Dense ``head``.

    Attributes:
      num_classes: classifier outputs.
      features: output channels of each conv; the first conv has stride 1, the others 2.
      norm: registry name or :class:`~jaxnorm.layers.NormSpec` whose norm and activation
        slots follow every conv (``'none'``: ReLU only; ``'bn'``: the library's BatchNorm).
      norm_kwargs: options of the registry entry.
      global_pool: average the last feature map over its spatial axes before the head;
        False flattens it.
      patch_convs: compute the convs as :class:`PatchConv` (for vmapped per-seed weights on
        CPU) instead of ``nn.Conv``; same parameters, same outputs up to rounding.
    """

    num_classes: int = 10
    features: Sequence[int] = (16, 32, 64)
    norm: str | NormSpec = 'none'
    norm_kwargs: Mapping[str, Any] | None = None
    global_pool: bool = False
    patch_convs: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_floating_input(x, 'SmallCNN')
        spec = resolve_norm(self.norm, self.norm_kwargs)
        for index, width in enumerate(self.features, start=1):
            strides = 1 if index == 1 else 2
            name = f'conv{index}'
            conv = (PatchConv(width, strides, name=name) if self.patch_convs
                    else nn.Conv(width, (3, 3), strides=strides, name=name))
            x = spec.norm(name=f'norm{index}')(conv(x), train=train)
            x = spec.act(name=f'act{index}')(x, train=train)
        features = x.mean((1, 2)) if self.global_pool else x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, name='head')(features)
