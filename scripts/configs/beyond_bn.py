"""Beyond BatchNorm (arXiv:2106.05956) at the paper's scale: ResNet-56 (32/64/128) on CIFAR-100.
The values, and where each comes from, are ``jaxnorm.papers.beyond_bn.PAPER`` (the
experiment's ``get_config('paper')``, its training experiment's config); this file hands them
to ``scripts/train.py``. Pick the normalizer with --norm; the repo's numerics are
BEYOND_BN_REPO_OPTIONS.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/train.py --config scripts/configs/beyond_bn.py --norm gn \\
        --norm-option group_size=16 --workdir runs/bbn-gn16
    python scripts/train.py --config scripts/configs/beyond_bn.py --norm frn --warmup-epochs 5
"""
from jaxnorm.papers import beyond_bn

SCRIPT = 'scripts/train.py'


def get_config():
    return dict(beyond_bn.PAPER)
