"""A fixed parameter mask in the training engine: pruned networks trained by ``fit``.

Pruning experiments (lottery tickets, weight unification, flow pruning, filter pruning)
fine-tune or retrain a network whose pruned weights must stay zero. With ``sparsity.masked``
on, :func:`jaxnorm.train.fit` holds a mask ``m`` shaped like the params in
``TrainState.extensions['sparsity']`` (all ones from :meth:`Sparsity.init_state`) and, after
every optimizer step,

.. math::

    \\theta \\leftarrow m \\odot \\theta,

so a weight whose mask entry is 0 stays exactly 0 whatever the optimizer (momentum, weight
decay) would have moved it to; entries of 1 train normally. The mask is chosen by the
experiment, through ``fit(initial_state=...)`` and :func:`with_mask`, which sets the mask and
masks the starting parameters. A seed-batched run (``num_seeds = S``) holds one mask per lane,
so S differently pruned networks of one architecture train in one run. Each epoch's record
gets ``sparsity_kept``, the fraction of mask entries that are nonzero.

Example::

    from jaxnorm import config, sparsity, train
    cfg = config.apply_overrides(config.default_config(), {
        'model': 'mlp', 'epochs': 3, 'sparsity.masked': True})
    mask = ...  # {'params' paths: 0/1 arrays}, e.g. prune.structured_masks(...)
    result = train.fit(cfg, initial_state=lambda state: sparsity.with_mask(state, mask))
    # every weight where mask == 0 is exactly 0 in result.state.params
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxnorm import extension, trees


@extension.register
class Sparsity(extension.Extension):
    """A fixed 0/1 mask on the parameters, reapplied after every optimizer step (a
    :mod:`jaxnorm.extension`)."""

    name = 'sparsity'
    summary = ('fixed parameter mask: theta <- mask * theta after every step (pruned '
               "networks; set the mask with fit(initial_state=...))")
    options = {'masked': extension.Option(
        False, "multiply the params by the mask in the state's 'sparsity' entry after "
        'every step')}

    @classmethod
    def is_active(cls, config: Any) -> bool:
        return bool(config.sparsity.masked)

    def init_state(self, params: Any, batch_stats: Any) -> Any:
        return jax.tree.map(jnp.ones_like, params)

    def after_step(self, train_state: Any) -> Any:
        return train_state.replace(params=apply_mask(train_state.params,
                                                     self.state_of(train_state)))

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        return {'sparsity_kept': float(kept_fraction(self.state_of(train_state)))}


def apply_mask(params: Any, mask: Any) -> Any:
    """``m ⊙ θ`` leaf by leaf (the mask's structure must equal the params')."""
    return jax.tree.map(lambda p, m: (p * m).astype(p.dtype), params, mask)


@jax.jit
def kept_fraction(mask: Any) -> jax.Array:
    """The fraction of nonzero entries over every leaf of ``mask``."""
    leaves = jax.tree.leaves(mask)
    return (sum(jnp.count_nonzero(m) for m in leaves)
            / sum(m.size for m in leaves)).astype(jnp.float32)


def with_mask(train_state: Any, mask: Any) -> Any:
    """``train_state`` with ``mask`` as the sparsity state and its params masked: the state a
    masked run starts from (use it in ``fit(initial_state=...)``).

    ``mask`` has the params' structure and shapes (with the leading seed axis in a
    seed-batched run); its values are cast to the params' dtypes.

    Raises:
      ValueError: the run has no sparsity state (``sparsity.masked`` is off), or the mask
        lacks a parameter path, has an extra one or a leaf of another shape (the message
        names them, :func:`jaxnorm.trees.check_like`).
    """
    if Sparsity.name not in train_state.extensions:
        raise ValueError("the train state has no 'sparsity' entry: set sparsity.masked=True")
    mask = trees.aligned(train_state.params, mask, 'sparsity mask')
    mask = jax.tree.map(lambda m, p: jnp.asarray(m, p.dtype), mask, train_state.params)
    state = train_state.replace(params=apply_mask(train_state.params, mask))
    return state.replace(extensions={**state.extensions, Sparsity.name: mask})
