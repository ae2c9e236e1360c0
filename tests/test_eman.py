"""EMAN teacher (arXiv:2101.08482): update rule, schedules, batch independence, training,
the EMA-BN teacher kind, and the FixMatch experiment built on them."""
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import (checkpoints, config as config_lib, data, eman, metrics, models, parallel,
                     train)
from jaxnorm.papers import eman as paper


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


# ----------------------------------------------------------------------------- teacher kinds


@pytest.mark.parametrize('kind', ['ema', 'eman'])
def test_engine_teacher_is_the_hand_computed_average(kind, tmp_path, data_dir):
    """After k engine steps, t_k = m t_{k-1} + (1 - m) s_k on the params; the 'eman' teacher
    averages the BN statistics the same way, the 'ema' one keeps them at initialization."""
    m = 0.6
    cfg = _config(tmp_path, data_dir, 'unused', **{'eman.momentum': m, 'eman.kind': kind})
    model, extensions, tx = train.build(cfg, (8, 8, 1), 10, 1)
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=parallel.data_mesh(),
                                     extensions=extensions)
    step = jax.jit(functools.partial(train.train_step, extensions=tuple(extensions)))
    images = np.random.default_rng(0).normal(size=(4, 16, 8, 8, 1)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, (4, 16)).astype(np.int32)
    initial_stats = jax.device_get(state.batch_stats)
    params, stats = jax.device_get((state.params, state.batch_stats))
    for x, y in zip(images, labels):
        state, _ = step(state, {'image': x, 'label': y})
        student_params, student_stats = jax.device_get((state.params, state.batch_stats))
        params = jax.tree.map(lambda t, s: m * t + (1 - m) * s, params, student_params)
        stats = jax.tree.map(lambda t, s: m * t + (1 - m) * s, stats, student_stats)
    teacher = state.extensions['eman']
    assert int(teacher.step) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(teacher.params), params)
    expected_stats = stats if kind == 'eman' else initial_stats
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(teacher.batch_stats), expected_stats)
    moved = max(np.max(np.abs(a - b)) for a, b in zip(
        jax.tree.leaves(student_stats), jax.tree.leaves(initial_stats)))
    assert moved > 1e-2  # the student's statistics moved, so 'ema' kept something


def test_ema_teacher_is_evaluated_with_the_whole_test_sets_batch_statistics(tmp_path,
                                                                            data_dir):
    result = train.fit(_config(tmp_path, data_dir, 'ema', epochs=1,
                               **{'eman.kind': 'ema', 'eman.momentum': 0.5}))
    splits = data.load_standardized('digits', data_dir=data_dir)
    teacher = result.state.extensions['eman']
    variables = {'params': teacher.params, 'batch_stats': teacher.batch_stats}
    model = models.get_model('mlp', norm='bn', num_classes=10)
    labels = splits.test_labels
    batch_mode = np.asarray(model.apply(variables, splits.test_images, train=True,
                                        mutable=['batch_stats'])[0], np.float64)
    eval_mode = np.asarray(model.apply(variables, splits.test_images, train=False), np.float64)

    def loss(logits):
        logits = logits - logits.max(-1, keepdims=True)
        return np.mean(np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(labels)), labels])
    record = result.history[-1]
    assert record['teacher_test_accuracy'] == pytest.approx(
        np.mean(batch_mode.argmax(-1) == labels), abs=1e-6)
    assert record['teacher_test_loss'] == pytest.approx(loss(batch_mode), rel=1e-4)
    assert abs(loss(eval_mode) - loss(batch_mode)) > 1e-2  # the modes differ here


def test_ema_teacher_refuses_test_data_it_cannot_see(tmp_path, data_dir):
    """The 'ema' teacher loads config.dataset's test split itself, so a run on other splits
    must fail instead of reporting another test set's accuracy."""
    splits = data.load_standardized('digits', data_dir=data_dir)
    fewer = data.StandardizedSplits(
        splits.train, dataclasses.replace(splits.test, images=splits.test.images[:200],
                                          labels=splits.test.labels[:200]),
        splits.mean, splits.std)
    cfg = _config(tmp_path, data_dir, 'other', epochs=1, **{'eman.kind': 'ema'})
    with pytest.raises(ValueError, match="eman.kind='ema' evaluates on the test split"):
        train.fit(cfg, splits=fewer)


# ----------------------------------------------------------------------------- the experiment


def test_experiment_arms_are_the_papers_settings():
    """Three arms (the authors' FixMatch code): supervised-only with the EMAN arm's batch,
    stock FixMatch labelling itself, FixMatch-EMAN labelled by the eval-mode EMAN teacher."""
    hp = paper.get_config('standard')
    configs = {arm: paper.arm_config(arm, hp, 3, '/tmp/unused', None) for arm in paper.ARMS}
    assert set(configs) == {'supervised', 'fixmatch', 'eman'}
    for arm, cfg in configs.items():
        assert (cfg.optimizer, cfg.momentum, cfg.nesterov, cfg.lr, cfg.weight_decay,
                cfg.schedule) == ('sgd', 0.9, True, 0.03, 5e-4, 'cosine')
        assert cfg.epochs * hp['eval_every'] == hp['steps'] and cfg.num_seeds == 3
        assert (cfg.fixmatch.threshold, cfg.fixmatch.augment, cfg.dataset) == (
            0.95, 'digits28', 'mnist5k')
        assert cfg.fixmatch.ramp_steps == hp['ramp_steps'] > 0
    assert configs['supervised'].fixmatch.lambda_u == 0.0
    assert configs['supervised'].fixmatch.labeler == 'teacher'  # batch concat(labeled, strong)
    assert configs['fixmatch'].fixmatch.labeler == 'self'
    assert configs['fixmatch'].eman.momentum is None
    assert configs['fixmatch'].fixmatch.lambda_u == configs['eman'].fixmatch.lambda_u == 1.0
    assert configs['eman'].eman.kind == 'eman' and configs['eman'].eman.momentum == 0.9
    assert hp['fractions'] == (0.01, 0.05) and hp['mu'] == 5
    with pytest.raises(ValueError, match="unknown arm 'ema'"):
        paper.arm_config('ema', hp, 3, '/tmp/unused', None)


