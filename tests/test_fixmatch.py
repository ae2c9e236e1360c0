"""FixMatch (arXiv:2001.07685) on the engine: the loss against a numpy reference, the
augmentations, the batch source's data, lanes that do not mix, and the EMAN experiment's
Nesterov optimizer against its optax chain."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import (augment28, config as config_lib, data, eman, fixmatch, optimizers, parallel,
                     train)
from jaxnorm.papers import common


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def splits(data_dir):
    return data.load_standardized('digits', data_dir=data_dir)


def run_config(**overrides):
    base = {'model': 'mlp', 'model_kwargs': {'hidden': (32,)}, 'norm': 'bn', 'augment': 'none',
            'batch_size': 8, 'progress': False, 'fixmatch.threshold': 0.5}
    return config_lib.apply_overrides(config_lib.default_config(), {**base, **overrides})


def numpy_cross_entropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def numpy_softmax(logits):
    z = np.exp(np.asarray(logits, np.float64) - np.max(logits, -1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@pytest.mark.parametrize('labeler,kind', [('self', 'eman'), ('teacher', 'eman'),
                                          ('teacher', 'ema')])
def test_loss_matches_a_numpy_reference(labeler, kind, splits):
    """L = mean CE(f(α(x_l)), y_l) + λ_u mean(1[max p >= τ] CE(f(A(u)), argmax p)), with p the
    labeler's softmax on α(u): the student's own (one BN batch over all views) or a teacher
    that differs from the student (eval mode for EMAN, batch statistics for EMA)."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(splits.train_labels), 24, replace=False)
    images, labels = splits.train_images[rows], splits.train_labels[rows].astype(np.int32)
    batch = {'image': images[:8], 'label': labels[:8], 'unlabeled': images[8:],
             'unlabeled_label': labels[8:]}
    lambda_u, key = 2.5, jax.random.key(7)
    overrides = {'fixmatch.labeler': labeler, 'fixmatch.lambda_u': lambda_u}
    if labeler == 'teacher':
        overrides.update({'eman.momentum': 0.9, 'eman.kind': kind})
    model, _, tx = train.build(run_config(**overrides), (8, 8, 1), 10, 1)
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=parallel.data_mesh())
    params, stats = state.params, state.batch_stats
    teacher = eman.init(jax.tree.map(lambda p: 1.3 * p + 0.01, params),
                        jax.tree.map(lambda s: s + 0.2, stats))

    # The reference, with the same augmentation draws.
    k_labeled, k_weak, k_strong, _ = jax.random.split(key, 4)
    labeled = fixmatch.weak_augment(k_labeled, images[:8])
    weak = fixmatch.weak_augment(k_weak, images[8:])
    strong = fixmatch.strong_augment(k_strong, images[8:])
    views = [labeled, strong] if labeler == 'teacher' else [labeled, weak, strong]
    logits, updates = model.apply({'params': params, 'batch_stats': stats},
                                  jnp.concatenate(views), train=True, mutable=['batch_stats'])
    logits = np.asarray(logits)
    if labeler == 'self':
        weak_logits = logits[8:24]
    else:
        variables = {'params': teacher.params, 'batch_stats': teacher.batch_stats}
        weak_logits = (model.apply(variables, weak, train=False) if kind == 'eman' else
                       model.apply(variables, weak, train=True, mutable=['batch_stats'])[0])
    probs = numpy_softmax(weak_logits)
    threshold = float(np.median(probs.max(-1)))  # some confident, some not
    pseudo, mask = probs.argmax(-1), probs.max(-1) >= threshold
    expected = (numpy_cross_entropy(logits[:8], labels[:8]).mean()
                + lambda_u * np.mean(mask * numpy_cross_entropy(logits[-16:], pseudo)))

    overrides['fixmatch.threshold'] = threshold
    model, extensions, tx = train.build(run_config(**overrides), (8, 8, 1), 10, 1)
    [ext] = [e for e in extensions if e.name == 'fixmatch']
    loss_fn = ext.wrap_loss(train.forward_loss(model.apply),
                            state.replace(extensions={'eman': teacher}))
    loss, (out_logits, new_stats, metrics) = jax.jit(loss_fn)(params, stats, batch, key)
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out_logits), logits[:8], rtol=1e-5, atol=1e-6)
    assert float(metrics['mask_rate']) == pytest.approx(mask.mean())
    right = np.sum(mask * (pseudo == labels[8:])) / max(mask.sum(), 1)
    assert float(metrics['pseudo_label_accuracy']) == pytest.approx(right)
    for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(updates['batch_stats'])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_digits28_views_and_the_lambda_ramp_match_a_numpy_reference(splits):
    """With ``augment='digits28'`` the views are augment28.weak / strong of the step's keys,
    and with ``ramp_steps`` R the unlabeled weight at step k is λ_u min(1, k / R)."""
    rng = np.random.default_rng(1)
    rows = rng.choice(len(splits.train_labels), 24, replace=False)
    images, labels = splits.train_images[rows], splits.train_labels[rows].astype(np.int32)
    batch = {'image': images[:8], 'label': labels[:8], 'unlabeled': images[8:]}
    key, lambda_u, ramp = jax.random.key(3), 2.0, 40
    overrides = {'fixmatch.augment': 'digits28', 'fixmatch.lambda_u': lambda_u,
                 'fixmatch.ramp_steps': ramp, 'fixmatch.threshold': 0.0}
    model, extensions, tx = train.build(run_config(**overrides), (8, 8, 1), 10, 1)
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=parallel.data_mesh())
    k_labeled, k_weak, k_strong, _ = jax.random.split(key, 4)
    views = [augment28.weak(k_labeled, images[:8]), augment28.weak(k_weak, images[8:]),
             augment28.strong(k_strong, images[8:])]
    logits = np.asarray(model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                                    jnp.concatenate(views), train=True,
                                    mutable=['batch_stats'])[0])
    pseudo = numpy_softmax(logits[8:24]).argmax(-1)  # threshold 0: every label is confident
    labeled = numpy_cross_entropy(logits[:8], labels[:8]).mean()
    unlabeled = numpy_cross_entropy(logits[24:], pseudo).mean()
    [ext] = [e for e in extensions if e.name == 'fixmatch']
    for step, weight in [(0, 0.0), (10, 0.25), (40, 1.0), (100, 1.0)]:
        loss_fn = ext.wrap_loss(train.forward_loss(model.apply),
                                state.replace(step=jnp.asarray(step, jnp.int32)))
        loss = float(jax.jit(loss_fn)(state.params, state.batch_stats, batch, key)[0])
        np.testing.assert_allclose(loss, labeled + weight * lambda_u * unlabeled, rtol=1e-5)


