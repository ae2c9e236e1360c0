"""prune.masks, prune.optimizer and prune.schedules against numpy references and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prune

SHAPES = {'conv1': {'kernel': (3, 3, 2, 6)}, 'norm1': {'scale': (6,), 'bias': (6,)},
          'conv2': {'kernel': (3, 3, 6, 4)}, 'head': {'kernel': (4, 3), 'bias': (3,)}}
GROUP = prune.ChannelGroup(
    'conv1', 6, prune.Slot('conv1/kernel', -1),
    (prune.Slot('conv1/kernel', -1), prune.Slot('norm1/scale', 0), prune.Slot('norm1/bias', 0),
     prune.Slot('conv2/kernel', -2)))


def random_params(seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32), SHAPES,
                        is_leaf=lambda x: isinstance(x, tuple))


def test_structured_masks_cover_filter_norm_and_next_input():
    params = random_params()
    alive = np.array([1, 0, 1, 1, 0, 1], bool)
    masks = prune.structured_masks(params, [GROUP], {'conv1': alive})
    masked = prune.apply_masks(params, masks)
    dead = ~alive
    assert np.all(np.asarray(masked['conv1']['kernel'])[..., dead] == 0)
    assert np.all(np.asarray(masked['norm1']['scale'])[dead] == 0)
    assert np.all(np.asarray(masked['norm1']['bias'])[dead] == 0)
    assert np.all(np.asarray(masked['conv2']['kernel'])[:, :, dead, :] == 0)
    np.testing.assert_array_equal(masked['conv2']['kernel'][:, :, alive, :],
                                  params['conv2']['kernel'][:, :, alive, :])
    np.testing.assert_array_equal(masked['head']['kernel'], params['head']['kernel'])
    kept = 9 * 2 * 4 + 2 * 4 + 9 * 4 * 4 + 4 * 3 + 3
    assert prune.count_kept(masks) == kept
    np.testing.assert_array_equal(prune.channels_alive(masks, [GROUP])['conv1'], alive)
    as_uint8 = jax.tree.map(lambda m: m.astype(jnp.uint8), masks)
    for a, b in zip(jax.tree.leaves(prune.apply_masks(params, as_uint8)),
                    jax.tree.leaves(masked)):
        np.testing.assert_array_equal(a, b)


def test_mask_tree_mismatch_names_the_differing_paths():
    params = random_params()
    masks = prune.ones_masks(params)
    del masks['norm1']['bias']
    with pytest.raises(ValueError, match=r"mask tree does not match params: missing from the "
                                         r"mask tree: 'norm1/bias'$"):
        prune.apply_masks(params, masks)
    masks = prune.ones_masks(params)
    masks['extra'] = {'kernel': jnp.ones((2,), bool)}
    with pytest.raises(ValueError, match=r"does not match params: not in params: "
                                         r"'extra/kernel'$"):
        prune.apply_masks(params, masks)
    masks = prune.ones_masks(params)
    masks['head']['kernel'] = jnp.ones((3, 4), bool)
    with pytest.raises(ValueError, match=r"'head/kernel' has shape \(3, 4\) in the mask tree"):
        jax.jit(prune.apply_masks)(params, masks)


@pytest.mark.parametrize('bad', [1.0, -0.1, 1.5, True])
def test_ratios_outside_unit_interval_are_rejected(bad):
    params = random_params()
    scores = {'conv1': np.arange(6.0)}
    with pytest.raises(ValueError, match=r'must be a number in \[0, 1\)'):
        prune.round_fractions(bad, 3)
    with pytest.raises(ValueError, match=r'must be a number in \[0, 1\)'):
        prune.select_survivors(scores, {'conv1': np.ones(6, bool)}, bad)
    with pytest.raises(ValueError, match=r'must be a number in \[0, 1\)'):
        prune.unstructured_masks(params, bad, prune.select_leaves(params))


def test_pruning_every_filter_of_a_layer_is_rejected():
    params = random_params()
    with pytest.raises(ValueError, match="pruning every filter of layer 'conv1'"):
        prune.structured_masks(params, [GROUP], {'conv1': np.zeros(6, bool)})
    with pytest.raises(ValueError, match="pruning every filter of layer 'conv1'"):
        prune.compact({'params': params}, [GROUP], {'conv1': np.zeros(6, bool)})


def numpy_momentum_reference(params, masks, grads_seq, lr, momentum, decay):
    """SGD with heavy-ball momentum and coupled L2 decay on the kept entries only."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.asarray(v, bool) for k, v in masks.items()}
    trace = {k: np.zeros_like(v) for k, v in p.items()}
    for grads in grads_seq:
        for k in p:
            kept_p = np.where(m[k], p[k], 0.0)
            g = np.where(m[k], np.asarray(grads[k], np.float64), 0.0) + decay * kept_p
            trace[k] = momentum * trace[k] + g
            p[k] = np.where(m[k], p[k] - lr * trace[k], 0.0)
    return p


