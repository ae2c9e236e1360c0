"""jaxnorm.layers: numpy references, flax built-ins, running statistics, devices, dtypes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxnorm import layers as L
from norm_reference import (EPS, draw, group_moments, grouped_standardize, init_apply,
                            np_standardize, np_var, randomize)

TOL = dict(rtol=1e-5, atol=1e-5)
SHAPES = [(2, 5, 7, 12), (5, 1, 1, 24), (3, 9, 24), (6, 24)]


# -------------------------------------------------------------------- numpy references


def reference(name, x, p, unbiased):
    """Paper formulas in float64 for layer ``name`` with params ``p``."""
    batch, spatial = tuple(range(x.ndim - 1)), tuple(range(1, x.ndim - 1))
    if name == 'BatchNorm':
        return np_standardize(x, batch) * p['scale'] + p['bias']
    if name == 'LayerNorm':
        return np_standardize(x, tuple(range(1, x.ndim))) * p['scale'] + p['bias']
    if name == 'InstanceNorm':
        return np_standardize(x, spatial) * p['scale'] + p['bias']
    if name == 'GroupNorm':
        return grouped_standardize(x, 4, unbiased) * p['scale'] + p['bias']
    if name == 'VarianceNorm':
        return x / np.sqrt(np_var(x, batch) + EPS) * p['scale'] + p['bias']
    if name == 'FilterResponseNorm':
        nu2 = (x ** 2).mean(spatial, keepdims=True)
        return p['scale'] * x / np.sqrt(nu2 + 1e-6 + abs(p['epsilon'])) + p['bias']
    if name == 'EvoNormB0':
        batch_std = np.sqrt(np_var(x, batch) + EPS)
        instance_std = np.sqrt(np_var(x, spatial, unbiased) + EPS)
        return x / np.maximum(batch_std, p['v'] * x + instance_std) * p['scale'] + p['bias']
    if name == 'EvoNormS0':
        std = group_moments(x, 4, unbiased)[1]
        return x / (1 + np.exp(-p['v'] * x)) / std * p['scale'] + p['bias']
    raise KeyError(name)


def layer(name, unbiased):
    options = {'GroupNorm': {'num_groups': 4, 'unbiased': unbiased},
               'EvoNormS0': {'num_groups': 4, 'unbiased': unbiased},
               'EvoNormB0': {'unbiased_instance_var': unbiased}}.get(name, {})
    return getattr(L, name)(**options)


LAYER_NAMES = ['BatchNorm', 'LayerNorm', 'InstanceNorm', 'GroupNorm', 'VarianceNorm',
               'FilterResponseNorm', 'EvoNormB0', 'EvoNormS0']


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('name', LAYER_NAMES)
def test_layer_matches_numpy_reference(name, shape):
    x = draw(shape, loc=0.4)
    if name == 'InstanceNorm' and len(shape) == 2:
        with pytest.raises(ValueError, match='needs a spatial axis'):
            init_apply(layer(name, False), x)
        return
    for unbiased in ([False, True] if name in ('GroupNorm', 'EvoNormB0', 'EvoNormS0')
                     else [False]):
        y, variables, _ = init_apply(layer(name, unbiased), x)
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
        np.testing.assert_allclose(y, reference(name, x.astype(np.float64), params, unbiased),
                                   **TOL, err_msg=f'{name} unbiased={unbiased}')


def test_tlu_and_centered_relu_layers():
    x = draw((3, 4, 4, 6))
    y, variables, _ = init_apply(L.TLU(), x)
    np.testing.assert_array_equal(y, np.maximum(x, variables['params']['tau']))
    y, _, _ = init_apply(L.CenteredReLU(), x)
    expected = np.sqrt(2 * np.pi / (np.pi - 1)) * (np.maximum(x, 0) - 1 / np.sqrt(2 * np.pi))
    np.testing.assert_allclose(y, expected, **TOL)


# ---------------------------------------------------------------- flax built-ins, to 1e-6


BUILTIN_PAIRS = [
    (L.BatchNorm(), nn.BatchNorm(momentum=0.9, epsilon=EPS, use_fast_variance=False)),
    (L.LayerNorm(), nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1, epsilon=EPS,
                                 use_fast_variance=False)),
    (L.GroupNorm(num_groups=4), nn.GroupNorm(num_groups=4, epsilon=EPS,
                                             use_fast_variance=False)),
    (L.InstanceNorm(), nn.InstanceNorm(epsilon=EPS, use_fast_variance=False)),
]


@pytest.mark.parametrize('ours,builtin', BUILTIN_PAIRS, ids=lambda m: type(m).__name__)
def test_layer_matches_flax_builtin(ours, builtin):
    x = draw((4, 5, 3, 8), loc=0.7)
    y, variables, updates = init_apply(ours, x)
    is_bn = isinstance(builtin, nn.BatchNorm)
    kw = {'use_running_average': False} if is_bn else {}
    expected, builtin_updates = jax.jit(lambda v, x: builtin.apply(
        v, x, mutable=['batch_stats'], **kw))(variables, x)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    # Gradients too: jaxnorm cuts the (zero) variance -> mean path, flax differentiates it.
    cotangent = draw(x.shape, seed=5)

    def loss(apply_fn):
        return lambda p, x: (apply_fn({**variables, 'params': p}, x) * cotangent).sum()

    ours_grad = jax.jit(jax.grad(loss(lambda v, x: ours.apply(
        v, x, train=True, mutable=['batch_stats'])[0]), argnums=(0, 1)))(variables['params'], x)
    flax_grad = jax.jit(jax.grad(loss(lambda v, x: builtin.apply(
        v, x, mutable=['batch_stats'], **kw)[0]), argnums=(0, 1)))(variables['params'], x)
    for got, want in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(flax_grad)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if is_bn:
        for key in ('mean', 'var'):
            np.testing.assert_allclose(updates['batch_stats'][key],
                                       builtin_updates['batch_stats'][key], rtol=1e-6, atol=1e-6)
        evaluated = ours.apply({**variables, **updates}, x, train=False)
        expected = builtin.apply({**variables, **updates}, x, use_running_average=True)
        np.testing.assert_allclose(evaluated, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------- running statistics


@pytest.mark.parametrize('module,keys', [
    (L.BatchNorm(momentum=0.8), ('mean', 'var')),
    (L.BatchNorm(running_mean_init=1.0), ('mean', 'var')),
    (L.VarianceNorm(momentum=0.7), ('var',)),
    (L.EvoNormB0(), ('var',)),
], ids=['bn', 'bn_repo_mean_init', 'vn', 'evonorm_b0'])
def test_running_statistics_are_the_closed_form_ema(module, keys):
    steps, momentum = 4, module.momentum
    batches = [draw((6, 3, 3, 5), seed=s, loc=s) * (1 + s) for s in range(steps)]
    variables = module.init(jax.random.key(0), batches[0], train=True)
    stats = variables['batch_stats']
    start = {'mean': getattr(module, 'running_mean_init', 0.0), 'var': 1.0}
    for key in keys:
        np.testing.assert_array_equal(stats[key], np.full(5, start[key], np.float32))
    step = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats'])[1])
    for x in batches:
        variables = {**variables, **step(variables, x)}
    batch_stat = {'mean': lambda x: x.mean((0, 1, 2)), 'var': lambda x: x.var((0, 1, 2))}
    for key in keys:
        # r_k = m^k r_0 + (1 - m) sum_i m^(k-1-i) s_i
        expected = momentum ** steps * start[key] + (1 - momentum) * sum(
            momentum ** (steps - 1 - i) * batch_stat[key](x.astype(np.float64))
            for i, x in enumerate(batches))
        np.testing.assert_allclose(variables['batch_stats'][key], expected, rtol=1e-5)


def test_eval_mode_uses_running_statistics():
    x = draw((4, 3, 3, 5), loc=2.0)
    stats = {'mean': np.linspace(-1, 1, 5, dtype=np.float32),
             'var': np.linspace(0.5, 3, 5, dtype=np.float32)}
    params = {'scale': np.full(5, 2.0, np.float32), 'bias': np.full(5, 0.5, np.float32)}
    variables = {'params': params, 'batch_stats': stats}
    y = jax.jit(lambda v, x: L.BatchNorm().apply(v, x, train=False))(variables, x)
    np.testing.assert_allclose(y, (x - stats['mean']) / np.sqrt(stats['var'] + EPS) * 2 + 0.5,
                               **TOL)
    y = jax.jit(lambda v, x: L.VarianceNorm().apply(v, x))(variables, x)
    np.testing.assert_allclose(y, x / np.sqrt(stats['var'] + EPS) * 2 + 0.5, **TOL)


def test_running_var_unbiased_stores_bessel_corrected_variance():
    x = draw((3, 2, 2, 4), loc=1.0)
    module = L.BatchNorm(momentum=0.0, running_var_unbiased=True)
    variables = module.init(jax.random.key(0), x)
    y, updates = module.apply(variables, x, train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(updates['batch_stats']['var'], x.var((0, 1, 2), ddof=1), **TOL)
    np.testing.assert_allclose(y, np_standardize(x.astype(np.float64), (0, 1, 2)), **TOL)


# ------------------------------------------------------------------------------ devices


def batch_mesh():
    return jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def test_batch_norm_on_8_devices_equals_1_device_for_the_same_global_batch():
    assert jax.device_count() == 8
    module = L.BatchNorm()
    x = draw((16, 5, 5, 6), loc=1.5)
    variables = module.init(jax.random.key(0), x)
    variables = {**variables, 'params': randomize(variables['params'])}
    step = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']))
    y_one, stats_one = step(variables, jax.device_put(x, jax.devices()[0]))
    sharded = jax.device_put(x, NamedSharding(batch_mesh(), P('data')))
    y_eight, stats_eight = step(variables, sharded)
    assert len(y_eight.sharding.device_set) == 8
    # Equal up to float32 summation order: the sharded reduction adds 8 partial sums.
    np.testing.assert_allclose(y_eight, y_one, **TOL)
    for key in ('mean', 'var'):
        np.testing.assert_allclose(stats_eight['batch_stats'][key],
                                   stats_one['batch_stats'][key], **TOL)


@pytest.mark.parametrize('synchronized', [True, False])
def test_shard_map_statistics_are_synchronized_or_per_device(synchronized):
    mesh = batch_mesh()
    module = L.BatchNorm(axis_name='data' if synchronized else None)
    x = draw((16, 3, 3, 4), loc=1.0) * np.arange(1, 17, dtype=np.float32)[:, None, None, None]
    variables = module.init(jax.random.key(0), x, train=True)  # init outside shard_map

    def local_step(v, x):
        y, updates = module.apply(v, x, train=True, mutable=['batch_stats'])
        return y, updates['batch_stats']['mean'][None]

    step = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P('data')),
                                 out_specs=(P('data'), P('data'))))
    y, means = step(variables, x)
    x64 = x.astype(np.float64)
    if synchronized:
        expected = np_standardize(x64, (0, 1, 2))
        expected_means = np.tile(0.1 * x64.mean((0, 1, 2)), (8, 1))
    else:
        shards = x64.reshape(8, 2, 3, 3, 4)
        expected = np.concatenate([np_standardize(s, (0, 1, 2)) for s in shards])
        expected_means = 0.1 * shards.mean((1, 2, 3))
    np.testing.assert_allclose(y, expected, **TOL)
    np.testing.assert_allclose(means, expected_means, **TOL)


# ------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize('ours,builtin', BUILTIN_PAIRS, ids=lambda m: type(m).__name__)
def test_large_mean_input_normalizes_to_unit_variance_unlike_flax_fast_variance(ours, builtin):
    x = jnp.asarray(1e4 + draw((8, 12, 12, 8)))
    groups = {'LayerNorm': 1, 'GroupNorm': 4, 'InstanceNorm': 8}.get(type(ours).__name__)
    axes = (0, 1, 2, 4) if groups is None else (1, 2, 4)

    def output_variance(module, **kw):
        y = module.apply(module.init(jax.random.key(0), x, **kw), x, mutable=['batch_stats'],
                         **kw)[0]
        return np.asarray(y, np.float64).reshape(8, 12, 12, groups or 8, -1).var(axes)

    assert np.abs(output_variance(ours, train=True) - 1).max() < 1e-3
    # flax's default one-pass variance E[x^2] - E[x]^2 cancels catastrophically here.
    fast = builtin.clone(use_fast_variance=True)
    kw = {'use_running_average': False} if isinstance(builtin, nn.BatchNorm) else {}
    assert np.abs(output_variance(fast, **kw) - 1).max() > 0.5


@pytest.mark.parametrize('name', ['BatchNorm', 'GroupNorm', 'EvoNormB0', 'FilterResponseNorm'])
def test_bfloat16_input_gives_float32_computation_rounded(name):
    module = layer(name, unbiased=False)
    x = jnp.asarray(draw((4, 5, 5, 8), loc=2.0), jnp.bfloat16)
    y, variables, _ = init_apply(module, x)
    assert y.dtype == jnp.bfloat16
    reference, _ = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']))(
        variables, x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=2 ** -8, atol=2 ** -8)


def test_dtype_and_param_dtype():
    x = draw((2, 3, 3, 8))
    module = L.GroupNorm(num_groups=2, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), x)
    assert variables['params']['scale'].dtype == jnp.bfloat16
    assert module.apply(variables, x).dtype == jnp.bfloat16
    bn = L.BatchNorm(param_dtype=jnp.bfloat16)
    assert bn.init(jax.random.key(0), x)['batch_stats']['var'].dtype == jnp.float32
