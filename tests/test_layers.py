"""jaxnorm.layers: numpy references, flax built-ins, running statistics, devices, registry."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxnorm import functional as F
from jaxnorm import layers as L

EPS = 1e-5
TOL = dict(rtol=1e-5, atol=1e-5)
SHAPES = [(2, 5, 7, 12), (5, 1, 1, 24), (6, 24)]


def draw(shape, seed=0, loc=0.0):
    return np.random.default_rng(seed).normal(loc, 1.0, shape).astype(np.float32)


def randomize(params, seed=1):
    """Replace every parameter by a random positive-ish value so affine terms are exercised."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype) for leaf in leaves])


def init_apply(module, x, *, train=True, seed=1):
    """Random params; returns (output of a jitted train-or-eval apply, variables, updates)."""
    call_kw = {} if isinstance(module, nn.Conv) else {'train': train}
    variables = dict(module.init(jax.random.key(0), x, **call_kw))
    if 'params' in variables:
        variables['params'] = randomize(variables['params'], seed)
    apply = jax.jit(lambda v, x: module.apply(v, x, mutable=['batch_stats'], **call_kw))
    y, updates = apply(variables, x)
    return np.asarray(y), variables, updates


def np_var(x, axes, unbiased=False):
    n = math.prod(x.shape[a] for a in axes)
    var = ((x - x.mean(axes, keepdims=True)) ** 2).mean(axes, keepdims=True)
    return var * n / max(n - 1, 1) if unbiased else var


def np_standardize(x, axes, unbiased=False):
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(np_var(x, axes, unbiased) + EPS)


def group_moments(x, groups, unbiased=False):
    """Per-element mean and std (eps included) of x's (sample, channel group)."""
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean = grouped.mean(axes, keepdims=True)
    std = np.sqrt(np_var(grouped, axes, unbiased) + EPS)
    return [np.broadcast_to(a, grouped.shape).reshape(x.shape) for a in (mean, std)]


def grouped_standardize(x, groups, unbiased=False):
    mean, std = group_moments(x, groups, unbiased)
    return (x - mean) / std


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


# ----------------------------------------------------------------- weight-reparam convs


CONV_ARGS = [dict(strides=(1, 1), padding='SAME'),
             dict(strides=(2, 2), padding=((1, 1), (1, 1))),
             dict(strides=(1, 1), padding='VALID', feature_group_count=4)]


def np_reparameterized(name, kernel, p):
    v = kernel.astype(np.float64)
    axes = tuple(range(v.ndim - 1))
    fan_in = math.prod(v.shape[:-1])
    if name == 'WeightNormConv':
        return p['scale'] * v / np.sqrt((v ** 2).sum(axes))
    centered = v - v.mean(axes)
    if name == 'CenteredConv':
        return centered
    return F.RELU_GAIN * p['gain'] * centered / np.sqrt(v.var(axes) + EPS) / np.sqrt(fan_in)


