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


NOISE = np.array([0.001, -0.002, 0.0015, -0.0005, 0.0008])  # per-seed jitter, mean ~0
LRS = emr.REFERENCE_LRS


def _entry(acc, forg, lr_acc, lr_forg, log_importance=(0.0, -1.0), drift=(0.1, 0.3), roll=0):
    """One method's results as emr.run_benchmark returns them (fractions; seeds last); the
    seed noise is rolled by ``roll`` so that two methods' paired differences have a spread."""
    seeds = len(NOISE)
    noise = np.roll(NOISE, roll)
    jitter = np.outer([1.0, -1.0], np.roll(noise, 2))
    return {'lr': 0.01, 'strength': 1.0, 'fixed_strength': 1.0,
            'accuracy': acc + noise, 'forgetting': forg + np.roll(noise, 1),
            'lr_accuracy': np.asarray(lr_acc, float)[:, None] + np.outer(
                np.arange(len(LRS)), np.roll(noise, 3)),
            'lr_forgetting': np.asarray(lr_forg, float)[:, None] + np.outer(
                np.arange(len(LRS)), np.roll(noise, 4)),
            'layers': {'layers': ['dense1', 'dense2'],
                       'importance': 10.0 ** (np.asarray(log_importance, float)[:, None]
                                              + jitter),
                       'drift': np.asarray(drift, float)[:, None] + jitter / 10
                       + np.zeros((2, seeds))}}


def _results(gain=0.1, qr_lr_acc=(0.9, 0.8, 0.6, 0.4), emr_lr_acc=(0.9, 0.9, 0.88, 0.86),
             qr_importance=(0.0, -1.0), qr_drift=(0.1, 0.3), skip=None):
    results = {}
    for imp in emr.IMPORTANCES:
        g = 0.0 if imp == skip else gain
        results[f'qr-{imp}'] = _entry(0.8, 0.1, qr_lr_acc, (0.1, 0.2, 0.05, 0.01),
                                      qr_importance, qr_drift)
        results[f'emr-{imp}'] = _entry(0.8 + g, 0.1 - g / 2 + 0.003, emr_lr_acc,
                                       (0.02, 0.02, 0.01, 0.01), roll=1)
    return results


def _outcomes(results):
    declared = emr.declare_checks(len(NOISE))
    evaluated, summary = emr.evaluate_checks(declared, results)
    assert [c['name'] for c in evaluated] == [c.name for c in declared.values()]
    return dict(zip(declared, evaluated)), summary


def test_emr_checks_are_declared_claims_with_the_papers_effects():
    declared = emr.declare_checks(5)
    assert list(declared) == ['tuned_accuracy', 'tuned_forgetting', 'robust_accuracy',
                              'robust_forgetting', 'depth_importance', 'depth_drift']
    assert {(c.kind, c.test, c.aggregate, c.margin) for c in declared.values()} == {
        ('claim', 'superiority', 'all', 0.0)}
    assert [c.effect for c in declared.values()] == [6.2, 4.5, None, None, None, None]
    assert emr.declare_checks(5, 'split_mnist5k')['depth_drift'].name == \
        'depth drift (split_mnist5k)'
    assert emr.get_config('standard')['lrs'] == emr.get_config('quick')['lrs'] == \
        (0.03, 0.01, 0.003, 0.001)


def test_choose_takes_the_best_mean_and_the_best_lambda_over_lrs():
    tune = np.zeros((2, 3, 2))  # (LR, λ, seed)
    tune[0] = [[0.5, 0.5], [0.6, 0.6], [0.1, 0.1]]
    tune[1] = [[0.8, 0.7], [0.7, 0.7], [np.nan, 0.2]]  # best cell (1, 0); λ 1 best on average
    assert emr.choose(tune) == (1, 0, 1)


