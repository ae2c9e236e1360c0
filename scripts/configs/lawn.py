"""LAWN (arXiv:2108.05839) at a CIFAR scale: Adam-LAWN on VGG-13 with BN, large batch.

Source: the paper's tables were not retrieved (research/lawn_unify_papers.md), so every value
here is [infer]: the base optimizer's own large-batch recipe (linear warmup, then cosine), LR
scaled with the batch, E_free = the warmup length (about 5 % of training), and the constrained
set S = the classifier kernel after the last BN. Compare with the same command without
--lawn-free-epochs, and sweep --batch-size.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/train.py --config scripts/configs/lawn.py --workdir runs/lawn
    python scripts/train.py --config scripts/configs/lawn.py --lawn-free-epochs 0 \\
        --workdir runs/lawn-from-start
"""
SCRIPT = 'scripts/train.py'


def get_config():
    return {
        'model': 'vgg13',
        'dataset': 'cifar10',
        'augment': 'crop_flip',
        'epochs': 200,
        'batch_size': 2048,
        'optimizer': 'adam',
        'lr': 2e-3,
        'schedule': 'cosine',
        'warmup_epochs': 10.0,
        'weight_decay': 0.0,
        'lawn.free_epochs': 10.0,
        'lawn.mask': 'head/kernel',
        'eval_batch_size': 1000,
    }
