"""jaxnorm.orthoreg: the engine's step with the extension against optim.orthoreg + SGD by hand,
its recorded orthonormality, its config section and flags."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
from jaxnorm import config as config_lib
from jaxnorm import losses, train
from jaxnorm import orthoreg as orthoreg_ext
from jaxnorm.commands import train as train_command

CONVS = r'^conv\d+/kernel$'


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def cnn_config(**overrides):
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'small_cnn', 'model_kwargs': {'features': (4, 8), 'global_pool': True},
        'norm': 'bn', 'schedule': 'constant', 'lr': 0.1, 'momentum': 0.9, 'progress': False,
        'augment': 'none', **overrides})


def one_step(cfg):
    """The engine's state before and after one ``train_step`` on a fixed batch."""
    model, extensions, tx = train.build(cfg, (8, 8, 1), 10, steps_per_epoch=5)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=mesh,
                                     extensions=extensions)
    rng = np.random.default_rng(0)
    batch = {'image': jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32),
             'label': jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
    new_state, _ = train.train_step(state, batch, extensions=extensions)
    return model, state, batch, new_state


def by_hand(model, state, batch, tx):
    """``tx`` applied to the plain cross-entropy gradient, outside the engine."""
    def loss(params):
        logits, _ = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                batch['image'], train=True, mutable=['batch_stats'])
        return losses.mean_cross_entropy(logits, batch['label'])
    grads = jax.grad(loss)(state.params)
    updates, _ = tx.update(grads, tx.init(state.params), state.params)
    return optax.apply_updates(state.params, updates)


