"""The experiments' papers'-scale path (``--config``) on tiny digits configs."""
import importlib
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxnorm import config as config_lib, train
from jaxnorm.papers import common

TINY = ("{'model': 'resnet20', 'model_kwargs': {'width': 0.25}, 'dataset': 'digits', "
        "'epochs': 1, 'batch_size': 64, 'lr': 0.05, 'progress': False%s}")


def write_config(tmp_path, extra=''):
    path = tmp_path / 'tiny.py'
    path.write_text(f'def get_config():\n    return {TINY % extra}\n')
    return str(path)


def test_afan_arms_are_the_library_fit_runs(tmp_path):
    from jaxnorm.papers import afan
    config = write_config(tmp_path, ", 'afan.layer': 'stage1_block3', 'afan.steps': 1")
    out = tmp_path / 'out'
    assert afan.main(['--config', config, '--seeds', '2', '--out', str(out)]) == 0
    results = json.loads((out / 'afan' / 'results.json').read_text())
    # Independent reference: the same config and seed trained directly by jaxnorm.train.fit.
    direct = train.fit(config_lib.apply_overrides(config_lib.load_config_file(config), {
        'afan.layer': None, 'seed': 1, 'workdir': str(tmp_path / 'direct')}))
    assert results['runs']['final_accuracy']['baseline'][1] == direct.history[-1][
        'test_accuracy']
    assert results['config']['afan']['layer'] == 'stage1_block3'
    assert [(c['name'], c['kind']) for c in results['checks']] == [('accuracy', 'claim'),
                                                                  ('cost', 'sanity')]
    assert sorted(p.name for p in (out / 'afan' / 'runs').iterdir()) == [
        'afan-seed0', 'afan-seed1', 'baseline-seed0', 'baseline-seed1']


def test_a_diverged_arm_keeps_its_epochs_as_nan(tmp_path):
    config = write_config(tmp_path, ", 'lr': 1e12, 'epochs': 2")
    histories = common.fit_arms(config, {'huge': {}}, 1, str(tmp_path / 'out'))
    runs = histories['huge'][0]
    assert [r['epoch'] for r in runs] == [1, 2]
    assert math.isnan(common.final_values(histories)['huge'][0])


def test_unification_positions_match_the_cnn_outputs():
    from jaxnorm.papers import unification
    model = unification.build('cnn', 10)
    x = jnp.zeros((1, 32, 24, 3))
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(
        m, nn.Conv), mutable=['intermediates'])
    shapes = {name: out['__call__'][0].shape
              for name, out in state['intermediates'].items()}
    expected = {f'{name}/kernel': shapes[name][1] * shapes[name][2]
                for name in ('conv2', 'conv3')}
    assert unification.positions('cnn', 32, 24) == expected
    assert unification.positions('mlp', 32, 24) == {}


@pytest.mark.parametrize('name', ['orthoreg', 'eman', 'lottery', 'unification'])
def test_config_and_quick_are_exclusive(name, tmp_path, capsys):
    module = importlib.import_module(f'jaxnorm.papers.{name}')
    with pytest.raises(SystemExit):
        module.main(['--quick', '--config', write_config(tmp_path)])
    assert "drop --quick" in capsys.readouterr().err


def direct_fit(config, seed, workdir, **overrides):
    """The library's own run of ``config`` with ``overrides`` and ``seed``."""
    return train.fit(config_lib.apply_overrides(config_lib.load_config_file(config), {
        **overrides, 'seed': seed, 'workdir': str(workdir)})).history


def test_lawn_arms_are_the_library_fit_runs(tmp_path):
    from jaxnorm.papers import lawn
    path = tmp_path / 'lawn.py'
    path.write_text("def get_config():\n    return {'model': 'mlp', 'norm': 'ln', 'model_kwargs': "
                    "{'hidden': (32,)}, 'dataset': 'digits', 'epochs': 2, 'batch_size': 128, "
                    "'optimizer': 'adam', 'lr': 2e-3, 'lawn.free_epochs': 1.0, "
                    "'lawn.mask': 'head/kernel', 'progress': False}\n")
    assert lawn.main(['--config', str(path), '--seeds', '2', '--out', str(tmp_path / 'o')]) == 0
    results = json.loads((tmp_path / 'o' / 'lawn' / 'results.json').read_text())
    history = direct_fit(str(path), 1, tmp_path / 'direct')
    assert results['runs']['mean_logit_norm']['lawn'][1] == history[-1]['mean_logit_norm']
    # The check's input in closed form: LAWN's norms after the switch equal the final ones.
    norms = [r['lawn_weight_norms'] for r in history if r['epoch'] > 1.0]
    assert norms and max(abs(n[k] / norms[-1][k] - 1) for n in norms for k in n) <= 1e-4
    assert {c['name']: c['outcome'] for c in results['checks']}['norms constant'] == 'supported'


def test_beyond_bn_paper_training_records_fits_epoch_losses(tmp_path):
    from jaxnorm.papers import beyond_bn
    path = tmp_path / 'bbn.py'
    path.write_text("def get_config():\n    return {'model': 'mlp', 'model_kwargs': "
                    "{'hidden': (64,)}, 'dataset': 'digits', 'epochs': 2, 'batch_size': 128, "
                    "'progress': False}\n")
    out = tmp_path / 'o'
    assert beyond_bn.main(['training', '--config', str(path), '--seeds', '2',
                           '--out', str(out)]) == 0
    results = json.loads((out / 'beyond_bn' / 'results.json').read_text())
    records = {r['group_size']: r for r in results['experiments']['training']['records']}
    history = direct_fit(str(path), 1, tmp_path / 'direct', norm='gn',
                         norm_kwargs=beyond_bn.gn_options(16))
    assert records[16]['loss'][1] == [r['train_loss'] for r in history]
    assert (out / 'beyond_bn' / 'training.png').exists()  # no gradient norms to log-scale
