"""The final homogeneous sub-network of a flax model: the default constraint set of LAWN.

Normalization makes every weight before it scale-invariant, so only the weights after the
last normalization layer set the scale of the logits; in that part of the net (ReLU, pooling,
Dense, conv without normalization) the logits are positively homogeneous in each kernel,
:math:`z(\\alpha W) = \\alpha z(W)` (biases aside). LAWN (:func:`optim.lawn`) constrains the
norms of exactly those kernels.
"""
from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax

from jaxnorm import layers

# Modules that normalize activations (a weight reparameterization such as WeightNormConv or
# ScaledWSConv does not: the layer stays linear in its input).
ACTIVATION_NORMALIZERS = (
    layers.BatchNorm, layers.LayerNorm, layers.InstanceNorm, layers.GroupNorm,
    layers.FilterResponseNorm, layers.VarianceNorm, layers.EvoNormB0, layers.EvoNormS0,
    nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.InstanceNorm,
)


def final_homogeneous_mask(model: nn.Module, sample_input: Any, **call_kwargs) -> Any:
    """True for the kernels of the layers called after the model's last normalization layer.

    The model is traced once (abstractly, nothing is computed) while recording the order in
    which its modules are called. A parameter is marked when it has at least two axes (a
    kernel, not a bias or a norm's scale) and its module is first called after the first call
    of the last activation normalizer (:data:`ACTIVATION_NORMALIZERS`). So: BN/GN/LN ResNets,
    VGGs, MobileNet and MLPs get their classifier kernel; a model without activation
    normalization (``norm='none'``, ``'wn'``, ``'sws'``, ``'wc'``) gets every kernel.

    [infer] The rule is the layers after the last normalization. In a pre-activation ResNet
    (``preact=True``) that is the last block's ``conv2`` plus the head, although the residual
    sum makes the logits homogeneous in the head alone; pass a regex mask to choose.

    Args:
      model: an unbound flax module.
      sample_input: an input batch (or a ``jax.ShapeDtypeStruct``) the model accepts.
      **call_kwargs: extra arguments of the model's ``__call__`` (e.g. ``train=False``).

    Returns:
      A tree of Python bools with the structure of the model's ``params``.

    Example:
      >>> from jaxnorm import models
      >>> model = models.get_model('mlp', norm='ln', num_classes=10)
      >>> mask = final_homogeneous_mask(model, jax.ShapeDtypeStruct((1, 64), 'float32'))
      >>> [name for name in mask if mask[name].get('kernel')]
      ['head']

    References:
      Gupta et al., `Logit Attenuating Weight Normalization
      <https://arxiv.org/abs/2108.05839>`_, 2021.
    """
    first_call: dict[tuple[str, ...], int] = {}
    normalizer_calls: list[int] = []
    call_index = itertools.count()

    def record(next_fun, args, kwargs, context):
        if context.method_name == '__call__':
            index = next(call_index)
            first_call.setdefault(tuple(context.module.path), index)
            if isinstance(context.module, ACTIVATION_NORMALIZERS):
                normalizer_calls.append(index)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(
            lambda x: model.init(jax.random.key(0), x, **call_kwargs), sample_input)
    last_normalizer = max(normalizer_calls, default=-1)

    def owner_call(path) -> int:
        names = tuple(str(getattr(key, 'key', key)) for key in path[:-1])
        # A parameter created by a helper method belongs to the nearest called ancestor.
        while names not in first_call:
            names = names[:-1]
        return first_call[names]

    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.ndim >= 2 and owner_call(path) > last_normalizer,
        variables['params'])
