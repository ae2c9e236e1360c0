"""Tests for optim.importance (estimators, tracker), optim.quadratic (EWC/MAS/SI/RWalk), optim.emr.

References are written out independently: numpy formulas for the interpolation, analytic
gradients of a linear softmax model, and numpy re-simulations of the online importances.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnorm.trees
import optim
from optim import importance as imp
from optim.emr import interpolate
from optim.quadratic import penalize

RNG = np.random.default_rng(0)


def _params():
    return {'body': {'kernel': jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32),
                     'bias': jnp.asarray(RNG.normal(size=(3,)), jnp.float32)},
            'head': {'kernel': jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32)}}


def _like(params, scale=1.0, positive=False):
    def draw(x):
        value = RNG.normal(size=x.shape) * scale
        return jnp.asarray(np.abs(value) + 0.1 if positive else value, jnp.float32)
    return jax.tree.map(draw, params)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _step(tx, state, grads, params, **extra):
    updates, state = jax.jit(tx.update)(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state


HEAD_FREE = optim.regex_mask('^body')


# ---------------------------------------------------------------- quadratic regularizers

def test_quadratic_sgd_step_is_the_interpolation():
    params, anchor = _params(), _params()
    omega = _like(params, positive=True)
    grads = _like(params)
    lr, lam = 0.05, 3.0
    tx = optim.ewc(optax.sgd(lr), lam, mask=HEAD_FREE)
    state = optim.new_task(tx.init(anchor), anchor, omega=omega)
    new, _ = _step(tx, state, grads, params)
    for name in ('kernel', 'bias'):
        past = np.asarray(omega['body'][name]) / 2  # merged: (0 + omega) / 2
        beta = 2 * lr * lam * past
        expect = ((1 - beta) * np.asarray(params['body'][name])
                  + beta * np.asarray(anchor['body'][name])
                  - lr * np.asarray(grads['body'][name]))
        np.testing.assert_allclose(new['body'][name], expect, atol=1e-6)
    # the head is excluded: a plain SGD step
    np.testing.assert_allclose(new['head']['kernel'],
                               np.asarray(params['head']['kernel'])
                               - lr * np.asarray(grads['head']['kernel']), atol=1e-6)


def test_quadratic_transform_equals_the_loss_term():
    params, anchor = _params(), _params()
    omega = _like(params, positive=True)
    x = jnp.asarray(RNG.normal(size=(5, 4)), jnp.float32)
    lam = 0.7

    def task_loss(p):
        return jnp.mean(jnp.tanh(x @ p['body']['kernel'] + p['body']['bias'])
                        @ p['head']['kernel'] ** 2)

    def penalized(p):
        body = jax.tree.map(lambda w, a, o: jnp.sum(0.5 * o * (w - a) ** 2), p['body'],
                            anchor['body'], omega['body'])  # omega_prev = omega / 2
        return task_loss(p) + lam * sum(jax.tree.leaves(body))

    reference, ours = optax.adam(0.01), optim.ewc(optax.adam(0.01), lam, mask=HEAD_FREE)
    ref_state = reference.init(params)
    state = optim.new_task(ours.init(anchor), anchor, omega=omega,
                           inner_state=optax.adam(0.01).init(anchor))
    p_ref = p_ours = params
    for _ in range(3):
        u, ref_state = reference.update(jax.grad(penalized)(p_ref), ref_state, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        p_ours, state = _step(ours, state, jax.grad(task_loss)(p_ours), p_ours)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p_ref, p_ours)


# ---------------------------------------------------------------- EMR

def test_emr_first_task_is_inner_bit_for_bit():
    params = _params()
    inner = optax.adam(0.03)
    tx = optim.emr(inner, 'si', mask=HEAD_FREE)
    s_ref, s_ours = inner.init(params), tx.init(params)
    p_ref = p_ours = params
    for _ in range(4):
        grads = _like(params)
        u, s_ref = jax.jit(inner.update)(grads, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        p_ours, s_ours = _step(tx, s_ours, grads, p_ours)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), p_ref, p_ours)


def test_emr_alpha_one_is_inner_bit_for_bit():
    # No past importance: alpha = sqrt(c) / (sqrt(c) + 0 + 1e-20) == 1 exactly.
    params = _params()
    inner = optax.sgd(0.1, momentum=0.9)
    tx = optim.emr(inner, 'ewc', mask=HEAD_FREE)
    state = optim.new_task(tx.init(params), params, omega=jax.tree.map(jnp.zeros_like, params),
                           inner_state=inner.init(params))
    s_ref, p_ref, p_ours = inner.init(params), params, params
    for _ in range(3):
        grads = _like(params, positive=True)
        u, s_ref = jax.jit(inner.update)(grads, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        p_ours, state = _step(tx, state, grads, p_ours)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), p_ref, p_ours)


def test_emr_step_interpolates_with_relative_importance():
    params, anchor = _params(), _params()
    omega_task = _like(params, positive=True)
    grads = _like(params)
    lr = 0.2
    tx = optim.emr(optax.sgd(lr), 'ewc', mask=HEAD_FREE, momentum=0.8)
    state = optim.new_task(tx.init(anchor), anchor, omega=omega_task)
    new, state = _step(tx, state, grads, params)
    for name in ('kernel', 'bias'):
        g = np.asarray(grads['body'][name], np.float64)
        current = 0.8 * g ** 2  # running sum was reset to 0 by new_task
        prev = np.asarray(omega_task['body'][name]) / 2  # (0 + omega) / 2
        alpha = np.sqrt(current) / (np.sqrt(current) + np.sqrt(prev) + 1e-20)
        stepped = np.asarray(params['body'][name]) - lr * g
        expect = alpha * stepped + (1 - alpha) * np.asarray(anchor['body'][name])
        np.testing.assert_allclose(new['body'][name], expect, atol=1e-6)
        np.testing.assert_allclose(state.importance.omega_cur['body'][name], current,
                                   rtol=1e-6)
    np.testing.assert_allclose(new['head']['kernel'], np.asarray(params['head']['kernel'])
                               - lr * np.asarray(grads['head']['kernel']), atol=1e-6)


def test_emr_is_stable_for_any_learning_rate():
    # alpha in [0, 1]: the anchored parameters never move outside [anchor, inner step].
    params, anchor = _params(), _params()
    tx = optim.emr(optax.sgd(1e4), 'ewc', mask=HEAD_FREE)
    state = optim.new_task(tx.init(anchor), anchor, omega=_like(params, 1e3, positive=True))
    new, _ = _step(tx, state, _like(params), params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new))


# ---------------------------------------------------------------- penalty and interpolation

def _importance_state(params, past, current, anchor):
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
    return imp.ImportanceState(has_anchor=jnp.ones([], jnp.bool_), anchor=anchor, start=anchor,
                               omega_prev=past, running=zeros, fisher=zeros,
                               omega_cur=current)


def test_penalize_adds_the_penalty_gradient_to_selected_leaves_only():
    params, anchor, grads = _params(), _params(), _like(_params())
    past = _like(params, positive=True)
    state = _importance_state(params, past, past, anchor)
    selected = jaxnorm.trees.mask_tree(HEAD_FREE, params)
    out = penalize(grads, params, state, selected, strength=0.3)
    for name in ('kernel', 'bias'):
        w, a, o, g = (np.asarray(t['body'][name], np.float64)
                      for t in (params, anchor, past, grads))
        np.testing.assert_allclose(out['body'][name], g + 2 * 0.3 * o * (w - a), rtol=1e-6,
                                   atol=1e-7)
    assert out['head']['kernel'] is grads['head']['kernel']


def test_interpolate_moves_selected_leaves_towards_the_anchor_by_relative_importance():
    params, anchor, steps = _params(), _params(), _like(_params())
    past, current = _like(params, positive=True), _like(params, positive=True)
    current['body']['bias'] = current['body']['bias'].at[0].set(0.0)  # alpha = 0: the anchor
    state = _importance_state(params, past, current, anchor)
    out = interpolate(steps, params, state, jaxnorm.trees.mask_tree(HEAD_FREE, params))
    for name in ('kernel', 'bias'):
        w, a, u, c, o = (np.asarray(t['body'][name], np.float64)
                         for t in (params, anchor, steps, current, past))
        alpha = np.sqrt(c) / (np.sqrt(c) + np.sqrt(o))
        np.testing.assert_allclose(w + out['body'][name], alpha * (w + u) + (1 - alpha) * a,
                                   rtol=1e-5, atol=1e-6)
    assert float(params['body']['bias'][0] + out['body']['bias'][0]) == pytest.approx(
        float(anchor['body']['bias'][0]), abs=1e-6)
    assert out['head']['kernel'] is steps['head']['kernel']


def test_pieces_pass_optax_masked_placeholders_through():
    params = {'body': _params()['body'], 'head': optax.MaskedNode()}
    state = imp.ImportanceTracker('ewc').init(params)
    selected = jaxnorm.trees.mask_tree(None, params)
    assert selected == {'body': {'bias': True, 'kernel': True}, 'head': False}
    for out in (penalize(params, params, state, selected, 1.0),
                interpolate(params, params, state, selected)):
        assert isinstance(out['head'], optax.MaskedNode)


def test_tracker_leaves_unselected_leaves_at_zero():
    params = _params()
    tracker = imp.ImportanceTracker('rwalk', momentum=0.5)
    state = tracker.init(params)
    grads, steps = _like(params), _like(params, 0.1)
    selected = jaxnorm.trees.mask_tree(HEAD_FREE, params)
    state = tracker.update(state, grads, params, steps, selected)
    for tree in (state.running, state.fisher, state.omega_cur):
        np.testing.assert_array_equal(tree['head']['kernel'], 0.0)
    g, w = (np.asarray(t['body']['kernel'], np.float64) for t in (grads, params))
    np.testing.assert_allclose(state.fisher['body']['kernel'], 0.5 * (g * w) ** 2, rtol=1e-6)
    # path term |g * (theta_{t+1} - start)| with start = theta_t: |g * u| (float32 rounding
    # of theta + u - theta limits the agreement)
    u = np.asarray(steps['body']['kernel'], np.float64)
    np.testing.assert_allclose(state.running['body']['kernel'], 0.5 * np.abs(g * u), rtol=1e-4)


def test_tracker_rejects_bad_settings_at_construction():
    with pytest.raises(ValueError, match='unknown path'):
        imp.ImportanceTracker('si', path='square')
    with pytest.raises(ValueError, match='damping must be positive'):
        imp.ImportanceTracker('si', damping=0.0)


# ---------------------------------------------------------------- importances

def _linear_problem():
    w = RNG.normal(size=(4, 3)).astype(np.float32)
    b = RNG.normal(size=(3,)).astype(np.float32)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    y = RNG.integers(0, 3, size=6)
    return {'w': jnp.asarray(w), 'b': jnp.asarray(b)}, x, y


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _ce(params, batch):
    logits = batch['x'] @ params['w'] + params['b']
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()


def test_ewc_empirical_fisher_matches_analytic_per_example_gradients():
    params, x, y = _linear_problem()
    omega = imp.ewc_importance(_ce, params, [{'x': x, 'y': y}])
    residual = _softmax(x @ np.asarray(params['w']) + np.asarray(params['b'])) - np.eye(3)[y]
    grad_w = x[:, :, None] * residual[:, None, :]  # per example dCE/dW = x (p - y)^T
    np.testing.assert_allclose(omega['w'], (grad_w ** 2).mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(omega['b'], (residual ** 2).mean(0), rtol=1e-5, atol=1e-7)
    # batch variant (the reference code's class batches): squared mean gradients, averaged
    batches = [{'x': x[:3], 'y': y[:3]}, {'x': x[3:], 'y': y[3:]}]
    coarse = imp.ewc_importance(_ce, params, batches, per_example=False)
    expect = np.mean([grad_w[:3].mean(0) ** 2, grad_w[3:].mean(0) ** 2], axis=0)
    np.testing.assert_allclose(coarse['w'], expect, rtol=1e-5, atol=1e-7)


def test_mas_matches_analytic_gradient_of_squared_output_norm():
    params, x, _ = _linear_problem()

    def apply(p, inputs):
        return inputs @ p['w'] + p['b']
    out = x @ np.asarray(params['w']) + np.asarray(params['b'])
    per_w = 2 * x[:, :, None] * out[:, None, :]  # d||Wx+b||^2/dW = 2 x f^T
    per_b = 2 * out
    batched = imp.mas_importance(apply, params, [x[:2], x[2:]])
    np.testing.assert_allclose(batched['w'], np.abs((per_w[:2].mean(0) + per_w[2:].mean(0)) / 2),
                               rtol=1e-5)
    each = imp.mas_importance(apply, params, [x], per_example=True)
    np.testing.assert_allclose(each['w'], np.abs(per_w).mean(0), rtol=1e-5)
    np.testing.assert_allclose(each['b'], np.abs(per_b).mean(0), rtol=1e-5)


@pytest.mark.parametrize('kind', ['si', 'rwalk'])
def test_online_si_and_rwalk_match_a_numpy_simulation(kind):
    params = {'w': jnp.asarray(RNG.normal(size=(5,)), jnp.float32)}
    lr, m, xi = 0.1, 0.8, 1e-10
    tx = optim.emr(optax.sgd(lr), kind, momentum=m)
    state = tx.init(params)
    theta = np.asarray(params['w'], np.float64)
    start = theta.copy()
    run, fisher = np.zeros(5), np.zeros(5)
    p = params
    for _ in range(4):
        g = RNG.normal(size=5)
        p, state = _step(tx, state, {'w': jnp.asarray(g, jnp.float32)}, p)
        new = theta - lr * g
        run = m * np.abs(g * (new - start)) + (1 - m) * run
        fisher = m * (g * theta) ** 2 + (1 - m) * fisher
        theta = new
    delta2 = (theta - start) ** 2  # the anchor is the initial params during task 1
    expect = (run / (delta2 + xi) if kind == 'si'
              else fisher + run / (fisher * delta2 + xi))
    np.testing.assert_allclose(state.importance.running['w'], run, rtol=1e-4)
    np.testing.assert_allclose(state.importance.omega_cur['w'], expect, rtol=1e-3)


def test_online_ewc_and_mas_are_emas_of_their_terms():
    params = {'w': jnp.ones(3)}
    grads = [jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.0, 1.0, -1.0])]
    extra = [jnp.asarray([-3.0, 1.0, 2.0]), jnp.asarray([1.0, -1.0, 0.0])]
    for kind, terms in (('ewc', [np.square(g) for g in grads]),
                        ('mas', [np.abs(e) for e in extra])):
        tx = optim.emr(optax.sgd(0.1), kind)
        state, p = tx.init(params), params
        for g, e in zip(grads, extra):
            p, state = _step(tx, state, {'w': g}, p, mas_grads={'w': e})
        np.testing.assert_allclose(state.importance.omega_cur['w'],
                                   0.8 * terms[1] + 0.16 * terms[0], rtol=1e-6)


def test_new_task_halves_past_importance():
    params = _params()
    a, b = _like(params, positive=True), _like(params, positive=True)
    tx = optim.si(optax.sgd(0.1), 1.0)
    state = optim.new_task(tx.init(params), params, omega=a)
    state = optim.new_task(state, params, omega=b)
    jax.tree.map(lambda got, x, y: np.testing.assert_allclose(got, (x / 2 + y) / 2, rtol=1e-6),
                 state.importance.omega_prev, a, b)
    assert bool(state.importance.has_anchor)


# ---------------------------------------------------------------- optax integration

def test_state_is_jit_stable_across_updates_and_task_boundaries():
    params = _params()
    tx = optim.emr(optax.sgd(0.1, momentum=0.9), 'rwalk', mask=HEAD_FREE)
    state = tx.init(params)
    update = jax.jit(tx.update)
    structure = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for _ in range(2):
        updates, state = update(_like(params), state, params)
        params = optax.apply_updates(params, updates)
        state = optim.new_task(state, params)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == structure
    assert update._cache_size() == 1


def test_works_in_chain_masked_and_inject_hyperparams():
    params = _params()
    grads = _like(params)
    chained = optax.chain(optax.clip_by_global_norm(10.0),
                          optim.emr(optax.sgd(0.1), 'ewc'))
    state = optim.new_task(chained.init(params), params,
                           omega=jax.tree.map(jnp.ones_like, params))
    updates, _ = jax.jit(chained.update)(grads, state, params)
    assert np.abs(np.asarray(updates['body']['kernel'])).max() > 0

    masked = optax.masked(optim.ewc(optax.sgd(0.1), 1.0), {'body': True, 'head': False})
    state = optim.new_task(masked.init(params), params)
    updates, state = jax.jit(masked.update)(grads, state, params)
    np.testing.assert_array_equal(updates['head']['kernel'], grads['head']['kernel'])

    injected = optax.inject_hyperparams(optim.ewc)(inner=optax.sgd(0.5), strength=2.0)
    anchor, omega = _params(), _like(params, positive=True)
    state = optim.new_task(injected.init(anchor), anchor, omega=omega)
    state.hyperparams['strength'] = jnp.asarray(4.0)
    new, _ = _step(injected, state, grads, params)
    beta = 2 * 0.5 * 4.0 * np.asarray(omega['body']['bias']) / 2
    expect = ((1 - beta) * np.asarray(params['body']['bias'])
              + beta * np.asarray(anchor['body']['bias'])
              - 0.5 * np.asarray(grads['body']['bias']))
    np.testing.assert_allclose(new['body']['bias'], expect, atol=1e-5)


# ---------------------------------------------------------------- errors

def test_clear_errors():
    params = _params()
    tx = optim.emr(optax.sgd(0.1), 'ewc')
    state = tx.init(params)
    with pytest.raises(ValueError, match="params tree does not match the importance state: "
                                         "missing from the params tree: 'head/kernel'"):
        optim.new_task(state, {'body': params['body']})
    with pytest.raises(ValueError, match=r"'body/bias' has shape \(3, 1\) in the params tree"):
        optim.new_task(state, jax.tree.map(lambda x: jnp.zeros(x.shape + (1,)), params))
    with pytest.raises(ValueError, match='unknown importance'):
        optim.emr(optax.sgd(0.1), 'fisher')
    with pytest.raises(ValueError, match='unknown importance'):
        optim.quadratic(optax.sgd(0.1), 'l2')
    with pytest.raises(ValueError, match='no ContinualState'):
        optim.new_task(optax.sgd(0.1).init(params), params)
    with pytest.raises(ValueError, match='mas_grads'):
        tx = optim.mas(optax.sgd(0.1), 1.0)
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match='momentum'):
        optim.emr(optax.sgd(0.1), 'ewc', momentum=1.5)


def test_bfloat16_params_keep_their_dtype():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    for tx in (optim.emr(optax.sgd(0.1), 'rwalk'), optim.si(optax.sgd(0.1), 1.0)):
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
        state = optim.new_task(state, optax.apply_updates(params, updates))
        updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
        assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
        assert state.importance.anchor['body']['kernel'].dtype == jnp.bfloat16
        assert state.importance.omega_prev['body']['kernel'].dtype == jnp.float32
