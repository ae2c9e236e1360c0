"""jaxnorm.functional against numpy references written from the papers' formulas.

The references below are independent of the library: float64 numpy, one formula each, with
the reduction axes spelled out. Every library call goes through ``jax.jit``.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import functional as F

EPS = 1e-5
TOL = dict(rtol=1e-5, atol=1e-5)
# (N, H, W, C) with odd sizes, a 1x1 map, (N, L, C) sequences, and a dense (N, C) input.
SHAPES = [(2, 5, 7, 12), (3, 4, 4, 24), (5, 1, 1, 12), (3, 9, 12), (6, 24)]


# ------------------------------------------------------------------------ numpy references


def np_var(x, axes, unbiased=False):
    n = math.prod(x.shape[a] for a in axes)
    var = ((x - x.mean(axes, keepdims=True)) ** 2).mean(axes, keepdims=True)
    return var * n / max(n - 1, 1) if unbiased else var


def np_standardize(x, axes, eps=EPS, unbiased=False):
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(np_var(x, axes, unbiased) + eps)


def np_group_norm(x, groups, scale, bias, unbiased=False):
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    return np_standardize(grouped, axes, unbiased=unbiased).reshape(x.shape) * scale + bias


def np_frn(x, scale, bias, eps):
    nu2 = (x ** 2).mean(tuple(range(1, x.ndim - 1)), keepdims=True)
    return scale * x / np.sqrt(nu2 + eps) + bias


def np_evonorm_b0(x, v, scale, bias, unbiased_instance=False):
    batch_std = np.sqrt(np_var(x, tuple(range(x.ndim - 1))) + EPS)
    instance_std = np.sqrt(np_var(x, tuple(range(1, x.ndim - 1)), unbiased_instance) + EPS)
    return x / np.maximum(batch_std, v * x + instance_std) * scale + bias


def np_evonorm_s0(x, v, groups, scale, bias, unbiased=False):
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    std = np.sqrt(np_var(grouped, axes, unbiased) + EPS)
    std = np.broadcast_to(std, grouped.shape).reshape(x.shape)
    return x / (1 + np.exp(-v * x)) / std * scale + bias


def draw(shape, seed=0, loc=0.0):
    return np.random.default_rng(seed).normal(loc, 1.0, shape).astype(np.float32)


def affine_params(channels, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, channels).astype(np.float32),
            rng.normal(0, 0.5, channels).astype(np.float32))


def run(fn, *args, **static):
    return np.asarray(jax.jit(functools.partial(fn, **static))(*args))


# ------------------------------------------------------------------ activation normalizers


@pytest.mark.parametrize('shape', SHAPES)
def test_standardizing_norms_match_numpy(shape):
    x = draw(shape, loc=0.5)
    scale, bias = affine_params(shape[-1])
    x64 = x.astype(np.float64)
    batch, spatial, sample = (tuple(range(x.ndim - 1)), tuple(range(1, x.ndim - 1)),
                              tuple(range(1, x.ndim)))
    np.testing.assert_allclose(run(F.batch_norm, x, scale=scale, bias=bias),
                               np_standardize(x64, batch) * scale + bias, **TOL)
    np.testing.assert_allclose(run(F.layer_norm, x, scale=scale, bias=bias),
                               np_standardize(x64, sample) * scale + bias, **TOL)
    if len(shape) == 2:  # no spatial axis: every entry would be normalized by itself
        with pytest.raises(ValueError, match='needs a spatial axis; got shape'):
            run(F.instance_norm, x, scale=scale, bias=bias)
    else:
        np.testing.assert_allclose(run(F.instance_norm, x, scale=scale, bias=bias),
                                   np_standardize(x64, spatial) * scale + bias, **TOL)
    np.testing.assert_allclose(run(F.variance_norm, x, scale=scale, bias=bias),
                               x64 / np.sqrt(np_var(x64, batch) + EPS) * scale + bias, **TOL)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('groups', [1, 3, 4])
@pytest.mark.parametrize('unbiased', [False, True])
def test_group_norm_matches_numpy(shape, groups, unbiased):
    x = draw(shape)
    scale, bias = affine_params(shape[-1])
    expected = np_group_norm(x.astype(np.float64), groups, scale, bias, unbiased)
    by_count = run(F.group_norm, x, num_groups=groups, scale=scale, bias=bias,
                   unbiased=unbiased)
    by_size = run(F.group_norm, x, group_size=shape[-1] // groups, scale=scale, bias=bias,
                  unbiased=unbiased)
    np.testing.assert_allclose(by_count, expected, **TOL)
    np.testing.assert_array_equal(by_size, by_count)


def test_group_norm_default_groups_are_32_capped_at_channels():
    for shape, groups in [((2, 3, 3, 64), 32), ((2, 3, 3, 16), 16)]:
        x = draw(shape)
        np.testing.assert_allclose(run(F.group_norm, x),
                                   np_group_norm(x.astype(np.float64), groups, 1.0, 0.0), **TOL)


@pytest.mark.parametrize('shape', SHAPES)
def test_filter_response_norm_and_tlu_match_numpy(shape):
    x = draw(shape)
    scale, bias = affine_params(shape[-1])
    tau = np.random.default_rng(2).normal(0, 0.3, shape[-1]).astype(np.float32)
    y = run(F.filter_response_norm, x, scale=scale, bias=bias, epsilon=1e-3)
    np.testing.assert_allclose(y, np_frn(x.astype(np.float64), scale, bias, 1e-3), **TOL)
    np.testing.assert_array_equal(run(F.tlu, y, tau), np.maximum(y, tau))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('unbiased', [False, True])
def test_evonorms_match_numpy(shape, unbiased):
    x = draw(shape)
    channels = shape[-1]
    scale, bias = affine_params(channels)
    v = np.random.default_rng(3).uniform(0.5, 1.5, channels).astype(np.float32)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(
        run(F.evonorm_b0, x, v, scale=scale, bias=bias, unbiased_instance_var=unbiased),
        np_evonorm_b0(x64, v, scale, bias, unbiased), **TOL)
    np.testing.assert_allclose(
        run(F.evonorm_s0, x, v, num_groups=4, scale=scale, bias=bias, unbiased=unbiased),
        np_evonorm_s0(x64, v, 4, scale, bias, unbiased), **TOL)


def test_evonorm_b0_uses_given_batch_variance():
    x = draw((4, 3, 3, 8))
    batch_var = np.full(8, 2.5, np.float32)
    v = np.ones(8, np.float32)
    x64 = x.astype(np.float64)
    expected = x64 / np.maximum(np.sqrt(2.5 + EPS),
                                x64 + np.sqrt(np_var(x64, (1, 2)) + EPS))
    np.testing.assert_allclose(run(F.evonorm_b0, x, v, batch_var=batch_var), expected, **TOL)


def test_batch_norm_with_given_statistics():
    x = draw((4, 3, 5, 6))
    mean, var = np.linspace(-1, 1, 6, dtype=np.float32), np.linspace(0.5, 2, 6, dtype=np.float32)
    np.testing.assert_allclose(run(F.batch_norm, x, mean=mean, var=var),
                               (x - mean) / np.sqrt(var + EPS), **TOL)
    with pytest.raises(ValueError, match='both mean and var'):
        F.batch_norm(x, mean=mean)


def test_batch_moments_unbiased_is_bessel_corrected():
    x = draw((3, 2, 5, 4))
    mean, var = run(F.batch_moments, x, unbiased=True)
    np.testing.assert_allclose(mean, x.mean((0, 1, 2)), **TOL)
    np.testing.assert_allclose(var, x.astype(np.float64).var((0, 1, 2), ddof=1), **TOL)


@pytest.mark.parametrize('unbiased', [False, True])
def test_batch_norm_statistics_normalize_biased_and_store_as_asked(unbiased):
    x = np.random.default_rng(3).normal(1.0, 2.0, (4, 3, 5, 6)).astype(np.float32)
    mean, var, stored = jax.jit(functools.partial(
        F.batch_norm_statistics, unbiased_running_var=unbiased))(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean((0, 1, 2)), **TOL)
    np.testing.assert_allclose(var, np_var(x64, (0, 1, 2)).reshape(-1), **TOL)
    np.testing.assert_allclose(stored, np_var(x64, (0, 1, 2), unbiased=unbiased).reshape(-1),
                               **TOL)


def test_centered_relu_has_zero_mean_unit_variance_on_gaussian_input():
    z = draw((200_000,)).reshape(-1, 1)
    y = run(F.centered_relu, z)
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.01


# ---------------------------------------------------------------- flax built-ins, to 1e-6


@pytest.mark.parametrize('shape', [(2, 5, 7, 12), (4, 3, 3, 8)])
def test_matches_flax_builtins(shape):
    x = draw(shape, loc=0.3)
    scale, bias = affine_params(shape[-1])
    params = {'params': {'scale': scale, 'bias': bias}}
    # flax's LayerNorm/GroupNorm/InstanceNorm default to eps 1e-6; ours is 1e-5 throughout.
    builtins = [
        (nn.BatchNorm(use_running_average=False, epsilon=EPS, use_fast_variance=False),
         F.batch_norm),
        (nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1, epsilon=EPS,
                      use_fast_variance=False), F.layer_norm),
        (nn.GroupNorm(num_groups=4, epsilon=EPS, use_fast_variance=False),
         functools.partial(F.group_norm, num_groups=4)),
        (nn.InstanceNorm(epsilon=EPS, use_fast_variance=False), F.instance_norm),
    ]
    for module, fn in builtins:
        expected, _ = jax.jit(lambda v, x, m=module: m.apply(v, x, mutable=['batch_stats']))(
            params, x)
        np.testing.assert_allclose(run(fn, x, scale=scale, bias=bias), expected,
                                   rtol=1e-6, atol=1e-6, err_msg=type(module).__name__)


# ------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize('shape', [(2, 5, 7, 12), (6, 7, 24)])
def test_group_norm_one_group_is_layer_norm_and_size_one_is_instance_norm(shape):
    x = draw(shape)
    scale, bias = affine_params(shape[-1])
    np.testing.assert_allclose(run(F.group_norm, x, num_groups=1, scale=scale, bias=bias),
                               run(F.layer_norm, x, scale=scale, bias=bias), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(run(F.group_norm, x, group_size=1, scale=scale, bias=bias),
                               run(F.instance_norm, x, scale=scale, bias=bias), rtol=1e-6,
                               atol=1e-6)


def naive_group_norm(x, groups, unbiased):
    """Straight jnp transcription, differentiated through every path by autodiff."""
    grouped = x.reshape(*x.shape[:-1], groups, -1)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    var = jnp.var(grouped, axes, keepdims=True, ddof=1 if unbiased else 0)
    return ((grouped - grouped.mean(axes, keepdims=True)) / jnp.sqrt(var + EPS)).reshape(x.shape)


def naive_group_var(x, groups):
    grouped = x.reshape(*x.shape[:-1], groups, -1)
    var = jnp.var(grouped, (1, 2, 4), keepdims=True)
    return jnp.broadcast_to(var, grouped.shape).reshape(x.shape)


def naive_sws(kernel):
    axes = tuple(range(kernel.ndim - 1))
    fan_in = math.prod(kernel.shape[:-1])
    return F.RELU_GAIN * (kernel - kernel.mean(axes)) / jnp.sqrt(
        (jnp.var(kernel, axes) + 1e-5) * fan_in)


GRADIENT_CASES = {
    'group_norm': (lambda x: F.group_norm(x, num_groups=3, unbiased=True),
                   lambda x: naive_group_norm(x, 3, True)),
    'batch_norm': (F.batch_norm,
                   lambda x: (x - x.mean((0, 1, 2))) / jnp.sqrt(jnp.var(x, (0, 1, 2)) + EPS)),
    'evonorm_s0': (lambda x: F.evonorm_s0(x, jnp.ones(12), num_groups=3),
                   lambda x: x * jax.nn.sigmoid(x) / jnp.sqrt(
                       naive_group_var(x, 3) + EPS)),
    'sws': (F.scaled_weight_standardization, naive_sws),
}


@pytest.mark.parametrize('name', sorted(GRADIENT_CASES))
def test_gradients_equal_autodiff_of_the_naive_formula(name):
    # jaxnorm drops the variance's derivative in the mean, which is exactly zero.
    ours, naive = GRADIENT_CASES[name]
    x = jnp.asarray(draw((3, 4, 5, 12), loc=0.5))
    cotangent = jnp.asarray(draw(x.shape, seed=7))
    grad = lambda fn: jax.jit(jax.grad(lambda x: (fn(x) * cotangent).sum()))(x)  # noqa: E731
    np.testing.assert_allclose(grad(ours), grad(naive), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------- weight reparameterizations


def np_filter_axes(kernel):
    return tuple(range(kernel.ndim - 1))


@pytest.mark.parametrize('shape', [(3, 3, 5, 7), (1, 1, 4, 6), (3, 3, 1, 8), (9, 5)])
def test_weight_reparameterizations_match_numpy(shape):
    kernel = draw(shape) * 0.1
    out = shape[-1]
    g = np.random.default_rng(4).uniform(0.5, 2, out).astype(np.float32)
    v = kernel.astype(np.float64)
    axes = np_filter_axes(kernel)
    fan_in = math.prod(shape[:-1])
    norm = np.sqrt((v ** 2).sum(axes, keepdims=True))
    mean, std = v.mean(axes, keepdims=True), v.std(axes, keepdims=True)

    np.testing.assert_allclose(run(F.weight_norm, kernel, g), g * v / norm, **TOL)
    np.testing.assert_allclose(run(F.weight_norm, kernel, g, epsilon=1e-5, epsilon_on_norm=True),
                               g * v / (norm + 1e-5), **TOL)
    np.testing.assert_allclose(
        run(F.scaled_weight_standardization, kernel, g),
        F.RELU_GAIN * g * (v - mean) / np.sqrt(std ** 2 + 1e-5) / np.sqrt(fan_in), **TOL)
    np.testing.assert_allclose(
        run(F.scaled_weight_standardization, kernel, g, epsilon_on_std=True),
        F.RELU_GAIN * g * (v - mean) / (std + 1e-5) / np.sqrt(fan_in), **TOL)
    np.testing.assert_allclose(run(F.weight_center, kernel), v - mean, **TOL)


def test_relu_gain_is_the_centered_relu_constant():
    assert F.RELU_GAIN == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)))


# ------------------------------------------------------------------------------- numerics


LARGE_MEAN_CASES = [
    ('batch_norm', F.batch_norm, (0, 1, 2)),
    ('layer_norm', F.layer_norm, (1, 2, 3)),
    ('instance_norm', F.instance_norm, (1, 2)),
    ('variance_norm', lambda x: F.variance_norm(x - 1e4), (0, 1, 2)),
]


@pytest.mark.parametrize('name,fn,axes', LARGE_MEAN_CASES, ids=[c[0] for c in LARGE_MEAN_CASES])
def test_large_mean_input_normalizes_to_unit_variance(name, fn, axes):
    x = jnp.asarray(1e4 + draw((8, 16, 16, 4)))
    y = np.asarray(jax.jit(fn)(x), np.float64)
    assert np.all(np.abs(y.var(axes) - 1) < 1e-3), (name, y.var(axes))


def test_large_mean_group_norm_and_contrast_with_flax_fast_variance():
    x = jnp.asarray(1e4 + draw((8, 16, 16, 8)))
    ours = np.asarray(jax.jit(functools.partial(F.group_norm, num_groups=2))(x), np.float64)
    grouped_var = ours.reshape(8, 16, 16, 2, 4).var((1, 2, 4))
    assert np.all(np.abs(grouped_var - 1) < 1e-3)
    # flax's default one-pass E[x^2] - E[x]^2 cancels catastrophically here (documented
    # contrast, not a property of jaxnorm): the variance estimate is wrong by orders of
    # magnitude, so the output variance is nowhere near 1.
    flax_bn = nn.BatchNorm(use_running_average=False)
    variables = flax_bn.init(jax.random.key(0), x)
    fast, _ = jax.jit(lambda v, x: flax_bn.apply(v, x, mutable=['batch_stats']))(variables, x)
    assert np.all(np.abs(np.asarray(fast, np.float64).var((0, 1, 2)) - 1) > 0.5)


@pytest.mark.parametrize('name', ['batch_norm', 'layer_norm', 'instance_norm', 'group_norm',
                                  'filter_response_norm', 'evonorm_s0'])
def test_bfloat16_is_the_float32_computation_rounded(name):
    x = draw((4, 5, 5, 8), loc=3.0)
    x_bf16 = jnp.asarray(x, jnp.bfloat16)
    fn = getattr(F, name)
    args = (jnp.ones(8),) if name == 'evonorm_s0' else ()
    y = jax.jit(fn)(x_bf16, *args)
    assert y.dtype == jnp.bfloat16
    reference = jax.jit(fn)(x_bf16.astype(jnp.float32), *args)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(reference),
                               rtol=2 ** -8, atol=2 ** -8)


def test_weight_functions_keep_dtype():
    kernel = jnp.asarray(draw((3, 3, 4, 5)), jnp.bfloat16)
    for fn in (F.weight_norm, F.scaled_weight_standardization, F.weight_center):
        assert jax.jit(fn)(kernel).dtype == jnp.bfloat16


# --------------------------------------------------------------------------------- errors


def test_channels_not_divisible_by_groups_names_c_and_g():
    x = jnp.zeros((2, 4, 4, 12))
    with pytest.raises(ValueError, match=r'C=12.*G=5'):
        F.group_norm(x, num_groups=5)
    with pytest.raises(ValueError, match=r'C=12.*size 5'):
        F.group_norm(x, group_size=5)
    with pytest.raises(ValueError, match='not both'):
        F.group_norm(x, num_groups=3, group_size=4)


def test_evonorm_s0_channels_not_divisible_by_its_groups():
    x = jnp.zeros((2, 4, 4, 48))
    with pytest.raises(ValueError, match=r'evonorm_s0.*C=48.*G=32'):
        F.evonorm_s0(x, jnp.ones(48), num_groups=32)


@pytest.mark.parametrize('fn', [F.batch_norm, F.layer_norm, F.instance_norm, F.group_norm,
                                F.filter_response_norm, F.variance_norm, F.centered_relu])
def test_wrong_rank_and_integer_dtype_fail_at_trace_time(fn):
    with pytest.raises(ValueError, match=r'rank 1'):
        jax.jit(fn)(jnp.zeros((12,)))
    with pytest.raises(TypeError, match='int32'):
        jax.jit(fn)(jnp.zeros((2, 4, 4, 3), jnp.int32))


def test_weight_functions_reject_vectors_and_integers():
    with pytest.raises(ValueError, match='rank 1'):
        F.weight_norm(jnp.zeros(5))
    with pytest.raises(TypeError, match='int32'):
        F.weight_center(jnp.zeros((3, 3, 2, 2), jnp.int32))


def _naive_standardize(x, axes):
    """Direct jnp formula, differentiated straight through the mean and the variance."""
    mean = jnp.mean(x, axes, keepdims=True)
    return (x - mean) / jnp.sqrt(jnp.mean((x - mean) ** 2, axes, keepdims=True) + EPS)


@pytest.mark.parametrize('ours, reference', [
    (F.batch_norm, lambda x: _naive_standardize(x, (0, 1, 2))),
    (functools.partial(F.group_norm, num_groups=3),
     lambda x: _naive_standardize(x.reshape(*x.shape[:-1], 3, 4), (1, 2, 4)).reshape(x.shape)),
])
def test_second_derivatives_match_the_direct_formula(ours, reference):
    # Hessian-vector products (pruning scores, gradient-flow identities) need exact second
    # derivatives, which a stop_gradient on the mean silently breaks.
    x, weights, direction = (draw((3, 4, 5, 12), seed) for seed in (0, 1, 2))

    def hvp(fn):
        grad = jax.grad(lambda x: jnp.sum(weights * fn(x)))
        return jax.jit(lambda x, v: jax.jvp(grad, (x,), (v,))[1])(x, direction)

    np.testing.assert_allclose(hvp(ours), hvp(reference), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('fn', [
    F.batch_norm, F.layer_norm, F.instance_norm, functools.partial(F.group_norm, num_groups=3),
    F.filter_response_norm, F.variance_norm, F.centered_relu,
    lambda x: F.evonorm_b0(x, jnp.linspace(0.5, 1.5, 12)),
    lambda x: F.evonorm_s0(x, jnp.linspace(0.5, 1.5, 12), num_groups=4),
], ids=['bn', 'ln', 'in', 'gn', 'frn', 'vn', 'centered_relu', 'evonorm_b0', 'evonorm_s0'])
def test_sequences_and_volumes_equal_the_image_path_on_the_same_data(fn):
    # (N, L, C) is (N, L, 1, C) and (N, D, H, W, C) is (N, D, H*W, C) to every normalizer.
    sequences = draw((3, 10, 12), 0, loc=0.3)
    np.testing.assert_allclose(jax.jit(fn)(sequences),
                               jax.jit(fn)(sequences[:, :, None, :])[:, :, 0, :], **TOL)
    volumes = draw((2, 3, 4, 5, 12), 1, loc=0.3)
    np.testing.assert_allclose(jax.jit(fn)(volumes),
                               jax.jit(fn)(volumes.reshape(2, 3, 20, 12)).reshape(volumes.shape),
                               **TOL)
