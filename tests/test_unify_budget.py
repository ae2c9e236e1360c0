"""prune.unify_budget and the unification report's statistics: bit and multiply counts by
hand, the matched-budget solver against a brute-force scan, and the per-network aggregation and
paired tests against numpy / scipy."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnorm.papers import unification_report as report
from prune import unify, unify_budget, unify_storage
from prune.unify import FREE, PRUNED, UNIFIED, UnifySpec


def test_prune_only_bits_and_multiplies_match_a_hand_count():
    # Dense (in=8, out=2): the 2 x 8 matrix, 1x4 blocks -> 4 blocks; keep blocks 0 and 3.
    matrix = np.arange(1, 17, dtype=np.float32).reshape(2, 8)
    params = {'k': jnp.asarray(matrix.T), 'b': jnp.zeros(2)}
    spec = UnifySpec((1, 4), 0.0, 0.5, pattern='k')
    codes = {'k': np.array([FREE, PRUNED, PRUNED, FREE], np.int8)}
    got = unify_budget.prune_only_report(params, codes, spec, positions={'k': 3})
    # mask: 4 bits -> 1 byte; 2 kept blocks x 4 float32; 3 output positions x 8 kept weights
    assert got == {'bits': 8 + 2 * 4 * 32, 'multiplies': 3 * 8, 'kept': 2}
    # Unstructured: 16 one-weight blocks, 10 pruned -> 2 mask bytes + 6 float32.
    spec1 = UnifySpec((1, 1), 0.0, 10 / 16, pattern='k')
    codes1 = unify.select_blocks(params, spec1)
    got1 = unify_budget.prune_only_report(unify.project(params, spec1, codes=codes1), codes1,
                                          spec1)
    assert got1 == {'bits': 16 + 6 * 32, 'multiplies': 6, 'kept': 6}
    # magnitude pruning: the 6 kept are the 6 largest |w| (11 .. 16)
    assert sorted(np.asarray(unify.project(params, spec1, codes=codes1)['k']).ravel()[
        np.asarray(unify.project(params, spec1, codes=codes1)['k']).ravel() != 0]) == list(
        range(11, 17))
    assert unify_budget.layer_cost(4, 4, 2, 3) == (got['bits'], got['multiplies'])
    with pytest.raises(ValueError, match='free \\(0\\) and pruned \\(2\\)'):
        unify_budget.prune_only_report(params, {'k': np.array([UNIFIED, 0, 0, 0])}, spec)
    with pytest.raises(ValueError, match='unknown prune-only format'):
        unify_budget.baseline_block('random', (1, 4))


def mlp_params(rng):
    return {'dense1': {'kernel': jnp.asarray(rng.normal(size=(40, 64)), jnp.float32)},
            'dense2': {'kernel': jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)},
            'head': {'kernel': jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)}}


def hand_unified_bits(n: int, n_unify: int, n_prune: int, entries: int) -> int:
    """Unification's stored bits by hand: 2-bit codes packed in bytes, a float32 magnitude and
    one sign bit (packed) per unified entry, float32 free entries."""
    return (8 * -(-2 * n // 8) + 32 * n_unify + 8 * -(-n_unify * entries // 8)
            + 32 * entries * (n - n_unify - n_prune))


@pytest.mark.parametrize('fmt', list(unify_budget.FORMATS))
@pytest.mark.parametrize('ratio', [(0.5, 0.25), (0.4, 0.5), (0.3, 0.65)])
def test_matched_ratio_is_the_smallest_reaching_both_budgets(fmt, ratio):
    params = mlp_params(np.random.default_rng(0))
    spec = UnifySpec((1, 4), *ratio, pattern=r'^dense')
    codes = unify.select_blocks(params, spec, 'exact')
    total = unify_storage.storage_report(unify.project(params, spec, codes=codes), codes,
                                         spec)['total']
    # the target, measured from the stored format, against the hand count
    expected_bits = expected_mults = 0
    for path, n in (('dense1/kernel', 64 * 10), ('dense2/kernel', 64 * 16)):
        n_unify, n_prune = round(ratio[0] * n), round(ratio[1] * n)
        expected_bits += hand_unified_bits(n, n_unify, n_prune, 4)
        expected_mults += 4 * (n - n_unify - n_prune) + n_unify  # one multiply per unified row
    assert (total['stored_bits'], total['multiplies']) == (expected_bits, expected_mults)

    geometry = UnifySpec(unify_budget.baseline_block(fmt, (1, 4)), 0.0, 0.0, pattern=r'^dense')
    matched = unify_budget.matched_prune_ratio(params, geometry, expected_bits, expected_mults)
    e = 4 if fmt == 'block' else 1
    sizes = {'dense1/kernel': 640 * 4 // e, 'dense2/kernel': 1024 * 4 // e}

    def cost(kept):  # the bitmask format by hand
        return (sum(8 * -(-n // 8) + 32 * e * kept[p] for p, n in sizes.items()),
                sum(e * kept[p] for p in sizes))

    def kept_at(k_largest):
        r = (sizes['dense2/kernel'] - k_largest) / sizes['dense2/kernel']
        return {p: n - round(r * n) for p, n in sizes.items()}

    # brute force: the fewest kept blocks of the largest layer reaching both targets
    scan = next(k for k in range(sizes['dense2/kernel'] + 1)
                if cost(kept_at(k))[0] >= expected_bits and cost(kept_at(k))[1] >= expected_mults)
    assert matched['kept'] == kept_at(scan)
    assert (matched['bits'], matched['multiplies']) == cost(kept_at(scan))
    bits, mults = matched['fewer']
    assert bits < expected_bits or mults < expected_mults  # one block fewer misses
    # the binding budget is met within one block of the largest layer
    assert min(matched['bits'] - expected_bits, 32 * e * (matched['multiplies'] - expected_mults)
               ) <= 32 * e * 2
    # the baseline trained with that ratio measures the same bits and multiplies
    base = geometry._replace(prune_ratio=matched['prune_ratio'])
    base_codes = unify.select_blocks(params, base, 'exact')
    measured = unify_budget.prune_only_report(unify.project(params, base, codes=base_codes),
                                              base_codes, base)
    assert (measured['bits'], measured['multiplies']) == (matched['bits'], matched['multiplies'])


def test_matched_ratio_errors():
    params = mlp_params(np.random.default_rng(1))
    geometry = UnifySpec((1, 4), 0.0, 0.0, pattern=r'^dense')
    with pytest.raises(ValueError, match='exceed'):
        unify_budget.matched_prune_ratio(params, geometry, 10 ** 9, 1)
    with pytest.raises(ValueError, match='whole blocks'):
        unify_budget.matched_prune_ratio(
            {'k': jnp.ones((6, 4))}, UnifySpec((1, 4), pad=True, pattern='k'), 1, 1)


def synthetic_records(rng, seeds=5):
    records = []
    for model in ('mlp', 'cnn'):
        for seed in range(seeds):
            for ratio in ((0.5, 0.25), (0.3, 0.65)):
                records.append({'model': model, 'seed': seed, 'shape': [1, 4],
                                'ratio': list(ratio), **{k: float(rng.uniform(0.5, 1.0)) for k in (
                                    'admm_after', 'oneshot_after', 'block_after')}})
    return records


def test_per_network_averages_cells_within_each_network_like_numpy():
    records = synthetic_records(np.random.default_rng(2))
    got = report.per_network(records, lambda r: r['admm_after'] - r['oneshot_after'])
    d = np.array([r['admm_after'] - r['oneshot_after'] for r in records]).reshape(2, 5, 2)
    np.testing.assert_allclose(got, 100 * d.mean(axis=2).ravel())
    pairs = report.cell_pairs(records, 'admm_after', 'block_after')
    assert list(pairs) == ['mlp 1x4 0.5+0.25', 'mlp 1x4 0.3+0.65', 'cnn 1x4 0.5+0.25',
                           'cnn 1x4 0.3+0.65']
    a, b = pairs['cnn 1x4 0.3+0.65']
    np.testing.assert_allclose(a, 100 * np.array([r['admm_after'] for r in records
                                                  if r['model'] == 'cnn' and r['ratio'][0] == 0.3]))
    np.testing.assert_allclose(b, 100 * np.array([r['block_after'] for r in records
                                                  if r['model'] == 'cnn' and r['ratio'][0] == 0.3]))


def test_claims_are_paired_over_networks_and_holm_over_cells():
    from jaxnorm.papers import unification
    rng = np.random.default_rng(3)
    records = synthetic_records(rng)
    s = unification.Settings(models=('mlp', 'cnn'), baselines=('block',), admm_epochs=2,
                             retrain_epochs=3)
    for r in records:  # the fields the sanity checks read
        r.update(gaps=[0.5, 0.1], admm_before=0.9, oneshot_before=0.8 + 0.01 * r['seed'],
                 dense=0.95, oneshot_epochs=5, admm_epochs_total=5, block_epochs_total=5,
                 unify_bits=100, unify_multiplies=10, block_bits=100, block_multiplies=12,
                 block_fewer=[90, 11], block_ratio=0.5)
    declared = report.declare_checks(5, s)
    evaluated, _ = report.evaluate_checks(declared, records, s)
    by_name = {c['name']: c for c in evaluated}
    # claim (a): one value per network (10 = 2 models x 5 seeds), the t interval of numpy
    d = 100 * np.array([r['admm_after'] - r['oneshot_after'] for r in records]).reshape(10, 2
                                                                                       ).mean(1)
    half = scipy_stats.t.ppf(0.95, 9) * d.std(ddof=1) / np.sqrt(10)
    claim = by_name['ADMM beats one-shot at equal epochs']
    assert (claim['n'], claim['estimate']) == (10, pytest.approx(d.mean()))
    assert (claim['low'], claim['high']) == (pytest.approx(d.mean() - half),
                                             pytest.approx(d.mean() + half))
    # claim (b): per cell, the one-sided paired t p-values of scipy, Holm-adjusted by hand
    cells = by_name['unify + prune beats block pruning']['cells']
    p = np.array([scipy_stats.ttest_rel(*report.cell_pairs(records, 'admm_after',
                                                           'block_after')[c['cell']],
                                        alternative='greater').pvalue for c in cells])
    order = np.argsort(p)
    holm = np.empty(4)
    holm[order] = np.minimum(1, np.maximum.accumulate((4 - np.arange(4)) * p[order]))
    np.testing.assert_allclose([c['p_holm'] for c in cells], holm, rtol=1e-9)
    assert all(by_name[n]['outcome'] == 'supported' for n in (
        'ADMM gap decreases', 'equal epochs', 'matched budgets'))
    # a baseline short of the unified bits, or an arm with other epochs, fails its rule
    records[3]['block_bits'] = 99
    records[4]['oneshot_epochs'] = 4
    by_name = {c['name']: c for c in report.evaluate_checks(declared, records, s)[0]}
    assert by_name['matched budgets']['outcome'] == 'refuted'
    assert by_name['equal epochs']['outcome'] == 'refuted'
    assert [c['kind'] for c in evaluated].count('claim') == 2
