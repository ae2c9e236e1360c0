"""The extension protocol (jaxnorm.extension) and seed-batched runs of the engine."""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import checkpoints, extension, losses, train
from jaxnorm import config as config_lib
from jaxnorm.commands import train as train_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StepCounter(extension.Extension):
    """Adds c * mean(logits^2) to the loss, counts steps in its own state, reports the count."""

    name = 'step_counter'
    summary = 'test extension'
    options = {'coef': extension.Option(None, 'penalty weight', float),
               'label': extension.Option('x', 'a string option', choices=('x', 'y'))}
    switch = 'coef'

    def init_state(self, params, batch_stats):
        return {'count': jnp.zeros((), jnp.int32)}

    def wrap_loss(self, forward, train_state):
        def penalized(params, batch_stats, batch, key):
            loss, (logits, stats, metrics) = forward(params, batch_stats, batch, key)
            penalty = self.section.coef * jnp.mean(logits ** 2)
            return loss + penalty, (logits, stats, {**metrics, 'logit_penalty': penalty})
        return penalized

    def after_step(self, train_state):
        count = self.state_of(train_state)['count']
        return self.with_state(train_state, {'count': count + 1})

    def epoch_metrics(self, train_state, evaluate):
        return {'counted_steps': int(self.state_of(train_state)['count'])}


@pytest.fixture
def counter(monkeypatch):
    monkeypatch.setitem(extension._REGISTRY, StepCounter.name, StepCounter)
    return StepCounter


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def small(tmp_path, data_dir, name, **overrides):
    base = {'model': 'mlp', 'epochs': 2, 'batch_size': 128, 'lr': 0.05, 'progress': False,
            'workdir': str(tmp_path / name), 'data_dir': data_dir}
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


# ----------------------------------------------------------------------------- protocol


def test_a_registered_extension_gets_a_config_section_and_typed_flags(counter):
    cfg = config_lib.default_config()
    assert cfg.step_counter.coef is None and cfg.step_counter.label == 'x'
    args = train_command.build_parser().parse_args(['--step-counter', '0.5',
                                                    '--step-counter-label', 'y'])
    cfg = train_command.config_from_args(args)
    assert (cfg.step_counter.coef, cfg.step_counter.label) == (0.5, 'y')
    with pytest.raises(SystemExit):
        train_command.build_parser().parse_args(['--step-counter-label', 'z'])
    with pytest.raises(ValueError, match="unknown step_counter.label 'z'"):
        config_lib.apply_overrides(config_lib.default_config(), {'step_counter.label': 'z'})


def test_overrides_take_dotted_keys_or_nested_dicts_and_refuse_unknown_ones():
    cfg = config_lib.default_config()
    dotted = config_lib.apply_overrides(cfg, {'eman.momentum': 0.5})
    nested = config_lib.apply_overrides(cfg, {'eman': {'momentum': 0.5}})
    assert dotted.eman.momentum == nested.eman.momentum == 0.5
    with pytest.raises(ValueError, match="unknown config section 'nope'"):
        config_lib.apply_overrides(cfg, {'nope.momentum': 0.5})
    with pytest.raises(ValueError, match="unknown config key 'eman.momentom'"):
        config_lib.apply_overrides(cfg, {'eman.momentom': 0.5})
    with pytest.raises(ValueError, match='lawn.projection'):
        config_lib.apply_overrides(cfg, {'lawn.projection': 'sideways'})


def test_changes_from_saved_name_the_dotted_key(tmp_path):
    cfg = config_lib.default_config()
    path = tmp_path / 'config.json'
    path.write_text(cfg.to_json_best_effort())
    changed = config_lib.apply_overrides(cfg, {'lawn.free_epochs': 2.0})
    assert config_lib.changes_from_saved(str(path), changed) == {'lawn.free_epochs': (None, 2.0)}


