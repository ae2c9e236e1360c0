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
    # Independent reference: the same config and seeds trained directly by jaxnorm.train.fit.
    direct = train.fit(config_lib.apply_overrides(config_lib.load_config_file(config), {
        'afan.layer': None, 'num_seeds': 2, 'workdir': str(tmp_path / 'direct')}))
    assert results['runs']['final_accuracy']['baseline'] == [
        r['test_accuracy'] for r in direct.history if r['epoch'] == 1]
    assert results['config']['afan']['layer'] == 'stage1_block3'
    assert [(c['name'], c['kind']) for c in results['checks']] == [('accuracy', 'claim'),
                                                                  ('cost', 'sanity')]
    assert sorted(p.name for p in (out / 'afan' / 'runs').iterdir()) == ['afan', 'baseline']


def test_a_diverged_arm_keeps_its_epochs_as_nan(tmp_path):
    config = write_config(tmp_path, ", 'lr': 1e12, 'epochs': 2")
    histories = common.fit_arms(config_lib.load_config_file(config), {'huge': {}}, 1,
                                str(tmp_path / 'out'))
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
    # Seed 1 of the seed-batched arm is the one-seed run up to float32 rounding (vmapped).
    assert results['runs']['mean_logit_norm']['lawn'][1] == pytest.approx(
        history[-1]['mean_logit_norm'], rel=1e-5)
    # The check's input in closed form: LAWN's norms after the switch equal the final ones.
    norms = [r['lawn_weight_norms'] for r in history if r['epoch'] > 1.0]
    assert norms and max(abs(n[k] / norms[-1][k] - 1) for n in norms for k in n) <= 1e-4
    assert {c['name']: c['outcome'] for c in results['checks']}['norms constant'] == 'supported'


def test_orthoreg_phases_are_fit_runs_with_its_extensions(tmp_path):
    import numpy as np

    import optim
    import prune
    from jaxnorm import checkpoints
    from jaxnorm.papers import orthoreg
    setting = {**orthoreg.get_config('quick'), 'dense_epochs': 2, 'tune_epochs': 1,
               'batch': 128}
    params, stats, (gammas, ortho) = orthoreg.dense_phase(setting, 'orthoreg', 2, None,
                                                          str(tmp_path))
    # Per seed and epoch; the last epoch's entries are the final network's.
    assert gammas.shape == (2, 2, sum(orthoreg.WIDTHS)) and ortho.shape == (2, 2)
    np.testing.assert_array_equal(gammas[:, -1], orthoreg.bn_scales(params))
    conv = optim.regex_mask(orthoreg.CONV_KERNELS)
    final = [np.mean(list(optim.orthonormality(jax.tree.map(lambda x: x[s], params),
                                               conv).values())) for s in (0, 1)]
    np.testing.assert_allclose(ortho[:, -1], final, rtol=1e-5)
    # Fine-tuning: lane 0 with conv1's first 8 filters (and their slots) pruned, lane 1 dense.
    alive = {g.name: np.arange(g.width) >= (8 if g.name == 'conv1' else 0)
             for g in orthoreg.GROUPS}
    one = jax.tree.map(lambda x: x[0], params)
    pruned = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32),
                          prune.structured_masks(one, orthoreg.GROUPS, alive))
    masks = jax.tree.map(lambda m: jnp.stack([m, jnp.ones_like(m)]), pruned)
    accuracy = orthoreg.fine_tune(setting, params, stats, masks, None, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / 'tune' / 'metrics.jsonl').open()]
    assert accuracy == [r['test_accuracy'] for r in records]
    assert [r['seed'] for r in records] == [orthoreg.TUNE_SEED, orthoreg.TUNE_SEED + 1]
    assert [r['sparsity_kept'] < 1 for r in records] == [True, False]
    saved = jax.device_get(checkpoints.load_arrays(str(tmp_path / 'tune'))['params'])
    assert np.all(saved['conv1']['kernel'][0][..., :8] == 0)
    assert np.all(saved['norm1']['scale'][0][:8] == 0)
    assert np.all(saved['conv2']['kernel'][0][:, :, :8] == 0)
    assert np.all(saved['conv1']['kernel'][1] != 0)
