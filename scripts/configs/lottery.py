"""Lottery ticket vs pruning & fine-tuning (arXiv:2102.11068) at the paper's training scale.

Source: research/papers_numbers.md 2.2 (the paper's Sec. 4.1 and appendix): CIFAR-10/100,
SGD momentum 0.9, batch 128, T = 150 epochs for pretraining, for each sparse arm and for PF
(schedule restarted), LR / 10 at epochs 80 and 120 (the experiment's 53% / 80% of a run),
initial LR 0.01 ("insufficient") or 0.1, IMP with a uniform per-layer rate of about 22% per
round [inferred from the reported 39% / 62% sparsities], first conv never pruned, 5 repeats
(pass ``--seeds 5``). Weight decay is not stated; none is used.

Deviation: the paper's ResNet-20 / VGG-11 / MobileNet-V2 use BatchNorm, whose running
statistics the experiment's params-only training loop does not carry, so the runnable models
here are the MLP 300-100 and the small CNN.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/experiments/lottery.py --config scripts/configs/lottery.py --seeds 5 \\
        --out results
"""
SCRIPT = 'scripts/experiments/lottery.py'

PER_ROUND = 0.22
ROUNDS = 7  # 1 - 0.78**7 = 82.4 % sparsity, inside the 80-90 % range


def get_config():
    return {
        'dataset': 'cifar10',
        'models': ('cnn', 'mlp'),
        'lrs': (0.01, 0.1),
        'batch': 128,
        'epochs': 150,
        'rounds': ROUNDS,
        'sparsity': 1.0 - (1.0 - PER_ROUND) ** ROUNDS,
    }
