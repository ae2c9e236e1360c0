"""Models that take any normalizer: ``get_model(name, norm=..., num_classes=...)``.

Every model is a flax.linen module over channels-last inputs (any channel count): NHWC images,
and for the MLPs, ``mnist1d_cnn``, ``cnn_small`` and the ResNets also ``(N, L, C)`` sequences
such as MNIST-1D. Each is built from the
:class:`jaxnorm.layers.NormSpec` of ``get_norm(norm, **norm_kwargs)``: its conv class, norm and
activation slots, conv bias flag and dense norm. So a normalizer added to the registry works in
every model unchanged. Call it as ``model.apply(variables, x, train=True,
mutable=['batch_stats'])`` (``train`` defaults to False). Convs are Kaiming-normal (fan_in)
with zero bias (only when ``spec.conv_bias``); the Dense head is uniform +-1/sqrt(fan_in)
with zero bias, PyTorch's Linear default.

==================  =========  ===============================================  ============
name                min input  architecture                                     parameters
==================  =========  ===============================================  ============
``mlp``             rank >= 2  flatten, Dense 256-256 + dense norm + act        855,562 *
``mnist1d_mlp``     rank >= 2  MNIST-1D MLPBase: Dense 100-100, 2nd residual    15,210 **
``logistic``        rank >= 2  flatten, Dense (logistic regression)             410 **
``mnist1d_cnn``     L >= 4     MNIST-1D ConvBase: 3 convs of 25 (k 5/3/3,       5,210 **
                               stride 2, padding 1), flatten, Dense
``cnn_small``       4x4        3x3 convs 16, 32/2, 64/2, flatten, Dense         see (***)
``resnet20``        8 (x8)     He et al. CIFAR ResNet, 3x3 blocks, 16/32/64,    269,722
                               option-A shortcuts
``resnet32``        8x8        same, 3x5 blocks                                 464,154
``resnet56``        8x8        same, 3x9 blocks                                 853,018
``resnet56_wide``   8x8        Beyond-BN ResNet-56: 32/64/128, 3x9 blocks,      3,494,314
                               3x3 conv + norm shortcuts
``resnet18``        8x8        CIFAR stem, 64/128/256/512, [2,2,2,2] blocks,    11,173,962
                               1x1 conv + norm shortcuts
``resnet34``        8x8        same, [3,4,6,3] blocks                           21,282,122
``vgg11``           32x32      VGG 'A' with max-pools, GAP, Dense               9,228,362
``vgg13``           32x32      VGG 'B' with max-pools, GAP, Dense               9,413,066
``vgg_cfg10``       8x8        Beyond-BN cfg_10: VGG-13's convs, stride-2       9,413,066
                               convs instead of pools, GAP, Dense
``vgg3``            8x8        3x3 convs 64, pool, 128, pool, 256, GAP, Dense;  373,834
                               logits / ``temperature`` (:mod:`.tempered_vgg`)
``vgg13_tempered``  32x32      ``vgg13`` with logits / ``temperature``          9,413,066
``mobilenet_v1``    8x8        CIFAR MobileNet-V1 (stem stride 1), GAP, Dense   3,217,226
==================  =========  ===============================================  ============

Parameters: the ``params`` collection with ``norm='bn'``, 10 classes and 32x32x3 inputs
(BN's scale and bias included, convs without bias). * The MLP's first layer depends on the
input size: 85,514 on 8x8x1 digits. ** On MNIST-1D (40x1) with ``norm='none'``, the counts the
MNIST-1D authors print for their models. (***) Depends on the input size (flatten).
The ResNets accept ``(N, L, C)`` sequences with L >= 8 (1-D convs of 3 taps).

``small_cnn`` is :class:`SmallCNN` (:mod:`jaxnorm.models.small`), the pruning experiments'
small CNN with flax-default convs (options ``features``, ``global_pool``, ``patch_convs``), so
``fit`` can train it. ``multihead_mlp`` and ``multihead_cnn`` (:mod:`jaxnorm.models.multihead`)
are the continual-learning networks with one head per task (options ``num_tasks``, ``task``,
and ``hidden`` / ``channels``); they return the logits of head ``task``. Not in the registry, built directly: the constant-width probe networks
:func:`uniform_resnet` and :func:`uniform_cnn` (:mod:`jaxnorm.models.uniform`).

Options: every residual model takes ``skipinit``, ``preact``, ``width``, ``shortcut`` and
``inner_channels`` (see :mod:`jaxnorm.models.resnet`); ``vgg*`` take ``width`` and
``channels`` (``vgg3`` and ``vgg13_tempered`` also ``temperature``, default 1); ``mobilenet_v1`` takes ``width``; ``mlp`` takes ``hidden`` and ``width``.
``mlp``, ``mnist1d_mlp``, ``logistic`` also take ``residual``; ``mnist1d_cnn`` and
``cnn_small`` take ``width``. ``channels`` / ``inner_channels`` give explicit per-layer widths, the form of a
filter-pruned model after :mod:`prune.compact` (:mod:`jaxnorm.models.channels`). ``width``
multiplies every channel count (stem included) and may be a float (rounded). ``resnet20``
with ``shortcut='conv1x1'`` (option B) has the 272,474 parameters often quoted for it;
option A, the default as in He et al., has 269,722.

Minimum input sizes: 8 for every CNN whose downsampling is by stride-2 convs (a padded
stride-2 conv maps 1x1 to 1x1, so at 8x8 the deepest stages of resnet18/34, vgg_cfg10 and
mobilenet_v1 run on 1x1 maps; 32x32 leaves 4x4 / 4x4 / 2x2 / 2x2); 32 for vgg11/13, whose
five floor-mode max-pools need it. A smaller input or a non-NHWC input raises ``ValueError``
when the model is traced.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import flax.linen as nn

from jaxnorm.layers import NormSpec, get_norm
from jaxnorm.models import convnet, mlp, mobilenet, resnet, tempered_vgg, vgg
from jaxnorm.models.convnet import ConvNet
from jaxnorm.models.mlp import MLP
from jaxnorm.models.mobilenet import MobileNetV1
from jaxnorm.models.multihead import MultiHeadCNN, MultiHeadMLP
from jaxnorm.models.resnet import BasicBlock, ResNet, zero_pad_shortcut
from jaxnorm.models.small import PatchConv, SmallCNN
from jaxnorm.models.tempered_vgg import TemperedVGG
from jaxnorm.models.uniform import uniform_cnn, uniform_resnet
from jaxnorm.models.vgg import VGG

# name -> (module class, fixed architecture fields, user options)
_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any], tuple[str, ...]]] = {
    name: (module_class, config, family.OPTIONS)
    for module_class, family in ((MLP, mlp), (ResNet, resnet), (VGG, vgg),
                                 (MobileNetV1, mobilenet), (ConvNet, convnet))
    for name, config in family.CONFIGS.items()
}


def _small_cnn(*, model_name: str, **fields) -> SmallCNN:
    """:class:`SmallCNN` by name (it names its layers itself: no ``model_name`` field)."""
    return SmallCNN(**fields)


_MODELS.update({name: (TemperedVGG, config, tempered_vgg.OPTIONS)
                for name, config in tempered_vgg.CONFIGS_TEMPERED.items()})
_MODELS['small_cnn'] = (_small_cnn, {}, ('features', 'global_pool', 'patch_convs'))
_MODELS['multihead_mlp'] = (MultiHeadMLP, {}, ('num_tasks', 'task', 'hidden'))
_MODELS['multihead_cnn'] = (MultiHeadCNN, {}, ('num_tasks', 'task', 'channels'))


def model_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_model`."""
    return tuple(_MODELS)


