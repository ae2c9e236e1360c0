"""EMAN (arXiv:2101.08482) in FixMatch at a CIFAR scale: EMA-BN vs EMAN teacher.

The values, and where each comes from, are ``jaxnorm.papers.eman.PAPER`` (the experiment's
``get_config('paper')``, which ``--scale paper`` runs); this file hands them over as a
``--config`` file, a starting point for your own.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/eman.py --scale paper --out results
    python scripts/experiments/eman.py --config scripts/configs/eman.py --out results  # same
"""
from jaxnorm.papers import eman

SCRIPT = 'scripts/experiments/eman.py'


def get_config():
    return dict(eman.PAPER)
