"""flax.linen's built-in normalizers behind jaxnorm's registry interface, for ``bench.py norms``.

Each built-in becomes the norm slot of a :class:`jaxnorm.layers.NormSpec`, so the same model
runs with jaxnorm's layer and with flax's, and the two train steps are timed side by side.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn

from jaxnorm import layers

BN_MOMENTUM, EPSILON = 0.9, 1e-5
# The default GroupNorm grouping, min(32, C), has no single flax equivalent on ResNet-20's
# 16/32/64 channels, so both sides use 8 groups.
BENCH_GROUPS = 8


# ------------------------------------------------------------ flax built-ins as NormSpecs


class FlaxBatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` behind the registry's ``(x, *, train)`` signature."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                            epsilon=EPSILON, use_fast_variance=self.use_fast_variance)(x)


class FlaxLayerNorm(nn.Module):
    """``flax.linen.LayerNorm`` over (H, W, C) with a per-channel affine."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.LayerNorm(epsilon=EPSILON, reduction_axes=(1, 2, 3), feature_axes=-1,
                            use_fast_variance=self.use_fast_variance)(x)


class FlaxGroupNorm(nn.Module):
    """``flax.linen.GroupNorm`` with :data:`BENCH_GROUPS` groups."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.GroupNorm(num_groups=BENCH_GROUPS, epsilon=EPSILON,
                            use_fast_variance=self.use_fast_variance)(x)


class FlaxInstanceNorm(nn.Module):
    """``flax.linen.InstanceNorm``."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.InstanceNorm(epsilon=EPSILON, use_fast_variance=self.use_fast_variance)(x)


FLAX_BUILTINS = {'bn': FlaxBatchNorm, 'ln': FlaxLayerNorm, 'gn': FlaxGroupNorm,
                 'in': FlaxInstanceNorm}
OUR_OPTIONS = {'bn': {'momentum': BN_MOMENTUM}, 'gn': {'num_groups': BENCH_GROUPS}}


def flax_spec(name: str, use_fast_variance: bool) -> layers.NormSpec:
    """The registry entry ``name`` with its norm slot replaced by the flax built-in."""
    factory = functools.partial(FLAX_BUILTINS[name], use_fast_variance=use_fast_variance)
    return dataclasses.replace(layers.get_norm(name), name=f'flax_{name}', norm=factory)
