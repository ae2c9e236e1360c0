"""prune.lottery: the overlap R_p, magnitude correlations, IMP masks, rewinding, epoch ledger."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prune


def brute_overlap(a_layers, b_layers, p, masks=None):
    """R_p by explicit sets: top-k by |x| with ties to the lower flat index, k = round(p N)."""
    inter = total = 0
    for i, (a, b) in enumerate(zip(a_layers, b_layers)):
        a, b = np.abs(np.ravel(a)), np.abs(np.ravel(b))
        live = np.arange(a.size) if masks is None else np.flatnonzero(np.ravel(masks[i]))
        k = max(1, int(np.round(p * live.size)))

        def top(x):
            # Python's sort is stable: equal magnitudes keep index order.
            return set(sorted(live, key=lambda j: -x[j])[:k])

        inter += len(top(a) & top(b))
        total += k
    return inter / total


def average_ranks(x):
    """Ascending 0-based ranks with ties sharing the mean of their positions."""
    order = np.argsort(x, kind='stable')
    ranks = np.empty(x.size)
    sorted_x = x[order]
    start = 0
    while start < x.size:
        stop = start
        while stop + 1 < x.size and sorted_x[stop + 1] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2
        start = stop + 1
    return ranks


def test_overlap_matches_brute_force_with_ties():
    theta = {'a': jnp.array([[3., -3., 1.], [0.5, 3., -2.]]),
             'b': jnp.array([[1., 1., 1., 1.], [2., -2., 0., 5.]]), 'bias': jnp.ones(3)}
    other = {'a': jnp.array([[-3., 0.1, 3.], [3., 0.2, 1.]]),
             'b': jnp.array([[0., 4., 4., -4.], [1., 1., 1., 1.]]), 'bias': jnp.ones(3)}
    for p in (0.2, 0.34, 0.5, 0.75, 1.0):
        expected = brute_overlap([theta['a'], theta['b']], [other['a'], other['b']], p)
        assert float(prune.weight_overlap(theta, other, p)) == pytest.approx(expected)
    # Ties at p = 0.5 in layer a: |3| at flat 0, 1, 4 -> indices 0, 1, 4 kept (k = 3).
    assert float(prune.layer_overlaps(theta, other, 0.5)['a']) == pytest.approx(
        len({0, 1, 4} & {0, 2, 3}) / 3)


def test_overlap_with_masks_counts_only_kept_entries():
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    theta = {'w': jax.random.normal(key_a, (6, 7))}
    other = {'w': jax.random.normal(key_b, (6, 7))}
    masks = {'w': jax.random.bernoulli(jax.random.PRNGKey(1), 0.4, (6, 7))}
    got = prune.weight_overlap(theta, other, 0.3, masks=masks)
    assert float(got) == pytest.approx(brute_overlap([theta['w']], [other['w']], 0.3,
                                                     [masks['w']]))


def test_overlap_of_independent_weights_is_p_in_expectation():
    sizes, p, draws = ((40, 10), (25, 8)), 0.2, 300
    keys = jax.random.split(jax.random.PRNGKey(3), 2 * draws).reshape(draws, 2, 2)

    def one(k):
        make = lambda key: {f'l{i}': jax.random.normal(kk, s)  # noqa: E731
                            for i, (kk, s) in enumerate(zip(jax.random.split(key, 2), sizes))}
        return prune.weight_overlap(make(k[0]), make(k[1]), p)

    values = np.asarray(jax.jit(jax.vmap(one))(keys))
    n = np.array([a * b for a, b in sizes], float)
    k = np.round(p * n)
    # Per layer |A ∩ B| is hypergeometric (population n, k successes, k draws).
    mean = np.sum(k * k / n) / k.sum()
    var = np.sum(k * (k / n) * ((n - k) / n) * ((n - k) / (n - 1))) / k.sum() ** 2
    assert mean == pytest.approx(p)
    assert abs(values.mean() - mean) < 4 * np.sqrt(var / draws)
    assert values.std() == pytest.approx(np.sqrt(var), rel=0.2)


def test_overlap_is_one_for_rescaled_weights():
    theta = {'w': jax.random.normal(jax.random.PRNGKey(4), (13, 11)),
             'v': jax.random.normal(jax.random.PRNGKey(5), (3, 3, 2, 4))}
    overlap = jax.jit(lambda a, b: prune.weight_overlap(a, b, 0.2))
    for c in (0.01, 3.0, -2.0):
        assert float(overlap(theta, jax.tree.map(lambda x: c * x, theta))) == 1.0


def test_correlations_match_numpy_and_rank_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 9)).astype(np.float32)
    b = (0.6 * a + rng.normal(size=(12, 9))).astype(np.float32)
    b[0, :5] = 0.25  # tied magnitudes
    a[1, :4] = -1.5
    theta, other = {'w': jnp.asarray(a)}, {'w': jnp.asarray(b)}
    x, y = np.abs(a).ravel().astype(np.float64), np.abs(b).ravel().astype(np.float64)
    pearson = prune.magnitude_correlation(theta, other)['w']
    assert float(pearson) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-5)
    spearman = prune.magnitude_correlation(theta, other, method='spearman')['w']
    assert float(spearman) == pytest.approx(
        np.corrcoef(average_ranks(x), average_ranks(y))[0, 1], abs=1e-5)
    with pytest.raises(ValueError, match='pearson'):
        prune.magnitude_correlation(theta, other, method='kendall')


def test_imp_schedule_reaches_target_closed_form():
    rate = prune.imp_rate(0.875, 3)
    assert rate == pytest.approx(0.5)
    np.testing.assert_allclose(prune.imp_sparsities(rate, 3), [0.5, 0.75, 0.875])
    params = {'w': jax.random.normal(jax.random.PRNGKey(6), (40, 50)), 'b': jnp.ones(50)}
    masks = prune.ones_masks(params)
    r = prune.imp_rate(0.8, 4)
    for k, level in enumerate(prune.imp_sparsities(r, 4), start=1):
        # Random weights each round: survivors must still be chosen among the old ones.
        weights = {'w': jax.random.normal(jax.random.PRNGKey(10 + k), (40, 50)), 'b': params['b']}
        new = prune.magnitude_round(weights, masks, float(level))
        assert not np.any(np.asarray(new['w']) & ~np.asarray(masks['w']))  # nested
        assert int(np.sum(new['w'])) == round(2000 * (1 - r) ** k)
        assert np.all(np.asarray(new['b']))
        kept = np.abs(np.asarray(weights['w']))[np.asarray(new['w'])]
        dropped = np.abs(np.asarray(weights['w']))[np.asarray(masks['w']) & ~np.asarray(new['w'])]
        assert kept.min() >= dropped.max()
        masks = new
    assert 1 - np.mean(masks['w']) == pytest.approx(0.8, abs=1e-3)


def test_rewind_restores_init_on_survivors_and_zero_elsewhere():
    theta0 = {'w': jax.random.normal(jax.random.PRNGKey(7), (5, 6))}
    masks = {'w': jax.random.bernoulli(jax.random.PRNGKey(8), 0.3, (5, 6))}
    got = np.asarray(prune.rewind(theta0, masks)['w'])
    m = np.asarray(masks['w'])
    np.testing.assert_array_equal(got[m], np.asarray(theta0['w'])[m])
    assert np.all(got[~m] == 0)


def make_train(lr=0.05):
    """A least-squares model trained with masked SGD; epochs = full-batch steps."""
    x = jax.random.normal(jax.random.PRNGKey(9), (32, 6))
    y = x @ jax.random.normal(jax.random.PRNGKey(10), (6, 3))
    tx = prune.masked_optimizer(optax.sgd(lr, momentum=0.9))
    calls = []

    def train(params, masks, epochs, key):
        calls.append(epochs)
        state = prune.install_masks(tx.init(params), masks)
        grad = jax.grad(lambda p: jnp.mean((x @ p['w'] + p['b'] - y) ** 2))
        for _ in range(epochs):
            updates, state = tx.update(grad(params), state, params)
            params = optax.apply_updates(params, updates)
        return params

    return train, calls


def test_lottery_arms_ledger_masks_and_starts():
    train, calls = make_train()
    init = lambda k: {'w': jax.random.normal(k, (6, 3)), 'b': jnp.zeros(3)}  # noqa: E731
    theta0, fresh = init(jax.random.PRNGKey(11)), init(jax.random.PRNGKey(12))
    result = prune.lottery_arms(train, theta0, fresh, jax.random.PRNGKey(13), sparsity=0.75,
                                rounds=2, epochs=5)
    # pretrain + 1 retrain + 3 arms, each 5 epochs: counted from the calls themselves.
    assert calls == [5] * 5
    assert result.ledger.mask_search == 10
    assert result.ledger.totals() == {'lottery': 15, 'reinit': 15, 'finetune': 15}
    assert int(np.sum(result.masks['w'])) == round(18 * 0.25)
    assert np.all(np.asarray(result.masks['b']))
    m = np.asarray(result.masks['w'])
    for params in result.arms.values():
        assert np.all(np.asarray(params['w'])[~m] == 0)
    # With lr 0 training is the identity, so each arm returns its masked starting point.
    train2, calls2 = make_train(lr=0.0)
    frozen = prune.lottery_arms(train2, theta0, fresh, jax.random.PRNGKey(13), sparsity=0.75,
                                rounds=2, epochs=3, arm_epochs=2)
    assert calls2 == [3, 3, 2, 2, 2]
    assert len(set(frozen.ledger.totals().values())) == 1
    fm = np.asarray(frozen.masks['w'])
    np.testing.assert_array_equal(np.asarray(frozen.arms['lottery']['w']),
                                  np.where(fm, np.asarray(theta0['w']), 0))
    np.testing.assert_array_equal(np.asarray(frozen.arms['reinit']['w']),
                                  np.where(fm, np.asarray(fresh['w']), 0))
    np.testing.assert_array_equal(np.asarray(frozen.arms['finetune']['w']),
                                  np.where(fm, np.asarray(frozen.pretrained['w']), 0))


def test_bad_arguments_raise():
    theta = {'w': jnp.ones((3, 3))}
    with pytest.raises(ValueError, match='p must'):
        prune.weight_overlap(theta, theta, 0.0)
    with pytest.raises(ValueError, match='rounds'):
        prune.imp_rate(0.5, 0)
    with pytest.raises(ValueError, match='sparsity'):
        prune.magnitude_round(theta, prune.ones_masks(theta), 1.0)
    with pytest.raises(ValueError, match='select'):
        prune.weight_overlap({'b': jnp.ones(3)}, {'b': jnp.ones(3)}, 0.5)


def test_batched_networks_match_one_at_a_time():
    train, _ = make_train()

    def batched_train(params, masks, epochs, key):
        return jax.vmap(lambda p, m: train(p, m, epochs, key))(params, masks)

    inits = [{'w': jax.random.normal(jax.random.PRNGKey(20 + i), (6, 3)), 'b': jnp.zeros(3)}
             for i in range(2)]
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
    batched = prune.lottery_arms(batched_train, stack, stack, jax.random.PRNGKey(0),
                                 sparsity=0.6, rounds=2, epochs=4, batch_dims=1)
    for i, theta0 in enumerate(inits):
        single = prune.lottery_arms(train, theta0, theta0, jax.random.PRNGKey(0),
                                    sparsity=0.6, rounds=2, epochs=4)
        np.testing.assert_array_equal(np.asarray(batched.masks['w'][i]),
                                      np.asarray(single.masks['w']))
        np.testing.assert_allclose(np.asarray(batched.arms['finetune']['w'][i]),
                                   np.asarray(single.arms['finetune']['w']), atol=1e-5)


def call_train(log):
    """Toy ``train``: call c maps the kept entries x to 2 x + 100 c (pruned entries to 0), and
    logs what it was given, so every arm's starting point is a known function of the calls."""
    def train(params, masks, epochs, key):
        call = len(log)
        log.append((params, masks, epochs))
        return jax.tree.map(lambda p, m: jnp.where(m, 2 * p + 100.0 * call, 0.0), params,
                            masks)

    return train


