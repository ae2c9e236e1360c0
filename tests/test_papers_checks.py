"""jaxnorm.papers.stats and .checks against scipy, closed forms and the declared semantics."""
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnorm.papers import checks, stats

RNG = np.random.default_rng(0)
A, B = RNG.normal(1.0, 1.0, 12), RNG.normal(0.4, 1.0, 12)


# ------------------------------------------------------------------------------- stats


@pytest.mark.parametrize('confidence', [0.9, 0.95])
def test_t_interval_matches_scipy(confidence):
    interval = stats.paired_interval(A, B, confidence=confidence)
    d = A - B
    low, high = scipy_stats.t.interval(confidence, d.size - 1, loc=d.mean(),
                                       scale=scipy_stats.sem(d))
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-12)
    assert interval.mean == pytest.approx(d.mean()) and interval.n == 12
    # scipy's own paired-test interval agrees as well.
    scipy_ci = scipy_stats.ttest_rel(A, B).confidence_interval(confidence)
    assert (interval.low, interval.high) == pytest.approx(tuple(scipy_ci), rel=1e-12)


@pytest.mark.parametrize('null', [0.0, 0.3, -0.5])
def test_one_sided_p_value_matches_scipy_ttest_rel(null):
    expected = scipy_stats.ttest_rel(A - null, B, alternative='greater').pvalue
    assert stats.p_greater(A, B, null=null) == pytest.approx(expected, rel=1e-10)
    assert stats.p_greater(A - B, null=null) == pytest.approx(expected, rel=1e-10)


def test_bootstrap_interval_approaches_the_t_interval_for_normal_data():
    d = np.random.default_rng(1).normal(0.5, 1.0, 400)
    boot = stats.paired_interval(d, confidence=0.9, method='bootstrap', resamples=20_000)
    student = stats.paired_interval(d, confidence=0.9)
    assert boot.low == pytest.approx(student.low, abs=0.02)
    assert boot.high == pytest.approx(student.high, abs=0.02)


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> cummax.
    expected_sorted = np.maximum.accumulate([0.02, 0.03, 0.06, 0.04])
    expected = np.empty(4)
    expected[np.argsort(p)] = expected_sorted
    np.testing.assert_allclose(stats.holm(p), expected)
    np.testing.assert_allclose(stats.holm([0.9, 0.2]), [0.9, 0.4])


def test_power_and_minimum_detectable_effect():
    # Large n: the normal closed form (z_{1-a} + z_{power}) sd / sqrt(n).
    closed_form = (scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)) * 2.0 / np.sqrt(2000)
    assert stats.minimum_detectable_effect(2.0, 2000) == pytest.approx(closed_form, rel=2e-3)
    # Small n: power at the MDE is the target, and the t-test needs a larger effect than z.
    mde = stats.minimum_detectable_effect(1.0, 5)
    assert stats.power(mde, 1.0, 5) == pytest.approx(0.8, abs=1e-9)
    assert mde > (scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)) / np.sqrt(5)
    # seeds_needed is the first n whose power reaches the target.
    n = stats.seeds_needed(0.5, 1.0)
    assert stats.power(0.5, 1.0, n) >= 0.8 > stats.power(0.5, 1.0, n - 1)


def test_power_matches_a_simulation():
    rng = np.random.default_rng(2)
    critical = scipy_stats.t.ppf(0.95, 7)
    d = rng.normal(0.6, 1.0, (20_000, 8))
    rejected = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(8)) > critical
    assert stats.power(0.6, 1.0, 8) == pytest.approx(rejected.mean(), abs=0.01)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match='one value per seed'):
        stats.paired_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match='non-finite'):
        stats.paired_interval([1, np.nan])
    with pytest.raises(ValueError, match='unknown interval method'):
        stats.paired_interval([1, 2], method='z')


# ------------------------------------------------------------------------------ checks


def _check(test, **kw):
    kw.setdefault('margin', 1.0 if test in ('non_inferiority', 'equivalence') else 0.0)
    return checks.Check('c', 'a claim', 'claim', 'A minus B (points)', test, seeds=8, **kw)


