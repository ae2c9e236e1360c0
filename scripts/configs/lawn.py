"""LAWN (arXiv:2108.05839) at a CIFAR scale: Adam-LAWN on VGG-13 with BN, large batch. The
values, and where each comes from, are ``jaxnorm.papers.lawn_paper.PAPER`` (the experiment's
``get_config('paper')``, also ``jaxnorm.papers.lawn.PAPER``); this file hands them to
``scripts/train.py``. LAWN constrains the default set: the classifier kernel and the last
BatchNorm's scale and offset (``--no-lawn-last-norm-affine``: the kernel alone). Compare with
the same command without --lawn-free-epochs, and sweep --batch-size.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/train.py --config scripts/configs/lawn.py --workdir runs/lawn
    python scripts/train.py --config scripts/configs/lawn.py --lawn-free-epochs 0 \\
        --workdir runs/lawn-from-start
"""
from jaxnorm.papers import lawn

SCRIPT = 'scripts/train.py'


def get_config():
    return dict(lawn.PAPER)
