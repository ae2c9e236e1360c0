"""MimicNorm (arXiv:2010.09278) at the paper's scale: ResNet-18 on CIFAR-100, BN vs MimicNorm.

Source: the authors' CIFAR-100 recipe (research/norm.md 2.5): SGD momentum 0.9, LR 0.1,
weight decay 5e-4 (coupled), batch 256, 150 epochs with the rate x0.1 at epochs 82, 112 and
137 (MultiStepLR [80, 110, 135] stepped only after the 2 warmup epochs), random crop + flip.
Deviation: the repo also rotates by up to 15 degrees; jaxnorm's augmentations have no
rotation. The paper reports ResNet-18 74.72 (BN) vs 74.96 (MimicNorm) % top-1 and 4447 ->
4157 MB of GPU memory.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/train.py --config scripts/configs/mimicnorm.py --workdir runs/mimic-r18
    python scripts/train.py --config scripts/configs/mimicnorm.py --norm bn --workdir runs/bn-r18
"""
SCRIPT = 'scripts/train.py'


def get_config():
    return {
        'model': 'resnet18',
        'norm': 'mimic',
        'dataset': 'cifar100',
        'augment': 'crop_flip',
        'epochs': 150,
        'batch_size': 256,
        'optimizer': 'sgd',
        'lr': 0.1,
        'momentum': 0.9,
        'weight_decay': 5e-4,
        'schedule': 'step',
        'warmup_epochs': 2.0,
        'lr_decay_epochs': (82, 112, 137),
        'eval_batch_size': 1000,
    }
