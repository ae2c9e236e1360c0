"""EMR: explicit interpolation towards the previous task's end point, after the inner step.

Instead of adding a quadratic penalty (whose per-step interpolation coefficient
:math:`2\\eta\\lambda\\Omega` depends on the learning rate and on :math:`\\lambda`, see
:mod:`optim.quadratic`), EMR takes the optimizer step on the task loss alone and then
interpolates every regularized parameter with the *relative* importance

.. math::

    \\tilde\\theta = \\theta_t + \\mathrm{inner}(g_t), \\qquad
    \\alpha = \\frac{\\sqrt{\\Omega_{cur}}}{\\sqrt{\\Omega_{cur}} + \\sqrt{\\Omega_{prev}}
    + 10^{-20}}, \\qquad
    \\theta_{t+1} = \\alpha \\odot \\tilde\\theta + (1 - \\alpha) \\odot \\theta^*,

returned as the update :math:`u' = \\alpha \\odot u - (1 - \\alpha) \\odot (\\theta_t -
\\theta^*)`. :math:`\\alpha \\in [0, 1]` for any learning rate, there is no :math:`\\lambda`,
and a rescaling of a whole layer's importance cancels in the ratio. :math:`\\Omega_{cur}` is
the online importance of the current task (updated before the interpolation, at
:math:`\\tilde\\theta`), :math:`\\Omega_{prev}` the merged importance of past tasks. During
the first task (before :func:`optim.new_task`) the update is ``inner``'s, bit for bit. The
inner optimizer's momentum sees the raw step (the reference overwrites only the parameters).

References:
  Lubana, Trivedi, Koutra, Dick, `How do Quadratic Regularizers Prevent Catastrophic
  Forgetting: The Role of Interpolation <https://arxiv.org/abs/2102.02805>`_, CoLLAs 2022
  (arXiv v1: "Explicit Movement Regularization").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxnorm.trees import MaskOrFn
from optim import importance as imp
from optim.continual import with_importance

ALPHA_EPS = 1e-20  # keeps alpha defined where both importances are 0


def interpolate(steps, params, importance: imp.ImportanceState, selected):
    """EMR's interpolation towards the anchor, applied to the inner step.

    .. math::

        \\alpha = \\frac{\\sqrt{\\Omega_{cur}}}{\\sqrt{\\Omega_{cur}} + \\sqrt{\\Omega_{prev}}
        + 10^{-20}}, \\qquad u' = \\alpha \\odot u - (1 - \\alpha) \\odot (\\theta - \\theta^*)

    on the selected leaves (float32, returned in the step's dtype), so that
    :math:`\\theta + u' = \\alpha \\odot (\\theta + u) + (1 - \\alpha) \\odot \\theta^*`.

    Args:
      steps: the inner optimizer's update :math:`u`.
      params: :math:`\\theta`, the parameters the step starts from.
      importance: the tracker's state after this step (``anchor`` :math:`\\theta^*`,
        ``omega_cur``, ``omega_prev``).
      selected: tree of Python bools like ``params`` (:func:`jaxnorm.trees.mask_tree`).

    Returns:
      :math:`u'`, with ``steps``' structure; unselected leaves are ``steps``' own.

    Example:
      >>> new_steps = interpolate(steps, params, state.importance, mask_tree(None, params))
    """
    def leaf(keep, u, w, anchor, current, past):
        if not keep:
            return u
        root = jnp.sqrt(current)
        alpha = root / (root + jnp.sqrt(past) + ALPHA_EPS)
        return (alpha * u.astype(jnp.float32) - (1.0 - alpha)
                * (w.astype(jnp.float32) - anchor.astype(jnp.float32))).astype(u.dtype)

    return jax.tree.map(leaf, selected, steps, params, importance.anchor, importance.omega_cur,
                        importance.omega_prev)


def _interpolate_once_anchored(steps, params, importance: imp.ImportanceState, selected):
    """:func:`interpolate` once a previous task exists; the inner step before that."""
    # A cond, not a select: on the first task the update must be inner's bit for bit.
    return jax.lax.cond(importance.has_anchor,
                        lambda s: interpolate(s, params, importance, selected),
                        lambda s: s, steps)


def emr(inner: optax.GradientTransformation, importance: str = 'ewc', *,
        mask: MaskOrFn | None = None, momentum=0.8, path: str = 'abs',
        damping=imp.DAMPING, keep_fisher: bool = True) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` with EMR's explicit interpolation (module docstring).

    Args:
      inner: any optax optimizer; its update is computed from the task gradient only.
      importance: ``'ewc'``, ``'mas'``, ``'si'`` or ``'rwalk'`` online importance.
      mask: tree of bools (or ``params -> tree``, e.g. ``optim.regex_mask('^(?!head)')``);
        True marks interpolated leaves. Leave the classifier heads out.
      momentum: EMA weight of the new online importance term (0.8, the reference's).
      path: ``'abs'`` (EMR v1 code) or ``'relu'`` for SI/RWalk's path term.
      damping: :math:`\\xi` in SI/RWalk's normalization.
      keep_fisher: RWalk's Fisher carried across tasks (default, the reference) or zeroed
        (:class:`optim.importance.ImportanceTracker`).

    Returns:
      ``optax.GradientTransformationExtraArgs`` with :class:`optim.ContinualState`; call
      :func:`optim.new_task` between tasks. With ``importance='mas'``, ``update`` needs
      ``mas_grads=``.

    Raises:
      ValueError: unknown importance or path, momentum outside (0, 1], damping <= 0; at
        trace time a mask not matching params, or MAS without ``mas_grads``.

    Example:
      >>> tx = emr(optax.sgd(0.03, momentum=0.9), 'si', mask=optim.regex_mask('^(?!head)'))
      >>> state = tx.init(params)
      >>> for task in tasks:
      ...     for batch in task:
      ...         grads = jax.grad(loss)(params, batch)
      ...         updates, state = tx.update(grads, state, params)
      ...         params = optax.apply_updates(params, updates)
      ...     state = optim.new_task(state, params)

    References:
      Lubana, Trivedi, Koutra, Dick, arXiv:2102.02805.
    """
    tracker = imp.ImportanceTracker(importance, momentum, path, damping, keep_fisher)
    return with_importance(inner, tracker, mask=mask, name='optim.emr',
                           after=_interpolate_once_anchored)
