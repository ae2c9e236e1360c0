"""LAWN in the training engine: the :func:`optim.lawn` wrapper as a ``fit`` extension.

``config.lawn.free_epochs = k`` trains freely for ``k`` epochs (``round(k x steps per
epoch)`` updates), then keeps the Frobenius norm of every constrained weight group fixed
(:func:`optim.lawn`: tangent projection and retraction onto the sphere). The constrained
weights are the kernels of the final homogeneous sub-network
(:func:`jaxnorm.homogeneous.final_homogeneous_mask`) and, with ``lawn.last_norm_affine``
(default), the last normalization layer's scale and offset, whose growth would otherwise carry
the logits past the frozen kernels; ``lawn.last_norm_affine = False`` is the kernels-only mask
of earlier versions, and ``config.lawn.mask`` names the constrained set by a regex on
parameter paths instead. With ``lawn.per_unit`` (groups are output units of kernels) the
affine is left out. Each epoch's record gets ``lawn_weight_norms``, the norm of
every constrained leaf, which must stay constant after the switch, and ``lawn_target_norms``,
the norm each constrained group is held at (0 before the switch; per output unit, a list, with
``lawn.per_unit``).

Example::

    cfg = config.apply_overrides(config.default_config(), {
        'model': 'mlp', 'optimizer': 'adam', 'lr': 3e-3, 'lawn.free_epochs': 3.0})
    history = train.fit(cfg).history   # history[-1]['lawn_weight_norms']

References:
  Gupta et al., `Logit Attenuating Weight Normalization <https://arxiv.org/abs/2108.05839>`_,
  2021.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optim
from jaxnorm import extension, homogeneous, trees
from optim.lawn import PROJECTIONS


@extension.register
class Lawn(extension.Extension):
    """LAWN (arXiv:2108.05839) as a :mod:`jaxnorm.extension`."""

    name = 'lawn'
    summary = ('LAWN (arXiv:2108.05839): after free_epochs, keep the norms of the final '
               'homogeneous sub-network fixed')
    options = {
        'free_epochs': extension.Option(
            None, 'free-phase epochs before the norms are frozen (None: LAWN off)', float),
        'mask': extension.Option(
            None, "constrained parameters by path regex, e.g. 'head/kernel' (default: the "
            'kernels after the last normalization layer)', str),
        'last_norm_affine': extension.Option(
            True, "default mask only: also constrain the last normalization layer's scale and "
            'offset (False: the kernels alone)'),
        'per_unit': extension.Option(False, 'one norm per output unit instead of per layer'),
        'projection': extension.Option('gradient', 'what is projected onto the tangent space',
                                       choices=PROJECTIONS),
        'target_norm': extension.Option(
            None, 'fixed target norm for every group (None: the norm at the switch)', float),
        'reset_inner_state': extension.Option(
            False, "re-initialize the inner optimizer's state at the switch"),
    }
    switch = 'free_epochs'

    @classmethod
    def is_active(cls, config: Any) -> bool:
        return config.lawn.free_epochs is not None

    @classmethod
    def check_section(cls, config: Any) -> None:
        lawn = config.lawn
        if lawn.free_epochs is None and (lawn.mask or lawn.per_unit):
            raise ValueError('lawn.mask and lawn.per_unit need lawn.free_epochs (LAWN is off)')
        if lawn.free_epochs is not None and lawn.free_epochs < 0:
            raise ValueError(f'lawn.free_epochs must be >= 0, got {lawn.free_epochs}')
        if lawn.target_norm is not None and not lawn.target_norm > 0:
            raise ValueError(f'lawn.target_norm must be positive, got {lawn.target_norm}')

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self.mask = (optim.regex_mask(section.mask) if section.mask else
                     homogeneous.final_homogeneous_mask(
                         context.model, jnp.zeros((1, *context.input_shape)),
                         last_norm_affine=section.last_norm_affine and not section.per_unit))

    def identity(self) -> dict:
        # The switch and the constrained leaves fix the optimizer state's structure.
        return {'free_epochs': self.section.free_epochs, 'mask': self.section.mask,
                'per_unit': self.section.per_unit,
                'last_norm_affine': self.section.last_norm_affine}

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return constrain(tx, self.section, self.context.steps_per_epoch, self.mask)

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        norms = jax.device_get(optim.constrained_norms(train_state.params, self.mask))
        targets = jax.device_get(target_norms(train_state.opt_state))
        return {'lawn_weight_norms': {path: float(n) for path, n in norms.items()},
                'lawn_target_norms': {path: float(t) if np.size(t) == 1
                                      else np.ravel(t).tolist() for path, t in targets.items()}}


def target_norms(opt_state: Any) -> dict[str, jax.Array]:
    """``{path: target norm}`` of the :class:`optim.LawnState` inside ``opt_state`` (the
    optimizer state of a run with LAWN on, e.g. behind coupled weight decay's chain)."""
    state = trees.find_state(opt_state, optim.LawnState)
    leaves = jax.tree_util.tree_flatten_with_path(state.target_norms)[0]
    return {optim.path_name(path): value for path, value in leaves}


def constrain(tx: optax.GradientTransformation, section: Any, steps_per_epoch: int,
              mask: Any) -> optax.GradientTransformation:
    """``tx`` wrapped in :func:`optim.lawn` with a run config's ``lawn`` section; the switch
    comes after ``round(free_epochs x steps_per_epoch)`` updates."""
    return optim.lawn(tx, free_steps=round(section.free_epochs * steps_per_epoch), mask=mask,
                      per_unit=section.per_unit, projection=section.projection,
                      target_norm=section.target_norm,
                      reset_inner_state=section.reset_inner_state)
