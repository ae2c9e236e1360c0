"""optax GradientTransformations for the papers reproduced in jaxnorm; depends only on jax/optax."""
from optim import importance
from optim.emr import emr
from optim.lawn import LawnState, constrained_norms, lawn, path_name, regex_mask
from optim.orthoreg import (OrthoRegState, gram, layer_weights, orthonormality, orthoreg,
                             orthoreg_penalty)
from optim.quadratic import ContinualState, ewc, mas, new_task, quadratic, rwalk, si

__all__ = ['ContinualState', 'LawnState', 'constrained_norms', 'emr', 'ewc', 'importance',
           'lawn', 'layer_weights', 'mas', 'new_task', 'gram', 'orthonormality', 'orthoreg',
           'orthoreg_penalty', 'OrthoRegState', 'path_name', 'quadratic', 'regex_mask', 'rwalk',
           'si']
