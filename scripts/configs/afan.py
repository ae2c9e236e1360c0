"""A-FAN (arXiv:2103.12171) at the paper's scale: ResNet-56 on CIFAR-10 with feature PGD on
the stage-1 output. The values, and where each comes from, are ``jaxnorm.papers.afan.PAPER``
(the experiment's ``get_config('paper')``); this file hands them to ``scripts/train.py``.
Compare with the same command without A-FAN (``--afan ''``).

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/train.py --config scripts/configs/afan.py --workdir runs/afan-r56
    python scripts/train.py --config scripts/configs/afan.py --afan '' --workdir runs/base-r56
"""
from jaxnorm.papers import afan

SCRIPT = 'scripts/train.py'


def get_config():
    return dict(afan.PAPER)
