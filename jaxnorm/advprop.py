"""Pixel-level adversarial augmentation with separate adversarial BatchNorm statistics
(AdvProp-style; Xie et al., "Adversarial Examples Improve Image Recognition", arXiv:1911.09665).

The A-FAN paper (arXiv:2103.12171) motivates feature-level perturbations as a cheaper
alternative to this: the attack here back-propagates through the whole network at every step,
A-FAN's only through the layers after the perturbed feature. For a batch (x, y):

1. **Pixel PGD** on an additive perturbation delta of the (standardized) input, from
   delta_0 uniform in [-eps, eps] (``random_start``) or 0, for t = 1..T::

       delta_t = clip_eps(delta_{t-1} + gamma * sign(grad_delta L(f(x + delta_{t-1}), y)))

   and, with ``input_min``/``input_max``, ``x + delta_t`` clipped to the valid input range.
   The attack sees the parameters as constants and its BatchNorm updates are discarded.
2. **Auxiliary normalization**: the adversarial images go through their own train-mode pass,
   so every BatchNorm normalizes them with the adversarial batch's own statistics, never
   mixed with the clean batch's; the running statistics (what evaluation uses) are updated by
   the clean pass only. This is AdvProp's "auxiliary BN" for everything that reaches
   evaluation. Deviation: AdvProp's auxiliary BN also has its own affine (gamma, beta); here
   the affine is shared with the main BN, because the engine optimizes the model's ``params``
   only and the models have one BN per position [reduction, documented].
3. **Loss**: ``w * L(f(x), y) + (1 - w) * L(f_aux(x_adv), y)``; ``w = 1/2`` by default, the
   weighting of A-FAN's classification code, so the two methods differ only in where the
   perturbation is applied (AdvProp itself sums the two terms, i.e. twice the learning rate).

Defaults follow the pixel-level PGD of A-FAN's own segmentation code (its "advt" variants,
research/norm.md 3.3): T = 5, gamma = 1/255, eps = 4/255, random start, clipping; in input
units after standardization, divide them by the dataset's pixel std (the experiment does).

This module registers the ``advprop`` extension on import (it is in
``jaxnorm.extension.BUILTIN_MODULES``, so every config has its section).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnorm import extension


def pixel_pgd(loss_of_image, image: jax.Array, key: jax.Array, *, steps: int,
              step_size: float, epsilon: float, random_start: bool = True,
              input_min: float | None = None, input_max: float | None = None
              ) -> tuple[jax.Array, jax.Array]:
    """Sign-gradient ascent of ``loss_of_image`` in an l_inf ball around ``image``.

    Args:
      loss_of_image: ``image -> scalar`` loss to raise (parameters held constant).
      image: the clean inputs (constants).
      key: PRNG key of the random start.
      steps, step_size, epsilon: T, gamma and the ball's radius.
      random_start: start uniformly in [-epsilon, epsilon].
      input_min, input_max: valid input range of ``image + delta`` (None: unbounded).

    Returns:
      ``(adversarial image, (T,) losses at delta_0..delta_{T-1})``.
    """
    x = jax.lax.stop_gradient(image)
    delta = (jax.random.uniform(key, x.shape, x.dtype, -epsilon, epsilon) if random_start
             else jnp.zeros_like(x))

    def project(delta):
        delta = jnp.clip(delta, -epsilon, epsilon)
        if input_min is not None or input_max is not None:
            delta = jnp.clip(x + delta, input_min, input_max) - x
        return delta

    def step(delta, _):
        loss, grad = jax.value_and_grad(lambda d: loss_of_image(x + d))(delta)
        return project(delta + step_size * jnp.sign(grad).astype(x.dtype)), loss

    delta, losses = jax.lax.scan(step, project(delta), None, length=steps)
    return x + delta, losses


@extension.register
class AdversarialPixels(extension.Extension):
    """AdvProp-style pixel PGD (arXiv:1911.09665) as a :mod:`jaxnorm.extension`: the step's
    loss becomes ``w L_clean + (1 - w) L_adv`` (module docstring)."""

    name = 'advprop'
    summary = ('AdvProp-style pixel PGD (arXiv:1911.09665): train on clean and PGD images, '
               'the adversarial ones normalized with their own batch statistics')
    options = {
        'epsilon': extension.Option(None, 'l_inf radius in input units; None: off', float),
        'steps': extension.Option(5, 'PGD sign steps'),
        'step_size': extension.Option(1.0 / 255, 'PGD step, in input units'),
        'random_start': extension.Option(True, 'start uniformly in [-epsilon, epsilon]'),
        'input_min': extension.Option(None, 'lowest valid input value (None: no bound)',
                                      float),
        'input_max': extension.Option(None, 'highest valid input value (None: no bound)',
                                      float),
        'clean_weight': extension.Option(0.5, 'w, the clean loss weight'),
    }
    switch = 'epsilon'

    @classmethod
    def check_section(cls, config: Any) -> None:
        s = config[cls.name]
        if s.epsilon is None:
            return
        if not s.epsilon > 0:
            raise ValueError(f'advprop.epsilon must be positive, got {s.epsilon}')
        if not (isinstance(s.steps, int) and s.steps >= 0):
            raise ValueError(f'advprop.steps must be an integer >= 0, got {s.steps!r}')
        if not s.step_size >= 0:
            raise ValueError(f'advprop.step_size must be >= 0, got {s.step_size}')
        if not 0.0 <= s.clean_weight <= 1.0:
            raise ValueError(f'advprop.clean_weight must lie in [0, 1], got {s.clean_weight}')
        if (s.input_min is not None and s.input_max is not None
                and not s.input_min < s.input_max):
            raise ValueError(f'advprop.input_min {s.input_min} must be below input_max '
                             f'{s.input_max}')

    def identity(self) -> dict:
        return {}  # the loss changes, not what a checkpoint holds

    def wrap_loss(self, forward: extension.ForwardLoss, train_state: Any
                  ) -> extension.ForwardLoss:
        s = self.section

        def adversarial(params, batch_stats, batch, key):
            attack_key, key = jax.random.split(key)
            clean_loss, (logits, new_stats, metrics) = forward(params, batch_stats, batch, key)
            frozen = jax.lax.stop_gradient(params)

            def attacked(image):  # train mode, statistics of this batch, updates discarded
                return forward(frozen, batch_stats, {**batch, 'image': image}, key)[0]

            image, _ = pixel_pgd(attacked, batch['image'], attack_key, steps=s.steps,
                                 step_size=s.step_size, epsilon=s.epsilon,
                                 random_start=s.random_start, input_min=s.input_min,
                                 input_max=s.input_max)
            adv_loss, _ = forward(params, batch_stats,
                                  {**batch, 'image': jax.lax.stop_gradient(image)}, key)
            w = s.clean_weight
            return (w * clean_loss + (1 - w) * adv_loss,
                    (logits, new_stats, {**metrics, 'advprop_adv_loss': adv_loss}))
        return adversarial
