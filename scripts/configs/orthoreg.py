"""OrthoReg (arXiv:2009.05014) at a CIFAR scale: the Early-Bird setting of the reference code.

Source: research/optim.md 3.2-3.4 (the reference repo's main.py / config.py):
- kappa 1e-2 (the code's value for VGG-13, ResNet-34 and ResNet-56); OrthoReg runs without
  weight decay, the baseline with 1e-4;
- SGD momentum 0.9, batch 128, LR 0.1; the Early-Bird dense phase is 24 epochs at 0.1 and one
  at 0.01 (the experiment drops the rate x0.1 for the last dense epoch);
- Fisher importance from the mean gradient over about 10,000 training images
  (``imp_samples``);
- the pruned networks are retrained for 60 + 40 + 40 = 140 epochs with weight decay 1e-4.
Deviations: the experiment's 3-conv CNN (16/32/64, BN, 10-class head) replaces VGG-13 /
ResNet-34 on CIFAR-100, so the dataset is CIFAR-10; fine-tuning uses a cosine schedule over
the 140 epochs instead of the code's steps; 100 random groups per layer for the additivity
correlation is this project's choice [infer].

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/orthoreg.py --config scripts/configs/orthoreg.py --out results
"""
SCRIPT = 'scripts/experiments/orthoreg.py'


def get_config():
    return {
        'dataset': 'cifar10',
        'kappa': 1e-2,
        'weight_decay': 1e-4,
        'lr': 0.1,
        'batch': 128,
        'dense_epochs': 25,
        'tune_epochs': 140,
        'n_groups': 100,
        'n_sample': 10000,
    }
