"""Bad input, API and command line: a typed error (or one line) naming the value, nothing written.

Each API case is a call that must raise the given type with a message matching the pattern
(which names the offending value). Each command-line case runs ``jaxnorm-train``'s
``main`` in this process and checks the exit code, that stderr is one line naming the value,
and that no file appeared in the working folder or the target paths.
"""
import math
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
import prune
from jaxnorm import config as config_lib, cost, functional as F, layers, metrics, models
from jaxnorm import portability, train
from jaxnorm.commands import train as train_command
from jaxnorm.divergence import DivergenceGuard

PARAMS = {'dense': {'kernel': jnp.ones((3, 4)), 'bias': jnp.zeros(4)},
          'head': {'kernel': jnp.ones((4, 2))}}


def override(**values):
    return lambda: config_lib.apply_overrides(config_lib.default_config(), values)


def scores(measure, **trees):
    return lambda: prune.parameter_scores(measure, PARAMS, **trees)


def apply_model(name, x):
    model = models.get_model(name, norm='bn', num_classes=10)
    return lambda: model.init(jax.random.key(0), x)


def lawn_init(mask):
    return lambda: optim.lawn(optax.sgd(0.1), free_steps=1, mask=mask).init(PARAMS)


API_CASES = {
    'bn momentum above 1': (lambda: layers.BatchNorm(momentum=1.5), ValueError, r'momentum.*1\.5'),
    'bn negative epsilon': (lambda: layers.BatchNorm(epsilon=-1.0), ValueError, r'epsilon.*-1\.0'),
    'vn negative momentum': (lambda: layers.VarianceNorm(momentum=-0.1), ValueError,
                             r'momentum.*-0\.1'),
    'gn NaN epsilon': (lambda: layers.GroupNorm(epsilon=math.nan), ValueError, r'epsilon.*nan'),
    'gn groups as str': (lambda: layers.get_norm('gn', num_groups='4'), TypeError,
                         r"num_groups='4'.*int"),
    'gn groups as float': (lambda: layers.get_norm('gn', num_groups=4.0), TypeError,
                           r'num_groups=4\.0.*float'),
    'bn option out of range': (lambda: layers.get_norm('bn', momentum=2.0), ValueError,
                               r'momentum.*2\.0'),
    'ln flag as int': (lambda: layers.get_norm('ln', use_bias=1), TypeError, r'use_bias=1'),
    'unknown norm option': (lambda: layers.get_norm('gn', colour=3), TypeError, r'colour'),
    'unknown norm': (lambda: layers.get_norm('nope'), ValueError, r"'nope'"),
    'instance norm without spatial axis': (lambda: F.instance_norm(jnp.ones((4, 3))), ValueError,
                                           r'spatial axis; got shape \(4, 3\)'),
    'batch norm of a vector': (lambda: F.batch_norm(jnp.ones(3)), ValueError, r'shape \(3,\)'),
    'layer norm of integers': (lambda: F.layer_norm(jnp.ones((2, 3), jnp.int32)), TypeError,
                               r'int32'),
    'zero classes': (lambda: models.get_model('mlp', num_classes=0), ValueError,
                     r'num_classes.*got 0'),
    'unknown model': (lambda: models.get_model('resnet99', num_classes=10), ValueError,
                      r"'resnet99'"),
    'unknown model option': (lambda: models.get_model('mlp', num_classes=10, depth=3),
                             TypeError, r'depth'),
    'uint8 images': (apply_model('resnet20', np.zeros((1, 8, 8, 3), np.uint8)), TypeError,
                     r'uint8'),
    'uint8 into an mlp': (apply_model('mlp', np.zeros((1, 8, 8, 1), np.uint8)), TypeError,
                          r'uint8'),
    'image too small': (apply_model('resnet20', np.zeros((1, 4, 4, 3), np.float32)),
                        ValueError, r'4x4'),
    'lawn mask selects nothing': (lawn_init(lambda p: jax.tree.map(lambda _: False, p)),
                                  ValueError, r'selects no parameter'),
    'lawn regex matches nothing': (lawn_init(optim.regex_mask('^conv')), ValueError, r'conv'),
    'lawn negative free steps': (
        lambda: optim.lawn(optax.sgd(0.1), free_steps=-1, mask=optim.regex_mask('head')),
        ValueError, r'-1'),
    'lawn fractional free steps': (
        lambda: optim.lawn(optax.sgd(0.1), free_steps=1.5, mask=optim.regex_mask('head')),
        TypeError, r'1\.5'),
    'gradient of the wrong shape': (
        scores('loss_preservation', grads={**PARAMS, 'head': {'kernel': jnp.ones((4, 3))}}),
        ValueError, r"'head/kernel' has shape \(4, 3\) in the grads tree"),
    'gradient of another tree': (scores('loss_preservation', grads={'head': PARAMS['head']}),
                                 ValueError, r"grads tree does not match params: missing "
                                             r"from the grads tree: 'dense/bias'"),
    'grasp without hg': (scores('grasp'), ValueError, r'hg='),
    'unknown pruning measure': (scores('bogus'), ValueError, r"'bogus'"),
    'divergence factor below 1': (lambda: DivergenceGuard(0.5), ValueError, r'0\.5'),
    'config divergence factor 1': (override(divergence_factor=1.0), ValueError,
                                   r'divergence_factor.*1\.0'),
    'config negative lr': (override(lr=-1.0), ValueError, r'lr.*-1\.0'),
    'config eman momentum above 1': (override(**{'eman.momentum': 1.5}), ValueError, r'1\.5'),
    'config norm option type': (override(norm='gn', norm_kwargs={'num_groups': 'abc'}),
                                TypeError, r"num_groups='abc'"),
    'config unknown key': (override(learning_rate=0.1), (KeyError, ValueError),
                           r'learning_rate'),
    'cost utilization 0': (lambda: cost.run_seconds(1.0, utilization=0.0), ValueError,
                           r'utilization.*0\.0'),
    'unknown platform': (lambda: portability.export_for_platforms(
        jnp.sin, jax.ShapeDtypeStruct((2,), jnp.float32), platforms=('metal',)), ValueError,
        r'metal'),
}


