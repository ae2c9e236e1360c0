"""Importance measures of gradient-flow pruning: magnitude, loss and gradient-norm preservation.

Under gradient flow :math:`\\dot\\theta = -g`, with :math:`g = \\nabla L` and
:math:`H = \\nabla^2 L`, each measure is an order of time derivative of the squared norm of a
parameter (Lubana & Dick, arXiv:2009.11839; :mod:`prune.flow`):

.. math::

    \\tfrac{d}{dt}\\theta_i^2 = -2\\,\\theta_i g_i, \\qquad
    \\tfrac{d^2}{dt^2}\\theta_i^2 = 2 g_i^2 + 2\\,\\theta_i (Hg)_i .

============================  ===============  ==============================
measure                       per parameter    per filter f (lowest pruned)
============================  ===============  ==============================
``magnitude``                 θ²               ‖θ_f‖² = Σ_f θ²
``loss_preservation``         |θ g|            Σ_f |θ g|
``biased_loss_preservation``  |θ| |θ g|        Σ_f θ² |g|
``grasp``                     θ (Hg)           Σ_f θ (Hg), signed
``grad_norm_preservation``    |θ (Hg)|         |Σ_f θ (Hg)|
``random``                    uniform          uniform
============================  ===============  ==============================

These follow the paper's released code [code: flowandprune ``imp_estimator.py``]: filters are
the producing kernel's output slices (normalizer parameters are not scored), the magnitude
filter score is the squared L2 norm (same ranking as the code's L2 norm), the absolute value
sits inside the sum for the first-order measures and outside it for
``grad_norm_preservation``, and GraSP is signed, so the filters it removes first are those
whose removal raises :math:`\\lVert g \\rVert` the most. Placement matters: for a filter
feeding a train-mode BatchNorm, :math:`\\sum_f \\theta g = 0` and
:math:`\\sum_f \\theta (Hg) = -\\lVert g_f \\rVert^2` (:mod:`prune.flow`).

:math:`g` and :math:`Hg` are batch means: :func:`gradient_and_hg` takes a stack of batches
(the reference uses one class-balanced batch per class), averages their gradients into
:math:`\\bar g`, then averages the per-batch Hessian-vector products :math:`H_b \\bar g`, each
by forward-over-reverse differentiation (``jax.jvp`` of ``jax.grad``), never a dense Hessian.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxnorm.losses import mean_cross_entropy
from jaxnorm.trees import check_like, named_leaves
from prune.masks import ChannelGroup

MEASURES = ('magnitude', 'loss_preservation', 'biased_loss_preservation', 'grasp',
            'grad_norm_preservation', 'random')
GRADIENT_MEASURES = ('loss_preservation', 'biased_loss_preservation')
HG_MEASURES = ('grasp', 'grad_norm_preservation')

LossFn = Callable[[Any, Any], jax.Array]


def check_measure(measure: str) -> str:
    """Return ``measure`` if it is one of :data:`MEASURES`, else raise ``ValueError``."""
    if measure not in MEASURES:
        raise ValueError(f'unknown measure {measure!r}; valid measures: {", ".join(MEASURES)}')
    return measure


def classifier_loss(apply_fn: Callable, model_state: Mapping[str, Any], *,
                    temperature: float = 1.0, train: bool = True) -> LossFn:
    """Mean softmax cross-entropy of a flax classifier at ``logits / temperature``.

    Args:
      apply_fn: the model's ``apply``; called as ``apply_fn({'params': p, **model_state}, x,
        train=train, mutable=[...])``.
      model_state: the other variable collections (``{'batch_stats': ...}`` or ``{}``).
      temperature: logits are divided by it (the reference scores GraSP at 200).
      train: BatchNorm in train mode (batch statistics). Its running-statistics updates are
        computed by flax and discarded, so the loss is a pure function of the parameters.
        False uses the running statistics, as the reference code (``net.eval()``) does.

    Returns:
      ``loss_fn(params, batch)`` with ``batch = {'image': ..., 'label': ...}``.
    """
    def loss_fn(params, batch):
        variables = {'params': params, **model_state}
        if train:
            logits, _ = apply_fn(variables, batch['image'], train=True,
                                 mutable=list(model_state))
        else:
            logits = apply_fn(variables, batch['image'], train=False)
        return mean_cross_entropy(_wide(logits) / temperature, batch['label'])

    return loss_fn


def _wide(x) -> jax.Array:
    """``x`` in at least float32 (float64 stays float64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _batch_mean(fn: Callable[[Any], Any], batches) -> Any:
    """Mean of ``fn(batch)`` over the leading axis of ``batches``, one batch at a time."""
    count = jax.tree.leaves(batches)[0].shape[0]
    first = jax.tree.map(lambda x: x[0], batches)
    total, _ = jax.lax.scan(lambda acc, b: (jax.tree.map(jnp.add, acc, fn(b)), None),
                            fn(first), jax.tree.map(lambda x: x[1:], batches))
    return jax.tree.map(lambda t: t / count, total)


def mean_gradient(loss_fn: LossFn, params, batches) -> Any:
    """:math:`\\bar g = \\frac1B \\sum_b \\nabla L_b(\\theta)` over a stack of ``B`` batches."""
    return _batch_mean(lambda batch: jax.grad(loss_fn)(params, batch), batches)


def hessian_vector_product(loss_fn: LossFn, params, batches, vector) -> Any:
    """:math:`\\frac1B \\sum_b H_b v` by forward-over-reverse differentiation.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: where the Hessian is taken.
      batches: a pytree of batches stacked on a leading axis.
      vector: a tree like ``params`` (treated as a constant).

    Returns:
      A tree like ``params``.
    """
    vector = jax.lax.stop_gradient(vector)

    def one(batch):
        return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (vector,))[1]

    return _batch_mean(one, batches)