@pytest.mark.parametrize('mask_from_step', [0, 3])
def test_masked_optimizer_pins_pruned_weights_at_zero_under_momentum_and_decay(mask_from_step):
    """Masks installed at step 0, or after 3 dense steps with a charged momentum trace; the
    installed masks have init's exact type, so the jitted step compiles once."""
    rng = np.random.default_rng(0)
    params = {'w': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
              'b': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
    masks = {'w': jnp.asarray(rng.random((4, 5)) < 0.5), 'b': jnp.ones(5, bool)}
    lr, momentum, decay = 0.1, 0.9, 0.05
    inner = optax.chain(optax.add_decayed_weights(decay), optax.sgd(lr, momentum=momentum))
    tx = prune.masked_optimizer(inner)
    grads_seq = [{k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
                  for k, v in params.items()} for _ in range(10)]
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t, grads in enumerate(grads_seq):
        if t == mask_from_step:
            state = prune.install_masks(state, masks)
            dense_params = params
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        if t >= mask_from_step:
            assert np.all(np.asarray(params['w'])[~np.asarray(masks['w'])] == 0.0)
    # The reference restarts the momentum when the masks arrive: the stale trace of the dense
    # steps acts on the kept entries too, so compare only the masked-from-start run exactly.
    if mask_from_step == 0:
        reference = numpy_momentum_reference(dense_params, masks, grads_seq, lr, momentum,
                                             decay)
        for k in params:
            np.testing.assert_allclose(params[k], reference[k], rtol=1e-5, atol=1e-6)
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match="missing from the mask tree: 'w'"):
        prune.install_masks(state, {'b': masks['b']})


def test_unstructured_masks_keep_the_top_scores_per_layer_and_globally():
    params = random_params(1)
    select = prune.select_leaves(params, r'^(?!head/)')
    assert not select['head']['kernel'] and not select['norm1']['scale']
    for scope in ('layer', 'global'):
        masks = prune.unstructured_masks(params, 0.75, select, scope=scope)
        pools = ([['conv1'], ['conv2']] if scope == 'layer' else [['conv1', 'conv2']])
        for pool in pools:
            flat = np.concatenate([np.ravel(params[k]['kernel']) for k in pool])
            kept = np.concatenate([np.ravel(masks[k]['kernel']) for k in pool])
            keep = round(flat.size * 0.25)
            threshold = np.sort(flat)[::-1][keep - 1]
            assert kept.sum() == keep
            np.testing.assert_array_equal(kept, flat >= threshold)
        assert np.all(masks['head']['kernel']) and np.all(masks['norm1']['scale'])


def test_unstructured_select_may_be_a_prefix_tree_and_must_match_the_scores():
    params = random_params(2)
    prefix = {'conv1': True, 'conv2': True, 'norm1': False, 'head': False}
    full = prune.select_leaves(params, r'^conv')
    for a, b in zip(jax.tree.leaves(prune.unstructured_masks(params, 0.5, prefix)),
                    jax.tree.leaves(prune.unstructured_masks(params, 0.5, full))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"select tree does not match the scores: missing "
                                         r"from the select tree: 'head/bias', 'head/kernel'"):
        prune.unstructured_masks(params, 0.5, {'conv1': True, 'conv2': True, 'norm1': False})


@pytest.mark.parametrize('target, rounds', [(0.75, 25), (0.75, 5), (0.5, 1), (0.9, 7), (0.0, 3)])
def test_round_fractions_telescope_to_the_closed_form(target, rounds):
    """prod_{j<=k} (1 - r_j) = n(1-p) / (n(1-p) + k p), and 1 - p after the last round."""
    fractions = prune.round_fractions(target, rounds)
    surviving = np.cumprod(1.0 - fractions)
    closed = [rounds * (1 - target) / (rounds * (1 - target) + k * target)
              for k in range(1, rounds + 1)]
    np.testing.assert_allclose(surviving, closed, rtol=1e-12)
    np.testing.assert_allclose(surviving[-1], 1.0 - target, rtol=1e-12)
    assert [prune.surviving_fraction(target, rounds, k) for k in range(1, rounds + 1)] == (
        pytest.approx(closed, rel=1e-12))
    if rounds == 1:
        assert fractions[0] == pytest.approx(target)


def test_global_ranking_removes_lowest_scores_but_keeps_each_layers_minimum():
    """Layer 'a' holds every low score; it still keeps floor(0.05 * 40) + 1 = 3 filters, its
    highest-index ones (the reference's cap), and the rest of the cut comes from 'b'."""
    scores = {'a': np.linspace(0.0, 1.0, 40), 'b': np.linspace(2.0, 3.0, 20)}
    alive = {'a': np.ones(40, bool), 'b': np.ones(20, bool)}
    alive['b'][0] = False  # already pruned: not a candidate, not counted
    survivors = prune.select_survivors(scores, alive, 0.75)
    removed = int(np.floor(0.75 * 59))
    assert 59 - sum(v.sum() for v in survivors.values()) == removed
    np.testing.assert_array_equal(np.flatnonzero(survivors['a']), [37, 38, 39])
    # Brute-force reference for 'b': the 44 - 37 = 7 lowest alive filters go.
    np.testing.assert_array_equal(np.flatnonzero(~survivors['b']), np.arange(0, 8))
    by_score = prune.select_survivors({'a': scores['a'][::-1], 'b': scores['b']}, alive, 0.75,
                                      protect='highest_score')
    np.testing.assert_array_equal(np.flatnonzero(by_score['a']), [0, 1, 2])
    with pytest.raises(ValueError, match='only 18 are not protected'):
        prune.select_survivors({'a': scores['b']}, {'a': np.ones(20, bool)}, 0.99)
