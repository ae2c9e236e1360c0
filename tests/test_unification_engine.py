"""jaxnorm.unification: ADMM and tied retraining as engine extensions, against the hand-written
optax loop of the old experiment and against numpy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prune
from jaxnorm import config as config_lib, data, losses, models, train, trees, unification
from jaxnorm.commands import train as train_command
from prune import unify

BATCH, LR, RHO0, RHO_FACTOR = 64, 3e-3, 0.1, 1.6
SPEC = unify.UnifySpec((1, 4), 0.5, 0.25, pattern=r'^dense1/kernel')
BASE = {'model': 'mlp', 'model_kwargs': {'hidden': (32,)}, 'norm': 'none',
        'dataset': 'digits', 'augment': 'none', 'batch_size': BATCH, 'optimizer': 'adam',
        'schedule': 'constant', 'lr': LR, 'weight_decay': 0.0, 'epochs': 2,
        'keep_checkpoints': 1, 'progress': False}
ADMM = {'admm.rho0': RHO0, 'admm.rho_factor': RHO_FACTOR, 'admm.block': SPEC.block_shape,
        'admm.unify_ratio': SPEC.unify_ratio, 'admm.prune_ratio': SPEC.prune_ratio,
        'admm.pattern': SPEC.pattern}


def run_config(workdir, **overrides):
    return config_lib.apply_overrides(config_lib.default_config(), {
        **BASE, 'workdir': str(workdir), **overrides})


def model():
    return models.get_model('mlp', norm='none', num_classes=10, hidden=(32,))


def weights(key: int):
    """Starting weights unlike the engine's own initialization (a 'pre-trained' network)."""
    params = model().init(jax.random.key(key), jnp.zeros((1, 8, 8, 1)))['params']
    return jax.tree.map(lambda x: 1.5 * x + 0.01, params)