def numpy_round(weights, alive, sparsity):
    """Keep the round(N (1 - s)) largest |w| among the alive entries (ties: lower index)."""
    w, alive = np.abs(np.ravel(weights)), np.ravel(alive).astype(bool)
    k = max(1, int(np.round(w.size * (1 - sparsity))))
    order = sorted(np.flatnonzero(alive), key=lambda j: -w[j])[:k]
    kept = np.zeros(w.size, bool)
    kept[order] = True
    return kept.reshape(np.shape(weights))


def test_finetune_arm_starts_from_the_dense_trained_network_not_the_last_retrain():
    log = []
    theta0 = {'w': jax.random.normal(jax.random.PRNGKey(30), (8, 5)), 'b': jnp.zeros(5)}
    fresh = {'w': jax.random.normal(jax.random.PRNGKey(31), (8, 5)), 'b': jnp.zeros(5)}
    result = prune.lottery_arms(call_train(log), theta0, fresh, jax.random.PRNGKey(0),
                                sparsity=0.75, rounds=3, epochs=4)
    m = np.asarray(result.masks['w'])
    theta_t = 2 * np.asarray(theta0['w'])  # call 0: the dense pretraining
    np.testing.assert_allclose(np.asarray(result.pretrained['w']), theta_t, rtol=1e-6)
    labels = [label for label, _ in result.ledger.calls]
    assert labels == ['pretrain', 'retrain', 'retrain', 'lottery', 'reinit', 'finetune']
    start = np.asarray(log[labels.index('finetune')][0]['w'])
    np.testing.assert_allclose(start, np.where(m, theta_t, 0), rtol=1e-6)
    # The last retraining (call 2) is what the mask came from, and is not PF's start.
    last = np.asarray(result.mask_source['w'])
    np.testing.assert_allclose(last[np.asarray(log[2][1]['w'])],
                               2 * np.asarray(theta0['w'])[np.asarray(log[2][1]['w'])] + 200,
                               rtol=1e-6)
    assert not np.allclose(start, np.where(m, last, 0))
    np.testing.assert_allclose(np.asarray(result.arms['finetune']['w']),
                               np.where(m, 2 * theta_t + 500, 0), rtol=1e-6)