def test_emr_checks_follow_their_rules():
    found, summary = _outcomes(_results())
    # EMR +10 points in every importance and seed: supported (Holm over 4 cells)
    assert found['tuned_accuracy']['outcome'] == 'supported'
    assert found['tuned_accuracy']['estimate'] == pytest.approx(10.0, abs=0.5)
    assert [row['cell'] for row in found['tuned_accuracy']['cells']] == list(emr.IMPORTANCES)
    # forgetting: QR 10 %, EMR 5.3 %: 4.7 points, above 0
    assert found['tuned_forgetting']['outcome'] == 'supported'
    # spreads over the LR grid: QR 50 points of accuracy, EMR 4; forgetting 19 vs 1
    assert found['robust_accuracy']['outcome'] == 'supported'
    assert found['robust_accuracy']['estimate'] == pytest.approx(46.0, abs=1.0)
    assert found['robust_forgetting']['outcome'] == 'supported'
    # QR: first layer 10x the importance of the deepest (1 decade), drift 30 % vs 10 %
    assert found['depth_importance']['estimate'] == pytest.approx(1.0, abs=0.01)
    assert found['depth_importance']['outcome'] == 'supported'
    assert found['depth_drift']['estimate'] == pytest.approx(20.0, abs=0.5)
    assert found['depth_drift']['outcome'] == 'supported'
    assert summary['mean_accuracy_gain'] == pytest.approx(10.0, abs=0.5)


def test_emr_one_importance_without_a_gain_refutes_and_flat_qr_refutes_robustness():
    found, _ = _outcomes(_results(skip='mas', qr_lr_acc=(0.9, 0.9, 0.9, 0.9),
                                  qr_importance=(-1.0, 0.0), qr_drift=(0.3, 0.1)))
    cells = {row['cell']: row['outcome'] for row in found['tuned_accuracy']['cells']}
    assert cells.pop('mas') == 'refuted'  # a 0 difference excludes the paper's 6.2
    assert set(cells.values()) == {'supported'}
    assert found['tuned_accuracy']['outcome'] == 'refuted'
    # QR flat over the LRs (seed jitter only), EMR spreads 4 points: QR minus EMR < 0
    assert found['robust_accuracy']['outcome'] == 'refuted'
    # the deeper layer more important and drifting less: the depth claims are refuted
    assert found['depth_importance']['outcome'] == 'refuted'
    assert found['depth_drift']['outcome'] == 'refuted'


def test_layer_probe_records_importance_and_drift_per_layer():
    import jax.numpy as jnp
    import optax

    import optim
    params = {'dense2': {'kernel': jnp.ones((2, 2))}, 'dense1': {'kernel': jnp.ones((3, 2)),
              'bias': jnp.zeros(2)}, 'head': {'kernel': jnp.ones((2, 4))}}

    class State:
        def __init__(self, params, omega):
            self.params = params
            tx = optim.emr(optax.sgd(0.1))
            self.opt_state = optim.new_task(tx.init(params), params, omega=omega)
    probe = emr.LayerProbe(lanes=1)
    probe(0, State(params, jax_like(params, 2.0)))
    moved = {'dense1': {'kernel': 2 * jnp.ones((3, 2)), 'bias': jnp.ones(2)},
             'dense2': {'kernel': jnp.ones((2, 2))}, 'head': params['head']}
    omega = jax_like(params, 4.0)
    omega['dense2'] = {'kernel': jnp.full((2, 2), 8.0)}
    probe(1, State(moved, omega))
    out = probe.summary([0])
    assert out['layers'] == ['dense1', 'dense2']
    # omega_prev = omega / 2 after one new_task
    np.testing.assert_allclose(out['importance'][:, 0], [2.0, 4.0])
    # dense1: ||(1,..,1 (6), 1, 1)|| / ||(1 x 6, 0, 0)|| = sqrt(8 / 6); dense2 did not move
    np.testing.assert_allclose(out['drift'][:, 0], [np.sqrt(8 / 6), 0.0])
    with pytest.raises(ValueError, match='tune_tasks'):
        emr.split_tasks(type('B', (), {'name': 'b', 'num_tasks': 3})(), 2)


def jax_like(tree, value):
    import jax
    return jax.tree.map(lambda x: value * np.ones(x.shape, np.float32), tree)


def test_headroom_notes_name_the_importances_near_the_ceiling():
    results = _results()
    results['qr-ewc']['accuracy'] = np.full(len(NOISE), 0.97)  # 3 points left < 6.2
    results['qr-si']['forgetting'] = np.full(len(NOISE), 0.02)  # 2 points < 4.5
    for imp in ('mas', 'rwalk', 'si'):
        results[f'qr-{imp}']['accuracy'] = np.full(len(NOISE), 0.5)
    for imp in ('ewc', 'mas', 'rwalk'):
        results[f'qr-{imp}']['forgetting'] = np.full(len(NOISE), 0.2)
    acc, forg = emr.emr_report.headroom_notes(results, 'b', emr.IMPORTANCES)
    assert 'for ewc:' in acc and 'for si:' in forg
