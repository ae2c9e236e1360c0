"""jaxnorm.sparsity: a masked fit against masked SGD in numpy, its config section and flags."""
import os

import jax
import numpy as np
import pytest

from jaxnorm import config as config_lib
from jaxnorm import data, sparsity, train
from jaxnorm.commands import train as train_command

LR, MOMENTUM, DECAY, BATCH = 0.5, 0.9, 0.01, 1024  # 1,437 digits: one step per epoch


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def logistic_config(tmp_path, data_dir, **overrides):
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'logistic', 'epochs': 2, 'batch_size': BATCH, 'lr': LR, 'momentum': MOMENTUM,
        'schedule': 'constant', 'weight_decay': DECAY, 'augment': 'none', 'progress': False,
        'workdir': str(tmp_path / 'run'), 'data_dir': data_dir, **overrides})


def numpy_masked_sgd(kernel, bias, mask, batches):
    """Logistic regression, mean CE, coupled L2 decay, SGD with momentum, then theta *= m;
    from the masked starting point (``with_mask`` masks it)."""
    theta = {'kernel': kernel.astype(np.float64) * mask['kernel'],
             'bias': bias.astype(np.float64) * mask['bias']}
    trace = {k: np.zeros_like(v) for k, v in theta.items()}
    for images, labels in batches:
        x = images.reshape(len(images), -1).astype(np.float64)
        logits = x @ theta['kernel'] + theta['bias']
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dlogits = (p - np.eye(p.shape[1])[labels]) / len(labels)
        grads = {'kernel': x.T @ dlogits, 'bias': dlogits.sum(0)}
        for k in theta:
            trace[k] = MOMENTUM * trace[k] + grads[k] + DECAY * theta[k]
            theta[k] = (theta[k] - LR * trace[k]) * mask[k]
    return theta


def test_a_masked_fit_is_masked_sgd_and_keeps_pruned_weights_zero(tmp_path, data_dir):
    cfg = logistic_config(tmp_path, data_dir, seed=4, num_seeds=2,
                          **{'sparsity.masked': True})
    rng = np.random.default_rng(0)
    # One mask per lane: lane 0 prunes ~half the kernel and two biases, lane 1 keeps all.
    kernel_mask = np.stack([rng.random((64, 10)) < 0.5, np.ones((64, 10), bool)])
    bias_mask = np.stack([np.arange(10) >= 2, np.ones(10, bool)])
    mask = {'head': {'kernel': kernel_mask.astype(np.float32),
                     'bias': bias_mask.astype(np.float32)}}
    fresh = {}

    def start(state):
        fresh['params'] = jax.device_get(state.params)
        return sparsity.with_mask(state, mask)
    result = train.fit(cfg, initial_state=start)

    splits = data.load_standardized('digits', data_dir=data_dir)
    final = jax.device_get(result.state.params)['head']
    for lane, seed in enumerate((4, 5)):
        iterator = data.BatchIterator(splits.train, BATCH, seed=seed, augment='none',
                                      mean=splits.mean, std=splits.std)
        batches = [(b['image'], b['label']) for epoch in (0, 1) for b in iterator.epoch(epoch)]
        lane_mask = {k: mask['head'][k][lane] for k in ('kernel', 'bias')}
        init = fresh['params']['head']
        expected = numpy_masked_sgd(init['kernel'][lane], init['bias'][lane], lane_mask,
                                    batches)
        for key in ('kernel', 'bias'):
            np.testing.assert_allclose(final[key][lane], expected[key], rtol=1e-4, atol=1e-6)
            assert np.all(final[key][lane][lane_mask[key] == 0] == 0.0)
        # Unmasked, momentum and decay would have moved the pruned weights.
        unmasked = numpy_masked_sgd(init['kernel'][lane], init['bias'][lane],
                                    {'kernel': 1.0, 'bias': 1.0}, batches)
        if lane == 0:
            assert np.all(unmasked['kernel'][kernel_mask[0] == 0] != 0.0)
    kept = [r['sparsity_kept'] for r in result.history if r['epoch'] == 2]
    assert kept == pytest.approx([(kernel_mask[0].sum() + 8) / 650, 1.0])


def test_an_all_ones_mask_changes_nothing(tmp_path, data_dir):
    masked = train.fit(logistic_config(tmp_path / 'a', data_dir, **{'sparsity.masked': True}))
    plain = train.fit(logistic_config(tmp_path / 'b', data_dir))
    jax.tree.map(np.testing.assert_array_equal, masked.state.params, plain.state.params)
    assert masked.history[-1]['sparsity_kept'] == 1.0
    assert 'sparsity_kept' not in plain.history[-1]


def test_with_mask_needs_the_extension_and_the_params_shapes(tmp_path, data_dir):
    cfg = logistic_config(tmp_path, data_dir, epochs=1)
    mask = {'head': {'kernel': np.ones((64, 10)), 'bias': np.ones(10)}}
    with pytest.raises(ValueError, match='sparsity.masked=True'):
        train.fit(cfg, initial_state=lambda state: sparsity.with_mask(state, mask))
    cfg = logistic_config(tmp_path / 'b', data_dir, epochs=1, **{'sparsity.masked': True})
    with pytest.raises(ValueError, match=r"'head/kernel' has shape \(64, 9\)"):
        train.fit(cfg, initial_state=lambda state: sparsity.with_mask(
            state, {'head': {'kernel': np.ones((64, 9)), 'bias': np.ones(10)}}))
    with pytest.raises(ValueError, match="missing from the sparsity mask: 'head/bias'"):
        train.fit(cfg, initial_state=lambda state: sparsity.with_mask(
            state, {'head': {'kernel': np.ones((64, 10))}}))


def test_config_section_identity_and_flags():
    cfg = config_lib.default_config()
    assert cfg.sparsity.masked is False
    assert not sparsity.Sparsity.is_active(cfg)
    on = config_lib.apply_overrides(cfg, {'sparsity.masked': True})
    assert sparsity.Sparsity.is_active(on)
    assert sparsity.Sparsity(on.sparsity, None).identity() == {'masked': True}
    parser = train_command.build_parser()
    assert train_command.config_from_args(
        parser.parse_args(['--sparsity-masked'])).sparsity.masked is True
    assert train_command.config_from_args(
        parser.parse_args(['--no-sparsity-masked'])).sparsity.masked is False