def test_arm_epochs_are_recorded_not_forced_equal():
    log = []
    theta0 = {'w': jax.random.normal(jax.random.PRNGKey(32), (6, 4))}
    result = prune.lottery_arms(call_train(log), theta0, theta0, jax.random.PRNGKey(0),
                                sparsity=0.5, rounds=2, epochs=3,
                                arm_epochs={'lottery': 3, 'reinit': 2, 'finetune': 5})
    assert [e for _, _, e in log] == [3, 3, 3, 2, 5]
    assert result.ledger.mask_search == 6
    assert result.ledger.totals() == {'lottery': 9, 'reinit': 8, 'finetune': 11}
    with pytest.raises(ValueError, match='arm_epochs'):
        prune.lottery_arms(call_train([]), theta0, theta0, jax.random.PRNGKey(0),
                           sparsity=0.5, rounds=1, epochs=3, arm_epochs={'lottery': 3})
    with pytest.raises(ValueError, match='arm_epochs'):
        prune.lottery_arms(call_train([]), theta0, theta0, jax.random.PRNGKey(0),
                           sparsity=0.5, rounds=1, epochs=3, arm_epochs=0)


def test_lottery_levels_follow_one_imp_path_with_arms_at_every_level():
    from prune.lottery import lottery_levels
    log = []
    theta0 = {'w': jax.random.normal(jax.random.PRNGKey(33), (10, 6)),
              'v': jax.random.normal(jax.random.PRNGKey(34), (4, 5)), 'b': jnp.zeros(6)}
    fresh = jax.tree.map(lambda x: x + 1.0, theta0)
    levels = (0.5, 0.7, 0.9)
    results = lottery_levels(call_train(log), theta0, fresh, jax.random.PRNGKey(0),
                             levels=levels, epochs=4, arm_epochs={'lottery': 4, 'reinit': 4,
                                                                  'finetune': 4})
    assert [e for _, _, e in log] == [4] * 10
    theta_t = {k: 2 * np.asarray(v) for k, v in theta0.items()}
    source, alive = theta_t, {k: np.ones(np.shape(v), bool) for k, v in theta0.items()}
    for k, (level, result) in enumerate(zip(levels, results)):
        for name in ('w', 'v'):  # numpy IMP step from the previous level's trained ticket
            alive[name] = numpy_round(source[name], alive[name], level)
            np.testing.assert_array_equal(np.asarray(result.masks[name]), alive[name])
            assert np.mean(alive[name]) == pytest.approx(1 - level, abs=0.03)
        assert np.all(np.asarray(result.masks['b']))
        first = 1 + 3 * k  # this level's LT call; then re-init, then PF
        for offset, start in enumerate((theta0, fresh, theta_t)):
            np.testing.assert_allclose(np.asarray(log[first + offset][0]['w']),
                                       np.where(alive['w'], np.asarray(start['w']), 0),
                                       rtol=1e-6)
        # Mask search: pretraining plus the earlier levels' LT runs.
        assert result.ledger.mask_search == 4 * (1 + k)
        assert result.ledger.totals() == {arm: 4 * (2 + k) for arm in prune.lottery.ARMS}
        assert len(result.ledger.calls) == first + 3
        np.testing.assert_allclose(result.sparsities, levels[:k + 1])
        source = {name: np.asarray(v) for name, v in result.arms['lottery'].items()}
    with pytest.raises(ValueError, match='increasing'):
        lottery_levels(call_train([]), theta0, fresh, jax.random.PRNGKey(0),
                       levels=(0.7, 0.5), epochs=1)
