"""Gradient-flow quantities of Lubana & Dick (arXiv:2009.11839), per layer and in total.

Along gradient flow :math:`\\dot\\theta = -g(\\theta)`, with :math:`H` the Hessian of the loss
and :math:`N = \\lVert\\theta\\rVert^2`,

.. math::

    \\frac{dL}{dt} = -\\lVert g \\rVert^2, \\qquad
    \\frac{dN}{dt} = -2\\,\\theta^\\top g, \\qquad
    \\frac{d^2N}{dt^2} = 2\\lVert g \\rVert^2 + 2\\,\\theta^\\top H g, \\qquad
    \\frac{d\\lVert g\\rVert^2}{dt} = -2\\, g^\\top H g .

Each splits into a sum over parameter groups (a layer's leaf ``l``):
:math:`dN_l/dt = -2\\theta_l^\\top g_l`,
:math:`d^2N_l/dt^2 = 2\\lVert g_l\\rVert^2 + 2\\theta_l^\\top (Hg)_l`, and ``loss_rate``
:math:`-\\lVert g_l\\rVert^2` is the layer's share of :math:`dL/dt`.
So magnitude pruning (:math:`\\theta^2`) is order 0, loss preservation (:math:`|\\theta g|`)
order 1 and GraSP / gradient-norm preservation (:math:`\\theta Hg`) order 2.

**Scale invariance** [derived; not a claim of the paper]. If a filter :math:`\\theta_f`
feeds a train-mode BatchNorm (directly, or through a positively homogeneous map),
:math:`L(c\\,\\theta_f) = L(\\theta)` for every :math:`c > 0`. Differentiating in :math:`c`
at 1 gives :math:`\\theta_f^\\top g_f = 0` (the filter's norm is conserved under gradient
flow), and differentiating :math:`g(c\\theta_f)` gives :math:`H_{:,f}\\theta_f = (-g_f, 0)`,
hence :math:`\\theta_f^\\top (Hg)_f = -\\lVert g_f \\rVert^2`. BN's :math:`\\epsilon` breaks
both by a relative amount of order :math:`\\epsilon / (\\sigma_f^2 + \\epsilon)`, with
:math:`\\sigma_f^2` the filter's output variance. So with train-mode BN, signed GraSP ranks
filters by :math:`-\\lVert g_f\\rVert^2` and gradient-norm preservation by
:math:`\\lVert g_f\\rVert^2`.
:func:`filter_flow` returns the three per-filter quantities to check them.
"""
from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp

from jaxnorm.trees import named_leaves
from prune.masks import Slot, apply_masks


