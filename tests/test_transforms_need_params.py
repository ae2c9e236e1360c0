"""Every params-dependent optax transform of optim/ and prune/ says so when called without them."""
import jax.numpy as jnp
import optax
import pytest

import optim
import prune

PARAMS = {'dense1': {'kernel': jnp.ones((8, 8))}, 'head': {'kernel': jnp.ones((8, 2))}}
SPEC = prune.UnifySpec(block_shape=(1, 4), unify_ratio=0.5, prune_ratio=0.25)

TRANSFORMS = {
    'optim.lawn': lambda inner: optim.lawn(inner, free_steps=1, mask=optim.regex_mask('head')),
    'optim.quadratic': lambda inner: optim.ewc(inner, strength=1.0),
    'optim.emr': lambda inner: optim.emr(inner, 'ewc'),
    'optim.orthoreg': lambda inner: optax.chain(optim.orthoreg(0.1), inner),
    'prune.masked_optimizer': prune.masked_optimizer,
    'prune.admm': lambda inner: prune.admm(inner, SPEC, rho=0.1),
    'prune.tied_optimizer': lambda inner: prune.tied_optimizer(inner, SPEC),
}


@pytest.mark.parametrize('name', TRANSFORMS)
def test_update_without_params_names_the_transform_and_the_fix(name):
    tx = TRANSFORMS[name](optax.sgd(0.1))
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=rf'{name} needs the current params: call '
                                         r'tx\.update\(updates, state, params\)'):
        tx.update(PARAMS, state)