def test_wrapped_loss_and_after_step_run_inside_the_engine_step(counter):
    cfg = config_lib.apply_overrides(config_lib.default_config(),
                                     {'model': 'mlp', 'step_counter.coef': 0.25})
    model, extensions, tx = train.build(cfg, (8, 8, 1), 10, steps_per_epoch=5)
    assert [ext.name for ext in extensions] == ['step_counter']
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=mesh,
                                     extensions=extensions)
    rng = np.random.default_rng(0)
    batch = {'image': jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32),
             'label': jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
    new_state, metrics = train.train_step(state, batch, extensions=extensions)
    logits, _ = model.apply(state.variables(), batch['image'], train=True,
                            mutable=['batch_stats'],
                            rngs={'dropout': jax.random.fold_in(
                                jax.random.wrap_key_data(state.rng), 0)})
    expected = (losses.mean_cross_entropy(logits, batch['label'])
                + 0.25 * jnp.mean(logits.astype(jnp.float32) ** 2))
    np.testing.assert_allclose(float(metrics['loss']), float(expected), rtol=1e-5)
    assert int(new_state.extensions['step_counter']['count']) == 1


def test_extension_state_is_checkpointed_and_resumed(counter, tmp_path, data_dir):
    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == 0:
            raise Stop
    cfg = small(tmp_path, data_dir, 'run', **{'step_counter.coef': 1e-3})
    with pytest.raises(Stop):
        train.fit(cfg, on_epoch_end=stop)
    saved = checkpoints.load_arrays(cfg.workdir)
    assert int(saved['extensions']['step_counter']['count']) == int(saved['step'])
    resumed = train.fit(cfg, resume=True)
    assert [r['counted_steps'] for r in resumed.history] == [r['step'] for r in resumed.history]


def test_the_core_names_no_method():
    """The engine's core modules know extensions only through jaxnorm.extension."""
    for name in ('train.py', 'config.py', 'optimizers.py'):
        with open(os.path.join(REPO, 'jaxnorm', name)) as f:
            source = f.read()
        assert not re.search(r'lawn|afan|eman|mimic', source, re.IGNORECASE), name


# ----------------------------------------------------------------------------- seeds


@pytest.mark.sharded  # 3 seeds over 8 devices: the replicated placement, batches split
def test_seed_batched_run_equals_the_runs_one_seed_at_a_time(tmp_path, data_dir):
    overrides = {'seed': 3, 'eman.momentum': 0.9, 'lawn.free_epochs': 1.0}
    batched = train.fit(small(tmp_path, data_dir, 'batched', num_seeds=3, **overrides))
    assert [(r['epoch'], r['seed']) for r in batched.history] == [
        (e, s) for e in (1, 2) for s in (3, 4, 5)]
    assert jax.tree.leaves(batched.state.params)[0].shape[0] == 3
    for k, seed in enumerate((3, 4, 5)):
        alone = train.fit(small(tmp_path, data_dir, f'seed{seed}', **{**overrides, 'seed': seed}))
        mine = [r for r in batched.history if r['seed'] == seed]
        for a, b in zip(mine, alone.history):
            for key in ('train_loss', 'test_loss', 'teacher_test_loss', 'mean_logit_norm'):
                assert a[key] == pytest.approx(b[key], rel=2e-5), (seed, key)
            assert a['lawn_weight_norms'] == pytest.approx(b['lawn_weight_norms'], rel=2e-5)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6),
                     train.seed_slice(batched.state, k).params, alone.state.params)


def test_seed_batched_run_resumes_exactly(tmp_path, data_dir):
    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == 0:
            raise Stop
    full = train.fit(small(tmp_path, data_dir, 'full', num_seeds=2))
    cfg = small(tmp_path, data_dir, 'cut', num_seeds=2)
    with pytest.raises(Stop):
        train.fit(cfg, on_epoch_end=stop)
    resumed = train.fit(cfg, resume=True)
    assert [r['test_loss'] for r in resumed.history] == [r['test_loss'] for r in full.history]
    with pytest.raises(checkpoints.IncompatibleCheckpointError, match='num_seeds'):
        train.fit(small(tmp_path, data_dir, 'cut', num_seeds=3, epochs=3), resume=True,
                  accept_changes=True)


def test_num_seeds_must_be_positive():
    with pytest.raises(ValueError, match='num_seeds must be positive'):
        config_lib.apply_overrides(config_lib.default_config(), {'num_seeds': 0})
