"""optax GradientTransformations for the papers reproduced in jaxnorm; depends only on jax/optax."""
from optim.lawn import LawnState, constrained_norms, lawn, path_name, regex_mask

__all__ = ['LawnState', 'constrained_norms', 'lawn', 'path_name', 'regex_mask']
