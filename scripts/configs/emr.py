"""EMR vs quadratic regularizers (arXiv:2102.02805) at the paper's scale: CIFAR-100 split by
its 20 superclasses into 5-class tasks, the paper's LR grid.

Source: the reference code's protocol (research/optim.md 2.4): task-incremental, batch 128,
SGD momentum 0.9, LR in {0.03, 0.01, 0.003, 0.001}; QR's strength grid 1e-5 .. 1e4 (EMR needs
none). Epochs per task and the CL weight decay live in the repo's missing config.py, so the
epochs here are [infer]. Run once per importance (ewc, mas, si, rwalk) and method
(emr, quadratic); the model is the repo's vanilla CNN without its CIFAR-10 pre-training.

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/continual.py --config scripts/configs/emr.py --importance mas --out emr_mas.json
    python scripts/continual.py --config scripts/configs/emr.py --method quadratic \\
        --strength 1e-5 1e-3 1e-1 1e1 1e3
"""
SCRIPT = 'scripts/continual.py'


def get_config():
    return {
        'benchmark': 'cifar100_superclass',
        'method': 'emr',
        'importance': 'ewc',
        'model': 'cnn',
        'lr': [0.03, 0.01, 0.003, 0.001],
        'epochs': 5,
        'batch_size': 128,
        'momentum': 0.9,
        'seeds': 3,
    }
