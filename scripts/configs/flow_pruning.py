"""Gradient-flow pruning (arXiv:2009.11839) at the paper's scale: VGG-13 on CIFAR-10, 75 % of
filters removed in 25 one-epoch rounds from initialization, then fine-tuning. The values
(PruneSettings fields), and where each comes from, are ``jaxnorm.papers.flow_pruning.PAPER``
(the experiment's ``get_config('paper')``); this file hands them to ``scripts/prune_model.py``.

    python -m jaxnorm.data prepare cifar10      # once, needs internet
    python scripts/prune_model.py --config scripts/configs/flow_pruning.py \\
        --measures magnitude loss_preservation grasp grad_norm_preservation --seeds 3
"""
from jaxnorm.papers import flow_pruning

SCRIPT = 'scripts/prune_model.py'


def get_config():
    return dict(flow_pruning.PAPER)