def _wide(x) -> jax.Array:
    """``x`` in at least float32 (float64 stays float64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _dot(a, b) -> jax.Array:
    return jnp.sum(_wide(a) * _wide(b))


def flow_quantities(params, grads, hg) -> dict[str, dict[str, jax.Array]]:
    """The gradient-flow derivatives from :math:`\\theta`, :math:`g` and :math:`Hg`.

    Args:
      params, grads, hg: trees of the same structure (``hg`` is :math:`H g` for the same
        loss whose gradient is ``grads``, e.g. from :func:`prune.scores.gradient_and_hg`).

    Returns:
      ``{'total': {...}, 'per_layer': {path: {...}}}``, each inner dict holding scalars
      (float32, float64 for float64 inputs): ``loss_rate`` (:math:`-\\lVert g\\rVert^2`),
      ``norm_rate`` (:math:`-2\\theta^\\top g`), ``norm_acceleration``
      (:math:`2\\lVert g\\rVert^2 + 2\\theta^\\top Hg`) and ``grad_norm_rate``
      (:math:`-2 g^\\top Hg`).
    """
    paths, thetas, _ = named_leaves(params)
    _, gs, _ = named_leaves(grads)
    _, hgs, _ = named_leaves(hg)
    per_layer = {}
    for path, theta, g, h in zip(paths, thetas, gs, hgs):
        grad_sq = _dot(g, g)
        per_layer[path] = {'loss_rate': -grad_sq, 'norm_rate': -2.0 * _dot(theta, g),
                           'norm_acceleration': 2.0 * grad_sq + 2.0 * _dot(theta, h),
                           'grad_norm_rate': -2.0 * _dot(g, h)}
    keys = ('loss_rate', 'norm_rate', 'norm_acceleration', 'grad_norm_rate')
    total = {k: sum(layer[k] for layer in per_layer.values()) for k in keys}
    return {'total': total, 'per_layer': per_layer}


def flow_derivatives(loss: Callable, params) -> dict[str, dict[str, jax.Array]]:
    """:func:`flow_quantities` of a loss ``params -> scalar`` (one ``jvp`` of ``grad``)."""
    grads, hg = jax.jvp(jax.grad(loss), (params,), (jax.grad(loss)(params),))
    return flow_quantities(params, grads, hg)


def filter_flow(params, grads, hg, filters: Iterable[Slot]) -> dict[str, dict[str, jax.Array]]:
    """Per-filter :math:`\\theta_f^\\top g_f`, :math:`\\theta_f^\\top (Hg)_f` and
    :math:`\\lVert g_f\\rVert^2` of the given kernels (one value per slice along the axis).

    Args:
      params, grads, hg: as in :func:`flow_quantities`.
      filters: kernel slots, e.g. ``Slot('layer1/conv/kernel', -1)`` or the ``filter`` of
        each :class:`prune.masks.ChannelGroup`.

    Returns:
      ``{path: {'theta_g': (C,), 'theta_hg': (C,), 'grad_sq': (C,), 'theta_sq': (C,)}}``.
    """
    trees = [dict(zip(*named_leaves(t)[:2])) for t in (params, grads, hg)]
    out = {}
    for path, axis in filters:
        theta, g, h = (_wide(tree[path]) for tree in trees)
        axes = tuple(a for a in range(theta.ndim) if a != axis % theta.ndim)
        out[path] = {'theta_g': jnp.sum(theta * g, axes), 'theta_hg': jnp.sum(theta * h, axes),
                     'grad_sq': jnp.sum(g * g, axes), 'theta_sq': jnp.sum(theta * theta, axes)}
    return out


def masked_grad_sq(grads, masks) -> jax.Array:
    """:math:`\\lVert m \\odot g\\rVert^2`: the squared gradient over the kept entries, i.e.
    :math:`-dL/dt` of the masked flow :math:`\\dot\\theta = -m \\odot g` (pruned entries stay
    at 0, so only kept ones move).

    Args:
      grads: gradient tree.
      masks: bool (or 0/1) tree of the same structure.
    """
    return sum(_dot(g, g) for g in jax.tree.leaves(apply_masks(grads, masks)))


def masking_change(loss: Callable, params, old_masks, new_masks) -> dict[str, jax.Array]:
    """What masking does to the first- and second-order flow quantities (Lubana & Dick's
    claims ii and iii, measured directly).

    With :math:`\\theta` pruned by ``old_masks`` (:math:`m_0 \\odot \\theta = \\theta`) and
    :math:`\\theta' = m_1 \\odot \\theta`:

    * ``loss_before`` :math:`L(\\theta)` and ``loss_change``
      :math:`\\Delta L = L(\\theta') - L(\\theta)`;
    * ``grad_sq_before`` :math:`\\lVert m_0 \\odot g(\\theta)\\rVert^2` and ``grad_sq_after``
      :math:`\\lVert m_1 \\odot g(\\theta')\\rVert^2`, so that :math:`dL/dt` changes by
      ``-grad_sq_change`` at masking (:func:`masked_grad_sq`).

    Args:
      loss: ``params -> scalar``.
      params: the network before masking.
      old_masks, new_masks: bool trees mirroring ``params`` (``new`` a subset of ``old``).
    """
    masked = apply_masks(params, new_masks)
    loss_before, g_before = jax.value_and_grad(loss)(params)
    loss_after, g_after = jax.value_and_grad(loss)(masked)
    before, after = masked_grad_sq(g_before, old_masks), masked_grad_sq(g_after, new_masks)
    return {'loss_before': loss_before, 'loss_change': loss_after - loss_before,
            'grad_sq_before': before,
            'grad_sq_after': after, 'grad_sq_change': after - before}
