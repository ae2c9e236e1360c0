"""Micro-structured weight unification with ADMM (arXiv:2106.08301) at a CIFAR scale.

The values, and where each comes from, are ``jaxnorm.papers.unification.PAPER`` (the
experiment's ``get_config('paper')``, which ``--scale paper`` runs); this file hands them over
as a ``--config`` file, a starting point for your own.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/experiments/unification.py --scale paper --out results
    python scripts/experiments/unification.py --config scripts/configs/unification.py
"""
from jaxnorm.papers import unification

SCRIPT = 'scripts/experiments/unification.py'


def get_config():
    return dict(unification.PAPER)