@pytest.mark.parametrize('effect', [None, 0.5])
def test_identical_arms_never_support_superiority_and_support_equivalence(effect):
    same = [70.0, 71.5, 69.0, 72.0]
    assert _check('superiority', effect=effect).evaluate(same, same)['outcome'] != 'supported'
    # Exactly identical: no noise estimate (zero spread). Equal up to small noise: supported.
    assert _check('equivalence').evaluate(same, same)['outcome'] == 'inconclusive'
    jitter = [0.01, -0.02, 0.015, -0.005]
    assert _check('equivalence').evaluate(np.add(same, jitter), same)['outcome'] == 'supported'
    noisy = RNG.normal(0, 1, 6)
    outcome = _check('equivalence', margin=0.1).evaluate(noisy, noisy + RNG.normal(0, 1, 6))
    assert outcome['outcome'] in ('inconclusive', 'refuted')


@pytest.mark.parametrize('test, low, high, expected', [
    ('superiority', 0.1, 2.0, 'supported'),
    ('superiority', -0.1, 2.0, 'inconclusive'),    # holds the null and the effect
    ('superiority', -1.0, 0.4, 'refuted'),         # excludes the powered effect 0.5
    ('non_inferiority', -0.9, 0.3, 'supported'),   # above -margin
    ('non_inferiority', -1.5, 0.3, 'inconclusive'),
    ('non_inferiority', -1.5, -0.2, 'refuted'),    # excludes 0, the effect
    ('equivalence', -0.9, 0.9, 'supported'),
    ('equivalence', 0.2, 1.5, 'refuted'),
    ('equivalence', -1.5, 0.5, 'inconclusive'),
])
def test_outcome_table(test, low, high, expected):
    effect = 0.5 if test == 'superiority' else None
    assert _check(test, effect=effect).outcome(low, high) == expected


def test_evaluate_reports_the_scipy_interval_and_p_value():
    result = _check('superiority', effect=0.5).evaluate(A, B)
    low, high = scipy_stats.ttest_rel(A, B).confidence_interval(0.9)
    assert (result['low'], result['high']) == pytest.approx((low, high))
    assert result['p_value'] == pytest.approx(
        scipy_stats.ttest_rel(A, B, alternative='greater').pvalue)
    checks.validate_check_result(result)


def test_cells_use_holm_and_the_aggregate():
    strong = (np.arange(8) + 3.0, np.arange(8) + 0.0 + RNG.normal(0, 0.1, 8))
    flat = (np.arange(8) + 0.0, np.arange(8) + RNG.normal(0, 1, 8))
    all_cells = _check('superiority').evaluate_cells({'strong': strong, 'flat': flat})
    assert [c['outcome'] for c in all_cells['cells']][0] == 'supported'
    assert all_cells['outcome'] != 'supported'
    any_cell = _check('superiority', aggregate='any').evaluate_cells(
        {'strong': strong, 'flat': flat})
    assert any_cell['outcome'] == 'supported'
    # Holm: the adjusted p-values are those of stats.holm on the raw one-sided p-values.
    raw = [stats.p_greater(*strong), stats.p_greater(*flat)]
    assert [c['p_holm'] for c in all_cells['cells']] == pytest.approx(list(stats.holm(raw)))


def test_rules_and_verdicts():
    sanity = checks.Check('budget', 'equal budgets', 'sanity', 'epochs', 'rule', 3,
                          rule='equal epochs')
    claim = _check('superiority')
    good = claim.evaluate([2, 3, 4], [0, 1, 1])
    assert good['outcome'] == 'supported'
    assert checks.verdict([sanity.evaluate_rule([True, True, True]), good]) == 'reproduced'
    assert checks.verdict([sanity.evaluate_rule([True, False, True]), good]) == 'invalid'
    # A section with sanity checks only can never be reproduced.
    assert checks.verdict([sanity.evaluate_rule(True)]) == 'inconclusive'


@pytest.mark.parametrize('kwargs, message', [
    (dict(kind='evidence'), 'kind'), (dict(test='better'), 'test'),
    (dict(test='non_inferiority', margin=0.0), 'positive margin'),
    (dict(test='rule'), 'rule='), (dict(seeds=0), 'seeds'),
])
def test_bad_declarations_are_refused(kwargs, message):
    base = dict(name='c', claim='x', kind='claim', statistic='s', test='superiority', seeds=3)
    with pytest.raises(ValueError, match=message):
        checks.Check(**{**base, **kwargs})


