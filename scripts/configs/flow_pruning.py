"""Gradient-flow pruning (arXiv:2009.11839) at the paper's scale: VGG-13 on CIFAR-10, 75 % of
filters removed in 25 one-epoch rounds from initialization, then fine-tuning.

Source: the reference code's recipe (research/prune.md 1.5): a round trains one epoch at the
constant pruning rate 0.1, scores, and removes r_k = p / (k p + n (1 - p)) of the current
filters; SGD momentum 0.9, weight decay 1e-4, batch 128; 160 epochs in all. Deviation: the
code fine-tunes with [0.1, 0.01, 0.001] for [80 - rounds, 40, 40] epochs; jaxnorm-prune uses a
cosine schedule over the same 135 epochs. The code's temperature T = 5 on the logits for
training and scoring is kept for the gradient-based measures (GraSP uses its own T = 200).

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/prune_model.py --config scripts/configs/flow_pruning.py \\
        --measures magnitude loss_preservation grasp grad_norm_preservation --seeds 3
"""
SCRIPT = 'scripts/prune_model.py'


def get_config():
    return {
        'model': 'vgg13',
        'model_kwargs': {},
        'dataset': 'cifar10',
        'target': 0.75,
        'rounds': 25,
        'round_epochs': 1,
        'finetune_epochs': 135,
        'batch_size': 128,
        'prune_lr': 0.1,
        'lr': 0.1,
        'momentum': 0.9,
        'weight_decay': 1e-4,
        'gradient_temperature': 5.0,
        'grasp_temperature': 200.0,
    }