def test_weak_augmentation_is_a_zero_filled_shift_of_at_most_one_pixel():
    images = np.random.default_rng(0).normal(5.0, 1.0, (32, 8, 8, 1)).astype(np.float32)
    shifted = np.asarray(jax.jit(fixmatch.weak_augment)(jax.random.key(1), images))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    offsets = []
    for image, out in zip(padded, shifted):
        found = [(dy, dx) for dy in range(3) for dx in range(3)
                 if np.array_equal(image[dy:dy + 8, dx:dx + 8], out)]
        assert len(found) == 1
        offsets.append(found[0])
    assert len(set(offsets)) > 3  # each image has its own draw
    strong = jax.jit(fixmatch.strong_augment)(jax.random.key(1), images)
    assert strong.shape == images.shape and np.all(np.isfinite(strong))


def test_settings_are_checked():
    with pytest.raises(ValueError, match='set eman.momentum'):
        run_config(**{'fixmatch.labeler': 'teacher'})
    with pytest.raises(ValueError, match=r'threshold must be in \[0, 1\]'):
        run_config(**{'fixmatch.threshold': 1.5})
    with pytest.raises(ValueError, match='unknown fixmatch.labeler'):
        run_config(**{'fixmatch.labeler': 'oracle'})
    with pytest.raises(ValueError, match='ramp_steps >= 0'):
        run_config(**{'fixmatch.ramp_steps': -1})
    with pytest.raises(ValueError, match='unknown fixmatch.augment'):
        run_config(**{'fixmatch.augment': 'randaugment'})


def test_batch_source_draws_from_its_seeds_stratified_split(splits):
    images, labels = splits.train_images, splits.train_labels
    pools = {}
    for seed in (0, 1):
        source = fixmatch.SemiSupervisedBatches(
            images, labels, fraction=0.1, seed=seed, num_classes=10, labeled_batch=8,
            unlabeled_batch=40, steps_per_pass=6)
        labeled, unlabeled = source.labeled, source.unlabeled
        assert len(source) == 6
        np.testing.assert_array_equal(np.sort(np.concatenate([labeled, unlabeled])),
                                      np.arange(len(labels)))
        for c in range(10):  # stratified: round(10 %) of every class
            assert np.sum(labels[labeled] == c) == max(1, round(0.1 * np.sum(labels == c)))
        pools[seed] = labeled
        for epoch in (0, 1):
            batches = list(source.epoch(epoch))
            assert len(batches) == 6
            for batch in batches:
                for part, pool in (('image', labeled), ('unlabeled', unlabeled)):
                    label_key = 'label' if part == 'image' else 'unlabeled_label'
                    same = np.all(batch[part][:, None] == images[pool][None], axis=(2, 3, 4))
                    agree = same & (batch[label_key][:, None] == labels[pool][None])
                    assert agree.any(1).all(), (seed, epoch, part)
                    assert not (batch[part][:, None] == images[np.setdiff1d(
                        np.arange(len(labels)), pool)][None]).all(axis=(2, 3, 4)).any()
            again = list(source.epoch(epoch))  # a resumed run sees the same batches
            assert all(np.array_equal(a['image'], b['image']) for a, b in zip(batches, again))
        assert not np.array_equal(next(source.epoch(0))['image'],
                                  next(source.epoch(1))['image'])
    assert set(pools[0]) != set(pools[1])


