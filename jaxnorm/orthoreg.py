"""OrthoReg in the training engine: :func:`optim.orthoreg` as a ``fit`` extension.

``config.orthoreg.kappa = κ`` puts :func:`optim.orthoreg` in front of the run's optimizer, so
every update starts from the gradient of ``CE + κ R(θ)``, with R the entrywise-L1 distance of
each selected kernel's filter Gram matrix from the identity (:mod:`optim.orthoreg`):

.. math::

    g \\leftarrow g + \\kappa \\nabla R(\\theta), \\qquad
    R(\\theta) = \\sum_l w_l \\sum_{ij} \\lvert (G_l - I)_{ij} \\rvert .

The paper trains OrthoReg without weight decay (``weight_decay = 0``: the chain is then
exactly ``optax.chain(optim.orthoreg(κ), optax.sgd(...))``); with coupled weight decay the
decay is added to the gradient as well. ``orthoreg.mask`` selects the regularized kernels by a
regex on parameter paths (default: every leaf with >= 2 axes, the classifier included; the
paper leaves it out: ``'^(?!head)'``). Each epoch's record gets ``orthonormality``, the mean
over the selected kernels of ‖diag G‖₁ / ‖G‖₁ (1 for orthogonal filters), and
``orthonormality_kernels``, the value per kernel. ``orthoreg.size`` and
``orthoreg.gram_side`` choose the layer weights and Gram side (``optim.orthoreg``'s
``REFERENCE_RULES`` holds the reference's per architecture). ``κ = 0`` leaves the gradient
unchanged and only records these metrics: a baseline run measured the same way.

Example::

    cfg = config.apply_overrides(config.default_config(), {
        'model': 'cnn_small', 'weight_decay': 0.0, 'orthoreg.kappa': 1e-2,
        'orthoreg.mask': '^(?!head)'})
    history = train.fit(cfg).history   # history[-1]['orthonormality']

References:
  Lubana, Trivedi, Hougen, Dick, Hero, `OrthoReg: Robust Network Pruning Using
  Orthonormality Regularization <https://arxiv.org/abs/2009.05014>`_, 2020.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import optim
from jaxnorm import extension
from optim.orthoreg import GRAM_SIDES, SIZES


@extension.register
class OrthoReg(extension.Extension):
    """OrthoReg (arXiv:2009.05014) as a :mod:`jaxnorm.extension`."""

    name = 'orthoreg'
    summary = ('OrthoReg (arXiv:2009.05014): add kappa * grad of the filters\' '
               'orthonormality penalty to the gradient; records orthonormality per epoch')
    options = {
        'kappa': extension.Option(
            None, 'regularization strength kappa, e.g. 1e-2 (None: off; 0: only measure)',
            float),
        'mask': extension.Option(
            None, "regularized kernels by path regex, e.g. '^(?!head)' (default: every leaf "
            'with >= 2 axes)', str),
        'size': extension.Option('gram', "layer weights w_l ∝ sqrt(size): the Gram side "
                                 "('gram'), the number of filters ('filters', the reference's "
                                 "VGG rule), or the reference's 'resnet' / 'mobilenet' rules",
                                 choices=SIZES),
        'gram_side': extension.Option('smaller', "Gram matrix per kernel: the smaller side "
                                      "('smaller') or M^T M for every kernel ('columns', the "
                                      "reference's MobileNet-V1)", choices=GRAM_SIDES),
    }
    switch = 'kappa'

    @classmethod
    def check_section(cls, config: Any) -> None:
        kappa = config.orthoreg.kappa
        if kappa is not None and not kappa >= 0:
            raise ValueError(f'orthoreg.kappa must be >= 0, got {kappa}')

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self.mask = optim.regex_mask(section.mask) if section.mask else None
        self._measure = jax.jit(self.measure)

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return optax.chain(optim.orthoreg(self.section.kappa, mask=self.mask,
                                          size=self.section.size,
                                          gram_side=self.section.gram_side), tx)

    def measure(self, params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The mean over the selected kernels of ‖diag G‖₁ / ‖G‖₁, and the value per kernel."""
        values = optim.orthonormality(params, self.mask, self.section.gram_side)
        return jnp.stack(list(values.values())).mean(), values

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        mean, values = jax.device_get(self._measure(train_state.params))
        return {'orthonormality': float(mean),
                'orthonormality_kernels': {path: float(v) for path, v in values.items()}}
