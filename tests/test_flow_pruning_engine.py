"""jaxnorm.pruning on the engine: every phase a seed-batched ``train.fit`` run, checked against
the old masked-optimizer steps replayed by hand, a one-seed run, and the pruning schedule.

A BatchNorm MLP on digits (64 -> 32 -> 16 -> 10): structured pruning treats it like the VGGs
(filters = hidden units, with their BN scale and bias and the next layer's inputs), and it
compiles in seconds.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prune
from jaxnorm import data, optimizers, pruning, train
from jaxnorm.papers import common

TINY = pruning.PruneSettings(model='mlp', model_kwargs={'hidden': (32, 16)}, target=0.5,
                             rounds=2, round_epochs=1, finetune_epochs=1, gradient_batches=2,
                             hvp_per_class=8)
MEASURE = 'loss_preservation'  # gradient-based: its scores read the lane's BN statistics too


@pytest.fixture(scope='module')
def compile_cache():
    with common.shared_compilations():
        yield


@pytest.fixture(scope='module')
def two_lanes(tmp_path_factory, compile_cache):
    """Seeds 0 and 1 as the lanes of each phase's run: (runner, records)."""
    runner = pruning.PruneRunner(TINY, str(tmp_path_factory.mktemp('two_lanes')))
    return runner, runner.run(MEASURE, [0, 1])


def finished_state(runner, phase, first_seed, num_seeds):
    """A finished phase's final state: fit resumes its workdir's last checkpoint."""
    config = runner.phase_config(MEASURE, phase, first_seed, num_seeds)
    return pruning.lane_states(runner.fit_phase(config, None).state, num_seeds)


def expected_kept(total, settings):
    """Filters alive after the rounds: each removes floor(r_k x alive) (no layer reaches its
    minimum at these fractions)."""
    for fraction in prune.round_fractions(settings.target, settings.rounds):
        total -= int(np.floor(fraction * total))
    return total


def slot_slices(leaf, slot, channel):
    return np.take(np.asarray(leaf), channel, axis=slot.axis)


def test_pruned_filters_are_exactly_zero_and_counted(two_lanes):
    runner, records = two_lanes
    total = sum(g.width for g in runner.groups)
    lanes = finished_state(runner, TINY.rounds, 0, 2)
    for record, lane in zip(records, lanes):
        assert [(h['epoch'], h['phase']) for h in record['history']] == [
            (1, 'prune'), (2, 'prune'), (3, 'finetune')]
        assert len(record['rounds']) == TINY.rounds
        assert sum(record['kept'].values()) == expected_kept(total, TINY) < total
        params = dict(zip(*prune.named_leaves(lane.params)[:2]))
        mask = lane.extensions['sparsity']
        alive = prune.channels_alive(mask, runner.groups)
        assert {n: int(v.sum()) for n, v in alive.items()} == record['kept']
        for group in runner.groups:
            for channel in range(group.width):
                for slot in group.params:
                    values = slot_slices(params[slot.path], slot, channel)
                    if not alive[group.name][channel]:
                        assert np.all(values == 0), (group.name, channel, slot.path)
                filter_values = slot_slices(params[group.filter.path], group.filter, channel)
                if alive[group.name][channel]:
                    assert np.any(filter_values != 0), (group.name, channel)
    # The lanes trained different seeds (not one network twice).
    assert records[0]['rounds'][0]['train_loss_before'] != records[1]['rounds'][0][
        'train_loss_before']


