"""Micro-structured weight unification with ADMM (arXiv:2106.08301) at a CIFAR scale.

Source: research/lawn_unify_papers.md 2.1-2.5. The paper's tables and hyperparameters could not
be read; what is known [3rd]: CIFAR-100 among its datasets (with VGG-16), several block shapes
and ratios, unification combined with pruning. The ADMM schedule follows the ADMM-pruning line
of the same group (2.4): rho starting small and multiplied geometrically every epoch, then a
hard projection and masked retraining. Every number below is therefore [infer]: epochs
scaled up from the digits run, rho0 1e-3 and x1.3 per epoch, the digits run's ratios.
Deviation: the experiment's params-only loop has no BatchNorm, so its 3-conv CNN (no
normalization) stands in for VGG-16.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/experiments/unification.py --config scripts/configs/unification.py
"""
SCRIPT = 'scripts/experiments/unification.py'


def get_config():
    return {
        'dataset': 'cifar100',
        'models': ('cnn',),
        'pretrain_epochs': 100,
        'admm_epochs': 30,
        'retrain_epochs': 30,
        'batch_size': 128,
        'lr': 1e-3,
        'admm_lr': 3e-3,
        'rho0': 1e-3,
        'rho_factor': 1.3,
        'ratios': ((0.5, 0.25), (0.6, 0.35)),
    }
