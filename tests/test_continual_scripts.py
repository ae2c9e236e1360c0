"""Tests for jaxnorm-continual (scripts/continual.py) and the verdict rules of the EMR
experiment (jaxnorm.papers.emr)."""
import json

import numpy as np
import pytest

from jaxnorm.commands import continual as continual_command
from jaxnorm.papers import emr


def test_continual_cli_runs_and_writes_matrices(tmp_path, capsys):
    cli = continual_command
    out = tmp_path / 'run.json'
    assert cli.main(['--method', 'emr', '--importance', 'si', '--lr', '0.03', '--data-dir',
                     str(tmp_path / 'tfds'), '--out', str(out)]) == 0
    assert 'emr-si lr=0.03: accuracy' in capsys.readouterr().out
    run = json.loads(out.read_text())['runs'][0]
    matrix = np.asarray(run['matrices'][0])
    assert matrix.shape == (5, 5) and np.all(np.diag(matrix) > 0.8)
    assert run['accuracy'][0] == pytest.approx(matrix[-1].mean())


def test_continual_cli_bad_input_is_one_line(capsys):
    cli = continual_command
    with pytest.raises(SystemExit):
        cli.main(['--importance', 'fisher'])
    err = capsys.readouterr().err
    assert "invalid choice: 'fisher'" in err and len(err.strip().splitlines()) == 1


LRS = (0.1, 0.03, 0.01)  # 0.1 is outside the paper's grid; 0.03 and 0.01 are cells
NOISE = np.array([0.001, -0.002, 0.0015, -0.0005])  # per-seed jitter (fractions), mean 0
# QR's accuracy moves over the LRs by a little more or less in each seed, so its spread over
# the LRs has seed noise (the same spread in every seed would be no noise estimate).
SPREAD_JITTER = np.array([0.002, -0.001, 0.0005, -0.0015])


def _entry(acc, forg, strength_accuracy=None):
    """One method's (LR, seed) accuracy and forgetting; QR also (LR, λ, seed) accuracies."""
    entry = {'accuracy': np.asarray(acc, float), 'forgetting': np.asarray(forg, float)}
    if strength_accuracy is not None:
        grid = np.asarray(strength_accuracy, float)
        entry['strength_accuracy'] = grid
        entry['fixed_accuracy'] = grid[:, grid.mean(-1).mean(0).argmax()]
    return entry


def _per_seed(per_lr):
    """(LR, seed) values: one level per LR plus the same mean-zero jitter in every row."""
    return np.asarray(per_lr, float)[:, None] + NOISE


def _results(emr_module, gains, qr_level=0.8, qr_spread=(0.3, 0.0, 0.3)):
    """EMR = QR + gains[imp][lr] (accuracy) and QR - gains (forgetting), with seed noise
    that differs between the arms. QR's λ grid: λ0 is the best on average over the
    reference LRs, its accuracy moves by ``qr_spread`` over the LRs."""
    results = {}
    for imp in emr_module.IMPORTANCES:
        qr_acc = _per_seed([qr_level] * 3)
        qr_forg = _per_seed([0.1] * 3)
        lam0 = (_per_seed([qr_level - s for s in qr_spread])
                + np.outer(np.arange(len(qr_spread)), SPREAD_JITTER))
        lam1 = lam0 - 0.2  # worse everywhere: never the fixed λ
        results[f'qr-{imp}'] = _entry(qr_acc, qr_forg, np.stack([lam0, lam1], axis=1))
        gain = np.asarray(gains[imp], float)[:, None]
        jitter = np.roll(NOISE, 1)  # EMR's own seed noise: the differences have a spread
        results[f'emr-{imp}'] = _entry(qr_acc + gain + jitter, qr_forg - gain / 10 + jitter,
                                       None)
    return results


def _outcomes(emr_module, results):
    declared = emr_module.declare_checks(len(NOISE))
    evaluated, summary, notes = emr_module.evaluate_checks(declared, results, LRS)
    return {c['name']: c for c in evaluated}, summary, notes


def test_emr_checks_are_declared_claims_powered_for_the_papers_effects():
    declared = emr.declare_checks(3)
    assert {k: (c.kind, c.test, c.aggregate) for k, c in declared.items()} == {
        k: ('claim', 'superiority', 'all') for k in ('accuracy', 'forgetting', 'stability')}
    assert (declared['accuracy'].effect, declared['forgetting'].effect,
            declared['stability'].effect) == (6.2, 4.5, None)
    assert declared['accuracy'].margin == declared['forgetting'].margin == 0.0
    assert emr.declare_checks(3, 'permuted_digits')['accuracy'].name == \
        'accuracy (permuted_digits)'
    cells, spread, notes = emr.check_lrs(LRS)
    assert cells == spread == [1, 2] and '0.1' in notes[0]
    assert emr.check_lrs((0.03, 0.01, 0.003, 0.001))[0] == [0, 1, 2, 3]
    assert emr.check_lrs((0.1, 0.3))[0] == [0, 1]  # no reference LR: every LR, and a note


