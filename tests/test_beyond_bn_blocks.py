"""The act-before-sum residual block and the numerical rank of Beyond BatchNorm (arXiv:2106.05956),
against hand-written references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import theory
from jaxnorm.models.resnet import BasicBlock
from jaxnorm.models.common import resolve_norm


def _conv(x, kernel, bias=None):
    out = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       precision=jax.lax.Precision.HIGHEST)
    return out if bias is None else out + bias


def _layer_norm(x, scale, bias, eps):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * scale + bias


def _block_reference(params, x, gain, eps):
    """s * relu(LN(conv2(relu(LN(conv1(x)))))) + x, written out (LN over H, W, C per sample,
    biased variance, epsilon 1e-5, per-channel affine: the registry's 'ln')."""
    h = _conv(x, params['conv1']['kernel'])
    h = jax.nn.relu(_layer_norm(h, params['norm1']['scale'], params['norm1']['bias'], eps))
    h = _conv(h, params['conv2']['kernel'])
    h = jax.nn.relu(_layer_norm(h, params['norm2']['scale'], params['norm2']['bias'], eps))
    return gain * h + x


@pytest.fixture(scope='module')
def ln_block():
    spec = resolve_norm('ln', None)
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 8))
    block = BasicBlock(spec, 8, skipinit=True, act_before_sum=True)
    variables = block.init(jax.random.key(1), x)
    return spec, block, variables, x


def test_act_before_sum_at_gain_zero_is_exactly_the_identity(ln_block):
    _, block, variables, x = ln_block
    assert float(variables['params']['skip_gain']) == 0.0
    out = block.apply(variables, x, train=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    # The default block at gain 0 is relu(x), not x: the activation sits after the sum.
    plain = BasicBlock(ln_block[0], 8, skipinit=True)
    out_plain = plain.apply(variables, x, train=True)
    np.testing.assert_array_equal(np.asarray(out_plain), np.maximum(np.asarray(x), 0))


@pytest.mark.parametrize('gain', [1.0, 0.7])
def test_act_before_sum_matches_the_written_out_block(ln_block, gain):
    _, block, variables, x = ln_block
    params = jax.tree.map(lambda v: v, variables['params'])
    params['skip_gain'] = jnp.asarray(gain)
    # Random affine parameters so that scale and bias are exercised.
    keys = iter(jax.random.split(jax.random.key(5), 4))
    for norm in ('norm1', 'norm2'):
        for name in ('scale', 'bias'):
            leaf = params[norm][name]
            params[norm][name] = leaf + 0.3 * jax.random.normal(next(keys), leaf.shape)
    out = block.apply({**variables, 'params': params}, x, train=True)
    expected = _block_reference(params, x, gain, 1e-5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=2e-4, atol=2e-5)
    # The activation is on the branch: output minus x is gain * (non-negative) everywhere.
    assert np.all(np.asarray(out - x) >= -1e-6) and np.any(np.asarray(out) < 0)


def test_act_before_sum_rejects_preact():
    x = jnp.ones((2, 6, 6, 4))
    with pytest.raises(ValueError, match='act_before_sum'):
        BasicBlock(resolve_norm('bn', None), 4, preact=True, act_before_sum=True).init(
            jax.random.key(0), x)


def _low_rank(seed, batch, dim, rank):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, rank)) @ rng.normal(size=(rank, dim))).astype(np.float32)


@pytest.mark.parametrize('rank', [1, 3, 7, 12])
def test_numerical_rank_is_numpy_matrix_rank_of_the_unit_rows(rank):
    x = _low_rank(rank, 12, 40, rank).reshape(12, 5, 8)
    rows = x.reshape(12, -1)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    # numpy's default tolerance in float32: s_max * max(B, D) * eps(float32).
    assert int(theory.numerical_rank(jnp.asarray(x))) == np.linalg.matrix_rank(unit) == rank
    # A declared relative tolerance: numpy's tol = rtol * s_max (absolute) gives the same count.
    singular = np.linalg.svd(unit, compute_uv=False)
    rtol = 0.5 * singular[min(rank, 12) - 1] / singular[0]  # halfway below the smallest kept
    assert int(theory.numerical_rank(jnp.asarray(x), rtol=rtol)) == np.linalg.matrix_rank(
        unit, tol=rtol * singular[0])


def test_numerical_rank_counts_singular_values_above_a_relative_tolerance():
    # Rows with prescribed singular values 1, 1e-2, 1e-5 (orthonormal factors).
    rng = np.random.default_rng(0)
    left, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    right, _ = np.linalg.qr(rng.normal(size=(50, 3)))
    x = (left * np.array([1.0, 1e-2, 1e-5])) @ right.T
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    singular = np.linalg.svd(unit, compute_uv=False)
    for rtol in (1e-1, 1e-3, 1e-6):
        assert int(theory.numerical_rank(jnp.asarray(x, jnp.float32), rtol=rtol)) == int(
            np.sum(singular > rtol * singular[0]))
    with pytest.raises(ValueError, match='rtol'):
        theory.numerical_rank(jnp.asarray(x), rtol=0.0)


def test_probe_arrays_numerical_rank_matches_the_function():
    from jaxnorm import models
    model = models.uniform_cnn('gn', depth=2, width=8, num_classes=10,
                               norm_kwargs={'group_size': 4})
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 3))
    variables = model.init(jax.random.key(1), x)
    out = theory.probe_arrays(model, variables, x, layers='blocks', with_numerical_rank=True)
    assert out['numerical_rank'].shape == out['stable_rank'].shape
    assert 'numerical_rank' not in theory.probe_arrays(model, variables, x, layers='blocks')
    # The first probed layer's output, recomputed: its numerical rank equals numpy's.
    _, selected, _ = theory._instrumented_forward(
        model.apply, variables, x, None, select=theory._selector('blocks'),
        tapped=theory.TAPPED, train=True)
    first = np.asarray(selected[0][1]).reshape(6, -1)
    unit = first / np.linalg.norm(first, axis=1, keepdims=True)
    assert int(out['numerical_rank'][0]) == np.linalg.matrix_rank(unit.astype(np.float32))
