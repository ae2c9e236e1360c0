"""Tests for scripts/continual.py and the verdict rules of scripts/experiments/emr.py."""
import importlib.util
import json
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_continual_cli_runs_and_writes_matrices(tmp_path, capsys):
    cli = _load('scripts/continual.py', 'continual_cli')
    out = tmp_path / 'run.json'
    assert cli.main(['--method', 'emr', '--importance', 'si', '--lr', '0.03', '--data-dir',
                     str(tmp_path / 'tfds'), '--out', str(out)]) == 0
    assert 'emr-si lr=0.03: accuracy' in capsys.readouterr().out
    run = json.loads(out.read_text())['runs'][0]
    matrix = np.asarray(run['matrices'][0])
    assert matrix.shape == (5, 5) and np.all(np.diag(matrix) > 0.8)
    assert run['accuracy'][0] == pytest.approx(matrix[-1].mean())


def test_continual_cli_bad_input_is_one_line(capsys):
    cli = _load('scripts/continual.py', 'continual_cli')
    with pytest.raises(SystemExit):
        cli.main(['--importance', 'fisher'])
    err = capsys.readouterr().err
    assert "invalid choice: 'fisher'" in err and len(err.strip().splitlines()) == 1


def _entry(acc, forg, fixed=None):
    acc, forg = np.asarray(acc, float), np.asarray(forg, float)
    entry = {'accuracy': acc, 'forgetting': forg}
    if fixed is not None:
        entry['fixed_accuracy'] = np.asarray(fixed, float)
    return entry


def test_emr_checks_follow_their_rules():
    emr = _load('scripts/experiments/emr.py', 'emr_experiment')
    # (LR, seed) arrays: EMR better everywhere but for MAS; QR at one λ unstable over LRs.
    results = {}
    for imp in emr.IMPORTANCES:
        gain = -0.01 if imp == 'mas' else 0.05
        qr = np.full((3, 2), 0.8)
        results[f'qr-{imp}'] = _entry(qr, qr / 10, fixed=[[0.5, 0.5], [0.8, 0.8], [0.9, 0.9]])
        results[f'emr-{imp}'] = _entry(qr + gain, qr / 10 - gain)
    checks, summary = emr.checks(results)
    assert [c['holds'] for c in checks] == [True, True, True]
    assert summary['per_importance_accuracy_gain']['mas'] == pytest.approx(-0.01)
    for imp in ('ewc', 'si'):  # two losses out of four: fails the ">= 3 of 4" rules
        results[f'emr-{imp}'] = _entry(np.full((3, 2), 0.7), np.full((3, 2), 0.2))
    checks, _ = emr.checks(results)
    assert [c['holds'] for c in checks] == [False, False, True]