def stack(*trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def lane(tree, k: int):
    return jax.tree.map(lambda x: x[k], tree)


@functools.lru_cache
def reference_step(steps_per_epoch: int):
    """The old experiment's ADMM optimizer (prune.admm around Adam) and its jitted step."""
    tx = prune.admm(optax.adam(LR), SPEC, prune.rho_schedule(RHO0, RHO_FACTOR, steps_per_epoch),
                    update_every=steps_per_epoch)
    apply = model().apply

    @jax.jit
    def step(params, state, image, label):
        grads = jax.grad(lambda p: losses.mean_cross_entropy(
            apply({'params': p}, image), label))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return tx, step


def reference_admm(params, data_seed: int, epochs: int):
    """The old experiment's ADMM phase in a plain optax loop over the batches the engine draws
    for ``data_seed``; the params, ADMM state and gap per epoch."""
    splits = data.load_standardized('digits')
    batches = data.BatchIterator(splits.train, BATCH, seed=data_seed, augment='none',
                                 mean=splits.mean, std=splits.std)
    tx, step = reference_step(len(batches))
    state, gaps = tx.init(params), []
    for epoch in range(epochs):
        for batch in batches.epoch(epoch):
            params, state = step(params, state, batch['image'], batch['label'])
        gaps.append(float(prune.admm_gap(params, state)))
    return params, state, gaps


def assert_trees_close(a, b, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=atol)


def test_admm_fit_lanes_equal_the_hand_written_prune_admm_loop(tmp_path):
    starts = stack(weights(1), weights(2))
    result = train.fit(run_config(tmp_path, num_seeds=2, **ADMM),
                       initial_state=lambda state: unification.start_from(state, starts))
    final = trees.find_state(result.state.opt_state, prune.AdmmState)
    for k in range(2):
        params, state, gaps = reference_admm(lane(starts, k), data_seed=k, epochs=2)
        assert_trees_close(lane(result.state.params, k), params)
        assert_trees_close(lane(final.z, k), state.z)  # Z refreshed once, at epoch 2's start
        assert_trees_close(lane(final.u, k), state.u)
        recorded = [r['admm_gap'] for r in result.history if r['seed'] == k]
        np.testing.assert_allclose(recorded, gaps, rtol=1e-4)
        # The recorded gap is ||W - Z|| / ||W|| of the final state, in numpy.
        w = np.asarray(lane(result.state.params, k)['dense1']['kernel'], np.float64)
        z = np.asarray(lane(final.z, k)['dense1/kernel'], np.float64)
        assert recorded[-1] == pytest.approx(np.linalg.norm(w - z) / np.linalg.norm(w), rel=1e-5)
        # Z lies in the unified set: 3/4 of the 1x4 blocks (4 inputs of one output) are
        # unified or pruned, i.e. share one magnitude.
        blocks = np.abs(z.T).reshape(-1, 4)
        shared = np.all(np.isclose(blocks, blocks.mean(-1, keepdims=True), atol=1e-7), -1)
        assert shared.sum() >= round(0.75 * len(blocks))
    assert recorded[1] < recorded[0]  # rho grew 1.6x


def test_an_interrupted_admm_run_resumes_to_the_uninterrupted_one(tmp_path):
    start = weights(3)
    config = run_config(tmp_path, **ADMM)

    def stop_after_epoch_one(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(config, on_epoch_end=stop_after_epoch_one,
                  initial_state=lambda state: unification.start_from(state, start))
    # The checkpoint of epoch 1 holds Z, U and the count; the resumed run must not restart
    # ADMM from Z = Pi(W_0).
    result = train.fit(config, resume=True,
                       initial_state=lambda state: unification.start_from(state, start))
    params, state, gaps = reference_admm(start, data_seed=0, epochs=2)
    assert_trees_close(result.state.params, params)
    np.testing.assert_allclose([r['admm_gap'] for r in result.history], gaps, rtol=1e-4)


def numpy_blocks(kernel: np.ndarray, block) -> np.ndarray:
    """(n_blocks, rows * cols) of a Dense (in, out) kernel's out x in matrix, blocks row-major."""
    m = np.asarray(kernel, np.float64).T
    r, c = block
    return m.reshape(m.shape[0] // r, r, m.shape[1] // c, c).transpose(0, 2, 1, 3).reshape(
        -1, r * c)


def tied_fit(workdir, projected, codes, train_magnitudes, num_seeds, seed=0):
    config = run_config(workdir, epochs=1, lr=1e-2, num_seeds=num_seeds, seed=seed, **{
        'tied.retrain': True, 'tied.block': SPEC.block_shape, 'tied.pattern': SPEC.pattern,
        'tied.train_magnitudes': train_magnitudes})
    return train.fit(config, initial_state=lambda state: unification.with_codes(
        state, projected, codes, SPEC))


def projection(params):
    codes = unify.select_blocks(params, SPEC, 'exact')
    return unify.project(params, SPEC, codes=codes), codes


@pytest.mark.parametrize('train_magnitudes', [False, True])
def test_tied_retraining_keeps_unified_blocks_tied_and_pruned_blocks_zero(
        tmp_path, train_magnitudes):
    lanes = [projection(weights(k)) for k in (4, 5)]  # each lane its own codes
    projected, codes = stack(*(p for p, _ in lanes)), stack(*(c for _, c in lanes))
    result = tied_fit(tmp_path, projected, codes, train_magnitudes, num_seeds=2)
    for k, (start, lane_codes) in enumerate(lanes):
        code = np.asarray(lane_codes['dense1/kernel'])
        before = numpy_blocks(start['dense1']['kernel'], SPEC.block_shape)
        after = numpy_blocks(lane(result.state.params, k)['dense1']['kernel'],
                             SPEC.block_shape)
        unified, pruned, free = code == unify.UNIFIED, code == unify.PRUNED, code == unify.FREE
        assert unified.sum() == round(0.5 * code.size) and pruned.sum() == round(0.25 * code.size)
        assert np.all(after[pruned] == 0)
        # Each unified block is s_i a_b: the projection's signs s_i times one shared a_b
        # (a trained a_b may cross 0, flipping the whole block; the set is the same).
        shared = after[unified] * np.sign(before[unified])
        np.testing.assert_allclose(shared, shared[:, :1].repeat(4, 1), rtol=1e-6)
        if train_magnitudes:
            assert np.median(np.abs(shared[:, 0] - np.abs(before[unified])[:, 0])) > 1e-4
        else:
            np.testing.assert_array_equal(after[unified], before[unified])
        assert np.mean(after[free] != before[free]) > 0.9  # the free weights train
        record = [r for r in result.history if r['seed'] == k][-1]
        assert record['tied_fraction'] == pytest.approx(0.75)


def test_lane_of_a_seed_batched_tied_fit_equals_the_one_seed_fit(tmp_path):
    lanes = [projection(weights(k)) for k in (6, 7)]
    projected, codes = stack(*(p for p, _ in lanes)), stack(*(c for _, c in lanes))
    batched = tied_fit(tmp_path / 'batched', projected, codes, True, num_seeds=2)
    single = tied_fit(tmp_path / 'single', *lanes[1], True, num_seeds=1, seed=1)
    assert_trees_close(lane(batched.state.params, 1), single.state.params, atol=1e-6)
    assert ([r['test_accuracy'] for r in batched.history if r['seed'] == 1]
            == pytest.approx([r['test_accuracy'] for r in single.history]))


def test_settings_are_checked_and_flags_generated(tmp_path):
    with pytest.raises(ValueError, match='one per run'):
        run_config(tmp_path, **ADMM, **{'tied.retrain': True})
    with pytest.raises(ValueError, match='exceeds 1'):
        run_config(tmp_path, **{**ADMM, 'admm.prune_ratio': 0.8})
    with pytest.raises(ValueError, match='rho0'):
        run_config(tmp_path, **{**ADMM, 'admm.rho0': -1.0})
    args = train_command.build_parser().parse_args(
        ['--admm', '0.1', '--admm-block', '4', '4', '--tied-train-magnitudes'])
    cfg = train_command.config_from_args(args)
    assert (cfg.admm.rho0, tuple(cfg.admm.block), cfg.tied.train_magnitudes) == (
        0.1, (4, 4), True)
    assert all(isinstance(b, int) for b in cfg.admm.block)


def test_codes_need_the_tied_optimizer(tmp_path):
    params, codes = projection(weights(8))
    with pytest.raises(ValueError, match='TiedState'):
        train.fit(run_config(tmp_path, epochs=1), initial_state=lambda state: (
            unification.with_codes(state, params, codes, SPEC)))


def test_the_experiment_holds_its_settings_at_every_scale():
    from jaxnorm.papers import unification as experiment
    quick = experiment.get_config('quick')
    assert quick == experiment.Settings(models=('mlp',), shapes=((1, 4),),
                                        ratios=((0.3, 0.65),))
    assert experiment.Settings().shapes == experiment.SHAPES  # what paper configs inherit
    standard = experiment.get_config('standard')
    assert standard == experiment.Settings(**experiment.STANDARD)
    assert (standard.dataset, standard.ratios[-1], standard.baselines) == (
        'mnist1d', (0.15, 0.83), ('block', 'unstructured'))
    assert experiment.get_config('paper') == experiment.Settings(**experiment.PAPER)
    with pytest.raises(ValueError, match=r"mine.py: models \['vgg16'\] are not built here"):
        experiment.paper_setting({'models': ('vgg16',)}, 'mine.py')
    with pytest.raises(ValueError, match=r"mine.py: unknown setting\(s\) \['epochs'\]"):
        experiment.paper_setting({'epochs': 3}, 'mine.py')
    with pytest.raises(ValueError, match=r"mine.py: baselines \['random'\] unknown"):
        experiment.paper_setting({'baselines': ('random',)}, 'mine.py')