@pytest.mark.parametrize('name', API_CASES)
def test_api_bad_input_raises_a_typed_error_naming_the_value(name):
    call, error, pattern = API_CASES[name]
    with pytest.raises(error, match=pattern):
        call()


def test_corrupt_metrics_and_a_missing_restart_epoch_are_named(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"epoch": 1}\n{"epoch"\n{"epoch": 3}\n')
    with pytest.raises(metrics.MetricsFileError, match='line 2'):
        metrics.read_jsonl(str(path))
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'mlp', 'workdir': str(tmp_path / 'run'), 'progress': False})
    with pytest.raises(FileNotFoundError, match='no checkpoint of epoch 3.*saved epochs: none'):
        train.fit(cfg, resume_from=3)
    assert not (tmp_path / 'run').exists()


# ----------------------------------------------------------------------------- command line


def cli_cases(tmp):
    file = str(tmp / 'a_file')
    return {
        'workdir is a file': (['--workdir', file], 1, r"--workdir '.*a_file' is a file"),
        'workdir under a file': (['--workdir', file + '/run'], 1, r"a_file' is a file"),
        'data dir is a file': (['--data-dir', file], 1, r"--data-dir '.*a_file' is a file"),
        'processes without coordinator': (['--num-processes', '2', '--process-id', '0'], 1,
                                          r'--coordinator-address HOST:PORT'),
        'coordinator without port': (['--coordinator-address', 'notaport', '--num-processes',
                                      '2', '--process-id', '0'], 1, r"'notaport'"),
        'process id out of range': (['--coordinator-address', 'h:1234', '--num-processes', '2',
                                     '--process-id', '2'], 1, r'\[0, 2\), got 2'),
        'norm option not a number': (['--norm', 'gn', '--norm-option', 'num_groups=abc'], 1,
                                     r"num_groups='abc'"),
        'norm option a float': (['--norm', 'gn', '--norm-option', 'num_groups=4.0'], 1,
                                r'num_groups=4\.0'),
        'norm option out of range': (['--norm-option', 'momentum=1.5'], 1, r'momentum.*1\.5'),
        'model option unknown': (['--model-option', 'depth=3'], 1, r'depth'),
        'resume without checkpoints': (['--resume', '--workdir', str(tmp / 'none')], 1,
                                       r"no checkpoint to resume in workdir '.*none'"),
        'negative learning rate': (['--lr', '-1'], 1, r'lr must be positive, got -1'),
        'unknown model': (['--model', 'resnet99'], 1, r"'resnet99'"),
        'divergence factor below 1': (['--divergence-factor', '0.5'], 1, r'0\.5'),
        'epochs not an int': (['--epochs', 'two'], 2, r"'two'"),
    }


@pytest.mark.parametrize('name', list(cli_cases(pathlib.Path('.'))))
def test_cli_bad_input_is_one_line_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'a_file').write_text('not a folder')
    argv, code, pattern = cli_cases(tmp_path)[name]
    before = sorted(os.listdir(tmp_path))
    try:
        returned = train_command.main([*argv, '--epochs', '1', '--no-progress'] if code == 1 else argv)
    except SystemExit as exit_:  # argparse
        returned = exit_.code
    assert returned == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
    assert sorted(os.listdir(tmp_path)) == before
