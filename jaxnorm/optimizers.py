"""Optimizers for :func:`jaxnorm.train.fit`: schedules, weight decay and the paper transforms.

:func:`make_optimizer` turns a run config into one ``optax.GradientTransformation``: the named
base optimizer with its learning-rate schedule and weight decay, wrapped in the transforms the
config switches on (LAWN's norm constraint, ``optim.lawn``), and, for ``norm='mimic'``,
MimicNorm's weight-mean projection after the step (:mod:`jaxnorm.mimicnorm`).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import optax

import optim
from jaxnorm import mimicnorm


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
                   lawn_mask: Any = None) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with its schedule and weight decay.

    ``sgd`` and ``adam`` use coupled L2 decay (added to the gradient, as the papers' PyTorch
    code does); ``adamw`` and ``lamb`` use decoupled decay. With
    ``config.no_decay_norm_and_bias`` only kernels are decayed. With
    ``config.lawn_free_epochs`` set, the optimizer is wrapped in :func:`optim.lawn`
    constraining ``lawn_mask`` (a bool tree or ``params -> bool tree``), or the leaves whose
    path matches the regex ``config.lawn_mask`` when that is set. With ``config.norm ==
    'mimic'`` the result is chained with :func:`jaxnorm.mimicnorm.weight_mean_projection`, so
    every step lands on centred conv kernels (selected with the norm's ``min_fan_in``).
    """
    tx = _base_optimizer(config, steps_per_epoch, lawn_mask)
    if config.norm != 'mimic':
        return tx
    min_fan_in = dict(config.norm_kwargs).get('min_fan_in', mimicnorm.MIN_FAN_IN)
    return optax.chain(tx, mimicnorm.weight_mean_projection(
        lambda params: mimicnorm.weight_mean_mask(params, min_fan_in)))


def _base_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    lawn_mask: Any = None) -> optax.GradientTransformation:
    decay_at = (None if config.lr_decay_epochs is None else
                [round(epoch * steps_per_epoch) for epoch in config.lr_decay_epochs])
    schedule = make_schedule(config.schedule, config.lr, config.epochs * steps_per_epoch,
                             round(config.warmup_epochs * steps_per_epoch), decay_at)
    mask = weight_decay_mask if config.no_decay_norm_and_bias else None
    if config.optimizer in ('sgd', 'adam'):
        base = (optax.sgd(schedule, momentum=config.momentum or None)
                if config.optimizer == 'sgd' else optax.adam(schedule))
        base = with_lawn(base, config, steps_per_epoch, lawn_mask)
        if not config.weight_decay:
            return base
        # Coupled decay enters LAWN's gradient, whose tangent projection then removes it
        # from the constrained weights (a decay there would only fight the fixed norm).
        return optax.chain(optax.add_decayed_weights(config.weight_decay, mask), base)
    factory = optax.adamw if config.optimizer == 'adamw' else optax.lamb
    return with_lawn(factory(schedule, weight_decay=config.weight_decay, mask=mask), config,
                     steps_per_epoch, lawn_mask)


def lawn_constrained_mask(config: ml_collections.ConfigDict, default: Any = None) -> Any:
    """The regex mask of ``config.lawn_mask`` when set, else ``default``."""
    return optim.regex_mask(config.lawn_mask) if config.lawn_mask else default


def with_lawn(tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
              steps_per_epoch: int, lawn_mask: Any = None) -> optax.GradientTransformation:
    """``tx`` wrapped in :func:`optim.lawn` as ``config.lawn_*`` says (``tx`` when it is off)."""
    if config.lawn_free_epochs is None:
        return tx
    lawn_mask = lawn_constrained_mask(config, lawn_mask)
    if lawn_mask is None:
        raise ValueError('LAWN needs the constrained parameters: set config.lawn_mask to a '
                         'regex on parameter paths or pass lawn_mask')
    return optim.lawn(tx, free_steps=round(config.lawn_free_epochs * steps_per_epoch),
                      mask=lawn_mask, per_unit=config.lawn_per_unit,
                      projection=config.lawn_projection, target_norm=config.lawn_target_norm,
                      reset_inner_state=config.lawn_reset_inner_state)
