"""jaxnorm.papers.lottery: settings, the measured budget, the Holm equivalence over cells, and
one tiny end-to-end run of the experiment."""
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnorm.papers import checks, lottery, lottery_report
from prune.lottery import EpochLedger


def tost_holm(cells, margin, alpha):
    """Reference: TOST p per cell from scipy's one-sample t-tests, Holm by hand."""
    raw = []
    for a, b in cells.values():
        d = np.asarray(a, float) - np.asarray(b, float)
        lower = scipy_stats.ttest_1samp(d, -margin, alternative='greater').pvalue
        upper = scipy_stats.ttest_1samp(d, margin, alternative='less').pvalue
        raw.append(max(lower, upper))
    order, m = np.argsort(raw), len(raw)
    adjusted, running = np.empty(m), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * raw[i]))
        adjusted[i] = running
    return adjusted, [adjusted[i] <= alpha for i in range(m)]


def test_equivalence_cells_match_scipy_tost_with_holm():
    rng = np.random.default_rng(0)
    base = rng.normal(60, 2, size=8)
    cells = {'tight': (base + rng.normal(0, 0.2, 8), base),          # within ±1: supported
             'wide': (base + rng.normal(0, 2.0, 8), base),           # interval holds ±1
             'off': (base + 3 + rng.normal(0, 0.3, 8), base)}        # excludes 0: refuted
    check = checks.Check('eq', 'about equal', 'claim', 'a - b', 'equivalence', 8, margin=1.0)
    result = lottery_report.equivalence_cells(check, cells)
    adjusted, rejected = tost_holm(cells, 1.0, 0.05)
    rows = {row['cell']: row for row in result['cells']}
    for (name, (a, b)), p, rej in zip(cells.items(), adjusted, rejected):
        assert rows[name]['p_holm'] == pytest.approx(p, rel=1e-9)
        d = np.asarray(a) - np.asarray(b)
        half = scipy_stats.t.ppf(0.95, 7) * d.std(ddof=1) / np.sqrt(8)
        assert (rows[name]['low'], rows[name]['high']) == pytest.approx(
            (d.mean() - half, d.mean() + half))
        assert (rows[name]['outcome'] == 'supported') == rej
    assert rows['tight']['outcome'] == 'supported'
    assert rows['wide']['outcome'] == 'inconclusive'
    assert rows['off']['outcome'] == 'refuted'
    assert result['outcome'] == 'refuted'
    checks.validate_check_result(result)
    alone = lottery_report.equivalence_cells(check, {'tight': cells['tight']})
    # One cell: the same decision as the one-cell check (interval inside the margins).
    assert alone['outcome'] == check.evaluate(*cells['tight'])['outcome'] == 'supported'
    with pytest.raises(ValueError, match='equivalence'):
        lottery_report.equivalence_cells(checks.Check('s', 'x', 'claim', 'd', 'superiority',
                                                      2), cells)


def test_measured_budgets_sum_the_engine_steps_of_the_shared_search_and_the_arm():
    calls = (('pretrain', 4), ('lottery', 4), ('reinit', 4), ('finetune', 4),
             ('lottery', 4), ('reinit', 4), ('finetune', 4))
    steps = [10, 20, 30, 40, 50, 60, 71]  # per call, one network; PF at level 2 ran 1 more
    log = [{'steps': np.array([[s]])} for s in steps]
    first = lottery.measured_budgets(EpochLedger(8, {}, calls[:4]), log)
    assert {k: int(v[0, 0]) for k, v in first.items()} == {
        'lottery': 10 + 20, 'reinit': 10 + 30, 'finetune': 10 + 40}
    second = lottery.measured_budgets(EpochLedger(8, {}, calls), log)
    # Search = pretraining + level-1 LT (the IMP path); re-init and PF of level 1 are not.
    assert {k: int(v[0, 0]) for k, v in second.items()} == {
        'lottery': 10 + 20 + 50, 'reinit': 10 + 20 + 60, 'finetune': 10 + 20 + 71}


def test_settings_and_their_errors():
    quick, standard = lottery.get_config('quick'), lottery.get_config('standard')
    assert quick['dataset'] == standard['dataset'] == 'mnist1d'
    assert tuple(standard['levels']) == (0.5, 0.7, 0.9) and standard['lrs'] == (0.01, 0.1)
    # 4,000 training signals / batch 100 = 40 steps per pass: thousands of steps per run.
    assert standard['epochs'] * 4000 // standard['batch'] == 4000
    assert lottery.get_config('paper')['dataset'] == 'cifar10'
    with pytest.raises(ValueError, match='chunks'):
        lottery.paper_setting({'epochs': 7, 'chunks': 2}, 'x.py')
    with pytest.raises(ValueError, match='levels'):
        lottery.paper_setting({'levels': (0.5, 0.5)}, 'x.py')
    with pytest.raises(ValueError, match='not built here'):
        lottery.paper_setting({'models': ('resnet20',)}, 'x.py')


def test_tiny_run_writes_measured_budgets_and_the_declared_checks(tmp_path):
    values = {'models': ('mlp1d',), 'lrs': (0.05,), 'epochs': 1, 'chunks': 1, 'levels': (0.5,)}
    config = tmp_path / 'paper.py'
    config.write_text(f'def get_config():\n    return {values!r}\n')
    lottery.main(['--config', str(config), '--seeds', '2', '--out', str(tmp_path / 'out')])
    results = json.loads((tmp_path / 'out' / 'lottery' / 'results.json').read_text())
    run = results['runs']['mlp1d']
    # One level at 50 %: exactly half of every pruned kernel survives (per-layer top-k).
    assert run['mean_layer_density'] == pytest.approx([0.5], abs=1e-3)
    # Closed form: pretraining + the arm, one pass of 4,000 / 100 = 40 steps each.
    assert run['ledger'][0]['totals'] == {arm: 2 for arm in lottery.ARMS}
    assert all(np.all(np.asarray(run['steps'][arm]) == 80) for arm in lottery.ARMS)
    assert np.asarray(run['overlap']).shape == (1, 2)  # (lr, seed)
    assert np.asarray(run['accuracy']['finetune']).shape == (1, 1, 2)  # (level, lr, seed)
    # The experiment's own evaluation of PF's final params equals the engine's record of that
    # run (call 3 = PF after pretraining, LT and re-init): its last test accuracy per seed.
    pf_records = [json.loads(line) for line in (
        tmp_path / 'out' / 'lottery' / 'runs' / 'mlp1d-call3-lr0' / 'metrics.jsonl'
    ).read_text().splitlines()]
    assert [r['test_accuracy'] for r in pf_records] == pytest.approx(
        np.asarray(run['accuracy']['finetune'])[0, 0].tolist(), abs=1e-6)
    outcomes = {c['name']: c for c in results['checks']}
    assert outcomes['mlp1d: equal budgets']['outcome'] == 'supported'
    assert outcomes['mlp1d: equal budgets']['kind'] == 'sanity'
    assert len(outcomes['mlp1d: LT ≈ re-init at large lr']['cells']) == 1
