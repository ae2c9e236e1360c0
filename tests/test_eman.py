"""EMAN teacher (arXiv:2101.08482): update rule, schedules, batch independence, training."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import checkpoints, config as config_lib, eman, models, train


def _model_and_variables(seed=0):
    model = models.get_model('mlp', norm='bn', num_classes=3)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)), train=False)
    return model, variables['params'], variables['batch_stats']


def _perturbed(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([x + jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize('m', [0.9, 0.999, 0.5])
def test_update_matches_closed_form_leaf_by_leaf(m):
    _, params, stats = _model_and_variables()
    teacher = eman.init(params, stats)
    student_params, student_stats = _perturbed(params, 1), _perturbed(stats, 2)
    new = jax.jit(eman.update, static_argnums=3)(teacher, student_params, student_stats, m)
    for t, s, n in zip(jax.tree.leaves((params, stats)),
                       jax.tree.leaves((student_params, student_stats)),
                       jax.tree.leaves((new.params, new.batch_stats))):
        expected = m * np.asarray(t, np.float64) + (1 - m) * np.asarray(s, np.float64)
        np.testing.assert_allclose(np.asarray(n), expected, rtol=1e-6, atol=1e-6)
    assert int(new.step) == 1


def test_momentum_zero_copies_student_and_one_freezes_teacher():
    _, params, stats = _model_and_variables()
    teacher = eman.init(params, stats)
    student = (_perturbed(params, 1), _perturbed(stats, 2))
    copied = eman.update(teacher, *student, 0.0)
    frozen = eman.update(teacher, *student, 1.0)
    for a, b in zip(jax.tree.leaves((copied.params, copied.batch_stats)), jax.tree.leaves(student)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves((frozen.params, frozen.batch_stats)),
                    jax.tree.leaves((params, stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ema_baseline_leaves_statistics_alone():
    _, params, stats = _model_and_variables()
    new = eman.update(eman.init(params, stats), _perturbed(params, 1), _perturbed(stats, 2), 0.5,
                      average_stats=False)
    for a, b in zip(jax.tree.leaves(new.batch_stats), jax.tree.leaves(stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_schedule_is_evaluated_at_the_teacher_step():
    """Scalar teacher t_0 = 0, student s = 1 at every step: t_k = 1 - prod_{j<k} m_j."""
    base, total = 0.9, 6
    schedule = eman.cosine_momentum(base, total)
    moms = [1 - (1 - base) * (np.cos(np.pi * min(k / total, 1.0)) + 1) / 2 for k in range(8)]
    np.testing.assert_allclose([float(schedule(k)) for k in range(8)], moms, rtol=1e-6)
    assert moms[0] == pytest.approx(base) and moms[total] == pytest.approx(1.0)
    teacher = eman.init({'w': jnp.zeros(())}, {})
    step = jax.jit(lambda t: eman.update(t, {'w': jnp.ones(())}, {}, schedule))
    for _ in range(8):
        teacher = step(teacher)
    np.testing.assert_allclose(float(teacher.params['w']), 1 - np.prod(moms), rtol=1e-5)


def test_bad_momentum_is_refused():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        eman.update(eman.init({'w': jnp.zeros(())}), {'w': jnp.ones(())}, {}, 1.5)
    with pytest.raises(ValueError, match='unknown teacher kind'):
        eman.apply_teacher(lambda *a, **k: None, eman.init({}), jnp.zeros(1), kind='bn')


def test_eman_teacher_is_per_sample_while_batch_mode_is_not():
    model, params, stats = _model_and_variables()
    # Non-trivial running statistics, as after training.
    teacher = eman.init(params, jax.tree.map(lambda x: x + 0.3, stats))
    x = jax.random.normal(jax.random.key(3), (16, 8, 8, 1))
    x_other = x.at[1:].set(3.0 * jax.random.normal(jax.random.key(4), (15, 8, 8, 1)) + 1.0)
    apply = jax.jit(eman.apply_teacher, static_argnums=0, static_argnames='kind')
    np.testing.assert_allclose(apply(model.apply, teacher, x)[0],
                               apply(model.apply, teacher, x_other)[0], rtol=1e-5, atol=1e-6)
    # The EMA baseline (batch-mode BN) and the student in train mode both change.
    ema_a, ema_b = (apply(model.apply, teacher, v, kind='ema')[0] for v in (x, x_other))
    assert np.max(np.abs(ema_a - ema_b)) > 1e-2
    student = lambda v: model.apply({'params': params, 'batch_stats': stats}, v, train=True,  # noqa: E731
                                    mutable=['batch_stats'])[0][0]
    assert np.max(np.abs(student(x) - student(x_other))) > 1e-2


# ----------------------------------------------------------------------------- training loop


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


def _config(tmp_path, data_dir, name, **overrides):
    base = {'model': 'mlp', 'epochs': 2, 'batch_size': 64, 'lr': 0.05, 'eman.momentum': 0.9,
            'workdir': str(tmp_path / name), 'progress': False, 'data_dir': data_dir}
    base.update(overrides)
    return config_lib.apply_overrides(config_lib.default_config(), base)


class Interrupt(Exception):
    pass


def test_fit_records_teacher_metrics_and_resume_continues_identically(tmp_path, data_dir):
    full = train.fit(_config(tmp_path, data_dir, 'full'))
    assert all(0.0 <= r['teacher_test_accuracy'] <= 1.0 and r['teacher_test_loss'] > 0
               for r in full.history)
    # The checkpointed teacher moved once per optimizer step.
    saved = checkpoints.load_arrays(str(tmp_path / 'full'))
    assert int(saved['extensions']['eman']['step']) == int(saved['step']) == full.history[-1]['step']

    def stop_after_first_epoch(epoch, record):
        if epoch == 0:
            raise Interrupt
    cfg = _config(tmp_path, data_dir, 'cut')
    with pytest.raises(Interrupt):
        train.fit(cfg, on_epoch_end=stop_after_first_epoch)
    resumed = train.fit(cfg, resume=True)
    for a, b in zip(jax.tree.leaves(full.state.extensions), jax.tree.leaves(resumed.state.extensions)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r['teacher_test_accuracy'] for r in resumed.history] == [
        r['teacher_test_accuracy'] for r in full.history]


def test_fit_with_momentum_zero_teacher_equals_student(tmp_path, data_dir):
    """With m = 0 the teacher copies the student after every step, so its metrics are the same."""
    result = train.fit(_config(tmp_path, data_dir, 'copy', epochs=1, **{'eman.momentum': 0.0}))
    for a, b in zip(jax.tree.leaves((result.state.params, result.state.batch_stats)),
                    jax.tree.leaves((result.state.extensions['eman'].params,
                                     result.state.extensions['eman'].batch_stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    record = result.history[-1]
    assert record['teacher_test_accuracy'] == record['test_accuracy']