def test_two_lanes_equal_the_one_seed_fits(tmp_path, splits, data_dir):
    """Seeds as lanes: lane k of a 2-seed fit is the 1-seed fit of seed k (own split, own
    batches, own teacher), up to float32 rounding of the vmapped step."""
    def batches(seed):
        return fixmatch.SemiSupervisedBatches(
            splits.train_images, splits.train_labels, fraction=0.1, seed=seed, num_classes=10,
            labeled_batch=8, unlabeled_batch=16, steps_per_pass=3)

    def fit(name, **overrides):
        cfg = run_config(**{'epochs': 2, 'lr': 0.05, 'nesterov': True, 'data_dir': data_dir,
                            'fixmatch.labeler': 'teacher', 'fixmatch.threshold': 0.2,
                            'eman.momentum': 0.8, 'eman.kind': 'ema',
                            'workdir': str(tmp_path / name), **overrides})
        return train.fit(cfg, batches=batches)
    with common.shared_compilations():  # the two one-seed fits compile one step
        lanes = fit('lanes', num_seeds=2)
        alone_fits = [fit(f'seed{seed}', seed=seed) for seed in (0, 1)]
    for seed, alone in enumerate(alone_fits):
        mine = [r for r in lanes.history if r['seed'] == seed]
        assert len(mine) == len(alone.history) == 2
        for a, b in zip(mine, alone.history):
            for key in ('train_loss', 'test_loss', 'teacher_test_loss', 'mask_rate',
                        'pseudo_label_accuracy'):
                assert a[key] == pytest.approx(b[key], rel=2e-5, abs=1e-6), (seed, key)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6),
                     train.seed_slice(lanes.state, seed).extensions['eman'].params,
                     alone.state.extensions['eman'].params)
    assert lanes.history[-1]['mask_rate'] > 0  # the unlabeled loss was on


def test_nesterov_config_is_the_papers_optax_chain():
    """sgd + momentum 0.9 + nesterov + coupled decay 5e-4 + cosine over 6 x 40 steps equals
    optax.chain(add_decayed_weights(5e-4), sgd(cosine_decay_schedule(0.03, 240), 0.9,
    nesterov=True)), and differs from heavy-ball momentum."""
    settings = {'optimizer': 'sgd', 'lr': 0.03, 'momentum': 0.9, 'weight_decay': 5e-4,
                'schedule': 'cosine', 'epochs': 6}
    ours = optimizers.make_optimizer(run_config(**settings, nesterov=True), 40)
    heavy_ball = optimizers.make_optimizer(run_config(**settings), 40)
    reference = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(
        optax.cosine_decay_schedule(0.03, 240), 0.9, nesterov=True))
    params = {'w': jnp.array([1.0, -2.0, 0.5])}
    states = [tx.init(params) for tx in (ours, heavy_ball, reference)]
    trajectories = [params, params, params]
    for step in range(5):
        grads = {'w': jax.random.normal(jax.random.key(step), (3,))}
        for i, tx in enumerate((ours, heavy_ball, reference)):
            updates, states[i] = tx.update(grads, states[i], trajectories[i])
            trajectories[i] = optax.apply_updates(trajectories[i], updates)
    np.testing.assert_allclose(trajectories[0]['w'], trajectories[2]['w'], rtol=1e-6)
    assert np.max(np.abs(trajectories[1]['w'] - trajectories[2]['w'])) > 1e-4
    with pytest.raises(ValueError, match='nesterov needs optimizer sgd'):
        run_config(optimizer='adam', nesterov=True)


# --- jaxnorm.augment28: the 28x28 digits' weak and strong views against hand-written references


def _digits_like(n=6, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (n, size, size, 1)).astype(np.float32)


