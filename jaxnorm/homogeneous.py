r"""The final homogeneous sub-network of a flax model: the default constraint set of LAWN.

Normalization makes every weight before it scale-invariant, so only the weights after the
last normalization layer set the scale of the logits; in that part of the net (ReLU, pooling,
Dense, conv without normalization) the logits are positively homogeneous in each kernel,
:math:`z(\alpha W) = \alpha z(W)` (biases aside). LAWN (:func:`optim.lawn`) constrains the
norms of exactly those kernels.

The last normalization layer's own affine output, :math:`\gamma \odot \hat x + \beta`, also
scales the logits: with the head's kernel frozen, :math:`\gamma` and :math:`\beta` can still
grow and carry the logits with them (measured: LAMB-LAWN on digits reached a logit norm of
about 25 and a train loss of 1e-9 with the kernels alone constrained). So by default
(``last_norm_affine=True``) the mask also marks that layer's parameters; each then keeps its
own norm, which bounds the logits of, e.g., a LayerNorm MLP (:math:`\lVert\hat x\rVert_2
\le \sqrt d`, ReLU 1-Lipschitz with ReLU(0) = 0):

.. math::
    \lVert z \rVert_2 \le \lVert W \rVert_F \left(\sqrt d\, \lVert \gamma \rVert_2
    + \lVert \beta \rVert_2\right) + \lVert b \rVert_2 .

``last_norm_affine=False`` is the kernels-only mask of earlier versions.
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


def final_homogeneous_mask(model: nn.Module, sample_input: Any, *,
                           last_norm_affine: bool = True, **call_kwargs) -> Any:
    """True for the kernels of the layers called after the model's last normalization layer,
    and (``last_norm_affine``) for that layer's own parameters (its scale and offset).

    The model is traced once (abstractly, nothing is computed) while recording the order in
    which its modules are called. A parameter is marked when it has at least two axes (a
    kernel, not a bias or a norm's scale) and its module is first called after the first call
    of the last activation normalizer (:data:`ACTIVATION_NORMALIZERS`). So: BN/GN/LN ResNets,
    VGGs, MobileNet and MLPs get their classifier kernel; a model without activation
    normalization (``norm='none'``, ``'wn'``, ``'sws'``, ``'wc'``) gets every kernel. With
    ``last_norm_affine`` every parameter of the module of that last normalizer call is marked
    too (module docstring: its scale and offset set the logit scale as well).

    [infer] The rule is the layers after the last normalization. In a pre-activation ResNet
    (``preact=True``) that is the last block's ``conv2`` plus the head, although the residual
    sum makes the logits homogeneous in the head alone; pass a regex mask to choose. In a
    post-activation ResNet the last normalizer is the last block's ``norm2``, whose output is
    added to the shortcut: constraining its affine bounds that branch only.

    Args:
      model: an unbound flax module.
      sample_input: an input batch (or a ``jax.ShapeDtypeStruct``) the model accepts.
      last_norm_affine: also mark the last normalization layer's parameters (default); False
        keeps the kernels-only mask.
      **call_kwargs: extra arguments of the model's ``__call__`` (e.g. ``train=False``).

    Returns:
      A tree of Python bools with the structure of the model's ``params``.

    Example:
      >>> from jaxnorm import models
      >>> model = models.get_model('mlp', norm='ln', num_classes=10)
      >>> mask = final_homogeneous_mask(model, jax.ShapeDtypeStruct((1, 64), 'float32'))
      >>> sorted(f'{m}/{p}' for m in mask for p in mask[m] if mask[m][p])
      ['head/kernel', 'norm2/bias', 'norm2/scale']

    References:
      Gupta et al., `Logit Attenuating Weight Normalization
      <https://arxiv.org/abs/2108.05839>`_, 2021.
    """
    first_call: dict[tuple[str, ...], int] = {}
    normalizer_calls: list[tuple[int, tuple[str, ...]]] = []
    call_index = itertools.count()

    def record(next_fun, args, kwargs, context):
        if context.method_name == '__call__':
            index = next(call_index)
            first_call.setdefault(tuple(context.module.path), index)
            if isinstance(context.module, ACTIVATION_NORMALIZERS):
                normalizer_calls.append((index, tuple(context.module.path)))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(
            lambda x: model.init(jax.random.key(0), x, **call_kwargs), sample_input)
    last_normalizer, last_path = max(normalizer_calls, default=(-1, None))

    def module_names(path) -> tuple[str, ...]:
        return tuple(str(getattr(key, 'key', key)) for key in path[:-1])

    def owner_call(path) -> int:
        names = module_names(path)
        # A parameter created by a helper method belongs to the nearest called ancestor.
        while names not in first_call:
            names = names[:-1]
        return first_call[names]

    def marked(path, leaf) -> bool:
        if (last_norm_affine and last_path is not None
                and module_names(path)[:len(last_path)] == last_path):
            return True
        return leaf.ndim >= 2 and owner_call(path) > last_normalizer

    return jax.tree_util.tree_map_with_path(marked, variables['params'])
