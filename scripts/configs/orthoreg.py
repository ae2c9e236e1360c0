"""OrthoReg (arXiv:2009.05014) at a CIFAR scale: the Early-Bird setting of the reference code.

The values, and where each comes from, are ``jaxnorm.papers.orthoreg.PAPER`` (the
experiment's ``get_config('paper')``, which ``--scale paper`` runs); this file hands them over
as a ``--config`` file, a starting point for your own.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/orthoreg.py --scale paper --out results
    python scripts/experiments/orthoreg.py --config scripts/configs/orthoreg.py --out results
"""
from jaxnorm.papers import orthoreg

SCRIPT = 'scripts/experiments/orthoreg.py'


def get_config():
    return dict(orthoreg.PAPER)