def test_affine_matches_scipy_affine_transform_with_the_same_matrix():
    """p = M (o - c) + c + t, bilinear, constant fill: scipy's affine_transform with offset
    c + t - M c (mode 'grid-constant' pads with the fill before interpolating)."""
    from scipy import ndimage
    images = _digits_like(3)
    rng = np.random.default_rng(1)
    matrices = rng.normal(0.0, 0.3, (3, 2, 2)) + np.eye(2)
    translations = rng.uniform(-3, 3, (3, 2))
    fill = np.array([-1.0, 0.5, 2.0], np.float32)
    out = np.asarray(jax.jit(augment28.affine)(images, jnp.asarray(matrices, jnp.float32),
                                                jnp.asarray(translations, jnp.float32),
                                                jnp.asarray(fill)))
    centre = np.array([13.5, 13.5])
    for b in range(3):
        offset = centre + translations[b] - matrices[b] @ centre
        expected = ndimage.affine_transform(images[b, ..., 0].astype(np.float64), matrices[b],
                                            offset, order=1, mode='grid-constant',
                                            cval=float(fill[b]))
        np.testing.assert_allclose(out[b, ..., 0], expected, rtol=1e-4, atol=1e-4)


def test_quarter_turn_and_integer_translation_are_exact_permutations():
    images = _digits_like(2)
    quarter = augment28.affine_matrix(jnp.full((2,), np.pi / 2), jnp.zeros(2), jnp.ones(2))
    turned = np.asarray(augment28.affine(images, quarter, jnp.zeros((2, 2))))
    # M = [[0, -1], [1, 0]]: out[i, j] = in[27 - j, i], numpy's clockwise quarter turn.
    np.testing.assert_allclose(turned, np.rot90(images, -1, axes=(1, 2)), atol=1e-5)
    eye = jnp.broadcast_to(jnp.eye(2), (2, 2, 2))
    moved = np.asarray(augment28.affine(images, eye, jnp.array([[2.0, -3.0], [0.0, 1.0]]),
                                        jnp.array([9.0, 9.0])))
    expected = np.full_like(images, 9.0)
    expected[0, :26, 3:] = images[0, 2:, :25]   # reads row + 2, col - 3
    expected[1, :, :27] = images[1, :, 1:]
    np.testing.assert_array_equal(moved, expected)


def test_weak_view_is_a_background_filled_shift_of_at_most_two_pixels():
    images = _digits_like(24)
    out = np.asarray(jax.jit(augment28.weak)(jax.random.key(3), images))
    offsets = []
    for image, view in zip(images, out):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=image.min())
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(padded[dy:dy + 28, dx:dx + 28], view)]
        assert len(found) == 1
        offsets.append(found[0])
    assert len(set(offsets)) > 5


def test_cutout_fills_exactly_the_square():
    images = _digits_like(2)
    out = np.asarray(augment28.cutout(images, jnp.array([[3, 20], [0, 0]]), jnp.array([5, 8]),
                                      jnp.array([-7.0, -8.0])))
    for b, (top, left, size, fill) in enumerate([(3, 20, 5, -7.0), (0, 0, 8, -8.0)]):
        hole = np.zeros((28, 28, 1), bool)
        hole[top:top + size, left:left + size] = True
        assert np.sum(out[b] == fill) == size * size
        np.testing.assert_array_equal(out[b][hole], fill)
        np.testing.assert_array_equal(out[b][~hole], images[b][~hole])


def test_contrast_brightness_is_the_formula():
    images = _digits_like(3)
    c, b = np.array([-0.3, 0.0, 0.4]), np.array([0.1, -0.2, 0.0])
    out = np.asarray(augment28.contrast_brightness(images, jnp.asarray(c), jnp.asarray(b)))
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    expected = (images - mean) * (1 + c[:, None, None, None]) + mean + b[:, None, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_strong_view_of_a_constant_image_is_its_brightness_shift_and_cutouts_vary():
    """On a constant image the affine map, contrast and cutout leave a constant; only the
    brightness b ~ U(-0.4, 0.4) moves it. On digits the cutout square's side is in [1, 10]."""
    flat = np.full((64, 28, 28, 1), 0.7, np.float32)
    out = np.asarray(jax.jit(augment28.strong)(jax.random.key(0), flat))
    shift = out[:, 0, 0, 0] - 0.7
    np.testing.assert_allclose(out, out[:, :1, :1, :] * np.ones_like(out), atol=1e-5)
    assert np.all(np.abs(shift) <= augment28.MAX_JITTER + 1e-6) and np.std(shift) > 0.1
    with pytest.raises(ValueError, match='max_cutout must be in'):
        augment28.strong(jax.random.key(0), flat, max_cutout=29)
    with pytest.raises(ValueError, match=r'expected images \(B, H, W, C\)'):
        augment28.weak(jax.random.key(0), flat[0])
