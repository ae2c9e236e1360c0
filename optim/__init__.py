"""optax GradientTransformations for the papers reproduced in jaxnorm; depends only on jax/optax
and the params-tree helpers of :mod:`jaxnorm.trees` (``path_name`` and ``regex_mask`` are
re-exported here)."""
from jaxnorm.trees import path_name, regex_mask
from optim import importance
from optim.continual import ContinualState, new_task
from optim.emr import emr
from optim.importance import ImportanceState, ImportanceTracker
from optim.lawn import LawnState, constrained_norms, lawn
from optim.orthoreg import (GRAM_SIDES, REFERENCE_RULES, OrthoRegState, gram, layer_size,
                             layer_weights, orthonormality, orthoreg, orthoreg_penalty)
from optim.quadratic import ewc, mas, quadratic, rwalk, si

__all__ = ['ContinualState', 'GRAM_SIDES', 'ImportanceState', 'ImportanceTracker', 'LawnState',
           'constrained_norms', 'emr', 'ewc', 'importance', 'lawn', 'layer_size', 'layer_weights',
           'mas',
           'new_task', 'gram', 'orthonormality', 'orthoreg', 'orthoreg_penalty',
           'OrthoRegState', 'path_name', 'quadratic', 'REFERENCE_RULES', 'regex_mask', 'rwalk', 'si']
