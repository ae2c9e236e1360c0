"""The offline importances over batches of unequal size, and the EMR reference code's three
behaviours as options (QR's penalized importance gradient, RWalk's Fisher kept across tasks,
MAS's summed feature norm), each against a hand computation in numpy."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
from jaxnorm import continual as cl, models
from optim import importance as imp

RNG = np.random.default_rng(7)


def _step(tx, state, grads, params, **extra):
    updates, state = jax.jit(tx.update)(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state


# ---------------------------------------------------------------- unequal batches

def test_per_example_importances_weight_batches_by_their_examples():
    # The case: one batch of 1 example and one of 3.
    batches = [{'x': jnp.asarray([2.0])}, {'x': jnp.asarray([0.0, 0.0, 0.0])}]
    params = {'w': jnp.asarray(1.0)}
    # EWC: d/dw mean(w x) on one example = x; squares 4, 0, 0, 0 -> per-example mean 1.0
    ewc = imp.ewc_importance(lambda p, b: jnp.mean(p['w'] * b['x']), params, batches)
    np.testing.assert_allclose(ewc['w'], 1.0, rtol=1e-6)
    # MAS on f(x) = w x: |d (w x)^2 / dw| = 2 w x^2 -> 8, 0, 0, 0 -> mean 2.0
    mas = imp.mas_importance(lambda p, x: p['w'] * x[:, None], params,
                             [b['x'] for b in batches], per_example=True)
    np.testing.assert_allclose(mas['w'], 2.0, rtol=1e-6)


def test_per_example_importances_equal_the_pooled_batch_on_random_splits():
    x = RNG.normal(size=(7, 4)).astype(np.float32)
    y = RNG.integers(0, 3, size=7)
    w = RNG.normal(size=(4, 3)).astype(np.float32)

    def ce(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(b['x'] @ p['w'], b['y']).mean()
    logits = x @ w
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    grad = x[:, :, None] * (prob - np.eye(3)[y])[:, None, :]  # per-example dCE/dW
    split = [{'x': x[:2], 'y': y[:2]}, {'x': x[2:], 'y': y[2:]}]  # 2 and 5 examples
    ewc = imp.ewc_importance(ce, {'w': jnp.asarray(w)}, split)
    np.testing.assert_allclose(ewc['w'], (grad ** 2).mean(0), rtol=1e-5, atol=1e-8)
    out = x @ w
    mas = imp.mas_importance(lambda p, v: v @ p['w'], {'w': jnp.asarray(w)},
                             [x[:2], x[2:]], per_example=True)
    np.testing.assert_allclose(mas['w'], np.abs(2 * x[:, :, None] * out[:, None, :]).mean(0),
                               rtol=1e-5)


def test_importance_rejects_inconsistent_or_empty_batches():
    with pytest.raises(ValueError, match='one example axis'):
        imp.ewc_importance(lambda p, b: jnp.mean(p['w'] * b['x']) + jnp.mean(b['z']),
                           {'w': jnp.asarray(1.0)}, [{'x': jnp.ones(2), 'z': jnp.ones(3)}])
    with pytest.raises(ValueError, match='unknown reduction'):
        imp.squared_output_norm(lambda p, x: x, 'max')


# ---------------------------------------------------------------- QR's importance gradient

@pytest.mark.parametrize('penalized', [True, False])
def test_quadratic_importance_reads_the_penalized_or_the_raw_gradient(penalized):
    anchor = {'w': jnp.asarray([0.5, -1.0, 2.0])}
    params = {'w': jnp.asarray([1.5, 0.0, 1.0])}
    omega = {'w': jnp.asarray([0.2, 1.0, 3.0])}
    g = np.array([0.3, -0.4, 0.1])
    lam = 0.7
    tx = optim.ewc(optax.sgd(0.1), lam, penalized_importance=penalized)
    state = optim.new_task(tx.init(anchor), anchor, omega=omega)
    _, state = _step(tx, state, {'w': jnp.asarray(g, jnp.float32)}, params)
    # new_task halves: Omega_prev = omega / 2
    pull = 2 * lam * np.asarray(omega['w']) / 2 * (np.asarray(params['w'])
                                                     - np.asarray(anchor['w']))
    seen = g + pull if penalized else g
    np.testing.assert_allclose(state.importance.omega_cur['w'], 0.8 * seen ** 2, rtol=1e-5)


# ---------------------------------------------------------------- RWalk's Fisher

@pytest.mark.parametrize('keep', [True, False])
def test_rwalk_fisher_is_kept_or_reset_at_the_task_boundary(keep):
    params = {'w': jnp.asarray(RNG.normal(size=4), jnp.float32)}
    lr, m = 0.1, 0.8
    tx = optim.rwalk(optax.sgd(lr), 1.0, keep_fisher=keep)
    state, p = tx.init(params), params
    theta, fisher = np.asarray(params['w'], np.float64), np.zeros(4)
    grads = [RNG.normal(size=4) for _ in range(4)]
    for t, g in enumerate(grads):
        if t == 2:  # task boundary: F kept (reference) or zeroed
            state = optim.new_task(state, p)
            fisher = fisher if keep else np.zeros(4)
        # λ = 1 penalty changes the step after the boundary; replay it in numpy
        step_g = g
        if t >= 2:
            omega_prev = np.asarray(state.importance.omega_prev['w'], np.float64)
            step_g = g + 2 * omega_prev * (theta - np.asarray(state.importance.anchor['w']))
        p, state = _step(tx, state, {'w': jnp.asarray(g, jnp.float32)}, p)
        fisher = m * (step_g * theta) ** 2 + (1 - m) * fisher
        theta = theta - lr * step_g
    np.testing.assert_allclose(state.importance.fisher['w'], fisher, rtol=1e-4)
    assert bool(state.importance.keep_fisher) == keep


# ---------------------------------------------------------------- MAS's objective

def test_mas_features_sum_is_the_summed_squared_norm_of_the_head_input():
    x = RNG.normal(size=(5, 8, 8, 1)).astype(np.float32)
    model = models.get_model('multihead_mlp', norm='none', num_classes=2, num_tasks=3, task=1,
                             hidden=(6, 4))
    variables = model.init(jax.random.key(0), x)
    p = jax.tree.map(np.asarray, variables['params'])
    h = np.maximum(x.reshape(5, -1) @ p['dense1']['kernel'] + p['dense1']['bias'], 0)
    h = np.maximum(h @ p['dense2']['kernel'] + p['dense2']['bias'], 0)
    np.testing.assert_allclose(cl.head_features(model, variables, x), h, rtol=1e-5, atol=1e-6)
    objective = imp.squared_output_norm(
        lambda params, v: cl.head_features(model, {'params': params}, v), 'sum')
    np.testing.assert_allclose(objective(variables['params'], x), (h ** 2).sum(), rtol=1e-5)
    # d/d b2 of sum_i ||relu(z_i)||^2 = sum_i 2 h_i (where z_i > 0)
    grads = jax.grad(objective)(variables['params'], x)
    np.testing.assert_allclose(grads['dense2']['bias'], (2 * h).sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads['head']['kernel'], 0.0)  # the head does not enter


def test_setup_defaults_are_the_reference_and_bad_options_are_named():
    setup = cl.Setup()
    assert (setup.mas_objective, setup.penalized_importance, setup.keep_fisher) == (
        'features_sum', True, True)
    with pytest.raises(ValueError, match='mas_objective'):
        dataclasses.replace(setup, mas_objective='features')
