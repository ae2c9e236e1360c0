"""Pilot sizing of claim checks: against scipy's noncentral t and closed forms."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnorm.papers import checks, sizing

GAINS = [0.4, 1.1, -0.2, 0.9, 0.5]


def one_sided_power(distance, sd, n, alpha):
    """Power of the one-sided paired t-test, written out on scipy's noncentral t."""
    critical = scipy_stats.t.ppf(1 - alpha, n - 1)
    return scipy_stats.nct.sf(critical, n - 1, distance / (sd / np.sqrt(n)))


def claim(test, **kwargs):
    return checks.Check('c', 'a claim', 'claim', 'gain (points)', test, 5, **kwargs)


def test_superiority_is_sized_for_its_effect_above_the_null():
    result = claim('superiority', margin=0.2, effect=1.0).evaluate(GAINS)
    sized = sizing.sizing(result)
    sd = np.std(GAINS, ddof=1)
    assert sized['sd'] == pytest.approx(sd) and sized['n'] == 5
    assert sized['alpha'] == pytest.approx(0.05) and sized['sized_for'] == pytest.approx(0.8)
    n = sized['seeds']
    assert one_sided_power(0.8, sd, n, 0.05) >= 0.8 > one_sided_power(0.8, sd, n - 1, 0.05)
    assert one_sided_power(sized['detectable'], sd, 5, 0.05) == pytest.approx(0.8, abs=1e-6)


def test_cells_divide_alpha_and_equivalence_sizes_each_side():
    cells = {name: (np.array(GAINS) + shift, None) for name, shift in (('a', 0), ('b', 0.3))}
    result = claim('non_inferiority', margin=1.0).evaluate_cells(cells)
    sized = sizing.sizing(result)
    assert sized['cells'] == 2 and sized['alpha'] == pytest.approx(0.025)
    assert sized['sized_for'] == 1.0  # a true difference of 0 against the null -margin
    n, sd = sized['seeds'], sized['sd']
    assert one_sided_power(1.0, sd, n, 0.025) >= 0.8 > one_sided_power(1.0, sd, n - 1, 0.025)

    sized = sizing.sizing(claim('equivalence', margin=0.5).evaluate(GAINS))
    n, sd = sized['seeds'], sized['sd']
    # Both one-sided bounds must hold: each side at 0.9 gives both with probability >= 0.8.
    assert sized['power'] == pytest.approx(0.9)
    assert 1 - 2 * (1 - one_sided_power(0.5, sd, n, 0.05)) >= 0.8


def test_nothing_is_sized_without_a_claim_a_spread_or_an_effect():
    assert sizing.sizing(checks.Check('s', 'x', 'sanity', 'gain', 'superiority', 5)
                         .evaluate(GAINS)) is None
    assert sizing.sizing(checks.Check('r', 'x', 'claim', 'ok', 'rule', 5, rule='holds')
                         .evaluate_rule([True, True])) is None
    assert sizing.sizing(claim('superiority').evaluate([1.0, 1.0, 1.0])) is None  # sd 0
    unsized = sizing.sizing(claim('superiority').evaluate(GAINS))
    assert unsized['sized_for'] is None and unsized['seeds'] is None
    # Two seeds at a small alpha: the critical t is far out, the detectable effect still found.
    few = sizing.sizing(claim('superiority', effect=0.01).evaluate_cells(
        {str(k): ([0.1, 0.9], None) for k in range(13)}))
    assert one_sided_power(few['detectable'], few['sd'], 2, 0.05 / 13) == pytest.approx(0.8)
    assert few['seeds'] is None  # more than MAX_SEEDS


def test_the_table_lists_the_sized_claims_only():
    results = {'checks': [claim('superiority', effect=1.0).evaluate(GAINS),
                          checks.Check('s', 'x', 'sanity', 'g', 'superiority', 5).evaluate(GAINS)]}
    table = sizing.sizing_table(results)
    rows = [line for line in table if line.startswith('| c |')]
    assert len(rows) == 1 and rows[0].endswith(f"| {sizing.sizing(results['checks'][0])['seeds']} |")
    assert sizing.sizing_table({'checks': results['checks'][1:]}) == []


def test_the_report_shows_the_sizing_below_the_checks():
    from jaxnorm.papers import report_markdown, reproduce  # pylint: disable=import-outside-toplevel
    evaluated = [claim('superiority', effect=1.0).evaluate(GAINS)]
    results = {'claim': 'x', 'ran': 'y', 'scale': 'quick', 'seeds': 5, 'table': [],
               'checks': evaluated, 'figures': [], 'verdict': checks.verdict(evaluated)}
    row = report_markdown.Row(reproduce.Section('p', 'P'), results, '', 1.0, False)
    lines = report_markdown.section_markdown(row, 'figures/p')
    checks_row = next(i for i, line in enumerate(lines) if line.startswith('| c | claim |'))
    sizing_row = lines.index(sizing.sizing_table(results)[-2])
    assert sizing_row > checks_row
