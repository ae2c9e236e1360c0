"""MimicNorm (arXiv:2010.09278) at the paper's scale: ResNet-18 on CIFAR-100, BN vs MimicNorm.
The values, and where each comes from, are ``jaxnorm.papers.mimicnorm.PAPER`` (the
experiment's ``get_config('paper')``); this file hands them to ``scripts/train.py``.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/train.py --config scripts/configs/mimicnorm.py --workdir runs/mimic-r18
    python scripts/train.py --config scripts/configs/mimicnorm.py --norm bn --workdir runs/bn-r18
"""
from jaxnorm.papers import mimicnorm

SCRIPT = 'scripts/train.py'


def get_config():
    return dict(mimicnorm.PAPER)
