"""jaxnorm.layers: weight-reparameterized convs against numpy, the registry, bad-input errors."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import functional as F
from jaxnorm import layers as L
from norm_reference import EPS, draw, grouped_standardize, init_apply

TOL = dict(rtol=1e-5, atol=1e-5)


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
    'mimic': (L.Identity, L.ReLU, nn.Conv, True, L.Identity),
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
    with pytest.raises(ValueError, match='rank 1'):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((3,)))
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
