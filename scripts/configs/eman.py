"""EMAN (arXiv:2101.08482) in FixMatch at a CIFAR scale: EMA-BN vs EMAN teacher.

Source: research/norm.md 4.2 (the FixMatch-EMAN code, models/fixmatch.py and
main_fixmatch.py): pseudo-label threshold 0.7, lambda_u 10, mu 5 (unlabeled to labeled), EMA
momentum 0.999 for parameters and BN statistics alike, labeled batch 64, LR 0.03 (SGD
Nesterov momentum 0.9), 1 % and 10 % of the labels. Weight decay 5e-4 is FixMatch's CIFAR
value [infer: the EMAN code's ImageNet value was not retrieved].
Deviations: the paper's FixMatch-EMAN runs ResNet-50 on ImageNet (63.0 / 74.0 % top-1 with
1 % / 10 % labels); no WRN-28-2 (FixMatch's CIFAR network) is in the library, so this is
ResNet-18 (BN) on CIFAR-10. The step count (100k) and cosine schedule are [infer], and the
experiment's weak/strong augmentations (shifts, cutout, brightness/contrast, noise) stand in
for flip-and-crop and RandAugment.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/eman.py --config scripts/configs/eman.py --out results
"""
SCRIPT = 'scripts/experiments/eman.py'


def get_config():
    return {
        'dataset': 'cifar10',
        'model': 'resnet18',
        'model_kwargs': {},
        'threshold': 0.7,
        'lambda_u': 10.0,
        'mu': 5,
        'lr': 0.03,
        'weight_decay': 5e-4,
        'teacher_momentum': 0.999,
        'steps': 100_000,
        'eval_every': 5000,
        'labeled_batch': 64,
        'fractions': (0.1, 0.01),
    }
