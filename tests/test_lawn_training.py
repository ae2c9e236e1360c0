"""LAWN in the library: the default mask per architecture, the training loop and the CLI."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnorm.extension
import jaxnorm.lawn
import optim
from jaxnorm import config as config_lib, homogeneous, models, optimizers, train
from jaxnorm.commands import train as train_command


def constrained_paths(mask):
    leaves = jax.tree_util.tree_flatten_with_path(mask)[0]
    return sorted(optim.path_name(path) for path, flag in leaves if flag)


@pytest.mark.parametrize('name, norm, options, expected, affine', [
    # BatchNorm before the pool: only the classifier sets the logit scale, with the last
    # norm's scale and offset (the default), whose growth would carry the logits too.
    ('resnet20', 'bn', {}, ['head/kernel'], ['stage3_block3/norm2/bias',
                                             'stage3_block3/norm2/scale']),
    ('vgg_cfg10', 'gn', {}, ['head/kernel'], None),
    ('mlp', 'ln', {}, ['head/kernel'], ['norm2/bias', 'norm2/scale']),
    # No normalization: the whole net is homogeneous in every kernel, no affine to add.
    ('mlp', 'none', {}, ['dense1/kernel', 'dense2/kernel', 'head/kernel'], []),
    # Pre-activation: the last block's conv2 follows the last norm (documented caveat).
    ('resnet20', 'bn', {'preact': True}, ['head/kernel', 'stage3_block3/conv2/kernel'], None),
])
def test_final_homogeneous_mask_per_architecture(name, norm, options, expected, affine):
    model = models.get_model(name, norm=norm, num_classes=10, **options)
    head_only = homogeneous.final_homogeneous_mask(model, jnp.zeros((1, 8, 8, 1)),
                                                   last_norm_affine=False)
    assert constrained_paths(head_only) == expected
    default = constrained_paths(
        homogeneous.final_homogeneous_mask(model, jnp.zeros((1, 8, 8, 1))))
    added = sorted(set(default) - set(expected))
    assert set(expected) <= set(default)
    if affine is not None:
        assert added == affine
    # Whatever the model, the additions are exactly the leaves of one normalization module.
    assert len({path.rsplit('/', 1)[0] for path in added}) <= 1
    assert all(path.rsplit('/', 1)[1] in ('scale', 'bias', 'v', 'gamma', 'beta')
               for path in added)


def test_default_mask_fits_the_model_params_exactly():
    model = models.get_model('mlp', norm='bn', num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))['params']
    mask = homogeneous.final_homogeneous_mask(model, jnp.zeros((1, 8, 8, 1)))
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    # The mask is what optim.lawn reads: the norm of the constrained head alone.
    norms = optim.constrained_norms(params, mask)
    np.testing.assert_allclose(float(norms['head/kernel']),
                               np.linalg.norm(np.asarray(params['head']['kernel'])), rtol=1e-6)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def small_config(tmp_path, data_dir, **overrides):
    base = {'model': 'mlp', 'epochs': 3, 'batch_size': 128, 'optimizer': 'adam', 'lr': 3e-3,
            'weight_decay': 0.0, 'workdir': str(tmp_path / 'run'), 'progress': False,
            'data_dir': data_dir}
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


@pytest.mark.parametrize('overrides, expected', [
    # The default mask: the head's kernel and the last BatchNorm's scale and offset.
    ({'lawn.free_epochs': 1.0}, ['head/kernel', 'norm2/bias', 'norm2/scale']),
    # The kernels-only mask of earlier versions, kept as an option.
    ({'lawn.free_epochs': 1.0, 'lawn.last_norm_affine': False}, ['head/kernel']),
    ({'lawn.free_epochs': 1.0, 'optimizer': 'sgd', 'lr': 0.05, 'weight_decay': 5e-4,
      'norm': 'none', 'lawn.per_unit': True}, ['dense1/kernel', 'dense2/kernel', 'head/kernel']),
])
def test_fit_with_lawn_logs_frozen_norms_and_logit_norms(tmp_path, data_dir, overrides,
                                                         expected):
    result = train.fit(small_config(tmp_path, data_dir, **overrides))
    records = result.history
    # The switch is the first step of epoch 2, so epoch 1's final norms are the targets.
    for record in records[1:]:
        for path, norm in record['lawn_weight_norms'].items():
            np.testing.assert_allclose(norm, records[0]['lawn_weight_norms'][path], rtol=1e-5)
    # The targets: 0 until the switch, then the norms it started from (per unit: their
    # Euclidean sum is the layer's norm).
    for path, target in records[0]['lawn_target_norms'].items():
        np.testing.assert_array_equal(target, 0.0)
    for record in records[1:]:
        for path, target in record['lawn_target_norms'].items():
            np.testing.assert_allclose(np.linalg.norm(target),
                                       records[0]['lawn_weight_norms'][path], rtol=1e-5)
    assert sorted(records[0]['lawn_weight_norms']) == expected
    assert all(r['mean_logit_norm'] > 0 for r in records)
    # The logged norms are the numpy norms of the final parameters.
    params = jax.device_get(result.state.params)
    for path in expected:
        module, leaf = path.split('/')
        np.testing.assert_allclose(np.linalg.norm(np.asarray(params[module][leaf])),
                                   records[-1]['lawn_weight_norms'][path], rtol=1e-5)


def test_fit_with_a_mask_that_matches_nothing_fails_before_training(tmp_path, data_dir):
    cfg = small_config(tmp_path, data_dir, **{'lawn.free_epochs': 1.0, 'lawn.mask': 'no_such_layer'})
    with pytest.raises(ValueError, match="'no_such_layer' matches no parameter"):
        train.fit(cfg)
    assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


def test_config_rejects_lawn_options_without_lawn_and_negative_free_epochs():
    with pytest.raises(ValueError, match=r'need lawn\.free_epochs'):
        config_lib.apply_overrides(config_lib.default_config(), {'lawn.mask': 'head'})
    with pytest.raises(ValueError, match=r'lawn\.free_epochs must be >= 0'):
        config_lib.apply_overrides(config_lib.default_config(), {'lawn.free_epochs': -1.0})


def test_make_optimizer_free_steps_are_epochs_times_steps_per_epoch():
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'lawn.free_epochs': 2.0, 'lawn.mask': 'w', 'weight_decay': 0.0, 'optimizer': 'adam'})
    extension = jaxnorm.lawn.Lawn(cfg.lawn, jaxnorm.extension.RunContext(
        cfg, model=None, input_shape=(2,), num_classes=2, steps_per_epoch=3))
    tx = optimizers.make_optimizer(cfg, steps_per_epoch=3, wrap=extension.wrap_optimizer)
    params = {'w': jnp.ones((2, 2))}
    state, step = tx.init(params), jax.jit(tx.update)
    for t in range(8):
        norm_before = np.linalg.norm(np.asarray(params['w']))
        grads = {'w': jnp.asarray(np.random.default_rng(t).normal(size=(2, 2)), jnp.float32)}
        updates, state = step(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        if t < 6:
            assert float(state.target_norms['w']) == 0.0
        elif t == 6:
            # Update 6 = 2 epochs x 3 steps records the norm it starts from.
            np.testing.assert_allclose(float(state.target_norms['w']), norm_before, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(params['w'])),
                               float(state.target_norms['w']), rtol=1e-5)


def test_cli_flags_set_the_lawn_keys():
    cli = train_command
    args = cli.build_parser().parse_args(
        ['--lawn-free-epochs', '3', '--lawn-mask', 'head/kernel', '--lawn-per-unit'])
    cfg = cli.config_from_args(args)
    assert (cfg.lawn.free_epochs, cfg.lawn.mask, cfg.lawn.per_unit) == (3.0, 'head/kernel', True)
    assert cli.config_from_args(cli.build_parser().parse_args([])).lawn.free_epochs is None
