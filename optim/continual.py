"""What :func:`optim.quadratic` and :func:`optim.emr` share: an inner optimizer with an
importance tracker around it, and the task boundary.

One update, with :math:`g` the task gradient and the leaves selected by ``mask``:

1. ``before``: the gradient the inner optimizer sees (the quadratic penalty's gradient added,
   :func:`optim.quadratic.penalize`; none for EMR);
2. :math:`u = \\mathrm{inner}(\\cdot)`: the inner step;
3. the tracker's online importance from :math:`g` (or ``before``'s output, the penalized
   gradient, with ``track_inner_input``) and :math:`\\theta + u`
   (:meth:`optim.importance.ImportanceTracker.update`);
4. ``after``: the update returned (EMR's interpolation towards the anchor,
   :func:`optim.emr.interpolate`; none for the quadratic regularizers).

:func:`new_task` closes a task in every :class:`ContinualState` of an optimizer state.

References:
  Lubana, Trivedi, Koutra, Dick, `How do Quadratic Regularizers Prevent Catastrophic
  Forgetting: The Role of Interpolation <https://arxiv.org/abs/2102.02805>`_, CoLLAs 2022.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnorm.trees import MaskOrFn, aligned, mask_tree, require_params
from optim.importance import ImportanceState, ImportanceTracker, merge_task

# (updates, params, importance state, selected-leaf tree) -> updates
Hook = Callable[[Any, Any, ImportanceState, Any], Any]


class ContinualState(NamedTuple):
    """State of the quadratic regularizers (:func:`optim.quadratic`, ``ewc``, ``mas``,
    ``si``, ``rwalk``) and of :func:`optim.emr`.

    Attributes:
      count: int32 number of updates.
      importance: the tracker's :class:`optim.importance.ImportanceState`: the anchor
        :math:`\\theta^*`, the past importance :math:`\\Omega_{prev}`, the current task's
        running sums and :math:`\\Omega_{cur}`.
      inner_state: the wrapped optimizer's state.
    """

    count: jax.Array
    importance: ImportanceState
    inner_state: optax.OptState


def with_importance(inner: optax.GradientTransformation, tracker: ImportanceTracker, *,
                    mask: MaskOrFn | None, name: str, before: Hook | None = None,
                    after: Hook | None = None, track_inner_input: bool = False
                    ) -> optax.GradientTransformationExtraArgs:
    """``inner`` with ``tracker`` kept alongside and the hooks around it (module docstring).

    Args:
      inner: any optax optimizer.
      tracker: the online importance estimator.
      mask: tree of Python bools (a prefix of the params) or ``params -> tree``; True marks
        the leaves tracked and passed to the hooks as selected; None selects every leaf.
      name: the transform's name in error messages (``'optim.emr'``).
      before: maps the task gradient to the inner optimizer's input.
      after: maps the inner step to the returned update; it sees the importance updated by
        this step.
      track_inner_input: the tracker's gradient :math:`g_t` is the inner optimizer's input
        (``before``'s output: the task gradient plus the penalty's, the EMR code's
        ``param.grad`` after ``loss.backward()`` on the regularized loss) instead of the raw
        task gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`ContinualState`; ``update``
      takes ``mas_grads=`` for MAS and passes other extra arguments to ``inner``.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        mask_tree(mask, params)  # validates the mask against params
        return ContinualState(count=jnp.zeros([], jnp.int32), importance=tracker.init(params),
                              inner_state=inner.init(params))

    def update_fn(updates, state, params=None, *, mas_grads=None, **extra_args):
        require_params(params, name)
        updates = aligned(params, updates, 'updates tree')
        selected = mask_tree(mask, params)
        inner_updates = (updates if before is None
                         else before(updates, params, state.importance, selected))
        steps, inner_state = inner.update(inner_updates, state.inner_state, params,
                                          **extra_args)
        importance = tracker.update(state.importance,
                                    inner_updates if track_inner_input else updates, params,
                                    steps, selected, mas_grads=mas_grads)
        if after is not None:
            steps = after(steps, params, importance, selected)
        return steps, ContinualState(count=optax.safe_increment(state.count),
                                     importance=importance, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def new_task(opt_state, params, *, omega=None, inner_state=None):
    """Start a new task in every :class:`ContinualState` found in ``opt_state`` (nested in
    chains, ``optax.masked`` or ``optax.inject_hyperparams`` states).

    Each tracker's state goes through :func:`optim.importance.merge_task`:
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
      ValueError: ``params`` / ``omega`` do not match the state's paths or shapes (the message
        names them), or ``opt_state`` holds no :class:`ContinualState`.

    Example:
      >>> state = new_task(state, params, inner_state=inner.init(params))
    """
    found = []

    def visit(node):
        if not isinstance(node, ContinualState):
            return node
        found.append(True)
        return node._replace(
            importance=merge_task(node.importance, params, omega),
            inner_state=node.inner_state if inner_state is None else inner_state)

    out = jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, ContinualState))
    if not found:
        raise ValueError('new_task: opt_state contains no ContinualState (build the optimizer '
                         'with optim.emr or optim.ewc/mas/si/rwalk/quadratic)')
    return out
