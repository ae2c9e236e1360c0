"""Quadratic regularizers for continual learning (EWC, MAS, SI, RWalk) as optax wrappers.

The regularized loss of task :math:`k > 1` is

.. math::

    L(\\theta) = L_k(\\theta) + \\lambda \\sum_i \\Omega_i (\\theta_i - \\theta^*_i)^2,

with :math:`\\theta^*` the parameters at the end of the previous task and :math:`\\Omega` the
importance accumulated over past tasks (no 1/2 factor, as the EMR authors' code). The wrapper
adds the penalty's gradient :math:`2\\lambda\\Omega \\odot (\\theta - \\theta^*)` to the task
gradient before the inner optimizer, which is the same as adding the loss term. With plain
SGD at learning rate :math:`\\eta` one step is an interpolation towards the anchor,

.. math::

    \\theta_{t+1} = (1 - \\beta) \\odot \\theta_t + \\beta \\odot \\theta^* - \\eta \\nabla L_k,
    \\qquad \\beta = 2 \\eta \\lambda \\Omega,

whose coefficient depends on :math:`\\eta\\lambda` and overshoots when :math:`\\beta > 1`.

The running importance of the current task is tracked online after every step
(:mod:`optim.importance`); :func:`new_task` merges it into the past importance,
:math:`\\Omega_{prev} \\leftarrow (\\Omega_{prev} + \\Omega_{task}) / 2`, and moves the anchor.
:func:`optim.emr` shares this state and bookkeeping.

References:
  Lubana, Trivedi, Koutra, Dick, `How do Quadratic Regularizers Prevent Catastrophic
  Forgetting: The Role of Interpolation <https://arxiv.org/abs/2102.02805>`_, CoLLAs 2022.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optim import importance as imp
from optim._params import (MaskOrFn, flatten_with_placeholders, is_placeholder, mask_flags,
                           require_params)

ALPHA_EPS = 1e-20


class ContinualState(NamedTuple):
    """State of the quadratic regularizers and of :func:`optim.emr`.

    Attributes:
      count: int32 number of updates.
      has_anchor: bool scalar, False until the first :func:`new_task` (during the first task
        no regularization or interpolation happens).
      anchor: :math:`\\theta^*`, the parameters at the end of the previous task.
      start: the parameters at the start of the current task (origin of SI's path term).
      omega_prev: float32 importance of past tasks.
      running: float32 EMA of the online importance term of the current task.
      fisher: float32 EMA of :math:`(g \\odot \\theta)^2` (RWalk only; zeros otherwise).
      omega_cur: float32 importance of the current task after the last step.
      inner_state: the wrapped optimizer's state.
    """

    count: jax.Array
    has_anchor: jax.Array
    anchor: Any
    start: Any
    omega_prev: Any
    running: Any
    fisher: Any
    omega_cur: Any
    inner_state: optax.OptState


def _zeros32(tree):
    return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), tree)


def _copy(tree):
    return jax.tree.map(jnp.array, tree)


def _flags(mask: MaskOrFn | None, params) -> list[bool]:
    leaves, _, _ = flatten_with_placeholders(params)
    if mask is None:
        return [not is_placeholder(leaf) for leaf in leaves]
    return mask_flags(mask, params)


def _validate(importance: str, momentum, path: str, damping) -> None:
    imp.check_importance(importance)
    if path not in imp.PATHS:
        raise ValueError(f'unknown path {path!r}; choose one of {imp.PATHS}')
    if isinstance(momentum, (int, float)) and not 0 < momentum <= 1:
        raise ValueError(f'momentum must be in (0, 1], got {momentum}')
    if isinstance(damping, (int, float)) and not damping > 0:
        raise ValueError(f'damping must be positive, got {damping}')


def continual_transform(inner: optax.GradientTransformation, *, importance: str,
                        mode: str, strength=0.0, mask: MaskOrFn | None = None,
                        momentum=0.8, path: str = 'abs', damping=imp.DAMPING
                        ) -> optax.GradientTransformationExtraArgs:
    """The shared engine of :func:`quadratic` (``mode='quadratic'``) and :func:`optim.emr`
    (``mode='emr'``); use those."""
    _validate(importance, momentum, path, damping)
    if mode not in ('quadratic', 'emr'):
        raise ValueError(f"mode must be 'quadratic' or 'emr', got {mode!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        _flags(mask, params)  # validates the mask against params
        return ContinualState(
            count=jnp.zeros([], jnp.int32), has_anchor=jnp.zeros([], jnp.bool_),
            anchor=_copy(params), start=_copy(params), omega_prev=_zeros32(params),
            running=_zeros32(params), fisher=_zeros32(params), omega_cur=_zeros32(params),
            inner_state=inner.init(params))

    def update_fn(updates, state, params=None, *, mas_grads=None, **extra_args):
        require_params(params, f'optim.{mode}')
        flags = _flags(mask, params)
        thetas, _, treedef = flatten_with_placeholders(params)
        grads, _, updates_def = flatten_with_placeholders(updates)
        if updates_def != treedef:
            raise ValueError('updates and params have different tree structures')
        if importance == 'mas' and mas_grads is None:
            raise ValueError("importance='mas' needs the gradient of the squared output norm "
                             'at every step: pass update(..., mas_grads=grads_of_norm) '
                             '(see optim.importance.squared_output_norm)')
        anchor = flatten_with_placeholders(state.anchor)[0]
        omega_prev = flatten_with_placeholders(state.omega_prev)[0]

        if mode == 'quadratic':
            inner_grads = []
            for g, w, a, o, flag in zip(grads, thetas, anchor, omega_prev, flags):
                if not flag:
                    inner_grads.append(g)
                    continue
                pull = 2.0 * strength * o * (w.astype(jnp.float32) - a.astype(jnp.float32))
                inner_grads.append((g.astype(jnp.float32) + pull).astype(g.dtype))
            inner_updates = jax.tree_util.tree_unflatten(treedef, inner_grads)
        else:
            inner_updates = updates
        steps, inner_state = inner.update(inner_updates, state.inner_state, params,
                                          **extra_args)
        steps = flatten_with_placeholders(steps)[0]

        extra = (flatten_with_placeholders(mas_grads)[0] if mas_grads is not None else [None] * len(grads))
        old = [flatten_with_placeholders(t)[0] for t in (state.start, state.running, state.fisher,
                                        state.omega_cur)]
        running, fisher, omega_cur = [], [], []
        for i, flag in enumerate(flags):
            start, run, fis, cur = (o[i] for o in old)
            if not flag:
                running.append(run), fisher.append(fis), omega_cur.append(cur)
                continue
            g = grads[i].astype(jnp.float32)
            w = thetas[i].astype(jnp.float32)
            moved = w + steps[i].astype(jnp.float32)
            if importance == 'ewc':
                term = jnp.square(g)
            elif importance == 'mas':
                term = jnp.abs(extra[i].astype(jnp.float32))
            else:
                term = imp.path_term(g, moved, start, path)
            run = momentum * term + (1.0 - momentum) * run
            if importance == 'rwalk':
                fis = momentum * jnp.square(g * w) + (1.0 - momentum) * fis
            running.append(run), fisher.append(fis)
            omega_cur.append(imp.current_importance(importance, run, fis, moved, anchor[i],
                                                    damping))

        if mode == 'emr':
            def interpolate(steps):
                out = []
                for u, w, a, cur, prev, flag in zip(steps, thetas, anchor, omega_cur,
                                                    omega_prev, flags):
                    if not flag:
                        out.append(u)
                        continue
                    root = jnp.sqrt(cur)
                    alpha = root / (root + jnp.sqrt(prev) + ALPHA_EPS)
                    new = (alpha * u.astype(jnp.float32) - (1.0 - alpha)
                           * (w.astype(jnp.float32) - a.astype(jnp.float32)))
                    out.append(new.astype(u.dtype))
                return out

            # A cond, not a select: on the first task the update must be inner's bit for bit.
            steps = jax.lax.cond(state.has_anchor, interpolate, lambda s: list(s), steps)

        unflat = lambda leaves: jax.tree_util.tree_unflatten(treedef, leaves)  # noqa: E731
        new_state = state._replace(
            count=optax.safe_increment(state.count), running=unflat(running),
            fisher=unflat(fisher), omega_cur=unflat(omega_cur), inner_state=inner_state)
        return unflat(steps), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def quadratic(inner: optax.GradientTransformation, importance: str, strength=1.0, *,
              mask: MaskOrFn | None = None, momentum=0.8, path: str = 'abs',
              damping=imp.DAMPING) -> optax.GradientTransformationExtraArgs:
    """Quadratic-regularizer baseline: ``inner`` applied to :math:`g + 2\\lambda\\Omega
    \\odot (\\theta - \\theta^*)`.

    Args:
      inner: the optimizer (e.g. ``optax.sgd(lr, momentum=0.9)``).
      importance: ``'ewc'``, ``'mas'``, ``'si'`` or ``'rwalk'`` (online estimates,
        :mod:`optim.importance`); an offline importance can be given to :func:`new_task`.
      strength: :math:`\\lambda` (float, or an array under ``optax.inject_hyperparams``).
      mask: tree of bools (or ``params -> tree``, e.g. ``optim.regex_mask('^(?!head)')``);
        True marks regularized leaves. Leave the classifier heads out.
      momentum: EMA weight of the new online term (0.8 in the reference code).
      path: ``'abs'`` or ``'relu'`` for SI/RWalk's path term.
      damping: :math:`\\xi` in SI/RWalk's normalization.

    Returns:
      ``optax.GradientTransformationExtraArgs`` with :class:`ContinualState`. With
      ``importance='mas'``, ``update`` needs ``mas_grads=`` (gradient of
      ``importance.squared_output_norm``); other extra args go to ``inner``.

    Raises:
      ValueError: unknown importance or path, momentum outside (0, 1], damping <= 0; at
        trace time a mask not matching params, or MAS without ``mas_grads``.

    Example:
      >>> tx = quadratic(optax.sgd(0.01), 'ewc', strength=100.0)
      >>> state = tx.init(params)
      >>> ...  # train task 1
      >>> state = new_task(state, params)
      >>> ...  # train task 2, pulled towards task 1's end point
    """
    return continual_transform(inner, importance=importance, mode='quadratic',
                               strength=strength, mask=mask, momentum=momentum, path=path,
                               damping=damping)


def _named(importance: str):
    def factory(inner: optax.GradientTransformation, strength=1.0, *,
                mask: MaskOrFn | None = None, momentum=0.8, path: str = 'abs',
                damping=imp.DAMPING) -> optax.GradientTransformationExtraArgs:
        return quadratic(inner, importance, strength, mask=mask, momentum=momentum,
                         path=path, damping=damping)
    factory.__name__ = importance
    factory.__doc__ = (f"Quadratic regularizer with online {importance.upper()} importance: "
                       f"``quadratic(inner, '{importance}', strength, ...)``.")
    return factory


ewc = _named('ewc')
mas = _named('mas')
si = _named('si')
rwalk = _named('rwalk')


def _align(reference, tree, what: str):
    """``tree`` with ``reference``'s placeholders (optax.masked) put in; clear error if the
    structures differ."""
    try:
        return jax.tree.map(lambda r, t: r if is_placeholder(r) else t, reference, tree,
                            is_leaf=is_placeholder)
    except (ValueError, TypeError) as err:
        ref = jax.tree_util.tree_structure(reference, is_leaf=is_placeholder)
        got = jax.tree_util.tree_structure(tree, is_leaf=is_placeholder)
        raise ValueError(f'new_task: {what} does not match the optimizer state: expected a '
                         f'tree like {ref}, got {got} ({err})') from None


def _check_shapes(reference, tree, what: str):
    for (path, r), t in zip(jax.tree_util.tree_flatten_with_path(reference)[0],
                            jax.tree.leaves(tree)):
        if jnp.shape(r) != jnp.shape(t):
            raise ValueError(f'new_task: {what} leaf {jax.tree_util.keystr(path)} has shape '
                             f'{jnp.shape(t)}, expected {jnp.shape(r)}')


def new_task(opt_state, params, *, omega=None, inner_state=None):
    """Start a new task: merge importances and move the anchor, in every
    :class:`ContinualState` found in ``opt_state`` (nested in chains, ``optax.masked`` or
    ``optax.inject_hyperparams`` states).

    :math:`\\Omega_{prev} \\leftarrow (\\Omega_{prev} + \\Omega_{task}) / 2` with
    :math:`\\Omega_{task}` = ``omega`` if given (an offline importance) else the online
    importance after the last step; then anchor and SI start <- ``params``, running sums <- 0,
    ``has_anchor`` <- True. Pure; shapes and dtypes are kept, so jitted updates do not retrace.

    Args:
      opt_state: an optimizer state containing one or more :class:`ContinualState`.
      params: the parameters at the end of the finished task (same tree as at init).
      omega: optional importance tree like ``params``.
      inner_state: optional replacement for the wrapped optimizer's state (e.g.
        ``inner.init(params)`` to reset momentum at the task boundary, as the reference).

    Returns:
      The updated optimizer state.

    Raises:
      ValueError: ``params`` / ``omega`` do not match the state's tree or shapes, or
        ``opt_state`` holds no :class:`ContinualState`.
    """
    found = []

    def visit(node):
        if not isinstance(node, ContinualState):
            return node
        found.append(True)
        new_params = _align(node.anchor, params, 'params')
        _check_shapes(node.anchor, new_params, 'params')
        task = node.omega_cur
        if omega is not None:
            task = _align(node.anchor, omega, 'omega')
            _check_shapes(node.anchor, task, 'omega')
        merged = jax.tree.map(lambda p, t: 0.5 * (p + jnp.asarray(t, jnp.float32)),
                              node.omega_prev, task)
        as_anchor = jax.tree.map(lambda a, p: jnp.asarray(p, a.dtype), node.anchor, new_params)
        return node._replace(
            has_anchor=jnp.ones([], jnp.bool_), anchor=as_anchor, start=as_anchor,
            omega_prev=merged, running=_zeros32(node.running), fisher=_zeros32(node.fisher),
            omega_cur=_zeros32(node.omega_cur),
            inner_state=node.inner_state if inner_state is None else inner_state)

    out = jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, ContinualState))
    if not found:
        raise ValueError('new_task: opt_state contains no ContinualState (build the optimizer '
                         'with optim.emr or optim.ewc/mas/si/rwalk/quadratic)')
    return out