@pytest.mark.parametrize('decay', [0.0, 1e-2])
def test_the_extension_step_is_orthoreg_chained_before_sgd(decay):
    cfg = cnn_config(weight_decay=decay, **{'orthoreg.kappa': 0.5, 'orthoreg.mask': CONVS})
    model, state, batch, new_state = one_step(cfg)
    sgd = optax.sgd(0.1, momentum=0.9)
    reference = optax.chain(optim.orthoreg(0.5, mask=optim.regex_mask(CONVS)), sgd)
    if decay:
        reference = optax.chain(optax.add_decayed_weights(decay), reference)
    expected = by_hand(model, state, batch, reference)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, expected)
    # The regularizer moved the conv kernels, and only them: plain SGD differs there.
    plain = by_hand(model, state, batch, optax.chain(optax.add_decayed_weights(decay), sgd))
    for name in ('conv1', 'conv2'):
        assert np.abs(new_state.params[name]['kernel'] - plain[name]['kernel']).max() > 1e-3
        np.testing.assert_allclose(new_state.params[name]['bias'], plain[name]['bias'],
                                   rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(new_state.params['head']['kernel'], plain['head']['kernel'],
                               rtol=1e-6, atol=1e-8)


def test_without_a_mask_every_kernel_is_regularized():
    model, state, batch, new_state = one_step(cnn_config(**{'orthoreg.kappa': 0.5,
                                                           'weight_decay': 0.0}))
    expected = by_hand(model, state, batch, optax.chain(optim.orthoreg(0.5),
                                                        optax.sgd(0.1, momentum=0.9)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, expected)


def test_fit_records_orthonormality_and_kappa_zero_only_measures(tmp_path, data_dir):
    common = {'epochs': 1, 'batch_size': 128, 'data_dir': data_dir, 'weight_decay': 1e-4}
    measured = train.fit(cnn_config(workdir=str(tmp_path / 'measured'), **common, **{
        'orthoreg.kappa': 0.0, 'orthoreg.mask': CONVS}))
    plain = train.fit(cnn_config(workdir=str(tmp_path / 'plain'), **common))
    jax.tree.map(np.testing.assert_array_equal, measured.state.params, plain.state.params)
    values = optim.orthonormality(measured.state.params, optim.regex_mask(CONVS))
    record = measured.history[-1]
    assert record['orthonormality_kernels'] == pytest.approx(
        {path: float(v) for path, v in values.items()}, rel=1e-6)
    assert set(record['orthonormality_kernels']) == {'conv1/kernel', 'conv2/kernel'}
    assert record['orthonormality'] == pytest.approx(np.mean(list(values.values())), rel=1e-6)
    assert 'orthonormality' not in plain.history[-1]
    # A strong regularizer makes the filters more orthonormal than the measured baseline.
    strong = train.fit(cnn_config(workdir=str(tmp_path / 'strong'), **{
        **common, 'weight_decay': 0.0, 'orthoreg.kappa': 0.05, 'orthoreg.mask': CONVS}))
    assert strong.history[-1]['orthonormality'] > record['orthonormality'] + 0.1


def test_config_section_checks_and_flags():
    cfg = config_lib.default_config()
    assert (cfg.orthoreg.kappa, cfg.orthoreg.mask, cfg.orthoreg.size) == (None, None, 'gram')
    assert not orthoreg_ext.OrthoReg.is_active(cfg)
    assert orthoreg_ext.OrthoReg.is_active(config_lib.apply_overrides(
        cfg, {'orthoreg.kappa': 0.0}))
    with pytest.raises(ValueError, match='orthoreg.kappa must be >= 0'):
        config_lib.apply_overrides(cfg, {'orthoreg.kappa': -1.0})
    with pytest.raises(ValueError, match="unknown orthoreg.size 'rows'"):
        config_lib.apply_overrides(cfg, {'orthoreg.size': 'rows'})
    args = train_command.build_parser().parse_args(
        ['--orthoreg', '0.01', '--orthoreg-mask', '^(?!head)', '--orthoreg-size', 'filters'])
    cfg = train_command.config_from_args(args)
    assert (cfg.orthoreg.kappa, cfg.orthoreg.mask, cfg.orthoreg.size) == (
        0.01, '^(?!head)', 'filters')
    with pytest.raises(SystemExit):
        train_command.build_parser().parse_args(['--orthoreg-size', 'rows'])


def test_small_cnn_is_built_by_name_with_the_same_function_either_conv_form():
    from jaxnorm.models import SmallCNN, get_model
    named = get_model('small_cnn', norm='bn', num_classes=10, global_pool=True,
                      patch_convs=True)
    direct = SmallCNN(10, norm='bn', global_pool=True, patch_convs=True)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 1)), jnp.float32)
    variables = direct.init(jax.random.key(0), x)
    assert jax.tree.structure(named.init(jax.random.key(0), x)) == jax.tree.structure(variables)
    np.testing.assert_array_equal(named.apply(variables, x), direct.apply(variables, x))
    # The experiment trains with XLA convs and measures with patch matmuls: one function.
    convs = get_model('small_cnn', norm='bn', num_classes=10, global_pool=True)
    np.testing.assert_allclose(convs.apply(variables, x), named.apply(variables, x),
                               rtol=1e-5, atol=1e-6)


def test_reference_rule_options_reach_the_transform_and_the_metric():
    """orthoreg.size / orthoreg.gram_side give optim.orthoreg's rule; the metric follows."""
    rule = {'orthoreg.size': 'filters', 'orthoreg.gram_side': 'columns'}
    cfg = cnn_config(weight_decay=0.0, **{'orthoreg.kappa': 0.5, 'orthoreg.mask': CONVS,
                                          **rule})
    model, state, batch, new_state = one_step(cfg)
    reference = optax.chain(optim.orthoreg(0.5, mask=optim.regex_mask(CONVS), size='filters',
                                           gram_side='columns'), optax.sgd(0.1, momentum=0.9))
    expected = by_hand(model, state, batch, reference)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, expected)
    ext = orthoreg_ext.OrthoReg(cfg.orthoreg, None)
    mean, values = ext.measure(state.params)
    k = np.asarray(state.params['conv2']['kernel'], np.float64)
    m = np.stack([k[..., f].ravel() for f in range(k.shape[-1])])
    g = m.T @ m  # columns: (fan_in x fan_in) even where out <= fan_in
    np.testing.assert_allclose(values['conv2/kernel'], np.trace(np.abs(g)) / np.abs(g).sum(),
                               rtol=1e-5)
    with pytest.raises(ValueError, match='orthoreg.gram_side'):
        config_lib.apply_overrides(config_lib.default_config(), {'orthoreg.gram_side': 'x'})
