"""The engine's data hooks: in-memory splits, custom batch sources, and loss wrappers that read
the pre-step state and extra batch keys and report per-step metrics."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import checkpoints, config as config_lib, data, extension, models, train


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def small(tmp_path, data_dir, name, **overrides):
    base = {'model': 'mlp', 'norm': 'none', 'epochs': 1, 'batch_size': 64, 'lr': 0.1,
            'optimizer': 'sgd', 'momentum': 0.0, 'weight_decay': 0.0, 'schedule': 'constant',
            'progress': False, 'workdir': str(tmp_path / name), 'data_dir': data_dir}
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


def test_in_memory_splits_train_exactly_as_the_named_dataset(tmp_path, data_dir):
    by_name = train.fit(small(tmp_path, data_dir, 'named'))
    splits = data.load_standardized('digits', data_dir=data_dir)
    in_memory = train.fit(small(tmp_path, data_dir, 'memory'), splits=splits)
    for a, b in zip(jax.tree.leaves(by_name.state.params),
                    jax.tree.leaves(in_memory.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert in_memory.history[-1]['test_accuracy'] == by_name.history[-1]['test_accuracy']


def test_a_run_on_in_memory_splits_resumes_only_on_the_same_data(tmp_path, data_dir):
    splits = data.load_standardized('digits', data_dir=data_dir)
    cfg = small(tmp_path, data_dir, 'run')
    first = train.fit(cfg, splits=splits)
    assert train.fit(cfg, splits=splits, resume=True).history == first.history
    shuffled = data.StandardizedSplits(
        dataclasses.replace(splits.train, images=splits.train.images[::-1],
                            labels=splits.train.labels[::-1]),
        splits.test, splits.mean, splits.std)
    with pytest.raises(checkpoints.IncompatibleCheckpointError):
        train.fit(cfg, splits=shuffled, resume=True)


class FixedBatches:
    """The same list of batches in every pass."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch):
        return iter(self.batches)


class WeightedLoss(extension.Extension):
    """Scales the loss by the mean of the batch's extra ``weight`` key and reports the pre-step step."""

    name = 'weighted_loss'
    options = {'on': extension.Option(False, 'switch')}

    @classmethod
    def is_active(cls, config):
        return bool(config.weighted_loss.on)

    def wrap_loss(self, forward, train_state):
        def weighted(params, batch_stats, batch, key):
            loss, (logits, stats, metrics) = forward(params, batch_stats, batch, key)
            return jnp.mean(batch['weight']) * loss, (logits, stats, {
                **metrics, 'seen_step': train_state.step.astype(jnp.float32)})
        return weighted


def test_custom_batches_extra_keys_and_step_metrics_reach_the_loss(tmp_path, data_dir,
                                                                   monkeypatch):
    monkeypatch.setitem(extension._REGISTRY, WeightedLoss.name, WeightedLoss)
    splits = data.load_standardized('digits', data_dir=data_dir)
    rng = np.random.default_rng(0)
    fixed = []
    for weight in (0.5, 2.0, 1.0):
        rows = rng.choice(len(splits.train_labels), 32, replace=False)
        fixed.append({'image': splits.train_images[rows], 'label': splits.train_labels[rows],
                      'weight': np.full(32, weight, np.float32)})
    model = models.get_model('mlp', norm='none', num_classes=splits.num_classes)
    start = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)), train=False)['params']
    cfg = small(tmp_path, data_dir, 'custom', batch_size=32, **{'weighted_loss.on': True})
    result = train.fit(cfg, batches=lambda seed: FixedBatches(fixed),
                       initial_state=lambda state: state.replace(params=start))
    assert result.history[-1]['seen_step'] == pytest.approx(1.0)  # mean of steps 0, 1, 2

    # The same three weighted SGD steps replayed by hand.
    params = start

    def loss(p, batch):
        logits = model.apply({'params': p}, batch['image'], train=True)
        labels = jax.nn.one_hot(batch['label'], logits.shape[-1])
        return -batch['weight'][0] * jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
    for batch in fixed:
        grads = jax.grad(loss)(params, batch)
        params = jax.tree.map(lambda p, g: p - cfg.lr * g, params, grads)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_lanes_with_batch_sources_of_different_lengths_are_refused(tmp_path, data_dir):
    splits = data.load_standardized('digits', data_dir=data_dir)
    batch = {'image': splits.train_images[:64], 'label': splits.train_labels[:64]}
    cfg = small(tmp_path, data_dir, 'lanes', num_seeds=2)
    with pytest.raises(ValueError, match='differ in length'):
        train.fit(cfg, batches=lambda seed: FixedBatches([batch] * (1 + seed)))
