"""A-FAN (arXiv:2103.12171): feature PGD, adversarial feature normalization, the combined
loss, BatchNorm bookkeeping and the training integration."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import afan, losses, models
from jaxnorm import config as config_lib, train

LAYER = 'stage1_block3'  # the repo's perturbation point: the output of stage 1


@pytest.fixture(scope='module')
def resnet():
    model = models.get_model('resnet20', norm='bn', num_classes=10, width=0.5)
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    labels = jnp.arange(16) % 10
    variables = model.init(jax.random.key(1), images[:1], train=False)
    # Non-trivial running statistics, so "kept" and "discarded" updates are told apart.
    variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
        lambda s: s + 0.3, variables['batch_stats'])}
    return model, variables, {'image': images, 'label': labels}


def _linear_tail(weights, labels):
    """A linear softmax tail: its input gradient W^T (p - y) is non-zero almost surely."""
    def tail(features, stats):
        logits = features.reshape(features.shape[0], -1) @ weights
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), stats
    return tail


def _reference_pgd(tail, h, steps, step_size, epsilon=None):
    """Brute-force PGD: a Python loop of sign steps on jax.grad of the tail loss."""
    delta = np.zeros(h.shape, np.float32)
    for _ in range(steps):
        grad = np.asarray(jax.grad(lambda d: tail(h + d, {})[0])(jnp.asarray(delta)))
        delta = delta + np.float32(step_size) * np.sign(grad)
        if epsilon is not None:
            delta = np.clip(delta, -epsilon, epsilon)
    return delta


@pytest.mark.parametrize('epsilon', [None, 0.025])
def test_pgd_sign_steps_reach_t_gamma_or_the_clip(epsilon):
    h = jax.random.normal(jax.random.key(2), (6, 2, 2, 3))
    tail = _linear_tail(jax.random.normal(jax.random.key(3), (12, 5)), jnp.arange(6) % 5)
    steps, gamma = 4, 0.01  # small steps: no gradient sign flips on this linear tail
    config = afan.AFANConfig(layer='x', steps=steps, step_size=gamma, epsilon=epsilon)
    delta, _, _ = jax.jit(lambda h: afan.feature_pgd(tail, h, {}, jax.random.key(0),
                                                     config))(h)
    np.testing.assert_allclose(delta, _reference_pgd(tail, h, steps, gamma, epsilon), atol=1e-6)
    bound = steps * gamma if epsilon is None else epsilon
    assert float(jnp.max(jnp.abs(delta))) == pytest.approx(bound, rel=1e-6)
    assert float(jnp.max(jnp.abs(delta))) <= bound * (1 + 1e-6)
    if epsilon is None:  # every coordinate moved T*gamma: its gradient sign never flipped
        np.testing.assert_allclose(np.abs(delta), steps * gamma, rtol=1e-6)


def test_random_start_stays_in_the_ball():
    h = jnp.zeros((4, 3))
    tail = _linear_tail(jax.random.normal(jax.random.key(3), (3, 2)), jnp.arange(4) % 2)
    config = afan.AFANConfig(layer='x', steps=0, epsilon=0.1, random_start=True)
    delta, _, _ = afan.feature_pgd(tail, h, {}, jax.random.key(4), config)
    assert 0 < float(jnp.max(jnp.abs(delta))) <= 0.1


def test_tail_loss_rises_over_pgd_steps_on_a_resnet(resnet):
    model, variables, batch = resnet
    config = afan.AFANConfig(layer=LAYER, steps=5, step_size=0.05)
    tail = afan.tail_loss_fn(model.apply, variables, batch, LAYER)
    _, _, features = afan._split_forward(model.apply, variables, batch['image'], LAYER, None, {})
    delta, _, losses = jax.jit(lambda h: afan.feature_pgd(
        tail, h, variables['batch_stats'], jax.random.key(0), config))(features)
    losses = np.asarray(losses)
    assert losses[-1] > losses[0] + 1e-3
    assert np.all(np.diff(losses) > 0), losses
    assert float(jnp.max(jnp.abs(delta))) == pytest.approx(5 * 0.05, rel=1e-6)


@pytest.mark.parametrize('axes', [afan.POSITIONAL, afan.BATCH])
def test_normalized_features_carry_the_adversarial_statistics(axes):
    clean = np.asarray(jax.random.normal(jax.random.key(5), (4, 3, 3, 6))) * 2 + 1
    adversarial = clean * 1.5 + np.asarray(jax.random.normal(jax.random.key(6), clean.shape))
    axes_np = tuple(a % 4 for a in axes)
    out = np.asarray(afan.adversarial_normalize(jnp.asarray(clean), jnp.asarray(adversarial),
                                                axes, eps=0.0))
    np.testing.assert_allclose(out.mean(axes_np), adversarial.mean(axes_np), atol=1e-5)
    np.testing.assert_allclose(out.std(axes_np, ddof=1), adversarial.std(axes_np, ddof=1),
                               rtol=1e-4)
    # With the repo's eps = 1e-5 inside the square root of the unbiased variance.
    def sigma(x):
        return np.sqrt(x.var(axes_np, ddof=1, keepdims=True) + 1e-5)
    expected = (sigma(adversarial) * (clean - clean.mean(axes_np, keepdims=True)) / sigma(clean)
                + adversarial.mean(axes_np, keepdims=True))
    np.testing.assert_allclose(afan.adversarial_normalize(clean, adversarial, axes), expected,
                               rtol=1e-5, atol=1e-5)


def _clean_loss_and_stats(model, variables, batch):
    logits, updates = model.apply(variables, batch['image'], train=True, mutable=['batch_stats'])
    return losses.mean_cross_entropy(logits, batch['label']), updates['batch_stats']


def test_attack_statistics_are_discarded_by_default(resnet):
    model, variables, batch = resnet
    clean_loss, clean_stats = _clean_loss_and_stats(model, variables, batch)
    config = afan.AFANConfig(layer=LAYER, steps=3, step_size=0.05, strengths=(0.5, 1.0),
                             normalize=(False, True))
    loss, aux = jax.jit(lambda v: afan.afan_loss(model.apply, v, batch, jax.random.key(0),
                                                 config))(variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 aux.batch_stats, clean_stats)
    np.testing.assert_allclose(aux.clean_loss, clean_loss, rtol=1e-5)
    # Combined loss: uniform weights 1/3 over clean and the two points.
    np.testing.assert_allclose(loss, (clean_loss + aux.point_losses.sum()) / 3, rtol=1e-5)
    kept = afan.afan_loss(model.apply, variables, batch, jax.random.key(0),
                          afan.AFANConfig(layer=LAYER, steps=3, step_size=0.05,
                                          keep_attack_stats=True))[1].batch_stats
    # Kept: the stage-3 running mean differs from the clean step's.
    assert not np.allclose(kept['stage3_block3']['norm2']['mean'],
                           clean_stats['stage3_block3']['norm2']['mean'], atol=1e-6)


def test_strength_zero_is_the_clean_loss_and_gradient(resnet):
    model, variables, batch = resnet
    config = afan.AFANConfig(layer=LAYER, strengths=(0.0,))

    def afan_value(params):
        return afan.afan_loss(model.apply, {**variables, 'params': params}, batch,
                              jax.random.key(0), config)[0]

    def clean_value(params):
        return _clean_loss_and_stats(model, {**variables, 'params': params}, batch)[0]

    value, grads = jax.jit(jax.value_and_grad(afan_value))(variables['params'])
    ref_value, ref_grads = jax.jit(jax.value_and_grad(clean_value))(variables['params'])
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads, ref_grads)


def test_config_errors_name_the_problem(resnet):
    model = resnet[0]
    cfg = config_lib.default_config()
    with pytest.raises(ValueError, match='valid: stem, .*stage1_block3'):
        afan.from_run_config(config_lib.apply_overrides(cfg, {'afan.layer': 'stage9'}), model,
                             (8, 8, 1))
    with pytest.raises(ValueError, match='strengths'):
        config_lib.apply_overrides(cfg, {'afan.layer': LAYER, 'afan.strengths': (1.5,)})
    with pytest.raises(ValueError, match='random_start'):
        config_lib.apply_overrides(cfg, {'afan.layer': LAYER, 'afan.random_start': True})


def test_fit_uses_the_afan_loss_and_strength_zero_is_the_clean_run(tmp_path):
    def run(name, **afan_keys):
        cfg = config_lib.apply_overrides(config_lib.default_config(), {
            'model': 'mlp', 'epochs': 1, 'batch_size': 128,
            'workdir': str(tmp_path / name), 'data_dir': str(tmp_path / 'tfds'),
            'progress': False, **afan_keys})
        return train.fit(cfg).history[0]

    clean = run('clean')
    # The MLP with BatchNorm (dense1 -> norm1 -> act1 -> dense2 -> ...) keeps this test cheap.
    zero = run('zero', afan={'layer': 'act1', 'strengths': (0.0,)})
    attacked = run('afan', afan={'layer': 'act1', 'steps': 2, 'step_size': 0.05})
    for key in ('train_loss', 'test_loss', 'test_accuracy'):
        assert zero[key] == pytest.approx(clean[key], rel=1e-5, abs=1e-6), key
    assert abs(attacked['train_loss'] - clean['train_loss']) > 1e-3


def _two_engine_steps(config, batch, steps_per_epoch):
    """Params after two ``train.train_step`` s of the engine with ``config``'s model, optimizer
    and extensions, and the model and its initial variables."""
    model, extensions, tx = train.build(config, batch['image'].shape[1:], 10, steps_per_epoch)
    variables = model.init(jax.random.key(0), batch['image'][:1], train=False)
    state = train.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables['params'],
        batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']),
        rng=jax.random.key_data(jax.random.key(1)), apply_fn=model.apply, tx=tx)
    step = jax.jit(lambda s: train.train_step(s, batch, extensions=tuple(extensions)))
    for _ in range(2):
        state, _ = step(state)
    return state.params, model, variables, extensions


@pytest.mark.parametrize('arm', ['baseline', 'afan'])
def test_quick_arms_are_the_declared_recipe_in_the_engine(resnet, arm):
    """The experiment's quick arms, run by the engine's step, equal the recipe written out with
    optax and ``afan_loss``: SGD momentum 0.9, LR 0.05 cosine over 3 epochs, coupled weight
    decay 5e-4, A-FAN at stage1_block3 with 5 sign steps of 0.5/255, points at strengths 0.5
    and 1, the latter adversarially normalized (baseline: cross-entropy)."""
    from jaxnorm.papers import afan as experiment
    config = config_lib.apply_overrides(experiment.get_config('quick'),
                                        experiment.ARMS[arm])
    batch = resnet[2]
    steps_per_epoch = 22  # 1,437 digits // 64
    params, model, variables, extensions = _two_engine_steps(config, batch, steps_per_epoch)
    assert [type(e).__name__ for e in extensions] == (['AdversarialFeatures'] if arm == 'afan'
                                                      else [])

    reference_tx = optax.chain(
        optax.add_decayed_weights(5e-4),
        optax.sgd(optax.cosine_decay_schedule(0.05, 3 * steps_per_epoch), momentum=0.9))
    recipe = afan.AFANConfig(layer='stage1_block3', steps=5, step_size=0.5 / 255,
                             strengths=(0.5, 1.0), normalize=(False, True))

    def loss(p, stats):
        v = {'params': p, 'batch_stats': stats}
        if arm == 'afan':
            value, aux = afan.afan_loss(model.apply, v, batch, jax.random.key(0), recipe)
            return value, aux.batch_stats
        logits, new = model.apply(v, batch['image'], train=True, mutable=['batch_stats'])
        return losses.mean_cross_entropy(logits, batch['label']), new['batch_stats']

    p, stats = variables['params'], variables['batch_stats']
    opt = reference_tx.init(p)
    for _ in range(2):
        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(p, stats)
        updates, opt = reference_tx.update(grads, opt, p)
        p = optax.apply_updates(p, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                 params, p)
    # The arms differ: the baseline's recipe applied to the A-FAN arm would not match.
    if arm == 'afan':
        other, *_ = _two_engine_steps(config_lib.apply_overrides(
            config, experiment.ARMS['baseline']), batch, steps_per_epoch)
        assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
            jax.tree.leaves(other), jax.tree.leaves(p))) > 1e-5


class _TwoLayer(__import__('flax').linen.Module):
    """x -> x W1 + b1 (module 'feat', the attacked output) -> relu(.) W2 + b2: a split the
    test can write out by hand."""

    @__import__('flax').linen.compact
    def __call__(self, x, *, train=False):
        nn = __import__('flax').linen
        h = nn.relu(nn.Dense(6, name='feat')(x))
        return nn.Dense(3, name='head')(h)


def _hand_written_afan(params, x, y, steps, gamma, strengths, normalize):
    """The full A-FAN loss written out with numpy for the two-layer net: PGD on the hidden
    pre-activations, interpolated points h + s delta, positional (per sample, over channels)
    re-injection of the adversarial statistics with unbiased variance + 1e-5, uniform mean of
    the clean and point losses."""
    w1, b1 = (np.asarray(params['feat'][k], np.float64) for k in ('kernel', 'bias'))
    w2, b2 = (np.asarray(params['head'][k], np.float64) for k in ('kernel', 'bias'))
    h = np.asarray(x, np.float64) @ w1 + b1
    onehot = np.eye(3)[np.asarray(y)]

    def ce_and_grad(f):  # mean CE of the linear tail and its gradient with respect to f
        z = np.maximum(f, 0) @ w2 + b2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return (-np.mean(np.sum(onehot * np.log(p), 1)),
                (p - onehot) @ w2.T / len(f) * (f > 0))

    delta = np.zeros_like(h)
    for _ in range(steps):
        delta = delta + gamma * np.sign(ce_and_grad(h + delta)[1])
    losses = [ce_and_grad(h)[0]]
    for s, norm in zip(strengths, normalize):
        point = h + s * delta
        if norm:
            sig = lambda a: np.sqrt(a.var(1, ddof=1, keepdims=True) + 1e-5)  # noqa: E731
            point = (sig(point) * (h - h.mean(1, keepdims=True)) / sig(h)
                     + point.mean(1, keepdims=True))
        losses.append(ce_and_grad(point)[0])
    return np.mean(losses), losses, delta


@pytest.mark.parametrize('normalize', [(False, True), (True, True), (False, False)])
def test_full_afan_loss_equals_the_hand_written_interpolation_and_normalization(normalize):
    """Interpolated strengths (0.5, 1) with adversarial feature normalization on the chosen
    points (the experiment's full A-FAN: (False, True)) against the numpy loss above."""
    model = _TwoLayer()
    x = jax.random.normal(jax.random.key(7), (8, 5))
    y = jnp.arange(8) % 3
    params = model.init(jax.random.key(8), x)['params']
    config = afan.AFANConfig(layer='feat', steps=3, step_size=0.05, strengths=(0.5, 1.0),
                             normalize=normalize)
    loss, aux = jax.jit(lambda p: afan.afan_loss(model.apply, {'params': p},
                                                 {'image': x, 'label': y},
                                                 jax.random.key(0), config))(params)
    ref_loss, ref_losses, ref_delta = _hand_written_afan(params, x, y, 3, 0.05, (0.5, 1.0),
                                                         normalize)
    np.testing.assert_allclose(aux.perturbation, ref_delta, atol=1e-6)
    np.testing.assert_allclose(aux.point_losses, ref_losses[1:], rtol=2e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
    # The normalized point is not the raw one: the "N" changes the loss.
    raw = _hand_written_afan(params, x, y, 3, 0.05, (0.5, 1.0), (False, False))[1]
    if normalize[1]:
        assert abs(ref_losses[2] - raw[2]) > 1e-4


def test_per_point_normalize_flags_from_the_run_config():
    cfg = config_lib.default_config()
    on = afan.from_run_config(config_lib.apply_overrides(cfg, {
        'afan.layer': LAYER, 'afan.strengths': (0.5, 1.0),
        'afan.normalize_points': (False, True)}))
    assert on.normalize == (False, True) and on.strengths == (0.5, 1.0)
    # Unset: the single flag applies to every point (the old behaviour).
    assert afan.from_run_config(config_lib.apply_overrides(cfg, {
        'afan.layer': LAYER, 'afan.strengths': (0.5, 1.0), 'afan.normalize': True}
    )).normalize == (True, True)
    with pytest.raises(ValueError, match='one flag per strength'):
        afan.from_run_config(config_lib.apply_overrides(cfg, {
            'afan.layer': LAYER, 'afan.normalize_points': (True,),
            'afan.strengths': (0.5, 1.0)}))


def test_experiment_pixel_attack_is_in_pixel_units_and_checks_are_declared():
    from jaxnorm.papers import afan as experiment
    mean, std = 33.0, 78.0
    pixel = experiment.pixel_attack(mean, std)
    # Radius 4/255 and step 1/255 of the [0, 1] range are 4 and 1 pixel levels of 0-255.
    assert pixel['advprop.epsilon'] * std == pytest.approx(4.0)
    assert pixel['advprop.step_size'] * std == pytest.approx(1.0)
    assert pixel['advprop.input_min'] * std + mean == pytest.approx(0.0, abs=1e-9)
    assert pixel['advprop.input_max'] * std + mean == pytest.approx(255.0)
    # Float pixels in [0, 1] (resized images): the same radius of the range, 4/255.
    unit = experiment.pixel_attack(0.13, 0.25, top=1.0)
    assert unit['advprop.epsilon'] * 0.25 == pytest.approx(4 / 255)
    assert unit['advprop.input_max'] * 0.25 + 0.13 == pytest.approx(1.0)
    declared = experiment.declare_checks(10, 5)
    assert {n: c.kind for n, c in declared.items()} == {
        'accuracy': 'claim', 'cost': 'sanity', 'normalization': 'claim',
        'efficiency': 'claim', 'pixel_cost': 'sanity'}
    assert set(experiment.declare_checks(3, 5, experiment.SCALE_ARMS['quick'])) == {
        'accuracy', 'cost'}
    with pytest.raises(ValueError, match='unknown A-FAN arm'):
        experiment.arm_overrides(experiment.get_config('quick'), ('baseline', 'pixel'))
