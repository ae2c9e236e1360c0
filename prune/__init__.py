"""Network pruning on any params pytree; depends only on jax/optax and :mod:`jaxnorm.trees`.

* :mod:`prune.masks`: mask trees, channel groups, structured and unstructured masks;
* :mod:`prune.optimizer`: :func:`masked_optimizer`, the optax wrapper keeping pruned entries 0;
* :mod:`prune.scores`: importance measures, :math:`g` and :math:`Hg` by ``jvp`` of ``grad``;
* :mod:`prune.flow`: gradient-flow derivatives and the BatchNorm scale-invariance identities;
* :mod:`prune.schedules`: the iterative per-round fractions and global filter ranking;
* :mod:`prune.compact`: slicing a filter-pruned model's variables down to a smaller model;
* :mod:`prune.accounting`: sparsity, parameters and FLOPs per layer (ShrinkBench);
* :mod:`prune.unify`: micro-structured weight unification (blocks, selection, projection);
* :mod:`prune.unify_storage`: its stored format, measured bits and multiplies;
* :mod:`prune.unify_budget`: prune-only formats at a matched bit and multiply budget;
* :mod:`prune.admm`: ADMM toward the unified set and retraining with tied weights;
* :mod:`prune.group_importance`: Fisher filter importance, additive group estimates, BN-scale;
* :mod:`prune.early_bird`: Early-Bird ticket detection by the mask distance (arXiv:1909.11957);
* :mod:`prune.lottery`: IMP with rewinding, lottery ticket / re-init / fine-tuning arms and
  the weight-overlap measure :math:`R_p(\\theta_0, \\theta_T)` (arXiv:2102.11068).

Reference: Lubana & Dick, `A Gradient Flow Framework for Analyzing Network Pruning
<https://arxiv.org/abs/2009.11839>`_, ICLR 2021.
"""
from jaxnorm.trees import named_leaves
from prune import unify, unify_budget, unify_storage
from prune.accounting import filter_report, layer_report
from prune.admm import (AdmmState, TiedState, admm, admm_gap, admm_penalty, install_codes,
                        rho_schedule, tied_optimizer)
from prune.compact import compact
from prune.early_bird import (find_ticket, global_channel_mask, mask_distance,
                              window_distances)
from prune.flow import (filter_flow, flow_derivatives, flow_quantities, masked_grad_sq,
                        masking_change)
from prune.group_importance import (bn_scale_scores, fisher_scores, group_estimate,
                                     random_groups, taylor_sums)
from prune.lottery import (EpochLedger, LotteryResult, imp_rate, imp_sparsities, layer_overlaps,
                           lottery_arms, lottery_levels, magnitude_correlation, magnitude_round,
                           rewind, weight_overlap)
from prune.masks import (ChannelGroup, Slot, apply_masks, channels_alive, check_alive,
                         check_groups, check_masks, check_ratio, count_kept, ones_masks,
                         select_leaves, structured_masks, unstructured_masks)
from prune.optimizer import MaskedState, install_masks, masked_optimizer
from prune.schedules import round_fractions, select_survivors, surviving_fraction
from prune.scores import (MEASURES, check_measure, classifier_loss, filter_scores,
                          gradient_and_hg, hessian_vector_product, mean_gradient,
                          parameter_scores)
from prune.unify import UnifySpec

__all__ = [
    'admm', 'admm_gap', 'admm_penalty', 'AdmmState', 'apply_masks', 'ChannelGroup',
    'EpochLedger', 'imp_rate', 'imp_sparsities', 'layer_overlaps', 'lottery_arms',
    'lottery_levels', 'masked_grad_sq', 'masking_change',
    'LotteryResult', 'magnitude_correlation', 'magnitude_round', 'rewind', 'weight_overlap',
    'channels_alive', 'check_alive', 'check_groups', 'check_masks', 'check_measure',
    'check_ratio', 'classifier_loss', 'compact', 'count_kept', 'filter_flow', 'filter_report',
    'filter_scores', 'flow_derivatives', 'flow_quantities', 'gradient_and_hg',
    'hessian_vector_product', 'install_codes', 'install_masks', 'layer_report',
    'masked_optimizer', 'MaskedState', 'mean_gradient', 'MEASURES', 'named_leaves', 'ones_masks',
    'parameter_scores', 'rho_schedule', 'round_fractions', 'select_leaves', 'select_survivors',
    'Slot', 'structured_masks', 'surviving_fraction', 'tied_optimizer', 'TiedState', 'unify',
    'unify_budget', 'unify_storage', 'UnifySpec', 'unstructured_masks',
    'bn_scale_scores', 'find_ticket', 'fisher_scores', 'global_channel_mask', 'group_estimate',
    'mask_distance', 'random_groups', 'taylor_sums', 'window_distances',
]
