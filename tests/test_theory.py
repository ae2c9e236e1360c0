"""Probes of jaxnorm.theory against numpy / jax.vjp references, and Beyond BatchNorm's three
claims (arXiv:2106.05956) on small networks at initialization."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import theory
from jaxnorm.layers import BEYOND_BN_REPO_OPTIONS


def unit_rows(a):
    rows = np.asarray(a, np.float64).reshape(a.shape[0], -1)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_activations(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == 'gaussian':
        return rng.normal(size=(12, 40)).astype(np.float32)
    if kind == 'low_rank':  # 16 samples in a 3-dimensional subspace, rows of unequal norms
        return (rng.normal(size=(16, 3)) @ rng.normal(size=(3, 50))
                * rng.uniform(0.1, 10, size=(16, 1))).astype(np.float32)
    if kind == 'correlated_nhwc':  # a shared component: cosines near 0.8
        shared = rng.normal(size=(1, 4, 4, 6))
        return (2 * shared + rng.normal(size=(10, 4, 4, 6))).astype(np.float32)
    return np.maximum(rng.normal(size=(8, 3, 3, 5)), 0).astype(np.float32)  # post-ReLU


KINDS = ('gaussian', 'low_rank', 'correlated_nhwc', 'relu_nhwc')


@pytest.mark.parametrize('kind', KINDS)
def test_stable_rank_is_the_svd_definition(kind):
    a = random_activations(kind, 0)
    singular = np.linalg.svd(unit_rows(a), compute_uv=False)
    expected = np.sum(singular ** 2) / singular[0] ** 2
    np.testing.assert_allclose(jax.jit(theory.stable_rank)(a), expected, rtol=1e-5)
    if kind == 'low_rank':
        assert expected <= 3 + 1e-6


@pytest.mark.parametrize('kind', KINDS)
def test_mean_cosine_and_channel_variance_match_numpy(kind):
    a = random_activations(kind, 1)
    rows = np.asarray(a, np.float64).reshape(a.shape[0], -1)
    cosines = [rows[i] @ rows[j] / (np.linalg.norm(rows[i]) * np.linalg.norm(rows[j]))
               for i in range(len(rows)) for j in range(len(rows)) if i != j]
    np.testing.assert_allclose(jax.jit(theory.mean_cosine)(a), np.mean(cosines), atol=1e-6)
    channels = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
    np.testing.assert_allclose(jax.jit(theory.channel_variance)(a),
                               np.mean(np.var(channels, axis=0, ddof=1)), rtol=1e-5)


def conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision=jax.lax.Precision.HIGHEST)


def batch_norm_relu(z, layer):
    mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    return jax.nn.relu((z - mean) / jnp.sqrt(var + 1e-5) * layer['scale'] + layer['bias'])


def test_taps_and_forward_statistics_match_a_hand_written_network():
    """uniform_cnn(bn, depth 2) rewritten in plain jax: its conv outputs z1, z2 and logits are
    explicit, so dL/dz comes from jax.vjp of the rest of the network."""
    model = theory.uniform_cnn('bn', depth=2, width=6, num_classes=5)
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 2))
    y = jnp.array([0, 1, 2, 3, 4, 0])
    variables = model.init(jax.random.key(0), x)
    p = variables['params']
    loss = lambda logits: jnp.mean(  # noqa: E731
        optax.softmax_cross_entropy_with_integer_labels(logits, y))
    head = lambda a2: (jnp.mean(a2, axis=(1, 2)) @ p['head']['kernel']  # noqa: E731
                       + p['head']['bias'])
    after_z2 = lambda z2: loss(head(batch_norm_relu(z2, p['layer2']['norm'])))  # noqa: E731
    after_z1 = lambda z1: after_z2(conv(batch_norm_relu(z1, p['layer1']['norm']),  # noqa: E731
                                        p['layer2']['conv']['kernel']))
    z1 = conv(x, p['layer1']['conv']['kernel'])
    a1 = batch_norm_relu(z1, p['layer1']['norm'])
    z2 = conv(a1, p['layer2']['conv']['kernel'])
    a2 = batch_norm_relu(z2, p['layer2']['norm'])
    expected_grads = []
    for rest, z in ((after_z1, z1), (after_z2, z2), (loss, head(a2))):
        _, pullback = jax.vjp(rest, z)
        expected_grads.append(np.linalg.norm(pullback(jnp.ones(()))[0]))

    out = theory.probe(model, variables, {'image': x, 'label': y})

    assert out['layers'] == ('layer1', 'layer2')
    assert out['tapped'] == ('layer1/conv', 'layer2/conv', 'head')
    np.testing.assert_allclose(out['grad_norm'], expected_grads, rtol=2e-5)
    np.testing.assert_allclose(out['loss'], after_z1(z1), rtol=1e-6)
    for index, a in enumerate((a1, a2)):
        singular = np.linalg.svd(unit_rows(np.asarray(a)), compute_uv=False)
        np.testing.assert_allclose(out['stable_rank'][index],
                                   np.sum(singular ** 2) / singular[0] ** 2, rtol=1e-4)
        np.testing.assert_allclose(out['variance'][index],
                                   np.mean(np.var(np.asarray(a).reshape(-1, 6), 0, ddof=1)),
                                   rtol=1e-4)


def test_reparameterized_convs_are_tapped_and_the_head_tap_is_the_softmax_residual():
    """sWS convs subclass nn.Conv and are tapped; the head's tap gradient has the closed form
    dL/dlogits = (softmax(logits) - onehot(y)) / B."""
    model = theory.uniform_resnet('sws', num_blocks=2, width=4, num_classes=3)
    x = jax.random.normal(jax.random.key(2), (5, 8, 8, 3))
    y = jnp.array([0, 1, 2, 1, 0])
    variables = model.init(jax.random.key(3), x)
    out = theory.probe(model.apply, variables, (x, y), layers='convs')
    logits = model.apply(variables, x, train=True, mutable=['batch_stats'])[0]
    residual = (jax.nn.softmax(logits) - jax.nn.one_hot(y, 3)) / len(y)
    assert out['tapped'] == ('stem/conv', 'stage1_block1/conv1', 'stage1_block1/conv2',
                             'stage1_block2/conv1', 'stage1_block2/conv2', 'head')
    assert out['layers'] == out['tapped'][:-1]
    np.testing.assert_allclose(out['grad_norm'][-1], np.linalg.norm(residual), rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = theory.uniform_cnn('bn', depth=1, width=4)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match='at least 2 samples'):
        theory.probe(model, variables, x[:1])
    with pytest.raises(ValueError, match='unknown layer selection'):
        theory.probe(model, variables, x, layers='everything')
    with pytest.raises(ValueError, match='matched no module'):
        theory.probe(model, variables, x, layers=lambda path, module: False)
    with pytest.raises(ValueError, match='labels must have shape'):
        theory.probe(model, variables, (x, jnp.zeros((3,), jnp.int32)))


# ----------------------------------------------------------------------------- the claims


def init_and_inputs(model, seed, shape):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1), shape)
    y = jax.random.randint(jax.random.fold_in(jax.random.key(seed), 2), shape[:1], 0, 10)
    return model.init(jax.random.key(seed), x[:1]), x, y


@pytest.mark.parametrize('norm', ['bn', 'sws', 'none'])
def test_forward_variance_growth_over_27_blocks(norm):
    """Claim (i). An activation normalizer adds about one unit of variance per block (linear
    growth, < 50x over 27 blocks even from a first block of variance 0.5); with sWS or no
    normalizer each block adds a branch as large as its input, doubling the variance
    (2^26 ~ 7e7 >> 1e4)."""
    model = theory.uniform_resnet(norm, num_blocks=27, width=16,
                                  norm_kwargs=BEYOND_BN_REPO_OPTIONS.get(norm))
    variance = jax.jit(lambda v, x: theory.probe_arrays(model, v, x)['variance'])
    # Rows: seeds; columns: stem, then the 27 blocks.
    curves = np.stack([variance(*init_and_inputs(model, seed, (16, 8, 8, 3))[:2])
                       for seed in range(2)])
    mean = curves.mean(axis=0)
    growth = mean[-1] / mean[1]
    if norm == 'bn':
        assert growth < 50
    else:
        assert growth > 1e4


GROUP_SIZES = (1, 4, 16)  # width 16: instance norm ... layer norm


@pytest.fixture(scope='module')
def group_size_sweep():
    """Last-layer stable rank and every layer's gradient norm of a 10-layer width-16 GN CNN,
    per group size (rows) and seed (columns)."""
    ranks, first_grads = [], []
    for group_size in GROUP_SIZES:
        model = theory.uniform_cnn('gn', depth=10, width=16, norm_kwargs={
            **BEYOND_BN_REPO_OPTIONS['gn'], 'group_size': group_size})
        run = jax.jit(functools.partial(theory.probe_arrays, model,
                                        layers=lambda path, module: path == 'layer10'))
        outs = [run(*init_and_inputs(model, seed, (16, 8, 8, 3))) for seed in range(3)]
        ranks.append([float(o['stable_rank'][0]) for o in outs])
        first_grads.append([float(o['grad_norm'][0]) for o in outs])
    return np.array(ranks), np.array(first_grads)


def test_stable_rank_decreases_with_group_size(group_size_sweep):
    """Claim (ii): rank >= Omega(sqrt(C / group size)), so larger groups lower the rank."""
    mean_rank = group_size_sweep[0].mean(axis=1)
    assert np.all(np.diff(mean_rank) < 0), mean_rank


def test_first_layer_gradient_is_larger_for_instance_than_layer_groups(group_size_sweep):
    """Claim (iii): small groups give large gradient norms in the early layers."""
    mean_grad = group_size_sweep[1].mean(axis=1)
    assert mean_grad[0] > mean_grad[-1], mean_grad
