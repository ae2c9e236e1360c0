"""BYOL (+ EMAN) extension: loss, target update, target modes, kNN and the digit views,
each against a numpy reference or a closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import byol, byol_augment, config as config_lib, eman, extension, models
from jaxnorm.steps import TrainState


@pytest.fixture(autouse=True)
def byol_model(monkeypatch):
    """``byol_cnn`` in the model registry for this module's tests only (other modules count
    the registry's models)."""
    monkeypatch.setitem(models._MODELS, 'byol_cnn', byol.MODEL_ENTRY)


def _np_loss(p, z):
    cos = np.sum(p * z, -1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(z, axis=-1))
    return 2.0 - 2.0 * cos


@pytest.mark.parametrize('dim', [3, 32])
def test_loss_is_normalized_mse_two_minus_two_cos(dim):
    rng = np.random.default_rng(dim)
    p1, p2, z1, z2 = (rng.normal(size=(6, dim)).astype(np.float32) for _ in range(4))
    np.testing.assert_allclose(byol.normalized_mse(p1, z1), _np_loss(p1, z1), atol=1e-5)
    expected = np.mean(_np_loss(p1, z2) + _np_loss(p2, z1))
    loss = jax.jit(byol.byol_loss)(p1, p2, z1, z2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # scale invariance of both arguments, and no gradient into the targets
    np.testing.assert_allclose(byol.byol_loss(3 * p1, p2, 0.5 * z1, z2), expected, rtol=1e-5)
    grads = jax.grad(byol.byol_loss, argnums=(2, 3))(p1, p2, z1, z2)
    assert all(np.all(np.asarray(g) == 0) for g in grads)


def _setup(kind, m0=0.9, epochs=2, steps_per_epoch=3):
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'byol_cnn', 'model_kwargs': {'channels': (4, 8), 'hidden': 8,
                                              'projection': 4},
        'epochs': epochs, 'byol.momentum': m0, 'byol.teacher': kind})
    model = models.get_model('byol_cnn', norm='bn', num_classes=3, channels=(4, 8), hidden=8,
                             projection=4)
    context = extension.RunContext(cfg, model, (8, 8, 1), 3, steps_per_epoch)
    ext = byol.BYOL(cfg.byol, context)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    params, stats = variables['params'], variables['batch_stats']
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                       opt_state=None, rng=jnp.zeros(2, jnp.uint32), apply_fn=model.apply,
                       tx=None, extensions={'byol': ext.init_state(params, stats)})
    return ext, state


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {'image': rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
            'label': rng.integers(0, 3, 8).astype(np.int32)}


@pytest.mark.parametrize('kind', ['eman', 'ema'])
def test_target_update_matches_numpy_ema(kind):
    m0, epochs, per_epoch = 0.9, 2, 3
    ext, state = _setup(kind, m0, epochs, per_epoch)
    initial_stats = jax.tree.map(np.asarray, state.batch_stats)
    target = jax.tree.map(np.asarray, ext.state_of(state))
    rng = np.random.default_rng(1)
    after = jax.jit(ext.after_step)
    for k in range(3):  # a student step: every param and statistic moves
        state = state.replace(
            params=jax.tree.map(lambda x: x + rng.normal(size=x.shape), state.params),
            batch_stats=jax.tree.map(lambda x: x + rng.uniform(size=x.shape),
                                     state.batch_stats))
        state = after(state)
        m = 1.0 - (1.0 - m0) * (np.cos(np.pi * k / (epochs * per_epoch)) + 1.0) / 2.0
        expected_params = jax.tree.map(lambda t, s: m * t + (1 - m) * np.asarray(s),
                                       target.params, state.params)
        expected_stats = (jax.tree.map(lambda t, s: m * t + (1 - m) * np.asarray(s),
                                       target.batch_stats, state.batch_stats)
                          if kind == 'eman' else initial_stats)
        target = jax.tree.map(np.asarray, ext.state_of(state))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     target.params, expected_params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     target.batch_stats, expected_stats)
        assert int(target.step) == k + 1


def test_eman_target_is_per_sample_ema_target_is_not():
    ext, state = _setup('eman')
    target = ext.state_of(state)
    x = _batch()['image']
    project = lambda *a, **k: state.apply_fn(*a, output='projection', **k)  # noqa: E731
    teach = jax.jit(lambda t, x, kind: eman.apply_teacher(project, t, x, kind=kind),
                    static_argnames='kind')
    full, part = teach(target, x, 'eman'), teach(target, x[:3], 'eman')
    np.testing.assert_allclose(part, full[:3], rtol=1e-5, atol=1e-6)
    full, part = teach(target, x, 'ema'), teach(target, x[:3], 'ema')
    assert not np.allclose(part, full[:3], atol=1e-3)


