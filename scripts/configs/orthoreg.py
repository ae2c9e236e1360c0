"""OrthoReg (arXiv:2009.05014) at a CIFAR scale: the Early-Bird setting of the reference code.

The values, and where each comes from, are ``jaxnorm.papers.orthoreg.PAPER`` (the
experiment's ``get_config('paper')``, which ``--scale paper`` runs); this file hands them over
as a ``--config`` file, a starting point for your own. Fisher importance uses the reference's
``scope='filter'`` (conv filter + bias); the layer weights follow the reference's VGG rule
(``size='filters'``), the one for a plain conv stack. For the paper's other networks the
reference's rules are in ``optim.orthoreg.REFERENCE_RULES`` (ResNet-34: ``size='resnet'``, the
stem weighed by sqrt(C_out) = sqrt(64); MobileNet-V1: ``size='mobilenet'``, stem sqrt(32),
depthwise sqrt(C), pointwise sqrt(C_in), ``gram_side='columns'``); set ``size`` and
``gram_side`` below from it (``RULES``) when the experiment's model is one of those.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/orthoreg.py --scale paper --out results
    python scripts/experiments/orthoreg.py --config scripts/configs/orthoreg.py --out results
"""
from jaxnorm.papers import orthoreg
from optim.orthoreg import REFERENCE_RULES

SCRIPT = 'scripts/experiments/orthoreg.py'
ARCH = 'vgg13'  # the reference network whose rule the 3-conv CNN follows (a plain conv stack)
RULES = REFERENCE_RULES


def get_config():
    return {**orthoreg.PAPER, **RULES[ARCH]}
