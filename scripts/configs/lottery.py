"""Lottery ticket vs pruning & fine-tuning (arXiv:2102.11068) at the paper's training scale.

The values, and where each comes from, are ``jaxnorm.papers.lottery.PAPER`` (the experiment's
``get_config('paper')``, which ``--scale paper`` runs); this file hands them over as a
``--config`` file, a starting point for your own.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/lottery.py --scale paper --seeds 5 --out results
    python scripts/experiments/lottery.py --config scripts/configs/lottery.py --seeds 5 \\
        --out results                           # the same
"""
from jaxnorm.papers import lottery

SCRIPT = 'scripts/experiments/lottery.py'


def get_config():
    return dict(lottery.PAPER)
