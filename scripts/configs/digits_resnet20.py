"""The default run, spelt out: ResNet-20 with BatchNorm on the embedded digits data (CPU).

    python scripts/train.py --config scripts/configs/digits_resnet20.py
"""
SCRIPT = 'scripts/train.py'



def get_config():
    return {
        'model': 'resnet20',
        'norm': 'bn',
        'dataset': 'digits',
        'epochs': 30,
        'batch_size': 64,
        'optimizer': 'sgd',
        'lr': 0.05,
        'momentum': 0.9,
        'weight_decay': 5e-4,
        'schedule': 'cosine',
    }
