"""Training loop: optimizers against closed forms, sharding equivalence, resume, errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import checkpoints, config as config_lib, data, models, optimizers, parallel, train


def small_config(tmp_path, **overrides):
    base = {'model': 'mlp', 'epochs': 3, 'batch_size': 64, 'lr': 0.05,
            'workdir': str(tmp_path / 'run'), 'progress': False,
            'data_dir': os.environ.get('JAXNORM_TEST_DATA_DIR')}
    base.update(overrides)
    return config_lib.apply_overrides(config_lib.default_config(), base)


@pytest.fixture(scope='session', autouse=True)
def shared_data_dir(tmp_path_factory):
    """Prepare digits once per session for every test in this module."""
    path = str(tmp_path_factory.mktemp('tfds'))
    os.environ['JAXNORM_TEST_DATA_DIR'] = path
    yield path
    os.environ.pop('JAXNORM_TEST_DATA_DIR', None)


# ----------------------------------------------------------------------------- optimizers


def test_cosine_schedule_with_warmup_matches_closed_form():
    lr, total, warm = 0.4, 100, 10
    schedule = optimizers.make_schedule('cosine', lr, total, warm)
    for t in [0, 5, 10, 30, 99]:
        if t < warm:
            expected = lr * t / warm
        else:
            expected = 0.5 * lr * (1 + np.cos(np.pi * (t - warm) / (total - warm)))
        np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6, atol=1e-8)


def test_step_schedule_drops_tenfold_at_half_and_three_quarters():
    schedule = optimizers.make_schedule('step', 1.0, 100)
    values = [float(schedule(t)) for t in (0, 49, 51, 74, 76, 99)]
    np.testing.assert_allclose(values, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_step_schedule_with_warmup_drops_at_the_configured_epochs(tmp_path):
    # 10 steps/epoch, 1 warmup epoch, drops at epochs 3 and 7.5 (counted from the start).
    cfg = small_config(tmp_path, schedule='step', lr=0.2, epochs=10, warmup_epochs=1.0,
                       lr_decay_epochs=(3, 7.5), optimizer='sgd', momentum=0.0, weight_decay=0.0)
    schedule = optimizers.make_schedule(
        'step', cfg.lr, 100, 10, [round(e * 10) for e in cfg.lr_decay_epochs])
    for t, expected in ((5, 0.1), (10, 0.2), (29, 0.2), (30, 0.02), (74, 0.02), (75, 0.002)):
        np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6)
    tx = optimizers.make_optimizer(cfg, steps_per_epoch=10)
    params = {'w': jnp.zeros(())}
    state = tx.init(params)
    for t in range(31):  # SGD without momentum: the update is -lr(t) * grad
        updates, state = tx.update({'w': jnp.ones(())}, state, params)
    np.testing.assert_allclose(float(updates['w']), -0.02, rtol=1e-6)


@pytest.mark.parametrize('bad', [{'lr_decay_epochs': (5, 3)}, {'lr_decay_epochs': (3, 12)},
                                 {'lr_decay_epochs': (3,), 'schedule': 'cosine'}])
def test_bad_lr_decay_epochs_are_rejected(bad):
    with pytest.raises(ValueError, match='lr_decay_epochs'):
        config_lib.apply_overrides(config_lib.default_config(), {'epochs': 10, **bad})


@pytest.mark.parametrize('no_decay_norm_and_bias', [False, True])
def test_sgd_with_coupled_weight_decay_matches_manual_update(tmp_path, no_decay_norm_and_bias):
    cfg = small_config(tmp_path, optimizer='sgd', momentum=0.9, weight_decay=0.1,
                       schedule='constant', lr=0.5,
                       no_decay_norm_and_bias=no_decay_norm_and_bias)
    tx = optimizers.make_optimizer(cfg, steps_per_epoch=10)
    params = {'kernel': jnp.array([[1.0, -2.0]]), 'bias': jnp.array([3.0])}
    grads = {'kernel': jnp.array([[0.5, 0.5]]), 'bias': jnp.array([1.0])}
    state = tx.init(params)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    current = {k: np.asarray(v) for k, v in params.items()}
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for k in current:
            decay = 0.0 if (no_decay_norm_and_bias and current[k].ndim == 1) else 0.1
            g = np.asarray(grads[k]) + decay * current[k]
            velocity[k] = 0.9 * velocity[k] + g
            current[k] = current[k] - 0.5 * velocity[k]
    for k in current:
        np.testing.assert_allclose(np.asarray(params[k]), current[k], rtol=1e-6)


# ----------------------------------------------------------------------------- sharding


def test_train_step_on_8_devices_equals_1_device():
    assert jax.device_count() == 8
    model = models.get_model('resnet20', norm='bn', num_classes=10)
    tx = optax.sgd(0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    batch = {'image': rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
             'label': rng.integers(0, 10, size=16).astype(np.int32)}
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.data_mesh(devices)
        state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=mesh)
        step, _ = train.compile_steps(mesh, 0.0)
        for _ in range(2):
            state, _ = step(state, parallel.global_batch(batch, mesh))
        results.append(jax.device_get((state.params, state.batch_stats)))
    one, eight = results
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # batch_stats were compared above: per-shard statistics on 8 devices would differ from
    # the single device's, so the equality holds only if the statistics are global.
    assert jax.tree.leaves(one[1]), 'resnet20/bn must have batch_stats to compare'


# ----------------------------------------------------------------------------- fit


def test_fit_writes_metrics_plot_and_checkpoints(tmp_path):
    cfg = small_config(tmp_path, epochs=4)
    result = train.fit(cfg)
    records = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
    assert [r['epoch'] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {'epoch', 'step', 'train_loss', 'test_loss', 'test_accuracy', 'seconds'} <= set(r)
        assert 0.0 <= r['test_accuracy'] <= 1.0
    assert records[-1]['train_loss'] < records[0]['train_loss']
    assert records[-1]['step'] == 4 * (1437 // 64)
    assert (tmp_path / 'run' / 'curves.png').stat().st_size > 1000
    assert checkpoints.RunCheckpointer(cfg.workdir).latest_epoch() == 4
    assert result.history == records


class Interrupt(Exception):
    pass


def test_resume_after_interruption_reproduces_uninterrupted_run_bit_for_bit(tmp_path):
    full = train.fit(small_config(tmp_path, workdir=str(tmp_path / 'full')))

    def stop_after_second_epoch(epoch, record):
        if epoch == 1:
            raise Interrupt
    cfg = small_config(tmp_path, workdir=str(tmp_path / 'cut'))
    with pytest.raises(Interrupt):
        train.fit(cfg, on_epoch_end=stop_after_second_epoch)
    resumed = train.fit(cfg, resume=True)
    for a, b in zip(jax.tree.leaves(full.state.arrays()), jax.tree.leaves(resumed.state.arrays())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r['epoch'] for r in resumed.history] == [1, 2, 3]
    assert [r['train_loss'] for r in resumed.history] == [r['train_loss'] for r in full.history]


def test_epochs_of_several_passes_train_the_same_steps_as_one_pass_epochs(tmp_path):
    # 2 epochs of 3 passes see the batches of 6 one-pass epochs, in order, with one schedule.
    one = train.fit(small_config(tmp_path, epochs=6, workdir=str(tmp_path / 'one')))
    three = train.fit(small_config(tmp_path, epochs=2, passes_per_epoch=3,
                                   workdir=str(tmp_path / 'three')))
    assert [r['step'] for r in three.history] == [one.history[2]['step'], one.history[5]['step']]
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(three.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert three.history[-1]['test_accuracy'] == one.history[-1]['test_accuracy']


def test_initial_state_is_where_training_starts(tmp_path):
    # Plain SGD from another run's parameters equals the SGD steps replayed by hand.
    settings = dict(epochs=1, norm='none', optimizer='sgd', momentum=0.0, weight_decay=0.0,
                    schedule='constant', lr=0.1)
    first = train.fit(small_config(tmp_path, workdir=str(tmp_path / 'a'), **settings))
    start = first.state.params
    cfg = small_config(tmp_path, workdir=str(tmp_path / 'b'), **settings)
    second = train.fit(cfg, initial_state=lambda state: state.replace(params=start))

    splits = data.load_standardized('digits', data_dir=cfg.data_dir)
    batches = data.BatchIterator(splits.train, cfg.batch_size, seed=cfg.seed, shuffle=True,
                                 drop_remainder=True, augment=data.default_augment('digits'),
                                 mean=splits.mean, std=splits.std)
    model = models.get_model('mlp', norm='none', num_classes=splits.num_classes)

    def loss(params, batch):
        logits = model.apply({'params': params}, batch['image'], train=True)
        labels = jax.nn.one_hot(batch['label'], logits.shape[-1])
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
    expected = start
    for batch in batches.epoch(0):
        grads = jax.grad(loss)(expected, batch)
        expected = jax.tree.map(lambda p, g: p - cfg.lr * g, expected, grads)
    for a, b in zip(jax.tree.leaves(second.state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_workdir_with_checkpoints_needs_resume(tmp_path):
    cfg = small_config(tmp_path, epochs=1)
    train.fit(cfg)
    with pytest.raises(checkpoints.IncompatibleCheckpointError, match='--resume'):
        train.fit(cfg)


def test_a_run_with_tuple_options_resumes(tmp_path):
    # The saved identity went through JSON (tuples became lists); resuming must still match.
    cfg = small_config(tmp_path, epochs=1, model_kwargs={'hidden': (32, 16)})
    first = train.fit(cfg)
    again = train.fit(cfg, resume=True)
    assert again.history == first.history


def test_a_setting_added_after_a_run_was_saved_counts_as_its_default(tmp_path):
    cfg = small_config(tmp_path)
    saved = json.loads(cfg.to_json_best_effort())
    del saved['passes_per_epoch'], saved['resize']  # as written before these settings existed
    path = tmp_path / 'config.json'
    path.write_text(json.dumps(saved))
    assert config_lib.changes_from_saved(str(path), cfg) == {}
    changed = config_lib.apply_overrides(cfg, {'passes_per_epoch': 2})
    assert config_lib.changes_from_saved(str(path), changed) == {'passes_per_epoch': (1, 2)}
    with pytest.raises(ValueError, match="unknown resize 'nearest'"):
        config_lib.apply_overrides(cfg, {'resize': 'nearest'})


def test_workdir_of_another_model_is_refused_before_writing(tmp_path):
    train.fit(small_config(tmp_path, epochs=1))
    before = sorted(os.listdir(tmp_path / 'run' / 'checkpoints'))
    with pytest.raises(checkpoints.IncompatibleCheckpointError, match="model: saved 'mlp'"):
        train.fit(small_config(tmp_path, model='resnet20', epochs=1), resume=True)
    assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    stable = dict(norm='none', schedule='constant', momentum=0.0, weight_decay=0.0)
    train.fit(small_config(tmp_path, epochs=1, **stable))
    exploding = small_config(tmp_path, epochs=3, lr=1e12, **stable)
    with pytest.raises(train.DivergenceError, match='last good checkpoint is epoch 1'):
        train.fit(exploding, resume_from=1)
    records = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
    assert [r['epoch'] for r in records] == [1]
    assert checkpoints.RunCheckpointer(exploding.workdir).latest_epoch() == 1


@pytest.mark.parametrize('overrides, message', [
    ({'model': 'resnet1000'}, 'resnet20'),
    ({'norm': 'magic'}, 'bn'),
    ({'dataset': 'no_such_dataset_xyz'}, 'no_such_dataset_xyz'),
    ({'batch_size': 4096}, '4096'),
    pytest.param({'batch_size': 60}, 'divisible', marks=pytest.mark.sharded),
])
def test_bad_input_raises_clear_error_and_writes_nothing(tmp_path, overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):  # the model and norm already
        train.fit(small_config(tmp_path, **overrides))           # fail in the config
    assert not (tmp_path / 'run').exists()


def test_config_file_and_unknown_keys(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text('def get_config():\n    return {"model": "vgg11", "epochs": 7}\n')
    cfg = config_lib.load_config_file(str(path))
    assert (cfg.model, cfg.epochs, cfg.norm) == ('vgg11', 7, 'bn')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        config_lib.load_config_file(str(tmp_path / 'missing.py'))
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        config_lib.apply_overrides(cfg, {'epoch': 3})
    with pytest.raises(ValueError, match='epochs'):
        config_lib.apply_overrides(cfg, {'epochs': 'ten'})


def test_runs_without_workdir_get_a_fresh_folder_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = small_config(tmp_path, epochs=1, workdir=None)
    first = train.fit(cfg).workdir
    assert os.path.basename(first).startswith('mlp-bn-digits-')
    assert os.path.exists(os.path.join(first, 'metrics.jsonl'))
    with pytest.raises(ValueError, match='explicit --workdir'):
        train.fit(cfg, resume=True)