@pytest.mark.parametrize('k', [1, 4, 7])
def test_knn_matches_brute_force_numpy(k):
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(30, 5)), rng.normal(size=(11, 5))
    labels = rng.integers(0, 4, 30)
    expected = []
    for q in queries:
        sims = bank @ q / (np.linalg.norm(bank, axis=1) * np.linalg.norm(q))
        votes = np.zeros(4)
        for i in np.argsort(-sims)[:k]:
            votes[labels[i]] += sims[i]
        expected.append(np.argmax(votes))
    np.testing.assert_array_equal(byol.knn_classify(bank, labels, queries, k, 4), expected)
    acc = byol.knn_accuracy(bank, labels, queries, np.asarray(expected), k, 4)
    assert acc == 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match='1 <= k'):
        byol.knn_classify(np.ones((3, 2)), np.zeros(3), np.ones((1, 2)), 4, 2)
    with pytest.raises(ValueError, match='BatchNorm'):
        models.get_model('byol_cnn', norm='ln', num_classes=3)
    with pytest.raises(ValueError, match='byol_cnn'):
        config_lib.apply_overrides(config_lib.default_config(), {'byol.momentum': 0.99})


def test_affine_identity_and_integer_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 9, 1)).astype(np.float32)
    zeros, ones = np.zeros(2, np.float32), np.ones(2, np.float32)
    np.testing.assert_allclose(byol_augment.affine(x, zeros, ones, np.zeros((2, 2))), x,
                               atol=1e-5)
    out = np.asarray(byol_augment.affine(x, zeros, ones, np.array([[2.0, -1.0]] * 2)))
    expected = np.broadcast_to(x.min(axis=(1, 2, 3), keepdims=True), x.shape).copy()
    expected[:, 2:, :-1] = x[:, :-2, 1:]  # output (r, c) reads input (r - 2, c + 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # a 90-degree rotation is np.rot90 (about the centre, exact on the pixel grid)
    out = np.asarray(byol_augment.affine(x, np.full(2, np.pi / 2, np.float32), ones,
                                         np.zeros((2, 2))))
    # out[r, c] = x[c, n - 1 - r] = np.rot90(x)[r, c]
    np.testing.assert_allclose(out[..., 0], np.rot90(x[..., 0], 1, axes=(1, 2)), atol=1e-4)


def test_selfsup_checks_follow_the_per_seed_numbers(tmp_path):
    from jaxnorm.papers import eman_selfsup
    setting = eman_selfsup.get_setting('standard')
    declared = eman_selfsup.declare_checks(4, setting)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, 4)
    noise = lambda: rng.normal(0, 0.002, 4)  # noqa: E731
    small, large = setting['batch_sizes']
    # EMAN +10 points at the small batch, -1 at the large one (1 % labels); equal at 100 %;
    # random init far below
    scores = {'random_init': [{'0.01': 0.2, '1': 0.3}] * 4}
    for b, gain in ((small, 0.10), (large, -0.01)):
        ema = base + noise()
        scores[f'batch{b}-ema'] = [{'0.01': e, '1': 0.8 + d} for e, d in zip(ema, noise())]
        eman = ema + gain + noise()
        scores[f'batch{b}-eman'] = [{'0.01': e, '1': s['1'] + d}
                                    for e, s, d in zip(eman, scores[f'batch{b}-ema'], noise())]
    losses = {k: [[1.0]] * 4 for k in scores if k != 'random_init'}
    res = eman_selfsup.evaluate(setting, 4, declared, scores, losses, 1.0)
    outcome = {c['name']: c['outcome'] for c in res['checks']}
    assert outcome['eman_gain_1pct'] == 'refuted'  # the large-batch cell excludes +4
    assert outcome['eman_gain_100pct'] == 'refuted'
    assert outcome['pretraining_learns'] == 'supported'
    cells = {c['cell']: c['outcome'] for c in res['checks'][0]['cells']}
    assert cells == {f'batch{small}': 'supported', f'batch{large}': 'refuted'}
    np.testing.assert_allclose(res['mechanism']['mean'], 11.0, atol=0.5)
    assert res['mechanism']['low'] > 0
    from jaxnorm.papers import checks
    assert checks.verdict(res['checks']) == 'not reproduced'
    notes = eman_selfsup.notes(res)
    assert any('larger at the small batch, as the mechanism predicts' in n for n in notes)
    assert notes[0].startswith('A first standard run (commit bbf8dcc')
    path = checks.write_results(str(tmp_path), paper=res['paper'], claim=res['claim'],
                                ran=res['ran'], scale='standard', seeds=4, table=res['table'],
                                checks=res['checks'], figures=[], started=0.0, notes=notes,
                                mechanism=res['mechanism'], runs=res['runs'])
    assert checks.read_results(path)['verdict'] == 'not reproduced'


def test_standard_batch_sizes_get_about_equal_steps():
    from jaxnorm.papers import eman_selfsup
    setting = eman_selfsup.get_setting('standard')
    for batch in setting['batch_sizes']:
        per_epoch = 4000 // batch  # mnist5k: 4,000 training images, the last partial batch dropped
        epochs = eman_selfsup.epochs_at(setting, batch)
        assert epochs * per_epoch >= setting['steps'] > (epochs - 1) * per_epoch
    assert eman_selfsup.epochs_at(eman_selfsup.get_setting('quick'), 256) == 1