def get_model(name: str, *, norm: str | NormSpec = 'bn', num_classes: int,
              norm_kwargs: Mapping[str, Any] | None = None, **options) -> nn.Module:
    """Build a named model around a normalizer.

    Args:
      name: one of :func:`model_names`.
      norm: registry name of :func:`jaxnorm.layers.get_norm`, or a built ``NormSpec``.
      num_classes: classifier outputs.
      norm_kwargs: options of the registry entry (e.g. ``{'momentum': 0.9}``).
      **options: model options, listed per model in the module docstring.

    Returns:
      An unbound flax module; initialize with ``model.init(rng, x)``.

    Raises:
      ValueError: unknown model or norm name, or ``num_classes < 1``.
      TypeError: an option the model does not take.
    """
    if name not in _MODELS:
        raise ValueError(f'unknown model {name!r}; valid names: {", ".join(_MODELS)}')
    if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
            or num_classes < 1):
        raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
    module_class, config, valid_options = _MODELS[name]
    unknown = sorted(set(options) - set(valid_options))
    if unknown:
        raise TypeError(f'model {name!r} got unknown option(s) {", ".join(unknown)}; '
                        f'valid options: {", ".join(valid_options)}')
    # Resolving now reports a bad norm name or option at construction, not at first trace.
    spec = get_norm(norm, **dict(norm_kwargs or {}))
    return module_class(num_classes=num_classes, norm=spec, model_name=name,
                        **{**config, **options})


__all__ = ['BasicBlock', 'ConvNet', 'MLP', 'MobileNetV1', 'MultiHeadCNN', 'MultiHeadMLP',
           'PatchConv', 'ResNet', 'SmallCNN', 'TemperedVGG', 'VGG',
           'get_model', 'model_names', 'uniform_cnn', 'uniform_resnet', 'zero_pad_shortcut']
