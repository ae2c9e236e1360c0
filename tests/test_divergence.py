"""Divergence that can be recovered from, resumes that match an uninterrupted run, strict
metrics files (jaxnorm.divergence, train.fit, jaxnorm.metrics, scripts/train.py)."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxnorm import checkpoints, config as config_lib, metrics, train
from jaxnorm.divergence import DivergenceGuard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- the guard


def test_guard_flags_a_blow_up_relative_to_the_initial_loss():
    losses = [2.3] * 30 + [2.3 * 999, 2.3 * 1001]
    index, reason = DivergenceGuard(1e3).first_bad_step(losses)
    assert index == 31 and 'above 1000 x the reference loss 2.3' in reason


def test_guard_tolerates_noisy_batches_once_the_loss_is_near_zero():
    # A late loss 5000x the running median but far below 1000x the initial loss is noise.
    losses = [2.3] * 20 + list(np.geomspace(2.3, 1e-4, 300)) + [0.5, 1e-4]
    assert DivergenceGuard(1e3).first_bad_step(losses) is None


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_guard_flags_non_finite_losses_and_gradients_even_without_the_relative_rule(bad):
    guard = DivergenceGuard(None)
    assert guard.first_bad_step([1.0, 1e30, bad, 1.0]) == (2, f'the loss is {bad}')
    assert DivergenceGuard(None).first_bad_step([1.0, 1.0, 1.0], [True, False, True])[0] == 1


@pytest.mark.parametrize('kwargs', [{'factor': 1.0}, {'factor': -5.0}, {'warmup': 0},
                                    {'warmup': 50, 'window': 10}])
def test_guard_refuses_meaningless_settings(kwargs):
    with pytest.raises(ValueError, match='factor|warmup'):
        DivergenceGuard(**kwargs)


# ----------------------------------------------------------------------------- fit


def config(tmp_path, name='run', **overrides):
    base = {'model': 'mlp', 'norm': 'none', 'epochs': 5, 'batch_size': 64, 'lr': 0.05,
            'workdir': str(tmp_path / name), 'progress': False,
            'data_dir': str(tmp_path.parent / 'tfds')}
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


def test_a_divergence_stops_before_saving_names_a_finite_checkpoint_and_restarts(tmp_path):
    # The reproduction: warmup to lr 1 blows up through finite losses in epoch 3.
    diverging = config(tmp_path, lr=1.0, warmup_epochs=4.0)
    with pytest.raises(train.DivergenceError) as info:
        train.fit(diverging)
    last = info.value.last_good_epoch
    assert last is not None and f'--resume-from {last}' in str(info.value)
    assert checkpoints.RunCheckpointer(diverging.workdir).epochs()[-1] == last < info.value.epoch
    saved = checkpoints.load_arrays(diverging.workdir, last)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved['params']))
    assert [r['epoch'] for r in metrics.read_jsonl(os.path.join(diverging.workdir,
                                                                'metrics.jsonl'))] == \
        list(range(1, last + 1))
    assert os.path.getsize(os.path.join(diverging.workdir, 'curves.png')) > 1000

    calmer = config(tmp_path, lr=0.05, warmup_epochs=4.0)
    history = train.fit(calmer, resume_from=last).history
    assert [r['epoch'] for r in history] == [1, 2, 3, 4, 5]
    assert history[last]['restart'] == {'from_epoch': last, 'changed': {'lr': [1.0, 0.05]}}
    assert history[-1]['train_loss'] < history[0]['train_loss']
    starts = metrics.read_jsonl(os.path.join(calmer.workdir, 'config_history.jsonl'))
    assert [s['start_epoch'] for s in starts] == [0, last]
    assert starts[-1]['config']['lr'] == 0.05


def test_a_run_that_explodes_at_once_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(train.DivergenceError, match='No checkpoint was saved') as info:
        train.fit(config(tmp_path, lr=1e6, epochs=2))
    assert info.value.last_good_epoch is None and info.value.epoch == 1
    assert not checkpoints.RunCheckpointer(str(tmp_path / 'run')).epochs()


def test_resume_with_changed_trajectory_settings_is_refused_before_writing(tmp_path):
    first = config(tmp_path, epochs=1)
    train.fit(first)
    files = {name: open(os.path.join(first.workdir, name)).read()
             for name in ('metrics.jsonl', 'config.json', 'config_history.jsonl')}
    for change in ({'epochs': 2}, {'seed': 1}, {'batch_size': 32}, {'schedule': 'constant'}):
        with pytest.raises(checkpoints.IncompatibleCheckpointError, match=next(iter(change))):
            train.fit(config(tmp_path, **{'epochs': 1, **change}), resume=True)
    assert files == {name: open(os.path.join(first.workdir, name)).read() for name in files}
    # Presentation settings may change; an explicit acceptance lets the rest through.
    train.fit(config(tmp_path, epochs=1, progress=True, eval_batch_size=128), resume=True)
    assert train.fit(config(tmp_path, epochs=2), resume=True,
                     accept_changes=True).history[-1]['restart']['changed'] == {'epochs': [1, 2]}
    with pytest.raises(FileNotFoundError, match='saved epochs: 1, 2'):
        train.fit(config(tmp_path, epochs=2), resume_from=7)


# ----------------------------------------------------------------------------- metrics files


def test_metrics_are_strict_json_and_non_finite_values_come_back_as_nan(tmp_path):
    path = str(tmp_path / 'm.jsonl')
    metrics.append_jsonl(path, {'epoch': 1, 'train_loss': math.inf, 'test_loss': math.nan,
                                'test_accuracy': 0.5})

    def refuse(constant):
        raise ValueError(f'non-standard JSON constant {constant}')
    line = json.loads(open(path).read(), parse_constant=refuse)
    assert line == {'epoch': 1, 'train_loss': None, 'test_loss': None, 'test_accuracy': 0.5,
                    'nonfinite': ['test_loss', 'train_loss']}
    (record,) = metrics.read_jsonl(path)
    assert math.isnan(record['train_loss']) and math.isnan(record['test_loss'])
    assert record['test_accuracy'] == 0.5


def test_a_truncated_last_line_is_dropped_and_a_corrupt_one_named(tmp_path):
    path = tmp_path / 'm.jsonl'
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "train_lo')
    with pytest.warns(UserWarning, match='truncated last line 3'):
        assert metrics.read_jsonl(str(path)) == [{'epoch': 1}, {'epoch': 2}]
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(metrics.MetricsFileError, match=r'm\.jsonl, line 2'):
        metrics.read_jsonl(str(path))


def test_resume_repairs_a_metrics_file_cut_mid_record(tmp_path):
    cfg = config(tmp_path, epochs=2)
    train.fit(config(tmp_path, epochs=2), on_epoch_end=lambda e, r: None)
    path = os.path.join(cfg.workdir, 'metrics.jsonl')
    text = open(path).read()
    open(path, 'w').write(text[:-20])  # the last record, cut by a kill
    with pytest.warns(UserWarning, match='truncated'):
        history = train.fit(cfg, resume_from=1).history
    assert [r['epoch'] for r in history] == [1, 2]


# ----------------------------------------------------------------------------- command line


def test_cli_resume_without_checkpoints_is_one_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / 'missing'
    done = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'train.py'), '--resume',
                           '--workdir', str(workdir), '--no-progress'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: --resume: no checkpoint to resume in workdir '{workdir}'; drop --resume to "
        'start a new run']
    assert not workdir.exists()