def test_a_round_run_equals_the_old_masked_optimizer_replayed(two_lanes):
    """A round's fit from given params, statistics and masks (a different mask per lane)
    equals the old loop: ``prune.masked_optimizer`` around the same SGD, stepped by hand over
    the lane's batches. Kept entries agree to float rounding, pruned ones are exactly 0."""
    runner, _ = two_lanes
    rng = np.random.default_rng(0)
    starts = []
    for k in range(2):
        variables = runner.model.init(jax.random.key(10 + k), runner.train_images[:2])
        alive = {g.name: rng.random(g.width) < 0.6 for g in runner.groups}
        for vector in alive.values():
            vector[-1] = True
        stats = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(x.dtype) ** 2,
                             variables['batch_stats'])  # carried, not re-initialized
        starts.append(pruning.LaneStart(variables['params'], stats, prune.structured_masks(
            variables['params'], runner.groups, alive)))
    config = runner.phase_config('replay', 1, first_seed=5, num_seeds=2)
    lanes = pruning.lane_states(runner.fit_phase(config, starts).state, 2)

    splits = data.load_standardized(TINY.dataset)
    steps = len(data.BatchIterator(splits.train, TINY.batch_size, seed=0))
    tx = prune.masked_optimizer(optimizers.make_optimizer(config, steps))
    step = jax.jit(train.train_step)
    for k, (start, lane) in enumerate(zip(starts, lanes)):
        state = train.TrainState(
            step=jnp.zeros((), jnp.int32), params=prune.apply_masks(start.params, start.masks),
            batch_stats=start.batch_stats, rng=jax.random.key_data(jax.random.key(0)),
            opt_state=prune.install_masks(tx.init(start.params), start.masks),
            apply_fn=runner.model.apply, tx=tx)
        batches = data.BatchIterator(splits.train, TINY.batch_size, seed=config.seed + k,
                                     augment=data.default_augment(TINY.dataset),
                                     mean=splits.mean, std=splits.std)
        for batch in batches.epoch(0):
            state, _ = step(state, batch)
        assert int(lane.step) == int(state.step) == steps
        for got, want, keep in zip(jax.tree.leaves(lane.params), jax.tree.leaves(state.params),
                                   jax.tree.leaves(start.masks)):
            keep = np.asarray(keep)
            assert np.all(np.asarray(got)[~keep] == 0) and np.all(np.asarray(want)[~keep] == 0)
            np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(want)[keep],
                                       rtol=1e-4, atol=2e-6)
        for got, want in zip(jax.tree.leaves(lane.batch_stats),
                             jax.tree.leaves(state.batch_stats)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


def test_a_lane_of_a_batched_run_is_its_seed_run_alone(two_lanes, tmp_path):
    """Seed 1 as lane 1 of the two-seed run and as a one-seed run: the same trained network
    after round 1, the same scores on it, the same pruning and the same curves."""
    runner, records = two_lanes
    alone = pruning.PruneRunner(TINY, str(tmp_path))
    [single] = alone.run(MEASURE, [1])
    batched_lane = finished_state(runner, 0, 0, 2)[1]
    single_lane = finished_state(alone, 0, 1, 1)[0]
    for a, b in zip(jax.tree.leaves((batched_lane.params, batched_lane.batch_stats)),
                    jax.tree.leaves((single_lane.params, single_lane.batch_stats))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    scores_batched, _ = runner.score(MEASURE, batched_lane.params, batched_lane.batch_stats,
                                     1, 0)
    scores_single, _ = alone.score(MEASURE, single_lane.params, single_lane.batch_stats, 1, 0)
    for name in scores_single:
        np.testing.assert_allclose(scores_batched[name], scores_single[name], rtol=1e-3,
                                   atol=1e-7)
    assert single['seed'] == records[1]['seed'] == 1
    assert single['kept'] == records[1]['kept']
    for a, b in zip(single['rounds'], records[1]['rounds']):
        assert a['kept'] == b['kept']
        np.testing.assert_allclose([a['train_loss_before'], a['train_loss_after']],
                                   [b['train_loss_before'], b['train_loss_after']], rtol=1e-3)
    np.testing.assert_allclose([h['train_loss'] for h in single['history']],
                               [h['train_loss'] for h in records[1]['history']], rtol=1e-3)


def test_each_phase_has_its_own_data_order_and_workdir(two_lanes):
    runner, _ = two_lanes
    configs = [runner.phase_config(MEASURE, p, 0, 2) for p in range(runner.phases())]
    assert [c.seed for c in configs] == [0, pruning.PHASE_SEED_STRIDE,
                                         2 * pruning.PHASE_SEED_STRIDE]
    assert [(c.schedule, c.lr, c.epochs) for c in configs] == [
        ('constant', TINY.prune_lr, 1), ('constant', TINY.prune_lr, 1),
        ('cosine', TINY.lr, TINY.finetune_epochs)]
    assert len({c.workdir for c in configs}) == 3
    assert all(os.path.exists(os.path.join(c.workdir, 'metrics.jsonl')) for c in configs)


def test_a_folder_of_other_settings_and_scattered_seeds_are_refused(two_lanes):
    runner, _ = two_lanes
    with pytest.raises(ValueError, match='other settings.*target'):
        pruning.PruneRunner(pruning.PruneSettings(**{**TINY.__dict__, 'target': 0.6}),
                            runner.out_dir)
    with pytest.raises(ValueError, match='consecutive'):
        pruning.check_seeds([0, 2])
