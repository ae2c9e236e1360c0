"""Network pruning on any params pytree; depends only on jax/optax (and :mod:`optim` helpers).

* :mod:`prune.masks`: mask trees, channel groups, structured and unstructured masks;
* :mod:`prune.optimizer`: :func:`masked_optimizer`, the optax wrapper keeping pruned entries 0;
* :mod:`prune.scores`: importance measures, :math:`g` and :math:`Hg` by ``jvp`` of ``grad``;
* :mod:`prune.flow`: gradient-flow derivatives and the BatchNorm scale-invariance identities;
* :mod:`prune.schedules`: the iterative per-round fractions and global filter ranking;
* :mod:`prune.compact`: slicing a filter-pruned model's variables down to a smaller model;
* :mod:`prune.accounting`: sparsity, parameters and FLOPs per layer (ShrinkBench).

Reference: Lubana & Dick, `A Gradient Flow Framework for Analyzing Network Pruning
<https://arxiv.org/abs/2009.11839>`_, ICLR 2021.
"""
from prune.accounting import filter_report, layer_report
from prune.compact import compact
from prune.flow import filter_flow, flow_derivatives, flow_quantities
from prune.masks import (ChannelGroup, Slot, apply_masks, channels_alive, check_alive,
                         check_groups, check_masks, check_ratio, count_kept, named_leaves,
                         ones_masks, select_leaves, structured_masks, unstructured_masks)
from prune.optimizer import MaskedState, install_masks, masked_optimizer
from prune.schedules import round_fractions, select_survivors, surviving_fraction
from prune.scores import (MEASURES, check_measure, classifier_loss, filter_scores,
                          gradient_and_hg, hessian_vector_product, mean_gradient,
                          parameter_scores)

__all__ = [
    'MEASURES', 'ChannelGroup', 'MaskedState', 'Slot', 'apply_masks', 'channels_alive',
    'check_alive', 'check_groups', 'check_masks', 'check_measure', 'check_ratio',
    'classifier_loss', 'compact', 'count_kept', 'filter_flow', 'filter_report',
    'filter_scores', 'flow_derivatives', 'flow_quantities', 'gradient_and_hg',
    'hessian_vector_product', 'install_masks', 'layer_report', 'masked_optimizer',
    'mean_gradient', 'named_leaves', 'ones_masks', 'parameter_scores', 'round_fractions',
    'select_leaves', 'select_survivors', 'structured_masks', 'surviving_fraction',
    'unstructured_masks',
]
