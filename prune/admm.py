"""ADMM training toward the unified set, and retraining with the unified weights tied.

Training a network whose constrained kernels :math:`W` must lie in the unified set
:math:`S` (:mod:`prune.unify`) is split by ADMM into

.. math::

    W &\\leftarrow \\text{a few optimizer steps on } L(W) + \\tfrac{\\rho}{2}
        \\lVert W - Z + U \\rVert_F^2 \\quad(\\text{extra gradient } \\rho (W - Z + U)), \\\\
    Z &\\leftarrow \\Pi_S(W + U) \\quad(\\text{block selection redone on } W + U), \\\\
    U &\\leftarrow U + W - Z .

:func:`admm` is an optax wrapper doing the W-step's gradient change and, every
``update_every`` updates, the Z- and U-steps inside the same (jit-compiled) ``update`` with
static shapes (``lax.cond``; greedy selection by ``argsort``). The penalty is the **squared**
norm (:func:`admm_penalty`); its gradient is what is added. :math:`\\rho` may be a schedule of
the update count, e.g. :func:`rho_schedule` (geometric growth, [infer]: the usual practice of
the ADMM-pruning line, Zhang et al. arXiv:1804.03294; the paper's values were not readable).
With :math:`\\rho = 0` the wrapper returns ``inner``'s updates bit for bit.

After ADMM, the hard projection :math:`W \\leftarrow \\Pi_S(W)` fixes the codes, and
:func:`tied_optimizer` retrains with the unified and pruned blocks tied: ``frozen`` (their
updates are 0, the free weights train) or ``train_magnitudes=True`` (each unified block keeps
its signs and trains its shared magnitude :math:`a_b`, whose gradient is :math:`\\sum_i s_i
g_i`; the entries get :math:`s_i \\sum_j s_j g_j`, so any elementwise, sign-equivariant
optimizer such as SGD or Adam moves them together; they are re-tied after every step).

Reference: Lin et al., arXiv:2106.08301 (ADMM is stated; every detail here is [infer]).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnorm.trees import named_leaves, require_params
from prune import unify
from prune.unify import FREE, UNIFIED, UnifySpec

class AdmmState(NamedTuple):
    """State of :func:`admm`.

    Attributes:
      count: int32 number of updates taken.
      z: ``{path: array}`` auxiliary variable (in the unified set) per constrained kernel.
      u: ``{path: array}`` scaled dual variable per constrained kernel.
      inner_state: the wrapped optimizer's state.
    """

    count: jax.Array
    z: dict
    u: dict
    inner_state: optax.OptState


def rho_schedule(init: float, factor: float, every: int) -> optax.Schedule:
    """:math:`\\rho(t) = \\text{init} \\cdot \\text{factor}^{\\lfloor t / \\text{every}
    \\rfloor}` for update count ``t`` (``every`` in updates)."""
    if init < 0 or factor <= 0 or every < 1:
        raise ValueError(f'need init >= 0, factor > 0, every >= 1; got {init}, {factor}, '
                         f'{every}')
    return optax.exponential_decay(init, every, factor, staircase=True)


def _kernels(params, grids) -> dict:
    lookup = dict(zip(*named_leaves(params)[:2]))
    return {p: lookup[p] for p in grids}


def _project_dict(kernels: dict, spec: UnifySpec) -> dict:
    return unify.project(kernels, spec._replace(pattern='.*'))


def admm_penalty(params, z: dict, u: dict, rho) -> jax.Array:
    """:math:`\\tfrac{\\rho}{2} \\sum_l \\lVert W_l - Z_l + U_l \\rVert_F^2` over the kernels
    of ``z`` (the augmented-Lagrangian term; its gradient in :math:`W` is what :func:`admm`
    adds)."""
    w = _kernels(params, z)
    return 0.5 * rho * sum(jnp.sum((w[p] - z[p] + u[p]) ** 2) for p in z)


def admm_gap(params, state: AdmmState) -> jax.Array:
    """:math:`\\lVert W - Z \\rVert / \\lVert W \\rVert` over all constrained kernels."""
    w = _kernels(params, state.z)
    num = sum(jnp.sum((w[p].astype(jnp.float32) - state.z[p]) ** 2) for p in w)
    den = sum(jnp.sum(w[p].astype(jnp.float32) ** 2) for p in w)
    return jnp.sqrt(num / jnp.maximum(den, 1e-30))


def admm(inner: optax.GradientTransformation, spec: UnifySpec,
         rho: float | Callable[[jax.Array], jax.Array] = 1e-3,
         update_every: int = 1) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` with the ADMM W-step gradient and periodic Z/U refreshes.

    Args:
      inner: any optax optimizer.
      spec: the unified set (:class:`prune.unify.UnifySpec`); selection is greedy.
      rho: penalty, a float or a schedule of the update count (:func:`rho_schedule`).
      update_every: Z and U are refreshed at the start of every update whose count is a
        positive multiple of this (e.g. the steps per epoch), from the params passed to it.

    Returns:
      A transformation; ``init`` sets :math:`Z = \\Pi_S(W_0)` and :math:`U = 0`; ``update``
      needs ``params``.

    Example:
      >>> spec = UnifySpec((1, 4), unify_ratio=0.5, pattern='w')
      >>> tx = admm(optax.sgd(0.1), spec, rho=rho_schedule(1e-3, 2.0, 100), update_every=10)
      >>> params = {'w': jnp.ones((8, 4))}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    """
    spec = unify.check_spec(spec)
    if update_every < 1:
        raise ValueError(f'update_every must be >= 1, got {update_every}')
    schedule = rho if callable(rho) else (lambda _: rho)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        grids = unify.constrained(params, spec)
        w = {p: k.astype(jnp.float32) for p, k in _kernels(params, grids).items()}
        return AdmmState(count=jnp.zeros((), jnp.int32), z=_project_dict(w, spec),
                         u=jax.tree.map(jnp.zeros_like, w), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, 'prune.admm')
        w = {p: k.astype(jnp.float32) for p, k in _kernels(params, state.z).items()}

        def refresh(zu):
            _, u = zu
            z = _project_dict({p: w[p] + u[p] for p in w}, spec)
            return z, {p: u[p] + w[p] - z[p] for p in w}

        due = (state.count > 0) & (state.count % update_every == 0)
        z, u = jax.lax.cond(due, refresh, lambda zu: zu, (state.z, state.u))
        r = jnp.asarray(schedule(state.count), jnp.float32)
        paths, grads, treedef = named_leaves(updates)
        new = []
        for path, g in zip(paths, grads):
            if path in w:
                extra = (r * (w[path] - z[path] + u[path])).astype(g.dtype)
                g = jnp.where(r == 0, g, g + extra)
            new.append(g)
        steps, inner_state = inner.update(jax.tree_util.tree_unflatten(treedef, new),
                                          state.inner_state, params, **extra_args)
        return steps, AdmmState(state.count + 1, z, u, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------------- retraining

class TiedState(NamedTuple):
    """State of :func:`tied_optimizer`.

    Attributes:
      codes: ``{path: int8 codes (n_blocks,)}`` of the constrained kernels (all 0 = free
        until :func:`install_codes`).
      signs: ``{path: float32 kernel}``: the sign of each weight of a unified block, else 0.
      inner_state: the wrapped optimizer's state.
    """

    codes: dict
    signs: dict
    inner_state: optax.OptState


def install_codes(state: TiedState, params, codes: dict, spec: UnifySpec) -> TiedState:
    """``state`` tying the blocks of ``codes``; signs are read from ``params`` (project them
    with the same codes first; a zero weight takes +).

    Raises:
      TypeError: ``state`` is not a :class:`TiedState`.
      ValueError: the codes do not match the constrained kernels.
    """
    if not isinstance(state, TiedState):
        raise TypeError(f'expected the TiedState of tied_optimizer, got {type(state).__name__}')
    if set(codes) != set(state.codes) or any(
            jnp.shape(codes[p]) != jnp.shape(state.codes[p]) for p in codes):
        raise ValueError(f'codes for {sorted(codes)} do not match the constrained kernels '
                         f'{sorted(state.codes)}')
    spec = unify.check_spec(spec)
    w = _kernels(params, codes)
    signs = {}
    for p in codes:
        kind = _spread(jnp.asarray(codes[p]), spec, unify.grid(jnp.shape(w[p]), spec))
        signs[p] = jnp.where(kind == UNIFIED, jnp.where(w[p] < 0, -1.0, 1.0), 0.0)
    return TiedState({p: jnp.asarray(c, jnp.int8) for p, c in codes.items()}, signs,
                     state.inner_state)


def _spread(per_block, spec: UnifySpec, g):
    """A per-block value broadcast to every entry of its block, in the kernel's layout."""
    size = spec.block_shape[0] * spec.block_shape[1]
    return unify.from_blocks(jnp.broadcast_to(per_block[:, None], (g.n_blocks, size)), g,
                             spec.block_shape)


def tied_optimizer(inner: optax.GradientTransformation, spec: UnifySpec, *,
                   train_magnitudes: bool = False) -> optax.GradientTransformationExtraArgs:
    """Retrain after the hard projection with unified/pruned blocks tied.

    Args:
      inner: any elementwise optax optimizer (SGD, momentum, Adam, weight decay).
      spec: the :class:`prune.unify.UnifySpec` the codes were selected with (its geometry).
      train_magnitudes: False freezes unified and pruned blocks; True trains each unified
        block's shared magnitude (pruned blocks stay 0).

    Returns:
      A transformation whose state starts all-free; call :func:`install_codes` with the
      projected params and their codes. ``update`` needs ``params``.
    """
    spec = unify.check_spec(spec)
    inner = optax.with_extra_args_support(inner)

    def geometry(shape):
        return spec, unify.grid(shape, spec)

    def init_fn(params):
        grids = unify.constrained(params, spec)
        return TiedState(codes={p: jnp.zeros(g.n_blocks, jnp.int8) for p, g in grids.items()},
                          signs={p: jnp.zeros(g.shape, jnp.float32) for p, g in grids.items()},
                          inner_state=inner.init(params))

    def block_sum(x, shape):
        _, g = geometry(shape)
        return unify.to_blocks(x, g, spec.block_shape).sum(axis=1)

    def spread(per_block, shape):
        return _spread(per_block, spec, geometry(shape)[1])

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, 'prune.tied_optimizer')
        kinds = {p: spread(state.codes[p], state.signs[p].shape) for p in state.codes}
        paths, grads, treedef = named_leaves(updates)
        new = []
        for path, g in zip(paths, grads):
            if path in kinds:
                s = state.signs[path].astype(g.dtype)
                tied = (s * spread(block_sum(s * g, g.shape), g.shape) if train_magnitudes
                        else jnp.zeros_like(g))
                g = jnp.where(kinds[path] == FREE, g, jnp.where(kinds[path] == UNIFIED, tied, 0))
            new.append(g)
        steps, inner_state = inner.update(jax.tree_util.tree_unflatten(treedef, new),
                                          state.inner_state, params, **extra_args)
        lookup = dict(zip(*named_leaves(params)[:2]))
        paths, leaves, treedef = named_leaves(steps)
        out = []
        for path, u in zip(paths, leaves):
            if path in kinds:
                p, s, kind = lookup[path], state.signs[path], kinds[path]
                if train_magnitudes:
                    _, g = geometry(p.shape)
                    count = jnp.maximum(jnp.asarray(unify.valid_entries(
                        g, spec.block_shape)).sum(axis=1), 1)
                    a = block_sum(s * (p + u), p.shape) / count
                    tied = (s * spread(a, p.shape)).astype(p.dtype) - p
                else:
                    tied = jnp.zeros_like(u)
                u = jnp.where(kind == FREE, u, jnp.where(kind == UNIFIED, tied, 0)).astype(
                    u.dtype)
            out.append(u)
        return (jax.tree_util.tree_unflatten(treedef, out),
                TiedState(state.codes, state.signs, inner_state))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