def test_emr_checks_follow_their_rules():
    # EMR 10 points more accurate (forgets 1 point less: QR 10 %, EMR 9 %) at every LR, far
    # below at LR 0.1 (outside the grid, so not a cell); QR at one λ varies by 30 points over
    # the reference LRs 0.03 / 0.01 while EMR varies by the seed noise only.
    big = {imp: [-0.5, 0.1, 0.1] for imp in emr.IMPORTANCES}
    found, summary, notes = _outcomes(emr, _results(emr, big, qr_spread=(0.0, 0.3, 0.0)))
    accuracy = found['accuracy']
    # Every cell's interval lies above 0 (Holm over 8 cells still clears it): supported.
    assert [row['cell'] for row in accuracy['cells']] == [
        f'{imp}, lr {lr}' for imp in emr.IMPORTANCES for lr in ('0.03', '0.01')]
    assert accuracy['outcome'] == 'supported'
    assert accuracy['estimate'] == pytest.approx(10.0)
    # Forgetting: QR minus EMR = 1 point everywhere, above 0 but far below the paper's 4.5:
    # the interval excludes 0 from below, so Holm supports every cell.
    assert found['forgetting']['outcome'] == 'supported'
    # Stability: QR's spread over 0.03 / 0.01 is 30 points, EMR's ~0: supported.
    assert found['stability']['outcome'] == 'supported'
    assert found['stability']['estimate'] == pytest.approx(30.0, abs=1.0)
    # The old pooled rule (every LR, 0.1 included) fails on these inputs: the notes say so.
    assert summary['old_rules_hold']['accuracy'] is False
    assert any(n.startswith('Old rule') and 'did not hold' in n for n in notes)
    assert any('LR 0.1 (not a cell)' in n for n in notes)


def test_emr_one_cell_without_a_gain_refutes_the_all_cells_claim():
    # MAS at LR 0.01: EMR equals QR up to seed noise; the interval around 0 lies below the
    # paper's 6.2 points, so that cell is refuted and aggregate 'all' refutes the claim.
    gains = {imp: [0.1, 0.1, 0.0 if imp == 'mas' else 0.1] for imp in emr.IMPORTANCES}
    found, _, _ = _outcomes(emr, _results(emr, gains))
    cells = {row['cell']: row['outcome'] for row in found['accuracy']['cells']}
    assert cells.pop('mas, lr 0.01') == 'refuted'
    assert set(cells.values()) == {'supported'}
    assert found['accuracy']['outcome'] == 'refuted'
    # Forgetting there: the same zero difference, below 4.5: refuted as well.
    assert found['forgetting']['outcome'] == 'refuted'


def test_emr_noisy_gain_is_inconclusive_and_a_steadier_qr_refutes_stability():
    # QR at one λ is flat over the LRs; EMR is 10 points above QR at LR 0.03 and 10 below at
    # 0.01, with seeds that disagree wildly (jitter sd ~20 points).
    results = _results(emr, {imp: [0.0] * 3 for imp in emr.IMPORTANCES}, qr_level=0.5,
                       qr_spread=(0.0, 0.0, 0.0))
    wild = np.array([0.25, -0.15, 0.2, -0.1])
    for imp in emr.IMPORTANCES:
        results[f'emr-{imp}']['accuracy'] = (results[f'qr-{imp}']['accuracy'] + wild
                                             + np.array([0.0, 0.1, -0.1])[:, None])
    found, _, _ = _outcomes(emr, results)
    # Each cell's interval (about ±24 points around +15 or -5) holds both 0 and 6.2.
    assert {row['outcome'] for row in found['accuracy']['cells']} == {'inconclusive'}
    assert found['accuracy']['outcome'] == 'inconclusive'
    # Spread over 0.03 / 0.01: QR ~0 (its seed jitter, 0.05-0.2 points) and EMR 20 points in
    # every seed, so QR minus EMR ~ -20: the interval lies below the unpowered superiority's
    # target (its margin, 0): refuted.
    assert found['stability']['estimate'] == pytest.approx(-20.0, abs=0.25)
    assert found['stability']['outcome'] == 'refuted'
