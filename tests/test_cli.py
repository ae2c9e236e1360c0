"""The training CLI as a user runs it, and two processes training as one."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxnorm import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'scripts', 'train.py')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('tfds'))


def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env_extra or {})}
    env.pop('XLA_FLAGS', None)
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def error_lines(stderr):
    """stderr lines other than library warnings (absl/orbax chatter)."""
    return [l for l in stderr.splitlines() if 'error' in l.lower()]


def test_help_lists_flags():
    result = run_cli('--help')
    assert result.returncode == 0
    for flag in ('--model', '--norm', '--dataset', '--epochs', '--batch-size', '--optimizer',
                 '--lr', '--schedule', '--weight-decay', '--seed', '--workdir', '--resume',
                 '--config', '--coordinator-address'):
        assert flag in result.stdout


@pytest.mark.parametrize('args, code, message', [
    (['--epochs', 'ten'], 2, "invalid int value: 'ten'"),
    (['--optimizer', 'rmsprop'], 2, "invalid choice: 'rmsprop'"),
    (['--model', 'resnet1000', '--epochs', '1'], 1, 'unknown model'),
    (['--config', 'no/such/file.py'], 1, 'does not exist'),
    (['--norm', 'bn', '--norm-option', 'notakeyvalue'], 2, 'KEY=VALUE'),
])
def test_bad_flags_give_one_line_error(tmp_path, data_dir, args, code, message):
    result = run_cli(*args, '--workdir', str(tmp_path / 'w'), '--data-dir', data_dir)
    assert result.returncode == code, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'w').exists()


def test_short_run_prints_final_accuracy(tmp_path, data_dir):
    result = run_cli('--model', 'mlp', '--epochs', '2', '--workdir', str(tmp_path / 'w'),
                     '--data-dir', data_dir, '--no-progress')
    assert result.returncode == 0, result.stderr
    assert 'final test accuracy' in result.stdout
    accuracy = float(result.stdout.split('final test accuracy: ')[1].split('%')[0])
    assert 80.0 < accuracy <= 100.0


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def final_params(workdir, epoch):
    return checkpoints.load_arrays(workdir, epoch)['params']


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, data_dir):
    common = ['--model', 'mlp', '--epochs', '2', '--data-dir', data_dir, '--no-progress']
    single = run_cli(*common, '--workdir', str(tmp_path / 'single'))
    assert single.returncode == 0, single.stderr
    port = free_port()
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    env.pop('XLA_FLAGS', None)
    procs = [subprocess.Popen(
        [sys.executable, TRAIN, *common, '--workdir', str(tmp_path / 'multi'),
         '--coordinator-address', f'127.0.0.1:{port}', '--num-processes', '2',
         '--process-id', str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    one = final_params(str(tmp_path / 'single'), 2)
    two = final_params(str(tmp_path / 'multi'), 2)
    flat_one, flat_two = [sorted(_flatten(t).items()) for t in (one, two)]
    assert [k for k, _ in flat_one] == [k for k, _ in flat_two]
    for (_, a), (_, b) in zip(flat_one, flat_two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def _flatten(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f'{prefix}{key}/'))
        else:
            out[f'{prefix}{key}'] = np.asarray(value)
    return out


def test_console_scripts_resolve_to_mains_with_help(capsys):
    import importlib
    import tomllib
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        scripts = tomllib.load(f)['project']['scripts']
    assert set(scripts) == {'jaxnorm-train', 'jaxnorm-prune', 'jaxnorm-continual',
                            'jaxnorm-theory', 'jaxnorm-reproduce'}
    for name, target in scripts.items():
        module, function = target.split(':')
        main = getattr(importlib.import_module(module), function)
        with pytest.raises(SystemExit) as done:
            main(['--help'])
        assert done.value.code == 0
        assert '(default: ' in capsys.readouterr().out, name
