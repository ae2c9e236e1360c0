"""Optimizers for :func:`jaxnorm.train.fit`: schedules and weight decay.

:func:`make_optimizer` turns a run config into one ``optax.GradientTransformation``: the named
base optimizer with its learning-rate schedule and weight decay. Methods that change the update
rule (:mod:`jaxnorm.extension`) wrap it through ``wrap``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import ml_collections
import optax



def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0,
                  decay_at: Sequence[int] | None = None) -> optax.Schedule:
    """Learning-rate schedule ``constant | cosine | step | linear`` with optional linear warmup.

    ``step`` multiplies the rate by 0.1 at each step of ``decay_at`` (counted from the start of
    training, warmup included), by default at 50 % and at 75 % of the steps after warmup.
    """
    decay_steps = max(total_steps - warmup_steps, 1)
    if decay_at is None:
        decay_at = [warmup_steps + int(decay_steps * 0.5), warmup_steps + int(decay_steps * 0.75)]
    if name == 'constant':
        main = optax.constant_schedule(lr)
    elif name == 'cosine':
        main = optax.cosine_decay_schedule(lr, decay_steps)
    elif name == 'step':
        main = optax.piecewise_constant_schedule(
            lr, {max(step - warmup_steps, 0): 0.1 for step in decay_at})
    elif name == 'linear':
        main = optax.linear_schedule(lr, 0.0, decay_steps)
    else:
        raise ValueError(f'unknown schedule {name!r}')
    if warmup_steps <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), main],
                                [warmup_steps])


def weight_decay_mask(params: Any) -> Any:
    """True for leaves with more than one axis (kernels); False for norm parameters and biases."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   wrap: Callable[[optax.GradientTransformation], optax.GradientTransformation]
                   | None = None) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with its schedule and weight decay.

    ``sgd`` uses heavy-ball momentum, or Nesterov's with ``config.nesterov``. ``sgd`` and
    ``adam`` use coupled L2 decay (added to the gradient, as the papers' PyTorch
    code does); ``adamw`` and ``lamb`` use decoupled decay. With
    ``config.no_decay_norm_and_bias`` only kernels are decayed.

    Args:
      config: the run config.
      steps_per_epoch: optimizer steps per epoch (schedules are set in epochs).
      wrap: applied to the update rule before coupled decay is prepended, so a wrapper
        that projects gradients (e.g. onto a sphere's tangent space) also removes the decay
        from the weights it constrains; extensions' ``wrap_optimizer`` hooks.
    """
    wrap = wrap or (lambda tx: tx)
    decay_at = (None if config.lr_decay_epochs is None else
                [round(epoch * steps_per_epoch) for epoch in config.lr_decay_epochs])
    schedule = make_schedule(config.schedule, config.lr, config.epochs * steps_per_epoch,
                             round(config.warmup_epochs * steps_per_epoch), decay_at)
    mask = weight_decay_mask if config.no_decay_norm_and_bias else None
    if config.optimizer in ('sgd', 'adam'):
        base = wrap(optax.sgd(schedule, momentum=config.momentum or None,
                              nesterov=config.nesterov)
                    if config.optimizer == 'sgd' else optax.adam(schedule))
        if not config.weight_decay:
            return base
        return optax.chain(optax.add_decayed_weights(config.weight_decay, mask), base)
    factory = optax.adamw if config.optimizer == 'adamw' else optax.lamb
    return wrap(factory(schedule, weight_decay=config.weight_decay, mask=mask))
