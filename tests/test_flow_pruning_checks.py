"""The gradient-flow pruning section's new quantities and settings against independent
references: the masking changes by hand on a softmax regression (numpy), the loss AUC
against numpy's trapezoid rule, the schedule against its closed form, the temperature
against a hand-divided loss, the network's last feature map against the input, and the
declared checks on records built to hold (or fail) them."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prune
from jaxnorm import models, pruning, train
from jaxnorm.models import channels, tempered_vgg
from jaxnorm.papers import flow_pruning as fp


def softmax_ce_and_grad(w, x, y):
    """Mean cross-entropy of softmax(x w) and its gradient, by hand."""
    z = x @ w
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    onehot = np.eye(w.shape[1])[y]
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    return loss, x.T @ (p - onehot) / len(y)


def test_masking_change_matches_a_hand_computation():
    jax.config.update('jax_enable_x64', True)
    try:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
        old = rng.random((5, 3)) < 0.8
        new = old & (rng.random((5, 3)) < 0.6)
        w = rng.normal(size=(5, 3)) * old

        def loss(params):
            z = jnp.asarray(x) @ params['w']
            return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(20), y])

        got = prune.flow.masking_change(loss, {'w': jnp.asarray(w)}, {'w': old}, {'w': new})
        l0, g0 = softmax_ce_and_grad(w, x, y)
        l1, g1 = softmax_ce_and_grad(w * new, x, y)
        np.testing.assert_allclose(float(got['loss_change']), l1 - l0, rtol=1e-10)
        np.testing.assert_allclose(float(got['grad_sq_before']), np.sum((g0 * old) ** 2),
                                   rtol=1e-10)
        np.testing.assert_allclose(float(got['grad_sq_after']), np.sum((g1 * new) ** 2),
                                   rtol=1e-10)
        assert float(got['grad_sq_change']) == pytest.approx(
            np.sum((g1 * new) ** 2) - np.sum((g0 * old) ** 2), rel=1e-10)
    finally:
        jax.config.update('jax_enable_x64', False)


def test_loss_auc_is_numpys_trapezoid_over_the_span():
    trapezoid = getattr(np, 'trapezoid', None) or np.trapz
    curve = np.random.default_rng(1).random(9)
    assert fp.loss_auc(curve) == pytest.approx(trapezoid(curve) / 8, rel=1e-12)
    assert fp.loss_auc([0.7]) == 0.7
    record = {'history': [{'phase': 'prune', 'train_loss': 9.0}] + [
        {'phase': 'finetune', 'train_loss': v} for v in curve]}
    assert fp.finetune_loss_auc(record) == pytest.approx(trapezoid(curve) / 8, rel=1e-12)
    with pytest.raises(ValueError, match='finite'):
        fp.loss_auc([1.0, np.nan])


def test_standard_follows_the_reference_schedule_and_temperatures():
    s = fp.get_config('standard')
    p, n = s.target, s.rounds
    assert (p, s.round_epochs) == (0.75, 1) and n >= 20
    r = prune.round_fractions(p, n)
    # Small rounds: the first removes p / (p + n (1 - p)) < 14 % (the reference's 25: 10.7 %).
    assert r[0] == pytest.approx(p / (p + n * (1 - p)), rel=1e-12) and r[0] < 0.14
    # The closed form of the surviving fraction after every round.
    np.testing.assert_allclose(np.cumprod(1 - r),
                               n * (1 - p) / (n * (1 - p) + np.arange(1, n + 1) * p))
    assert (s.model_kwargs['temperature'], s.gradient_temperature, s.grasp_temperature,
            s.grad_norm_temperature) == (5.0, 5.0, 200.0, 1.0)
    assert s.model_kwargs['width'] >= 0.5
    quick = fp.get_config('quick')
    assert quick.model == s.model and quick.model_kwargs['temperature'] == 5.0
    paper = fp.get_config('paper')
    assert (paper.rounds, paper.model_kwargs['temperature']) == (25, 5.0)


def test_follows_schedule_counts_floor_of_r_k_alive():
    s = fp.get_config('quick')
    widths = {'layer1': 40, 'layer2': 60}
    alive, rounds = 100, []
    for fraction in prune.round_fractions(s.target, s.rounds):
        removed = int(np.floor(fraction * alive))
        rounds.append({'removed_filters': removed})
        alive -= removed
    record = {'widths': widths, 'kept': {'layer1': 10, 'layer2': alive - 10}, 'rounds': rounds}
    assert fp.follows_schedule(record, s)
    rounds[0]['removed_filters'] += 1
    assert not fp.follows_schedule(record, s)


@pytest.mark.parametrize('scale', ['quick', 'standard'])
def test_the_last_conv_map_is_larger_than_1x1_on_digits(scale):
    s = fp.get_config(scale)
    model = models.get_model(s.model, num_classes=10, **s.model_kwargs)
    x = jnp.zeros((1, 8, 8, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    positions = channels.kernel_positions(model, variables, x)
    last = max((k for k in positions if k.startswith('layer')),
               key=lambda k: int(k.split('/')[0][5:]))
    side = tempered_vgg.last_feature_side(8)
    assert positions[last] == side * side == 4
    # The old network: its last convs see 1x1 maps of the same input.
    old = models.get_model('vgg_cfg10', num_classes=10, width=0.5)
    old_positions = channels.kernel_positions(old, jax.eval_shape(old.init, jax.random.key(0),
                                                                  x), x)
    assert old_positions['layer10/conv/kernel'] == 1
    assert tempered_vgg.last_feature_side(8, models.vgg.CONFIGS['vgg_cfg10']['layers']) == 1


def test_temperature_divides_the_logits_and_scores_stay_absolute(tmp_path):
    tiny = pruning.PruneSettings(model='vgg3', model_kwargs={'width': 0.125,
                                                                 'temperature': 5.0},
                                 gradient_batches=2, hvp_per_class=4, batch_size=16,
                                 score_one_batch=True)
    runner = pruning.PruneRunner(tiny, str(tmp_path))
    plain = models.get_model('vgg3', num_classes=10, width=0.125)
    x = jnp.asarray(runner.train_images[:8])
    variables = plain.init(jax.random.key(0), x)
    np.testing.assert_allclose(runner.model.apply(variables, x) * 5.0, plain.apply(variables, x),
                               rtol=1e-5, atol=1e-6)
    batches, _ = runner._score_batches(0, 0)
    assert batches['image'].shape[:2] == (1, 2 * 16)
    @jax.jit
    @jax.grad
    def hand(params, temperature):  # raw logits of the untempered model, divided here
        logits = plain.apply({**variables, 'params': params}, batches['image'][0])
        return -jnp.mean(jax.nn.log_softmax(logits / temperature)[
            jnp.arange(logits.shape[0]), batches['label'][0]])

    for temperature in (5.0, 200.0, 1.0):
        got, _ = runner.estimate(variables['params'], variables['batch_stats'], batches,
                                 temperature, with_hg=False)
        want = hand(variables['params'], temperature)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
    # A round's masking record against the same quantities by hand on the untempered model.
    tiny_s = dataclasses.replace(tiny, masking_loss_images='scoring')
    runner.settings = tiny_s
    lane = train.TrainState(step=0, params=variables['params'],
                            batch_stats=variables['batch_stats'], opt_state=(), rng=(),
                            apply_fn=None, tx=None)
    alive = {g.name: np.ones(g.width, bool) for g in runner.groups}
    survivors, record = runner.prune_lane('magnitude', lane, alive, 0.25, 0, 0)
    images, labels = batches['image'][0], batches['label'][0]

    @jax.jit
    def hand_loss(params):
        logits = plain.apply({**variables, 'params': params}, images) / 5.0
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])

    new = prune.structured_masks(variables['params'], runner.groups, survivors)
    masked = jax.tree.map(lambda p, m: p * m, variables['params'], new)
    hand_grad = jax.jit(jax.grad(hand_loss))
    g0, g1 = hand_grad(variables['params']), hand_grad(masked)
    sq = lambda g, m: sum(float(jnp.sum((a * b) ** 2)) for a, b in zip(  # noqa: E731
        jax.tree.leaves(g), jax.tree.leaves(m)))
    np.testing.assert_allclose([record['train_loss_before'], record['train_loss_after'],
                                record['grad_sq_before'], record['grad_sq_after']],
                               [float(hand_loss(variables['params'])), float(hand_loss(masked)),
                                sq(g0, jax.tree.map(np.ones_like, new)), sq(g1, new)],
                               rtol=2e-4)
    assert record['removed_filters'] == int(np.floor(0.25 * sum(g.width for g in runner.groups)))
    with pytest.raises(ValueError, match='score_bn_train'):
        pruning.PruneSettings(score_one_batch=True, score_bn_train=True).check()
    with pytest.raises(ValueError, match='temperature'):
        models.get_model('vgg3', num_classes=10, temperature=0.0).init(
            jax.random.key(0), x)


def synthetic_records(seeds=5):
    """Records in which every claim holds: magnitude's loss AUC lowest, loss preservation's
    |ΔL| and |ρ| lowest, GraSP raises |m g|^2 most and keeps the fewest early filters."""
    rng = np.random.default_rng(3)
    widths = {'layer1': 20, 'layer2': 20, 'layer3': 20}
    s = pruning.PruneSettings(rounds=2, target=0.5)
    removed = []
    alive = 60
    for fraction in prune.round_fractions(s.target, s.rounds):
        removed.append(int(np.floor(fraction * alive)))
        alive -= removed[-1]
    plan = {  # measure: (auc, |ΔL|, ρ, early kept, accuracy)
        'magnitude': (0.2, 0.3, 0.3, 8, 0.9), 'loss_preservation': (0.5, 0.01, 0.02, 8, 0.9),
        'grasp': (0.4, 0.3, 0.9, 2, 0.9), 'grad_norm_preservation': (0.4, 0.3, 0.05, 8, 0.95),
        'random': (0.4, 0.3, 0.3, 8, 0.9)}
    records = []
    for seed in range(seeds):
        for measure, (auc, dl, rho, early, acc) in plan.items():
            noise = lambda: 0.01 * rng.random()  # noqa: E731
            early_kept = early + (seed % 2 if measure == 'grasp' else 0)  # a spread
            kept = {'layer1': early_kept, 'layer2': alive - early_kept - 10, 'layer3': 10}
            records.append({
                'measure': measure, 'seed': seed, 'widths': widths, 'kept': kept,
                'final_test_accuracy': acc + noise(),
                'history': [{'phase': 'finetune', 'train_loss': auc + noise()}] * 3,
                'rounds': [{'removed_filters': k, 'train_loss_before': 1.0,
                            'train_loss_after': 1.0 + dl + noise(), 'grad_sq_before': 2.0,
                            'grad_sq_after': 2.0 * (1 + rho + noise())} for k in removed]})
    return records, s


def test_declared_checks_hold_on_records_built_to_hold_them():
    records, settings = synthetic_records()
    records = [r for r in records if r['measure'] in fp.MEASURES['standard'] + ('random',)]
    declared = fp.declare_checks(5, fp.MEASURES['standard'] + ('random',))
    results = {r['name']: r for r in fp.evaluate_checks(declared, records, settings)}
    assert set(results) == set(declared)
    for name, result in results.items():
        assert result['outcome'] == 'supported', (name, result)
    # Loss preservation's |ρ| against magnitude: 0.3 - 0.02 per seed, up to the noise.
    def cell(check, name):
        return next(c for c in results[check]['cells'] if c['cell'] == name)

    assert cell('loss_preservation_least_rate_change', 'magnitude')['estimate'] == pytest.approx(0.28, abs=0.02)
    # GraSP against the uniform share: 100 x (kept / 60) - 100 x (early kept / 20).
    uniform = cell('grasp_thins_early_layers', 'uniform')['estimate']
    kept = 60 - sum(records[0]['rounds'][k]['removed_filters'] for k in range(2))
    assert uniform == pytest.approx(100 * kept / 60 - 100 * 2.4 / 20, abs=1e-9)
    with pytest.raises(ValueError, match='need the measures'):
        fp.declare_checks(5, ('magnitude',))


@pytest.mark.parametrize('scale', ['quick', 'standard'])
def test_the_notes_name_the_rounds_and_first_fraction_that_ran(scale):
    s = fp.get_config(scale)
    p, n = s.target, s.rounds
    first = 100 * p / (p + n * (1 - p))  # r_1 = p / (p + n (1 - p)), the reference's schedule
    text = ' '.join(fp.notes(s))
    assert f'{n} one-epoch rounds (r_1 = {first:.1f} %' in text
    assert 'the reference runs 25, r_1 = 10.7 %' in text
    assert ('scoring images' in text) == (s.masking_loss_images == 'scoring')