def gradient_and_hg(loss_fn: LossFn, params, batches) -> tuple[Any, Any]:
    """:math:`(\\bar g, \\frac1B\\sum_b H_b \\bar g)`: the mean gradient and its Hessian product.

    With one batch per class this is the reference's ``cal_hg``. Jit it at the call site
    (``loss_fn`` is a Python closure).
    """
    grads = mean_gradient(loss_fn, params, batches)
    return grads, hessian_vector_product(loss_fn, params, batches, grads)


def _needs(measure: str, grads, hg, key) -> None:
    check_measure(measure)
    if measure in GRADIENT_MEASURES and grads is None:
        raise ValueError(f'measure {measure!r} needs the gradient (grads=)')
    if measure in HG_MEASURES and hg is None:
        raise ValueError(f'measure {measure!r} needs the Hessian-gradient product (hg=)')
    if measure == 'random' and key is None:
        raise ValueError("measure 'random' needs a PRNG key (key=)")


def _signed_products(measure: str, theta, grad, hg):
    """The per-parameter quantity a filter sums (before any absolute value outside the sum)."""
    theta = _wide(theta)
    if measure == 'magnitude':
        return jnp.square(theta)
    if measure == 'loss_preservation':
        return jnp.abs(theta * grad)
    if measure == 'biased_loss_preservation':
        return jnp.abs(theta) * jnp.abs(theta * grad)
    return theta * _wide(hg)


def parameter_scores(measure: str, params, *, grads=None, hg=None, key=None) -> Any:
    """Per-parameter scores (higher = more important), a tree like ``params`` (>= float32).

    Args:
      measure: one of :data:`MEASURES`.
      params: parameters (masked ones included: pruned entries score 0 except under
        ``random``).
      grads: mean gradient, for the loss-preservation measures.
      hg: Hessian-gradient product, for ``grasp`` and ``grad_norm_preservation``.
      key: PRNG key for ``random``.
    """
    _needs(measure, grads, hg, key)
    _, leaves, treedef = named_leaves(params)
    if measure == 'random':
        keys = jax.random.split(key, len(leaves))
        return jax.tree_util.tree_unflatten(
            treedef, [jax.random.uniform(k, jnp.shape(p)) for k, p in zip(keys, leaves)])
    grad_leaves = ([None] * len(leaves) if grads is None else
                   check_like(params, grads, 'grads tree'))
    hg_leaves = [None] * len(leaves) if hg is None else check_like(params, hg, 'hg tree')
    scores = [_signed_products(measure, p, g, h) for p, g, h in zip(leaves, grad_leaves,
                                                                     hg_leaves)]
    if measure == 'grad_norm_preservation':
        scores = [jnp.abs(s) for s in scores]
    return jax.tree_util.tree_unflatten(treedef, scores)


def filter_scores(measure: str, params, groups: Sequence[ChannelGroup], *, grads=None,
                  hg=None, key=None) -> dict[str, jax.Array]:
    """One score per output filter of every group (higher = more important).

    Args:
      measure: one of :data:`MEASURES` (aggregation in the module docstring's table).
      params: parameters, already masked.
      groups: channel groups; each group's ``filter`` slot is scored.
      grads, hg, key: as in :func:`parameter_scores`.

    Returns:
      ``{group name: float32 vector (width,)}``.
    """
    _needs(measure, grads, hg, key)
    for name, tree in (('grads', grads), ('hg', hg)):
        if tree is not None:
            check_like(params, tree, f'{name} tree')
    lookup = {name: dict(zip(*named_leaves(tree)[:2])) if tree is not None else {}
              for name, tree in (('params', params), ('grads', grads), ('hg', hg))}
    out = {}
    for index, group in enumerate(groups):
        path, axis = group.filter
        if measure == 'random':
            out[group.name] = jax.random.uniform(jax.random.fold_in(key, index),
                                                 (group.width,))
            continue
        theta = lookup['params'][path]
        products = _signed_products(measure, theta, lookup['grads'].get(path),
                                    lookup['hg'].get(path))
        axes = tuple(a for a in range(theta.ndim) if a != axis % theta.ndim)
        summed = jnp.sum(products, axis=axes)
        out[group.name] = jnp.abs(summed) if measure == 'grad_norm_preservation' else summed
    return out
