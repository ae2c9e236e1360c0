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
(:class:`optim.importance.ImportanceTracker`); :func:`optim.new_task` merges it into the past
importance, :math:`\\Omega_{prev} \\leftarrow (\\Omega_{prev} + \\Omega_{task}) / 2`, and moves
the anchor. :func:`optim.emr` shares this state and bookkeeping (:mod:`optim.continual`).

References:
  Lubana, Trivedi, Koutra, Dick, `How do Quadratic Regularizers Prevent Catastrophic
  Forgetting: The Role of Interpolation <https://arxiv.org/abs/2102.02805>`_, CoLLAs 2022.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxnorm.trees import MaskOrFn
from optim import importance as imp
from optim.continual import with_importance


def penalize(grads, params, importance: imp.ImportanceState, selected, strength):
    """The quadratic penalty's gradient added to the task gradient, before the inner step.

    .. math:: \\tilde g = g + 2 \\lambda\\, \\Omega_{prev} \\odot (\\theta - \\theta^*)

    on the selected leaves, computed in float32 and returned in the gradient's dtype.

    Args:
      grads: the task gradient :math:`g`.
      params: :math:`\\theta`.
      importance: the tracker's state (:math:`\\theta^*` = ``anchor``, ``omega_prev``).
      selected: tree of Python bools like ``params`` (:func:`jaxnorm.trees.mask_tree`).
      strength: :math:`\\lambda`.

    Returns:
      :math:`\\tilde g`, with ``grads``' structure; unselected leaves are ``grads``' own.

    Example:
      >>> tilde = penalize(grads, params, state.importance, mask_tree(None, params), 100.0)
    """
    def leaf(keep, g, w, anchor, omega):
        if not keep:
            return g
        pull = 2.0 * strength * omega * (w.astype(jnp.float32) - anchor.astype(jnp.float32))
        return (g.astype(jnp.float32) + pull).astype(g.dtype)

    return jax.tree.map(leaf, selected, grads, params, importance.anchor, importance.omega_prev)


def quadratic(inner: optax.GradientTransformation, importance: str, strength=1.0, *,
              mask: MaskOrFn | None = None, momentum=0.8, path: str = 'abs',
              damping=imp.DAMPING, penalized_importance: bool = True, keep_fisher: bool = True
              ) -> optax.GradientTransformationExtraArgs:
    """Quadratic-regularizer baseline: ``inner`` applied to :math:`g + 2\\lambda\\Omega
    \\odot (\\theta - \\theta^*)`.

    Args:
      inner: the optimizer (e.g. ``optax.sgd(lr, momentum=0.9)``).
      importance: ``'ewc'``, ``'mas'``, ``'si'`` or ``'rwalk'`` (online estimates,
        :mod:`optim.importance`); an offline importance can be given to
        :func:`optim.new_task`.
      strength: :math:`\\lambda` (float, or an array under ``optax.inject_hyperparams``).
      mask: tree of bools (or ``params -> tree``, e.g. ``optim.regex_mask('^(?!head)')``);
        True marks regularized leaves. Leave the classifier heads out.
      momentum: EMA weight of the new online term (0.8 in the reference code).
      path: ``'abs'`` or ``'relu'`` for SI/RWalk's path term.
      damping: :math:`\\xi` in SI/RWalk's normalization.
      penalized_importance: True (default, the EMR authors' code, whose online importance
        reads ``param.grad`` after backpropagating the regularized loss): the online
        importance's gradient :math:`g_t` is :math:`g + 2\\lambda\\Omega \\odot (\\theta -
        \\theta^*)`; False: the raw task gradient :math:`g` (the importance of the task
        alone). EWC's :math:`g_t^2` and SI/RWalk's path terms change; MAS's does not.
      keep_fisher: RWalk's Fisher carried across tasks (default, the reference) or zeroed
        (:class:`optim.importance.ImportanceTracker`).

    Returns:
      ``optax.GradientTransformationExtraArgs`` with :class:`optim.ContinualState`. With
      ``importance='mas'``, ``update`` needs ``mas_grads=`` (gradient of
      ``importance.squared_output_norm``); other extra args go to ``inner``.

    Raises:
      ValueError: unknown importance or path, momentum outside (0, 1], damping <= 0; at
        trace time a mask not matching params, or MAS without ``mas_grads``.

    Example:
      >>> tx = quadratic(optax.sgd(0.01), 'ewc', strength=100.0)
      >>> state = tx.init(params)
      >>> ...  # train task 1
      >>> state = optim.new_task(state, params)
      >>> ...  # train task 2, pulled towards task 1's end point

    References:
      Kirkpatrick et al., EWC, 2017; Aljundi et al., MAS, 2018; Zenke et al., SI, 2017;
      Chaudhry et al., RWalk, 2018; the per-step interpolation view: Lubana et al.,
      arXiv:2102.02805.
    """
    tracker = imp.ImportanceTracker(importance, momentum, path, damping, keep_fisher)
    return with_importance(inner, tracker, mask=mask, name='optim.quadratic',
                           before=functools.partial(penalize, strength=strength),
                           track_inner_input=penalized_importance)


def _named(importance: str):
    def factory(inner: optax.GradientTransformation, strength=1.0, *,
                mask: MaskOrFn | None = None, momentum=0.8, path: str = 'abs',
                damping=imp.DAMPING, penalized_importance: bool = True,
                keep_fisher: bool = True) -> optax.GradientTransformationExtraArgs:
        return quadratic(inner, importance, strength, mask=mask, momentum=momentum,
                         path=path, damping=damping, penalized_importance=penalized_importance,
                         keep_fisher=keep_fisher)
    factory.__name__ = importance
    factory.__doc__ = (f"Quadratic regularizer with online {importance.upper()} importance: "
                       f"``quadratic(inner, '{importance}', strength, ...)``.")
    return factory


ewc = _named('ewc')
mas = _named('mas')
si = _named('si')
rwalk = _named('rwalk')