@pytest.mark.parametrize('conv_args', CONV_ARGS)
@pytest.mark.parametrize('name', ['WeightNormConv', 'ScaledWSConv', 'CenteredConv'])
def test_reparameterized_conv_is_flax_conv_with_the_reparameterized_kernel(name, conv_args):
    x = draw((2, 7, 7, 8))
    module = getattr(L, name)(12, (3, 3), use_bias=True, kernel_init=L.conv_kernel_init,
                              **conv_args)
    y, variables, _ = init_apply(module, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
    kernel = np_reparameterized(name, p['kernel'], p).astype(np.float32)
    expected = nn.Conv(12, (3, 3), **conv_args).apply(
        {'params': {'kernel': kernel, 'bias': variables['params']['bias']}}, x)
    np.testing.assert_allclose(y, expected, **TOL)


def test_weight_norm_conv_starts_at_its_kernel_init_draw():
    x = draw((2, 6, 6, 4))
    module = L.WeightNormConv(8, (3, 3), use_bias=False)
    variables = module.init(jax.random.key(0), x)
    plain = nn.Conv(8, (3, 3), use_bias=False).apply(
        {'params': {'kernel': variables['params']['kernel']}}, x)
    np.testing.assert_allclose(module.apply(variables, x), plain, **TOL)
    ones = L.WeightNormConv(8, (3, 3), scale_init=nn.initializers.ones)
    assert np.all(ones.init(jax.random.key(0), x)['params']['scale'] == 1)


# ---------------------------------------------------------------------------- registry


REGISTRY = {
    'bn': (L.BatchNorm, L.ReLU, nn.Conv, False, L.BatchNorm),
    'ln': (L.LayerNorm, L.ReLU, nn.Conv, False, L.LayerNorm),
    'in': (L.InstanceNorm, L.ReLU, nn.Conv, False, L.Identity),
    'gn': (L.GroupNorm, L.ReLU, nn.Conv, False, L.GroupNorm),
    'frn': (L.FilterResponseNorm, L.TLU, nn.Conv, False, L.FilterResponseNorm),
    'vn': (L.VarianceNorm, L.ReLU, nn.Conv, False, L.VarianceNorm),
    'evonorm_b0': (L.Identity, L.EvoNormB0, nn.Conv, False, L.Identity),
    'evonorm_s0': (L.Identity, L.EvoNormS0, nn.Conv, False, L.Identity),
    'wn': (L.Identity, L.CenteredReLU, L.WeightNormConv, True, L.Identity),
    'sws': (L.Identity, L.ReLU, L.ScaledWSConv, True, L.Identity),
    'wc': (L.Identity, L.ReLU, L.CenteredConv, True, L.Identity),
    'none': (L.Identity, L.ReLU, nn.Conv, True, L.Identity),
}


def built(factory):
    return type(factory(name='probe'))


@pytest.mark.parametrize('name', sorted(REGISTRY))
def test_registry_entry(name):
    spec = L.get_norm(name)
    assert spec.name == name
    norm, act, conv, conv_bias, dense = REGISTRY[name]
    assert (built(spec.norm), built(spec.act), spec.conv_bias, built(spec.dense_norm)) == (
        norm, act, conv_bias, dense)
    assert built(lambda **kw: spec.conv(4, (3, 3), **kw)) is conv
    assert set(L.norm_names()) == set(REGISTRY)


def test_options_reach_the_configurable_module():
    assert L.get_norm('gn', num_groups=8).norm(name='n').num_groups == 8
    assert L.get_norm('evonorm_s0', num_groups=32).act(name='a').num_groups == 32
    assert L.get_norm('sws', epsilon_on_std=True).conv(4, (3, 3)).epsilon_on_std
    with pytest.raises(TypeError, match=r"'gn'.*\['bogus'\]"):
        L.get_norm('gn', bogus=1)
    with pytest.raises(TypeError, match='no options'):
        L.get_norm('none', momentum=0.9)


def test_beyond_bn_repo_options_build_the_repo_variants():
    x = draw((4, 4, 4, 32), loc=0.5)
    for name, options in L.BEYOND_BN_REPO_OPTIONS.items():
        spec = L.get_norm(name, **options)
        for factory in (spec.norm, spec.act):
            module = factory(name='m')
            variables = module.init(jax.random.key(0), x)
            y, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
            assert np.isfinite(np.asarray(y)).all(), name
    gn = L.get_norm('gn', **L.BEYOND_BN_REPO_OPTIONS['gn']).norm(num_groups=4)
    y, variables, _ = init_apply(gn, x)
    params = variables['params']
    expected = grouped_standardize(x.astype(np.float64), 4, unbiased=True)
    np.testing.assert_allclose(y, expected * params['scale'] + params['bias'], **TOL)


# ------------------------------------------------------------------------------ errors


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown norm 'batchnorm'.*bn, ln, in, gn, frn"):
        L.get_norm('batchnorm')


@pytest.mark.parametrize('module,channels,message', [
    (L.GroupNorm(num_groups=5), 12, r'C=12.*G=5'),
    (L.EvoNormS0(num_groups=32), 48, r'evonorm_s0.*C=48.*G=32'),
    (L.EvoNormS0(num_groups=32), 16, r'C=16.*G=32'),
])
def test_group_errors_at_trace_time(module, channels, message):
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((2, 4, 4, channels)))


@pytest.mark.parametrize('module', [L.BatchNorm(), L.LayerNorm(), L.EvoNormB0(), L.TLU()],
                         ids=lambda m: type(m).__name__)
def test_wrong_rank_and_integer_input(module):
    with pytest.raises(ValueError, match='rank 3'):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((2, 4, 3)))
    with pytest.raises(TypeError, match='int32'):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((2, 4, 4, 3), jnp.int32))


# ------------------------------------------------------------------ learned FRN epsilon


def test_frn_learned_epsilon_is_absolute_and_trained():
    x = draw((3, 1, 1, 6))  # 1x1 maps: the case the learned epsilon exists for
    module = L.FilterResponseNorm()
    variables = module.init(jax.random.key(0), x)
    assert variables['params']['epsilon'] == pytest.approx(1e-5)
    variables['params']['epsilon'] = jnp.float32(-0.5)
    y = module.apply(variables, x)
    np.testing.assert_allclose(y, x / np.sqrt(x ** 2 + 1e-6 + 0.5), **TOL)
    grad = jax.grad(lambda p: module.apply({'params': p}, x).sum())(variables['params'])
    assert grad['epsilon'] != 0
    fixed = L.FilterResponseNorm(learn_epsilon=False)
    assert 'epsilon' not in fixed.init(jax.random.key(0), x)['params']