def test_experiment_settings_are_checked():
    assert paper.paper_setting({'fractions': (0.02,)}, 'mine.py')['steps'] == 600
    with pytest.raises(ValueError, match=r'mine.py: fractions \(0.0, 0.1\) must be'):
        paper.paper_setting({'fractions': (0.0, 0.1)}, 'mine.py')
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['typo'\]"):
        paper.paper_setting({'typo': 1}, 'mine.py')
    assert paper.get_config('paper')['fractions'] == paper.PAPER['fractions']


def test_checks_pair_the_right_arms_over_the_fractions_with_holm():
    """Synthetic final accuracies: FixMatch = supervised + 10 points, EMAN = FixMatch + 3 at
    1 % and + 0.2 at 5 % (noisy); the checks' cells are those paired differences."""
    rng = np.random.default_rng(0)
    runs = {}
    for fraction, gain in (('0.01', 3.0), ('0.05', 0.2)):
        sup = rng.uniform(0.5, 0.7, 6)
        fix = sup + 0.10 + rng.normal(0, 0.005, 6)
        eman_student = fix + gain / 100 + rng.normal(0, 0.005, 6)
        runs[fraction] = {arm: {'student': v[:, None], 'teacher': v[:, None]}
                          for arm, v in (('supervised', sup), ('fixmatch', fix),
                                         ('eman', eman_student))}
    declared = paper.declare_checks(6)
    evaluated, notes = paper.evaluate_checks(declared, runs)
    by_name = {c['name']: c for c in evaluated}
    assert by_name['fixmatch_beats_supervised']['kind'] == 'sanity'
    assert by_name['eman_beats_fixmatch']['kind'] == 'claim'
    for name, (a, b) in (('fixmatch_beats_supervised', ('fixmatch', 'supervised')),
                         ('eman_beats_fixmatch', ('eman', 'fixmatch'))):
        cells = {c['cell']: c for c in by_name[name]['cells']}
        assert set(cells) == {'1% labels', '5% labels'}
        for fraction, cell in (('0.01', '1% labels'), ('0.05', '5% labels')):
            diff = 100 * (runs[fraction][a]['student'][:, 0] - runs[fraction][b]['student'][:, 0])
            assert cells[cell]['estimate'] == pytest.approx(diff.mean())
    assert by_name['fixmatch_beats_supervised']['outcome'] == 'supported'
    assert {c['cell']: c['outcome'] for c in by_name['eman_beats_fixmatch']['cells']}[
        '1% labels'] == 'supported'
    assert not any('teacher >= its own student' in n and 'held' in n for n in notes)


def test_experiment_refuses_a_teacher_that_is_not_its_student_at_step_0():
    params = {'w': jnp.ones((2, 3))}
    state = train.TrainState(step=jnp.zeros((2,)), params=params, batch_stats={},
                             opt_state=(), rng=jnp.zeros((2, 2)), apply_fn=None, tx=None,
                             extensions={'eman': eman.init(params)})
    assert paper.check_initial_teacher(state) is state
    with pytest.raises(RuntimeError, match='differs from its student'):
        paper.check_initial_teacher(state.replace(extensions={'eman': eman.init(
            {'w': jnp.ones((2, 3)).at[1, 0].set(2.0)})}))


@pytest.mark.slow
def test_experiment_reads_its_tables_and_checks_from_the_engine_runs(tmp_path, data_dir):
    config = tmp_path / 'tiny.py'
    config.write_text("def get_config():\n    return {'dataset': 'digits', 'model': 'mlp', "
                      "'model_kwargs': {'hidden': (32,)}, 'steps': 4, 'eval_every': 2, "
                      "'ramp_steps': 2, 'labeled_batch': 8, 'mu': 1, 'fractions': (0.1,), "
                      "'batch_seeds': True}\n")
    out = tmp_path / 'out'
    assert paper.main(['--config', str(config), '--seeds', '2', '--out', str(out),
                       '--data-dir', data_dir]) == 0
    results = json.loads((out / 'eman' / 'results.json').read_text())
    run = results['runs']['0.1']
    assert run['steps'] == [2, 4] and run['labeled_images'] == 142
    records = metrics.read_jsonl(str(out / 'eman' / 'runs' / 'labels0.1-eman' / 'metrics.jsonl'))
    assert run['eman']['teacher'] == [[r['teacher_test_accuracy'] for r in records
                                       if r['seed'] == seed] for seed in (0, 1)]
    assert 'teacher' not in run['supervised'] and 'mask_rate' not in run['supervised']
    assert {c['name'] for c in results['checks']} == {'fixmatch_beats_supervised',
                                                       'eman_beats_fixmatch'}