def test_results_are_validated_on_write_and_read(tmp_path):
    import time
    claim = _check('superiority')
    written = checks.write_results(
        str(tmp_path), paper='P', claim='C', ran='R', scale='quick', seeds=3,
        table=['| a |'], checks=[claim.evaluate([2, 3, np.float32(4)], [0, 1, 1])],
        figures=[str(tmp_path / 'f.png')], started=time.perf_counter(),
        runs={'loss': [np.inf, 1.0]})
    results = checks.read_results(written)
    assert results['verdict'] == 'reproduced' and results['figures'] == ['f.png']
    assert results['runs']['loss'] == [None, 1.0]  # strict JSON: no Infinity
    original = open(written).read()
    for breakage, message in ((lambda r: r.pop('scale'), "missing field 'scale'"),
                              (lambda r: r.update(scale='huge'), 'scale'),
                              (lambda r: r.update(verdict='reproduced!'), 'does not follow'),
                              (lambda r: r['checks'][0].update(outcome='holds'), 'outcome')):
        broken = json.loads(original)
        breakage(broken)
        with open(written, 'w') as f:
            json.dump(broken, f)
        with pytest.raises(checks.ResultsSchemaError, match=message):
            checks.read_results(written)
    with pytest.raises(checks.ResultsSchemaError, match='scale'):
        checks.write_results(str(tmp_path), paper='P', claim='C', ran='R', scale='medium',
                             seeds=3, table=[], checks=[], figures=[], started=0.0)


def test_diverged_seeds_are_dropped_and_one_seed_is_never_conclusive():
    claim = _check('superiority')
    result = claim.evaluate([3.0, np.nan, 4.0, 5.0], [1.0, 1.0, np.inf, 2.0])
    assert result['dropped'] == 2 and result['n'] == 2
    assert result['estimate'] == pytest.approx(2.5)
    single = claim.evaluate([9.0, np.nan], [1.0, 1.0])
    assert single['outcome'] == 'inconclusive' and single['estimate'] is None
    checks.validate_check_result(single)


def test_zero_spread_gives_no_noise_estimate_and_decides_nothing():
    # The same difference in every seed (one test image of 360, say): the t-interval
    # degenerates to a point, which would "refute" or "support" without any noise model.
    below = _check('superiority', effect=1.0).evaluate([-0.278] * 3)
    assert below['outcome'] == 'inconclusive' and below['zero_spread']
    assert below['low'] == below['high'] == pytest.approx(-0.278)
    assert below['point_outcome'] == 'refuted'  # the decision the point interval would make
    above = _check('superiority').evaluate([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert above['outcome'] == 'inconclusive' and above['zero_spread']
    # Float32 means of a quantized accuracy: equal up to rounding is still zero spread.
    correct = np.float32([351, 347, 353, 349])  # of 360 test images; one fewer with LAWN

    def accuracy(count):
        return count / np.float32(360) * np.float32(100)
    plain, lawn = accuracy(correct), accuracy(correct - 1)
    assert np.std(lawn.astype(np.float64) - plain, ddof=1) > 0  # rounding, not noise
    assert _check('superiority').evaluate(lawn, plain)['zero_spread']
    spread = _check('superiority').evaluate([2.0, 3.1, 4.0], [1.0, 2.0, 3.0])
    assert spread['outcome'] == 'supported' and not spread['zero_spread']
    checks.validate_check_result(below)
    # In cells: the flat cell cannot be supported (p = 1 under Holm), nor refuted.
    result = _check('superiority', effect=1.0).evaluate_cells(
        {'flat': ([-0.3] * 3, None), 'noisy': ([2.0, 2.5, 3.0], None)})
    flat, noisy = result['cells']
    assert (flat['outcome'], flat['p_holm'], flat['zero_spread']) == ('inconclusive', 1.0, True)
    assert flat['point_outcome'] == 'refuted'
    from jaxnorm.papers import report_markdown  # pylint: disable=import-outside-toplevel
    assert 'zero spread, no noise estimate; as a point: flat: refuted' in \
        report_markdown.effect_text(result)
    assert report_markdown.effect_text(below).endswith('as a point: refuted)')
    assert noisy['outcome'] == 'supported' and result['zero_spread']
    assert result['outcome'] == 'inconclusive'
