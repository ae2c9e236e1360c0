"""ResNet-20 on CIFAR-10 as in He et al. (2016): ~91.3 % test accuracy with BatchNorm.

    python -m jaxnorm.data prepare cifar10        # once, needs internet
    python scripts/train.py --config scripts/configs/cifar10_resnet20.py --workdir runs/c10
    python scripts/train.py --config scripts/configs/cifar10_resnet20.py --norm gn \
        --norm-option num_groups=8 --workdir runs/c10_gn
"""
SCRIPT = 'scripts/train.py'



def get_config():
    return {
        'model': 'resnet20',
        'dataset': 'cifar10',
        'augment': 'crop_flip',
        'epochs': 182,           # 64k iterations at batch 128, as in the paper
        'batch_size': 128,
        'optimizer': 'sgd',
        'lr': 0.1,
        'momentum': 0.9,
        'weight_decay': 1e-4,
        'schedule': 'step',      # x0.1 at 50 % and 75 % of training (paper: 32k and 48k)
        'eval_batch_size': 1000,
    }
