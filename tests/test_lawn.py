"""optim.lawn against numpy references: free phase, sphere constraint, projections, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
from optim.lawn import PROJECTIONS

SHAPES = {'hidden': {'kernel': (5, 4), 'bias': (4,)}, 'conv': {'kernel': (3, 3, 2, 4)},
          'head': {'kernel': (4, 3), 'bias': (3,)}}
MASK = {'hidden': {'kernel': False, 'bias': False}, 'conv': {'kernel': True},
        'head': {'kernel': True, 'bias': False}}
CONSTRAINED = [('conv', 'kernel'), ('head', 'kernel')]
INNERS = {'sgd_momentum': lambda: optax.sgd(0.1, momentum=0.9),
          'adam': lambda: optax.adam(3e-2), 'lamb': lambda: optax.lamb(3e-2)}


def random_tree(seed, dtype=jnp.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: jnp.asarray(scale * rng.normal(size=shape), dtype),
                        SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def run(tx, params, num_steps, grad_seed=100, dtype=jnp.float32):
    """Jitted updates on a fixed gradient sequence; returns updates, params before each, states."""
    step = jax.jit(tx.update)
    state = tx.init(params)
    updates_seen, params_seen, states = [], [], [state]
    for t in range(num_steps):
        grads = random_tree(grad_seed + t, dtype)
        updates, state = step(grads, state, params)
        updates_seen.append(updates)
        params_seen.append(params)
        params = optax.apply_updates(params, updates)
        states.append(state)
    params_seen.append(params)
    return updates_seen, params_seen, states


def np_axes(w, per_unit):
    return tuple(range(w.ndim - 1)) if per_unit else tuple(range(w.ndim))


def np_norm(w, per_unit):
    w = np.asarray(w, np.float64)
    return np.sqrt((w * w).sum(np_axes(w, per_unit), keepdims=True))


def np_tangent(x, w, per_unit):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    axes = np_axes(w, per_unit)
    return x - (x * w).sum(axes, keepdims=True) / (w * w).sum(axes, keepdims=True) * w


def np_adam_first_step(g, lr, eps=1e-8):
    # Step 1 of Adam: bias-corrected moments are g and g**2.
    return -lr * g / (np.abs(g) + eps)


# ----------------------------------------------------------------------------- free phase


@pytest.mark.parametrize('per_unit', [False, True])
@pytest.mark.parametrize('inner_name', list(INNERS))
def test_free_phase_is_bit_identical_to_jitted_inner(inner_name, per_unit):
    params = random_tree(0)
    tx = optim.lawn(INNERS[inner_name](), free_steps=4, mask=MASK, per_unit=per_unit)
    ours, _, _ = run(tx, params, 4)
    reference, _, _ = run(INNERS[inner_name](), params, 4)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- constrained phase


@pytest.mark.parametrize('projection', PROJECTIONS)
@pytest.mark.parametrize('per_unit', [False, True])
@pytest.mark.parametrize('inner_name', list(INNERS))
def test_norms_equal_the_norm_at_the_switch_at_every_later_step(inner_name, per_unit,
                                                                 projection):
    free = 3
    tx = optim.lawn(INNERS[inner_name](), free_steps=free, mask=MASK, per_unit=per_unit,
                    projection=projection)
    _, params_seen, _ = run(tx, random_tree(0), 10)
    reference, _, _ = run(INNERS[inner_name](), random_tree(0), 10)
    for layer, name in CONSTRAINED:
        target = np_norm(params_seen[free][layer][name], per_unit)
        for params in params_seen[free + 1:]:
            np.testing.assert_allclose(np_norm(params[layer][name], per_unit), target,
                                       rtol=1e-5)
        # The free phase moved the norm, so the check above is not vacuous.
        assert not np.allclose(np_norm(params_seen[0][layer][name], per_unit), target)
    # Unconstrained leaves see the same gradients and inner state as without LAWN.
    ours, _, _ = run(tx, random_tree(0), 10)
    for t in range(10):
        for name in ('kernel', 'bias'):
            np.testing.assert_allclose(ours[t]['hidden'][name], reference[t]['hidden'][name],
                                       rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('per_unit', [False, True])
@pytest.mark.parametrize('projection', ['gradient', 'update', 'none'])
def test_first_constrained_adam_step_matches_numpy(projection, per_unit):
    lr = 3e-2
    params = random_tree(0)
    tx = optim.lawn(optax.adam(lr), free_steps=0, mask=MASK, per_unit=per_unit,
                    projection=projection)
    _, params_seen, _ = run(tx, params, 1)
    grads = random_tree(100)
    for layer, name in CONSTRAINED:
        w, g = np.asarray(params[layer][name], np.float64), np.asarray(grads[layer][name])
        if projection == 'gradient':
            u = np_adam_first_step(np_tangent(g, w, per_unit), lr)
        elif projection == 'update':
            u = np_tangent(np_adam_first_step(g, lr), w, per_unit)
        else:
            u = np_adam_first_step(g, lr)
        expected = np_norm(w, per_unit) * (w + u) / np_norm(w + u, per_unit)
        np.testing.assert_allclose(params_seen[1][layer][name], expected, rtol=2e-5,
                                   atol=1e-6)


@pytest.mark.parametrize('per_unit', [False, True])
def test_inner_optimizer_receives_the_tangent_gradient(per_unit):
    # An inner optimizer whose state is the last gradient it was given.
    recorder = optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda updates, state, params=None: (jax.tree.map(lambda g: -0.1 * g, updates),
                                             updates))
    params = random_tree(0)
    tx = optim.lawn(recorder, free_steps=0, mask=MASK, per_unit=per_unit)
    _, _, states = run(tx, params, 1)
    received, grads = states[1].inner_state, random_tree(100)
    for layer, name in CONSTRAINED:
        g, w = np.asarray(received[layer][name], np.float64), np.asarray(params[layer][name])
        axes = np_axes(w, per_unit)
        cosine = (g * w).sum(axes) / (np_norm(g, per_unit) * np_norm(w, per_unit)).squeeze()
        np.testing.assert_allclose(cosine, 0.0, atol=1e-6)
        np.testing.assert_allclose(g, np_tangent(grads[layer][name], w, per_unit), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_array_equal(received['hidden']['kernel'], grads['hidden']['kernel'])


def test_constant_target_norm_and_state_reset_match_closed_forms():
    lr, free = 3e-2, 3
    tx = optim.lawn(optax.adam(lr), free_steps=free, mask=MASK, target_norm=2.5,
                    reset_inner_state=True)
    updates, params_seen, _ = run(tx, random_tree(0), free + 3)
    grads = random_tree(100 + free)
    # At the switch Adam restarts: an unconstrained leaf takes Adam's first step again.
    np.testing.assert_allclose(updates[free]['hidden']['kernel'],
                               np_adam_first_step(np.asarray(grads['hidden']['kernel']), lr),
                               rtol=1e-5)
    w = np.asarray(params_seen[free]['head']['kernel'], np.float64)
    u = np_adam_first_step(np_tangent(grads['head']['kernel'], w, False), lr)
    np.testing.assert_allclose(params_seen[free + 1]['head']['kernel'],
                               2.5 * (w + u) / np_norm(w + u, False), rtol=2e-5, atol=1e-6)
    for params in params_seen[free + 1:]:
        for layer, name in CONSTRAINED:
            np.testing.assert_allclose(np_norm(params[layer][name], False), 2.5, rtol=1e-5)


def test_zero_norm_leaf_at_the_switch_stays_unconstrained_and_finite():
    params = random_tree(0)
    params['head']['kernel'] = jnp.zeros((4, 3))
    sgd_updates, _, _ = run(optax.sgd(0.1), params, 4)
    updates, params_seen, states = run(optim.lawn(optax.sgd(0.1), free_steps=0, mask=MASK),
                                       params, 4)
    for t in range(4):
        np.testing.assert_array_equal(updates[t]['head']['kernel'],
                                      sgd_updates[t]['head']['kernel'])
    assert float(states[-1].target_norms['head']['kernel']) == 0.0
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params_seen))
    # A constant target puts the zero leaf on its sphere along the first step's direction.
    _, params_seen, _ = run(optim.lawn(optax.sgd(0.1), free_steps=0, mask=MASK,
                                       target_norm=2.0), params, 2)
    g = np.asarray(random_tree(100)['head']['kernel'], np.float64)
    np.testing.assert_allclose(params_seen[1]['head']['kernel'], -2.0 * g / np.linalg.norm(g),
                               rtol=1e-5)


def test_zero_weight_and_zero_gradient_give_no_nan():
    tx = optim.lawn(optax.adam(1e-2), free_steps=0, mask={'w': True}, per_unit=True,
                    target_norm=1.0)
    params = {'w': jnp.zeros((3, 2))}
    updates, state = jax.jit(tx.update)({'w': jnp.zeros((3, 2))}, tx.init(params), params)
    np.testing.assert_array_equal(updates['w'], 0.0)
    assert np.isfinite(jax.tree.leaves(state)[0]).all()


# ----------------------------------------------------------------------------- optax contract


def test_one_compilation_and_stable_state_across_the_switch():
    tx = optim.lawn(optax.adam(1e-2), free_steps=3, mask=MASK, per_unit=True)
    traces = []

    def step(grads, state, params):
        traces.append(None)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step)
    params = random_tree(0)
    state = init_state = tx.init(params)
    for t in range(8):
        params, state = jitted(random_tree(100 + t), state, params)
    assert len(traces) == 1 and jitted._cache_size() == 1
    describe = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert jax.tree.structure(state) == jax.tree.structure(init_state)
    assert describe(state) == describe(init_state)
    assert state.count.dtype == jnp.int32 and int(state.count) == 8
    assert state.target_norms['head']['kernel'].shape == (1, 3)
    assert state.target_norms['hidden']['kernel'] is None


def test_inside_chain_equals_folded_learning_rate():
    chained = optax.chain(optax.scale(2.0), optim.lawn(optax.sgd(0.05), free_steps=2, mask=MASK))
    plain = optim.lawn(optax.sgd(0.1), free_steps=2, mask=MASK)
    a, _, _ = run(chained, random_tree(0), 6)
    b, _, _ = run(plain, random_tree(0), 6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_inside_optax_masked_with_a_full_mask_tree():
    outer = {'hidden': False, 'conv': True, 'head': True}
    masked = optax.masked(optim.lawn(optax.adam(3e-2), free_steps=2, mask=MASK), outer)
    updates, params_seen, _ = run(masked, random_tree(0), 6)
    alone, _, _ = run(optim.lawn(optax.adam(3e-2), free_steps=2, mask=MASK), random_tree(0), 6)
    for t in range(6):
        # optax.masked passes the leaves it excludes through unchanged.
        np.testing.assert_array_equal(updates[t]['hidden']['kernel'],
                                      random_tree(100 + t)['hidden']['kernel'])
        np.testing.assert_allclose(updates[t]['head']['kernel'], alone[t]['head']['kernel'],
                                   rtol=1e-6, atol=1e-7)
    for params in params_seen[3:]:
        np.testing.assert_allclose(np_norm(params['head']['kernel'], False),
                                   np_norm(params_seen[2]['head']['kernel'], False), rtol=1e-5)


def test_inject_hyperparams_with_a_schedule_equals_the_schedule_inside():
    schedule = optax.linear_schedule(0.05, 0.01, 6)
    injected = optax.inject_hyperparams(
        lambda learning_rate: optim.lawn(optax.adam(learning_rate), free_steps=2, mask=MASK)
    )(learning_rate=schedule)
    inside = optim.lawn(optax.adam(schedule), free_steps=2, mask=MASK)
    a, _, states = run(injected, random_tree(0), 6)
    b, _, _ = run(inside, random_tree(0), 6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert int(states[-1].inner_state.count) == 6


def test_bfloat16_params_keep_their_dtype_and_norm():
    params = random_tree(0, jnp.bfloat16)
    tx = optim.lawn(optax.adam(3e-2), free_steps=2, mask=MASK)
    updates, params_seen, states = run(tx, params, 6, dtype=jnp.bfloat16)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params_seen[-1]))
    assert states[-1].target_norms['head']['kernel'].dtype == jnp.float32
    target = np_norm(np.asarray(params_seen[2]['head']['kernel'], np.float32), False)
    for p in params_seen[3:]:
        # bf16 keeps 8 mantissa bits: the norm holds to its rounding, not to 1e-5.
        np.testing.assert_allclose(np_norm(np.asarray(p['head']['kernel'], np.float32), False),
                                   target, rtol=1e-2)


def test_extra_args_reach_the_inner_optimizer():
    inner = optax.GradientTransformationExtraArgs(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None, *, gain=1.0, **_: (
            jax.tree.map(lambda g: gain * g, updates), state))
    tx = optim.lawn(inner, free_steps=5, mask=MASK)
    params = random_tree(0)
    updates, _ = tx.update(random_tree(1), tx.init(params), params, gain=3.0)
    np.testing.assert_allclose(updates['head']['kernel'], 3.0 * random_tree(1)['head']['kernel'])


# ----------------------------------------------------------------------------- masks and errors


def test_regex_mask_selects_by_path():
    flags = optim.regex_mask(r'^(head|conv)/kernel$')(random_tree(0))
    assert flags == MASK
    norms = optim.constrained_norms(random_tree(0), flags, per_unit=True)
    assert sorted(norms) == ['conv/kernel', 'head/kernel'] and norms['head/kernel'].shape == (3,)


@pytest.mark.parametrize('kwargs, error, message', [
    ({'free_steps': -1}, ValueError, 'free_steps must be >= 0'),
    ({'free_steps': 1.5}, TypeError, 'free_steps must be an int'),
    ({'projection': 'radial'}, ValueError, 'projection must be one of'),
    ({'target_norm': 0.0}, ValueError, 'target_norm must be positive'),
])
def test_bad_arguments_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        optim.lawn(optax.sgd(0.1), **{'free_steps': 0, 'mask': MASK, **kwargs})


@pytest.mark.parametrize('mask, error, message', [
    ({'hidden': False, 'head': True}, ValueError, "missing from the mask: 'conv/kernel'"),
    ({**MASK, 'extra': {'kernel': True}}, ValueError, "not in params: 'extra/kernel'"),
    ({'hidden': False, 'conv': True, 'head': 1}, TypeError, "'head' must be a Python bool"),
    (optim.regex_mask('typo_head'), ValueError, "'typo_head' matches no parameter"),
    ({'hidden': {'kernel': False, 'bias': True}, 'conv': False, 'head': False}, ValueError,
     "per_unit needs kernels with >= 2 axes .* 'hidden/bias'"),
])
def test_bad_masks_fail_at_init_and_inside_jit_naming_the_path(mask, error, message):
    tx = optim.lawn(optax.sgd(0.1), free_steps=0, mask=mask, per_unit=True)
    params = random_tree(0)
    with pytest.raises(error, match=message):
        tx.init(params)
    with pytest.raises(error, match=message):
        jax.jit(tx.update)(params, None, params)


def test_invalid_regex_is_a_value_error():
    with pytest.raises(ValueError, match='invalid mask pattern'):
        optim.regex_mask('head(')
