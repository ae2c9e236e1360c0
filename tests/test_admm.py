"""prune.admm: the ADMM transform against closed forms, and retraining with tied blocks."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prune
from prune import unify
from prune.unify import FREE, PRUNED, UNIFIED, UnifySpec

SPEC = UnifySpec((1, 4), 1.0, 0.0, pattern=r'^dense/kernel')


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {'dense': {'kernel': jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
                      'bias': jnp.asarray(rng.normal(size=3), jnp.float32)},
            'head': {'kernel': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}}


def make_grads(seed):
    params = make_params(seed + 100)
    # a signed zero: bitwise equality must keep it
    return jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(-0.0), params)


def numpy_unify_all(kernel: np.ndarray) -> np.ndarray:
    """Every 1x4 block (four consecutive inputs of one output) set to sign(w) mean|w|."""
    k = np.asarray(kernel, np.float64)
    out = np.empty_like(k)
    for o in range(k.shape[1]):
        for start in range(0, k.shape[0], 4):
            block = k[start:start + 4, o]
            out[start:start + 4, o] = np.where(block < 0, -1.0, 1.0) * np.abs(block).mean()
    return out


def test_rho_zero_equals_inner_bit_for_bit():
    inner = optax.adamw(1e-2, weight_decay=1e-3)
    tx = prune.admm(inner, UnifySpec((1, 4), 0.5, 0.25, pattern='dense'), rho=0.0,
                    update_every=2)
    ours, ref = make_params(), make_params()
    state, ref_state = tx.init(ours), inner.init(ref)
    step, ref_step = jax.jit(tx.update), jax.jit(inner.update)
    for i in range(5):
        g = make_grads(i)
        u, state = step(g, state, ours)
        v, ref_state = ref_step(g, ref_state, ref)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
            np.testing.assert_array_equal(np.asarray(a).view(np.uint32),
                                          np.asarray(b).view(np.uint32))
        ours, ref = optax.apply_updates(ours, u), optax.apply_updates(ref, v)
    assert int(state.count) == 5


def test_steps_match_closed_form():
    lr, rho = 0.1, 0.5
    params = make_params()
    tx = prune.admm(optax.sgd(lr), SPEC, rho=rho, update_every=2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    w = np.asarray(params['dense']['kernel'], np.float64)
    z, u = numpy_unify_all(w), np.zeros_like(w)
    np.testing.assert_allclose(state.z['dense/kernel'], z, rtol=1e-6)
    for i in range(4):
        g = make_grads(i)
        if i > 0 and i % 2 == 0:  # Z- and U-steps from the current W
            z = numpy_unify_all(w + u)
            u = u + w - z
        expected = -lr * (np.asarray(g['dense']['kernel'], np.float64) + rho * (w - z + u))
        updates, state = step(g, state, params)
        np.testing.assert_allclose(updates['dense']['kernel'], expected, rtol=1e-5, atol=1e-6)
        # unconstrained leaves: plain SGD
        np.testing.assert_array_equal(updates['head']['kernel'], -lr * g['head']['kernel'])
        np.testing.assert_allclose(state.z['dense/kernel'], z, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.u['dense/kernel'], u, rtol=1e-5, atol=1e-6)
        params = optax.apply_updates(params, updates)
        w = np.asarray(params['dense']['kernel'], np.float64)


def test_added_gradient_is_that_of_the_squared_norm():
    rho = 0.3
    params = make_params(1)
    tx = prune.admm(optax.sgd(1.0), SPEC, rho=rho)
    state = tx.init(params)
    state = state._replace(u={'dense/kernel': 0.1 * jnp.ones((8, 3))})
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, state, params)
    added = -updates['dense']['kernel']
    squared = jax.grad(lambda p: prune.admm_penalty(p, state.z, state.u, rho))(params)
    np.testing.assert_allclose(added, squared['dense']['kernel'], rtol=1e-6, atol=1e-7)

    def unsquared(p):
        diff = p['dense']['kernel'] - state.z['dense/kernel'] + state.u['dense/kernel']
        return rho * jnp.sqrt(jnp.sum(diff ** 2))

    wrong = jax.grad(unsquared)(params)['dense']['kernel']
    assert not np.allclose(added, wrong, rtol=1e-3)
    # finite-difference check of the penalty itself: (rho / 2) ||W - Z + U||^2
    diff = np.asarray(params['dense']['kernel'] - state.z['dense/kernel'] + state.u['dense/kernel'])
    assert float(prune.admm_penalty(params, state.z, state.u, rho)) == pytest.approx(
        0.5 * rho * np.sum(diff ** 2), rel=1e-6)


def test_rho_schedule_and_gap_shrink_on_a_quadratic():
    schedule = prune.rho_schedule(1e-2, 2.0, 5)
    assert [float(schedule(t)) for t in (0, 4, 5, 12)] == pytest.approx([1e-2, 1e-2, 2e-2, 4e-2])
    # minimize ||W - T||^2 under the unified constraint: ADMM drives W to the set
    target = make_params(2)
    spec = UnifySpec((1, 4), 0.5, 0.25, pattern='dense')
    tx = prune.admm(optax.sgd(0.05), spec, rho=prune.rho_schedule(0.1, 1.5, 20),
                    update_every=10)
    params = jax.tree.map(jnp.zeros_like, target)
    params['dense']['kernel'] = target['dense']['kernel']
    state = tx.init(params)
    loss = lambda p: 0.5 * sum(jnp.sum((a - b) ** 2) for a, b in zip(  # noqa: E731
        jax.tree.leaves(p), jax.tree.leaves(target)))

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    gaps = []
    for _ in range(200):
        params, state = step(params, state)
        gaps.append(float(prune.admm_gap(params, state)))
    print(gaps[0], gaps[99], gaps[-1])
    assert gaps[-1] < 0.1 * gaps[0]


@pytest.mark.parametrize('train_magnitudes', [False, True])
def test_tied_retraining_keeps_the_structure(train_magnitudes):
    spec = UnifySpec((1, 4), 0.5, 0.25, pattern=r'^dense/kernel')
    raw = make_params(3)
    codes = unify.select_blocks(raw, spec, 'exact')
    params = unify.project(raw, spec, codes=codes)
    lr = 0.05
    tx = prune.tied_optimizer(optax.sgd(lr), spec, train_magnitudes=train_magnitudes)
    state = prune.install_codes(tx.init(params), params, codes, spec)
    step = jax.jit(tx.update)
    g = make_grads(7)
    updates, state = step(g, state, params)
    new = optax.apply_updates(params, updates)
    g_ = unify.grid((8, 3), spec)
    before = np.asarray(unify.to_blocks(params['dense']['kernel'], g_, (1, 4)))
    after = np.asarray(unify.to_blocks(new['dense']['kernel'], g_, (1, 4)))
    grads = np.asarray(unify.to_blocks(g['dense']['kernel'], g_, (1, 4)))
    c = np.asarray(codes['dense/kernel'])
    assert (c == FREE).any() and (c == UNIFIED).any() and (c == PRUNED).any()
    np.testing.assert_array_equal(after[c == PRUNED], 0.0)
    np.testing.assert_allclose(after[c == FREE], before[c == FREE] - lr * grads[c == FREE],
                               rtol=1e-6)
    if not train_magnitudes:
        np.testing.assert_array_equal(after[c == UNIFIED], before[c == UNIFIED])
    else:  # a <- a - lr * sum_i s_i g_i, signs kept
        s = np.sign(before[c == UNIFIED])
        a = np.abs(before[c == UNIFIED]).mean(axis=1)
        expected = s * (a - lr * (s * grads[c == UNIFIED]).sum(axis=1))[:, None]
        np.testing.assert_allclose(after[c == UNIFIED], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new['head']['kernel'],
                                  params['head']['kernel'] - lr * g['head']['kernel'])
    # the retrained weights still lie in the unified set with the same codes
    reprojected = unify.project(new, spec, codes=codes)
    np.testing.assert_allclose(reprojected['dense']['kernel'], new['dense']['kernel'],
                               rtol=1e-6, atol=1e-7)


def test_errors():
    params = make_params()
    tx = prune.admm(optax.sgd(0.1), SPEC)
    with pytest.raises(ValueError, match='params'):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match='update_every'):
        prune.admm(optax.sgd(0.1), SPEC, update_every=0)
    tied = prune.tied_optimizer(optax.sgd(0.1), SPEC)
    with pytest.raises(ValueError, match='do not match'):
        prune.install_codes(tied.init(params), params, {'head/kernel': jnp.zeros(1)}, SPEC)
    with pytest.raises(TypeError, match='TiedState'):
        prune.install_codes(optax.sgd(0.1).init(params), params, {}, SPEC)
