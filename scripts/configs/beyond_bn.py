"""Beyond BatchNorm (arXiv:2106.05956) at the paper's scale: ResNet-56 (32/64/128) on CIFAR-100.

Source: the BeyondBatchNorm repo's training recipe (research/norm.md 1.4): SGD momentum 0.9,
weight decay 1e-4 on every parameter, batch 256, 60 epochs with the base rate 0.1 for the first
45 and 0.01 for the last 15 (its per-iteration scheduler, not the config's [40, 20] split),
flip-only augmentation, BN momentum 0.9 in flax's convention; FRN adds a 5-epoch warmup.
Pick the normalizer with --norm; the repo's numerics are BEYOND_BN_REPO_OPTIONS.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/train.py --config scripts/configs/beyond_bn.py --norm gn \\
        --norm-option group_size=16 --workdir runs/bbn-gn16
    python scripts/train.py --config scripts/configs/beyond_bn.py --norm frn --warmup-epochs 5
"""
SCRIPT = 'scripts/train.py'


def get_config():
    return {
        'model': 'resnet56_wide',
        'dataset': 'cifar100',
        'augment': 'flip',
        'epochs': 60,
        'batch_size': 256,
        'optimizer': 'sgd',
        'lr': 0.1,
        'momentum': 0.9,
        'weight_decay': 1e-4,
        'schedule': 'step',
        'lr_decay_epochs': (45,),
        'eval_batch_size': 1000,
    }
