"""An optax wrapper that trains only the unpruned entries and keeps pruned ones at exactly 0.

For masks :math:`m` (1 keeps), gradients :math:`g` and parameters :math:`\\theta`, one update
of :func:`masked_optimizer` around an inner optimizer is

.. math::

    u = \\mathrm{inner}(m \\odot g;\\; m \\odot \\theta), \\qquad
    \\Delta\\theta = m \\odot u - (1 - m) \\odot \\theta,

so after ``optax.apply_updates`` the kept entries moved by the inner optimizer's step on the
masked problem and the pruned entries are exactly ``0`` (``x + (-x) == 0`` in floating
point), whatever momentum, Adam moments or weight decay the inner optimizer carries. Unlike
JaxPruner's wrapper there is no separate ``post_gradient_update`` call to forget.

The masks live in the optimizer state (:class:`MaskedState`), so a new pruning round changes
them without re-tracing the train step: ``install_masks(opt_state, masks)``. Put this wrapper
outermost (around the whole chain, weight decay included) so that :func:`install_masks` finds
its state.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnorm.trees import require_params
from prune.masks import check_masks, ones_masks


class MaskedState(NamedTuple):
    """State of :func:`masked_optimizer`.

    Attributes:
      masks: bool tree mirroring the params; True entries are trained, False ones held at 0.
      inner_state: the wrapped optimizer's state.
    """

    masks: Any
    inner_state: optax.OptState


def masked_optimizer(inner: optax.GradientTransformation
                     ) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that masked-out parameters get no update and are pinned to 0.

    Args:
      inner: any optax optimizer or chain (e.g. ``optax.chain(optax.add_decayed_weights(wd),
        optax.sgd(lr, momentum=0.9))``).

    Returns:
      A transformation whose ``init`` starts with all-True masks and whose ``update`` needs
      ``params`` (it raises ``ValueError`` without them, or at trace time when the masks do
      not mirror the params; the message names the first differing path).

    Example:
      >>> params = {'w': jnp.array([1.0, -2.0, 3.0])}
      >>> tx = masked_optimizer(optax.sgd(0.1, momentum=0.9))
      >>> state = install_masks(tx.init(params), {'w': jnp.array([True, False, True])})
      >>> updates, state = tx.update({'w': jnp.ones(3)}, state, params)
      >>> [round(float(w), 4) for w in optax.apply_updates(params, updates)['w']]
      [0.9, 0.0, 2.9]
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return MaskedState(masks=ones_masks(params), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, 'prune.masked_optimizer')
        check_masks(params, state.masks)
        keep = jax.tree.map(lambda m: m != 0, state.masks)
        masked_grads = jax.tree.map(lambda g, k: jnp.where(k, g, jnp.zeros_like(g)), updates,
                                    keep)
        masked_params = jax.tree.map(lambda p, k: jnp.where(k, p, jnp.zeros_like(p)), params,
                                     keep)
        steps, inner_state = inner.update(masked_grads, state.inner_state, masked_params,
                                          **extra_args)
        new_updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p).astype(u.dtype), steps,
                                   params, keep)
        return new_updates, MaskedState(masks=state.masks, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def install_masks(state: MaskedState, masks) -> MaskedState:
    """``state`` with new masks (same tree and shapes as the old ones), inner state kept.

    Raises:
      TypeError: ``state`` is not a :class:`MaskedState`.
      ValueError: the new masks do not mirror the old ones.
    """
    if not isinstance(state, MaskedState):
        raise TypeError(f'expected the MaskedState of masked_optimizer, got '
                        f'{type(state).__name__}; wrap the whole optimizer chain')
    check_masks(state.masks, masks)
    # astype, not ``!= 0``: comparing a bool array gives a weakly typed result, and a mask
    # dtype that differs from init's would make the next jitted step compile again.
    return state._replace(masks=jax.tree.map(lambda m: jnp.asarray(m).astype(bool), masks))
