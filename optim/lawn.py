"""LAWN: Logit Attenuating Weight Normalization as an optax wrapper around any optimizer.

Training without tuned weight decay lets the weights of the final homogeneous sub-network
(the layers between the last normalization and the logits) grow, the logits grow with them,
the loss collapses and the optimizer loses its ability to move the net. LAWN trains freely for
``free_steps`` updates, then freezes the norm of every constrained weight group and keeps
training on the sphere of that radius.

For a constrained group :math:`w` (a whole kernel by default, or one output unit) with target
norm :math:`c`, an update after the switch is

.. math::

    \\tilde g = g - \\frac{\\langle g, w \\rangle}{\\lVert w \\rVert^2} w, \\qquad
    u = \\mathrm{inner}(\\tilde g), \\qquad
    w^+ = c \\, \\frac{w + u}{\\lVert w + u \\rVert},

returned as the update :math:`w^+ - w`: the tangent projection keeps the inner optimizer's
moments free of the radial direction, the retraction puts the weight back on the sphere. The
paper's text was not readable, so everything below its abstract is a reconstruction [infer]
and each open choice is a switch: what is projected (``projection``), per-layer or per-unit
groups (``per_unit``), the target (``target_norm``), and resetting the inner state at the
switch (``reset_inner_state``).

References:
  Gupta et al., `Logit Attenuating Weight Normalization <https://arxiv.org/abs/2108.05839>`_,
  2021.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm.trees import (MaskOrFn, check_like, is_placeholder, mask_flags, named_leaves,
                           require_params)

PROJECTIONS = ('gradient', 'update', 'none')

class LawnState(NamedTuple):
    """State of :func:`lawn`.

    Attributes:
      count: int32 number of updates taken; the switch happens at ``count == free_steps``.
      target_norms: the params tree with, per constrained leaf, its float32 target norm (a
        scalar, or shape ``(1, ..., 1, units)`` per unit; 0 until the switch) and ``None``
        elsewhere.
      inner_state: the wrapped optimizer's state.
    """

    count: jax.Array
    target_norms: Any
    inner_state: optax.OptState


def _check_constrained_leaf(leaf, name: str, per_unit: bool) -> None:
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise ValueError(f'constrained parameter {name!r} has non-float dtype {leaf.dtype}')
    if per_unit and leaf.ndim < 2:
        raise ValueError(f'per_unit needs kernels with >= 2 axes (units last), but '
                         f'constrained parameter {name!r} has shape {leaf.shape}')


def _sq_norm(x: jax.Array, per_unit: bool) -> jax.Array:
    """Squared norm in float32: one scalar, or per unit over every axis but the last."""
    x = x.astype(jnp.float32)
    if per_unit:
        return jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True)
    return jnp.sum(jnp.square(x))


def _safe_div(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator`` where the denominator is positive, else 0 (never NaN)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def _tangent(x: jax.Array, w: jax.Array, per_unit: bool) -> jax.Array:
    """``x`` minus its component along ``w`` (per group), in float32."""
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    axes = tuple(range(w.ndim - 1)) if per_unit else None
    inner_product = jnp.sum(x32 * w32, axis=axes, keepdims=per_unit)
    return x32 - _safe_div(inner_product, _sq_norm(w32, per_unit)) * w32


def constrained_norms(params, mask: MaskOrFn, per_unit: bool = False) -> dict[str, jax.Array]:
    """Norm of every constrained group, keyed by parameter path (for logging).

    Args:
      params: parameter tree.
      mask: as in :func:`lawn`.
      per_unit: one norm per output unit (last axis) instead of one per leaf.

    Returns:
      ``{path: norm}``: a float32 scalar per leaf, or a vector of unit norms.
    """
    names, leaves, _ = named_leaves(params, placeholders=True)
    out = {}
    for leaf, name, flag in zip(leaves, names, mask_flags(mask, params)):
        if flag:
            norm = jnp.sqrt(_sq_norm(leaf, per_unit))
            out[name] = norm.reshape(-1) if per_unit else norm
    return out


def lawn(inner: optax.GradientTransformation, *, free_steps: int, mask: MaskOrFn,
         per_unit: bool = False, projection: str = 'gradient', target_norm: float | None = None,
         reset_inner_state: bool = False) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that constrained weight groups keep a fixed norm after a free phase.

    Updates ``0 .. free_steps - 1`` are exactly ``inner``'s. At update ``free_steps`` each
    constrained group's target :math:`c` is recorded as its current norm
    :math:`\\lVert w \\rVert_2` (or set to ``target_norm``), and from then on every update
    projects, runs ``inner`` and retracts onto the sphere of radius :math:`c` (module
    docstring). Leaves outside the mask are always updated by ``inner`` unchanged.

    Reconstructed defaults [infer, arXiv:2108.05839's body was not readable]: the gradient is
    projected (so Adam's moments see tangential directions only), groups are whole layers
    (Frobenius norm, "layer-wise" in the companion paper), the target is the norm at the
    switch, and the inner state carries over the switch.

    A group whose norm is 0 when its target is recorded gets target 0, which marks it
    unconstrained: it is updated by ``inner`` with the unprojected gradient for the rest of
    training (pinning it at 0 would freeze, e.g., a zero-initialized head for ever). The
    projection and the retraction divide only by positive norms, so no step produces NaN.

    Args:
      inner: any optax optimizer (SGD-momentum, Adam, LAMB, a chain).
      free_steps: number of unconstrained updates before the switch (>= 0).
      mask: tree of Python bools matching params (or a prefix of it), or a function
        ``params -> such a tree`` (``optim.regex_mask``); True marks a constrained leaf.
        Placeholders (``None``, ``optax.MaskedNode``) are never constrained.
      per_unit: one norm per output unit, over every axis but the last (flax Dense
        ``(in, out)`` and conv ``HWIO`` kernels), instead of one per leaf.
      projection: ``'gradient'`` (project before ``inner``), ``'update'`` (project
        ``inner``'s output before the retraction) or ``'none'`` (retraction only).
      target_norm: None for the norm at the switch, or a positive constant used for every
        group.
      reset_inner_state: re-initialize the whole inner state at the switch. This restarts
        Adam's bias correction and also any schedule counted inside ``inner``; drive the
        learning rate from outside (``optax.inject_hyperparams`` around ``lawn``) to keep it.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`LawnState`; extra arguments
      are passed on to ``inner``.

    Raises:
      ValueError: ``free_steps < 0``, an unknown ``projection``, ``target_norm <= 0``, and at
        init/trace time a mask that does not match params (the message names the path), a
        mask that selects nothing, or a constrained leaf that is not float or, with ``per_unit``, has fewer than 2 axes.
      TypeError: ``free_steps`` is not an int, or a mask entry is not a bool (at init/trace).

    The phases are the two branches of a ``jax.lax.cond``, so the free phase runs exactly
    ``inner``'s arithmetic (a select would let XLA fuse it with ours and change the last bit).
    Under ``jax.vmap`` over states the cond becomes a select: still correct, no longer
    bit-exact.

    Example:
      >>> params = {'hidden': {'kernel': jnp.ones((3, 4))}, 'head': {'kernel': jnp.ones((4, 2))}}
      >>> tx = lawn(optax.adam(1e-2), free_steps=0, mask=optim.regex_mask('head/kernel'))
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, state, params)
      >>> new = optax.apply_updates(params, updates)
      >>> print(f"{float(jnp.linalg.norm(new['head']['kernel'])):.4f}")
      2.8284

    References:
      Gupta, Ramanath, Shi, Ramachandran, Zhou, Zhou, Keerthi, `Logit Attenuating Weight
      Normalization <https://arxiv.org/abs/2108.05839>`_, 2021.
    """
    if isinstance(free_steps, bool) or not isinstance(free_steps, (int, np.integer)):
        raise TypeError(f'free_steps must be an int, got {free_steps!r}')
    if free_steps < 0:
        raise ValueError(f'free_steps must be >= 0, got {free_steps}')
    if projection not in PROJECTIONS:
        raise ValueError(f'projection must be one of {PROJECTIONS}, got {projection!r}')
    if target_norm is not None and not target_norm > 0:
        raise ValueError(f'target_norm must be positive or None, got {target_norm}')
    inner = optax.with_extra_args_support(inner)

    def constrained(params) -> list[bool]:
        names, leaves, _ = named_leaves(params, placeholders=True)
        flags = mask_flags(mask, params)
        for leaf, name, flag in zip(leaves, names, flags):
            if flag:
                _check_constrained_leaf(leaf, name, per_unit)
        if not any(flags):
            raise ValueError('optim.lawn: the mask selects no parameter, so LAWN would '
                             'constrain nothing; check the mask (e.g. regex_mask pattern) '
                             'against the parameter paths')
        return flags

    def init_fn(params):
        _, leaves, treedef = named_leaves(params, placeholders=True)
        targets = [jnp.zeros_like(_sq_norm(leaf, per_unit)) if flag else None
                   for leaf, flag in zip(leaves, constrained(params))]
        return LawnState(count=jnp.zeros([], jnp.int32),
                         target_norms=jax.tree_util.tree_unflatten(treedef, targets),
                         inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, 'optim.lawn')
        flags = constrained(params)
        _, weights, treedef = named_leaves(params, placeholders=True)
        grads = check_like(params, updates, 'updates tree')
        old_targets = named_leaves(state.target_norms, placeholders=True)[1]
        at_switch = state.count == free_steps
        targets = []
        for w, flag, old in zip(weights, flags, old_targets):
            recorded = None
            if flag:
                recorded = (jnp.sqrt(_sq_norm(w, per_unit)) if target_norm is None
                            else jnp.full_like(old, target_norm))
            targets.append(None if recorded is None else jnp.where(at_switch, recorded, old))

        def free_phase():
            return inner.update(updates, state.inner_state, params, **extra_args)

        def constrained_phase():
            # Target 0 marks a group that had no norm to keep (see the docstring).
            on_sphere = [None if target is None else target > 0 for target in targets]

            def project(xs):
                return [x if keep is None or is_placeholder(x)
                        else jnp.where(keep, _tangent(x, w, per_unit).astype(x.dtype), x)
                        for x, w, keep in zip(xs, weights, on_sphere)]

            inner_state = state.inner_state
            if reset_inner_state:
                inner_state = jax.tree.map(lambda new, old: jnp.where(at_switch, new, old),
                                           inner.init(params), inner_state)
            inner_grads = project(grads) if projection == 'gradient' else grads
            steps, inner_state = inner.update(jax.tree_util.tree_unflatten(treedef, inner_grads),
                                              inner_state, params, **extra_args)
            steps = named_leaves(steps, placeholders=True)[1]
            moves = project(steps) if projection == 'update' else steps
            out = []
            for u, move, w, target, keep in zip(steps, moves, weights, targets, on_sphere):
                if keep is None or is_placeholder(u):
                    out.append(u)
                    continue
                moved = w.astype(jnp.float32) + move.astype(jnp.float32)
                length = jnp.sqrt(_sq_norm(moved, per_unit))
                retracted = jnp.where(length > 0, target * _safe_div(moved, length), moved)
                out.append(jnp.where(keep, (retracted - w.astype(jnp.float32)).astype(u.dtype),
                                     u))
            return jax.tree_util.tree_unflatten(treedef, out), inner_state

        # Two branches rather than one select: XLA would fuse the select into inner's
        # arithmetic and change its rounding, and the free phase must be inner bit for bit.
        new_updates, inner_state = jax.lax.cond(state.count >= free_steps, constrained_phase,
                                                free_phase)
        new_state = LawnState(count=optax.safe_increment(state.count),
                              target_norms=jax.tree_util.tree_unflatten(treedef, targets),
                              inner_state=inner_state)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
