"""A-FAN (arXiv:2103.12171) at the paper's scale: ResNet-56 on CIFAR-10 with feature PGD on
the stage-1 output.

Source: the classification code (research/norm.md 3.2): ResNet-56 (16/32/64, option-A
shortcuts, BN); PGD on the stage-1 output with 5 sign steps of 0.5/255, no projection, no
random start; loss (L_adv + L_clean) / 2; SGD LR 0.1, momentum 0.9, weight decay 5e-4,
batch 128, 200 epochs with the rate x0.1 at epochs 50 and 150, a 1-epoch linear warmup, crop
+ flip. The released checkpoint reaches 94.82 %. Deviation: the repo lets the attack passes
update BN's running statistics; jaxnorm discards them by default (config
``afan.keep_attack_stats=True`` keeps them). Compare with the same command without --afan.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/train.py --config scripts/configs/afan.py --workdir runs/afan-r56
    python scripts/train.py --config scripts/configs/afan.py --afan '' --workdir runs/base-r56
"""
SCRIPT = 'scripts/train.py'


def get_config():
    return {
        'model': 'resnet56',
        'dataset': 'cifar10',
        'augment': 'crop_flip',
        'epochs': 200,
        'batch_size': 128,
        'optimizer': 'sgd',
        'lr': 0.1,
        'momentum': 0.9,
        'weight_decay': 5e-4,
        'schedule': 'step',
        'warmup_epochs': 1.0,
        'lr_decay_epochs': (50, 150),
        'afan.layer': 'stage1_block9',
        'afan.steps': 5,
        'afan.step_size': 0.5 / 255,
        'eval_batch_size': 1000,
    }
