"""jaxnorm.nnx: every NNX twin against its Linen module and flax's own nnx norms; train/eval,
BatchStat, dtypes, the NNX ResNet-20 against the Linen one, bad-input errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util
from jax.sharding import PartitionSpec as P

from jaxnorm import layers as L
from jaxnorm import mimicnorm
from jaxnorm import nnx as J
from jaxnorm.models import get_model
from jaxnorm.models.nnx_resnet import ResNet, resnet20
from jaxnorm.models.resnet import CONFIGS
from jaxnorm.models.resnet import ResNet as LinenResNet
from norm_reference import EPS, draw

TOL = dict(rtol=1e-6, atol=1e-6)
C = 8


def rngs(seed=0):
    # rbg keys: a random init compiles in a fraction of threefry's time (~2 s per shape)
    return nnx.Rngs(jax.random.key(seed, impl='rbg'))


def random_variables(linen, x, seed=1, **kw):
    """Variables of the Linen module ``linen`` drawn with numpy (no JAX init to compile):
    kernels N(0, 2 / fan_in), running means U(-0.5, 0.5), every other parameter and running
    variance U(0.5, 1.5), so the affine terms, v, tau, the learned epsilon, the conv gains
    and the eval-mode statistics are all exercised."""
    rng = np.random.default_rng(seed)

    def draw_leaf(path, leaf):
        name = path[-1].key
        if name == 'kernel':
            value = rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape)
        else:
            value = rng.uniform(*((-0.5, 0.5) if name == 'mean' else (0.5, 1.5)), leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    shapes = jax.eval_shape(functools.partial(linen.init, **kw), jax.random.key(0), x)
    return jax.tree_util.tree_map_with_path(draw_leaf, dict(shapes))


def assert_trees_close(got, want, **tol):
    got, want = traverse_util.flatten_dict(dict(got)), traverse_util.flatten_dict(dict(want))
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], err_msg='/'.join(key), **(tol or TOL))


# --------------------------------------------------- every registry entry vs its Linen twin

CASES = [
    ('bn', {}), ('bn', {'momentum': 0.8, 'running_mean_init': 1.0,
                        'running_var_unbiased': True, 'use_scale': False}),
    ('ln', {}), ('in', {}), ('gn', {}), ('gn', {'num_groups': 2, 'unbiased': True}),
    ('frn', {}), ('frn', {'learn_epsilon': False, 'epsilon': 1e-3}),
    ('vn', {'momentum': 0.7}), ('evonorm_b0', {}), ('evonorm_b0', {'unbiased_instance_var': True}),
    ('evonorm_s0', {}), ('evonorm_s0', {'num_groups': 2, 'unbiased': True}),
    ('wn', {}), ('wn', L.BEYOND_BN_REPO_OPTIONS['wn']), ('sws', {}),
    ('sws', L.BEYOND_BN_REPO_OPTIONS['sws']), ('wc', {}), ('none', {}), ('mimic', {}),
    ('mimic', {'momentum': 0.5}),
]


def slots(name, options):
    """(slot, Linen module, NNX module, input shape, is conv) for every non-empty slot."""
    linen, ours = L.get_norm(name, **options), J.get_norm(name, **options)
    out = [(slot, getattr(linen, slot)(), getattr(ours, slot)(C, rngs=rngs()), shape, False)
           for slot, shape in (('norm', (4, 5, 5, C)), ('act', (4, 5, 5, C)),
                               ('dense_norm', (6, C)), ('logit_norm', (6, C)))
           if getattr(linen, slot) is not None]
    conv = dict(padding=((1, 1), (1, 1)), use_bias=linen.conv_bias, kernel_init=linen.conv_init)
    out.append(('conv', linen.conv(C, (3, 3), **conv),
                ours.conv(C, C, (3, 3), rngs=rngs(), **conv), (2, 5, 5, C), True))
    return out


@pytest.mark.parametrize('name,options', CASES,
                         ids=[f'{n}-{"|".join(o) or "default"}' for n, o in CASES])
def test_nnx_twin_equals_linen_in_train_eval_and_running_statistics(name, options):
    for slot, linen, ours, shape, is_conv in slots(name, options):
        assert type(ours) is J.LINEN_TWINS[type(linen)], slot
        kw = {} if is_conv else {'train': True}
        batches = [jnp.asarray(draw(shape, seed=s, loc=s) * (1 + s)) for s in range(3)]
        variables = random_variables(linen, batches[0], **kw)
        J.from_linen_variables(ours, variables)
        for x in batches:  # train mode: the NNX default, as nnx.BatchNorm
            want, updates = linen.apply(variables, x, mutable=['batch_stats'], **kw)
            variables = {**variables, **updates}
            np.testing.assert_allclose(ours(x), want, **TOL, err_msg=f'{name} {slot} train')
        assert_trees_close(J.to_linen_variables(ours), variables)  # running stats after 3 steps
        ours.eval()
        x = jnp.asarray(draw(shape, seed=7, loc=-1.0))
        want = linen.apply(variables, x, **({} if is_conv else {'train': False}))
        np.testing.assert_allclose(ours(x), want, **TOL, err_msg=f'{name} {slot} eval')
        assert_trees_close(J.to_linen_variables(ours), variables)  # eval leaves them


def numpy_kernel_init(key, shape, dtype=jnp.float32):
    """A deterministic kernel init without a JAX random program to compile."""
    del key
    return jnp.asarray(np.random.default_rng(0).normal(size=shape), dtype)


def test_disabled_logit_batch_norm_is_the_identity_in_both_apis():
    """MimicNorm's weight-mean-only ablation: enabled=False passes the logits through, in
    train and eval mode, and keeps no statistics to update."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, C)), jnp.float32)
    ours = J.LogitBatchNorm(C, enabled=False, rngs=rngs())
    for running in (False, True):
        np.testing.assert_array_equal(ours(x, use_running_average=running), x)
    np.testing.assert_array_equal(ours.mean[...], np.zeros(C))
    linen = mimicnorm.LogitBatchNorm(enabled=False)
    variables = linen.init(jax.random.key(0), x)
    np.testing.assert_array_equal(linen.apply(variables, x, train=True), x)


@pytest.mark.parametrize('linen_class', [c for c in J.LINEN_TWINS if c is not nn.Conv],
                         ids=lambda c: c.__name__)
def test_same_options_defaults_and_initial_parameters_as_the_linen_twin(linen_class):
    twin = J.LINEN_TWINS[linen_class]
    is_conv = issubclass(linen_class, nn.Conv)
    if is_conv:
        ours = twin(C, C, (3, 3), kernel_init=numpy_kernel_init, rngs=rngs())
        linen = linen_class(C, (3, 3), kernel_init=numpy_kernel_init)
    else:
        ours, linen = twin(C, rngs=rngs()), linen_class()
    skip = {'parent', 'name'} | (set(nn.Conv.__dataclass_fields__) if is_conv else set())
    for field in linen.__dataclass_fields__:
        if field not in skip:
            assert getattr(ours, field) == getattr(linen, field), field
    # the same variables at the same paths, with the same initial values (WeightNormConv's g
    # starts at ||v_o||: the same kernel gives the same g)
    x = jnp.asarray(draw((2, 3, 3, C)))
    assert_trees_close(J.to_linen_variables(ours), linen.init(jax.random.key(0), x))


# ----------------------------------------------------------------- flax's own nnx norms


def with_params(module, scale, bias):
    module.scale[...], module.bias[...] = scale, bias
    return module


def test_batch_norm_equals_flax_nnx_batch_norm_with_gradients():
    scale, bias = draw((C,), seed=3) + 1, draw((C,), seed=4)
    ours = with_params(J.BatchNorm(C, rngs=rngs()), scale, bias)
    flax_bn = with_params(nnx.BatchNorm(C, momentum=0.9, epsilon=EPS, use_fast_variance=False,
                                        rngs=rngs()), scale, bias)
    cotangent = draw((4, 3, 3, C), seed=9)

    def loss(model, x):
        return (model(x) * cotangent).sum()

    grad = nnx.jit(nnx.grad(loss, argnums=(0, 1)))
    for step in range(3):
        x = jnp.asarray(draw((4, 3, 3, C), seed=step, loc=step))
        np.testing.assert_allclose(ours(x), flax_bn(x), **TOL)
        (ours_p, ours_x), (flax_p, flax_x) = grad(ours, x), grad(flax_bn, x)
        np.testing.assert_allclose(ours_x, flax_x, rtol=1e-5, atol=1e-5)
        for key in ('scale', 'bias'):
            np.testing.assert_allclose(ours_p[key][...], flax_p[key][...], rtol=1e-5, atol=1e-5)
    for key in ('mean', 'var'):  # the grad calls trained them too, identically
        np.testing.assert_allclose(getattr(ours, key)[...], getattr(flax_bn, key)[...], **TOL)
    ours.eval()
    flax_bn.eval()
    np.testing.assert_allclose(ours(x + 1), flax_bn(x + 1), **TOL)


@pytest.mark.parametrize('ours,builtin,shape', [
    # Our LayerNorm is the CNN one: GroupNorm with one group, i.e. statistics over (H, W, C).
    (J.LayerNorm(C, rngs=rngs()),
     nnx.GroupNorm(C, num_groups=1, epsilon=EPS, use_fast_variance=False, rngs=rngs()),
     (3, 4, 5, C)),
    (J.LayerNorm(C, rngs=rngs()),
     nnx.LayerNorm(C, reduction_axes=(1, 2, 3), feature_axes=-1, epsilon=EPS,
                   use_fast_variance=False, rngs=rngs()), (3, 4, 5, C)),
    # On (N, C) it is the usual per-sample LayerNorm, nnx.LayerNorm's default.
    (J.LayerNorm(C, rngs=rngs()),
     nnx.LayerNorm(C, epsilon=EPS, use_fast_variance=False, rngs=rngs()), (6, C)),
    (J.GroupNorm(C, num_groups=4, rngs=rngs()),
     nnx.GroupNorm(C, num_groups=4, epsilon=EPS, use_fast_variance=False, rngs=rngs()),
     (3, 4, 5, C)),
    (J.InstanceNorm(C, rngs=rngs()),
     nnx.InstanceNorm(C, epsilon=EPS, use_fast_variance=False, rngs=rngs()), (3, 4, 5, C)),
], ids=['ln-vs-groupnorm1', 'ln-vs-layernorm-hwc', 'ln-vs-layernorm-dense', 'gn', 'in'])
def test_matches_flax_nnx_builtin(ours, builtin, shape):
    scale, bias = draw((C,), seed=3) + 1, draw((C,), seed=4)
    x = jnp.asarray(draw(shape, loc=0.7))
    apply = nnx.jit(lambda module, x: module(x))
    np.testing.assert_allclose(apply(with_params(ours, scale, bias), x),
                               apply(with_params(builtin, scale, bias), x), **TOL)


# ---------------------------------------------------------- train / eval and BatchStat


def resnets(norm, **options):
    """The Linen ResNet (``resnet20`` unless ``options`` say otherwise), random variables for
    it, and the NNX twin built abstractly (``nnx.eval_shape``) and loaded with them."""
    x = jnp.zeros((4, 8, 8, 3))
    config = {**CONFIGS['resnet20'], **options}
    linen = LinenResNet(num_classes=10, norm=norm, **config)
    variables = random_variables(linen, x)
    model = nnx.eval_shape(lambda: ResNet(10, 3, norm=norm, rngs=rngs(), **config))
    return linen, variables, J.from_linen_variables(model, variables)


def test_batch_stat_filter_finds_exactly_the_running_statistics_and_train_eval_set_them():
    model = nnx.eval_shape(lambda: resnet20(num_classes=10, norm='bn', rngs=rngs()))
    linen = get_model('resnet20', norm='bn', num_classes=10)
    linen_stats = jax.eval_shape(linen.init, jax.random.key(0), jnp.zeros((2, 8, 8, 3)))
    # 19 BNs (option-A shortcuts have none): their mean and var, at the Linen paths
    flat = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
    assert len(flat) == 38 and all(isinstance(v, nnx.BatchStat) for _, v in flat)
    assert ({tuple(map(str, path)) for path, _ in flat}
            == set(traverse_util.flatten_dict(dict(linen_stats['batch_stats']))))
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(nnx.to_flat_state(nnx.state(model))) == len(params) + 38
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, J.BatchNorm)]
    assert len(norms) == 19 and not any(m.use_running_average for m in norms)
    model.eval()
    assert all(m.use_running_average is True for m in norms)
    view = nnx.view(model, use_running_average=False)
    assert not any(m.use_running_average for _, m in nnx.iter_modules(view)
                   if isinstance(m, J.BatchNorm))
    assert all(m.use_running_average is True for m in norms)  # the view is a copy
    model.train()
    assert all(m.use_running_average is False for m in norms)


def test_train_eval_switch_the_running_statistics_behaviour():
    stack = nnx.Sequential(J.BatchNorm(C, rngs=rngs()), J.VarianceNorm(C, rngs=rngs()),
                           J.EvoNormB0(C, rngs=rngs()), J.GroupNorm(C, rngs=rngs()),
                           J.LogitBatchNorm(C, rngs=rngs()))
    x = jnp.asarray(draw((4, 3, 3, C), loc=1.0))

    def snapshot():
        return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(stack, nnx.BatchStat)))

    start = snapshot()
    assert len(jax.tree.leaves(start)) == 6  # BN, logit BN: mean, var; VN, EvoNorm-B0: var
    stack.eval()
    y_eval = stack(x)
    jax.tree.map(np.testing.assert_array_equal, snapshot(), start)  # eval: untouched
    stack.train()
    y_train = stack(x)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                            snapshot(), start)))
    assert not np.allclose(y_train, y_eval)
    # eval uses the running statistics: BN with mean 0.1 m_B, var 0.9 + 0.1 v_B after 1 step
    bn, trained = stack.layers[0], snapshot()
    batch = np.asarray(x, np.float64)
    np.testing.assert_allclose(bn.mean[...], 0.1 * batch.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * batch.var((0, 1, 2)), rtol=1e-5)
    y = bn(x, use_running_average=True)  # per-call override, as nnx.BatchNorm
    np.testing.assert_allclose(y, (batch - bn.mean[...]) / np.sqrt(bn.var[...] + EPS),
                               rtol=1e-5, atol=1e-5)
    assert bn.use_running_average is False
    y_view = nnx.view(stack, use_running_average=True)(x)
    stack.eval()
    np.testing.assert_array_equal(y_view, stack(x))
    jax.tree.map(np.testing.assert_array_equal, snapshot(), trained)


def test_no_running_statistics_outside_the_batch_dependent_norms():
    for norm, expected in (('gn', set()), ('frn', set()), ('evonorm_s0', set()),
                           ('mimic', {('logit_norm', 'mean'), ('logit_norm', 'var')})):
        model = nnx.eval_shape(lambda: resnet20(num_classes=10, norm=norm, rngs=rngs()))
        paths = {path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
        assert paths == expected, norm


def test_dtype_and_param_dtype():
    x = jnp.asarray(draw((2, 3, 3, C)))
    gn = J.GroupNorm(C, num_groups=2, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=rngs())
    assert gn.scale.dtype == gn.bias.dtype == jnp.bfloat16
    assert gn(x).dtype == jnp.bfloat16
    bn = J.BatchNorm(C, param_dtype=jnp.bfloat16, rngs=rngs())
    assert bn.scale.dtype == jnp.bfloat16
    assert bn.mean.dtype == bn.var.dtype == jnp.float32  # statistics stay float32
    bn(x)
    assert bn.mean.dtype == jnp.float32 and bn(x).dtype == jnp.float32  # dtype None: input's
    # bf16 input, float32 params: bf16 output (flax would promote), equal to the Linen twin
    for ours, linen in ((J.BatchNorm(C, rngs=rngs()), L.BatchNorm()),
                        (J.EvoNormB0(C, rngs=rngs()), L.EvoNormB0()),
                        (J.FilterResponseNorm(C, rngs=rngs()), L.FilterResponseNorm())):
        xb = jnp.asarray(draw((4, 5, 5, C), loc=2.0), jnp.bfloat16)
        variables = random_variables(linen, xb)
        y = J.from_linen_variables(ours, variables)(xb)
        assert y.dtype == jnp.bfloat16
        want, _ = linen.apply(variables, xb, train=True, mutable=['batch_stats'])
        np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(want, np.float32))
    frn = J.FilterResponseNorm(C, param_dtype=jnp.bfloat16, rngs=rngs())
    assert frn.learned_epsilon.dtype == jnp.bfloat16


def test_axis_name_synchronizes_batch_statistics_under_shard_map():
    """8 simulated devices (conftest), 2 samples each: with axis_name the statistics, output and
    running mean are the global batch's, as the Linen layer's."""
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    x = draw((16, 3, 3, 4), loc=1.0) * np.arange(1, 17, dtype=np.float32)[:, None, None, None]
    bn = J.BatchNorm(4, axis_name='data', rngs=rngs())

    @nnx.jit
    def step(bn, x):
        return nnx.shard_map(lambda bn, x: bn(x), mesh=mesh, in_specs=(P(), P('data')),
                             out_specs=P('data'))(bn, x)

    y = step(bn, x)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + EPS)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], 0.1 * x64.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * x64.var((0, 1, 2)), rtol=1e-5)


# -------------------------------------------------------------- ResNet-20 against Linen


@pytest.mark.parametrize('norm', ['bn', 'gn', 'wn'])
def test_nnx_resnet20_forward_equals_linen_resnet20_in_train_and_eval(norm):
    linen, variables, model = resnets(norm)
    for step in range(2):  # train: the batch statistics, which also move the running ones
        x = jnp.asarray(draw((4, 8, 8, 3), seed=step, loc=0.3 * step))
        want, updates = linen.apply(variables, x, train=True, mutable=['batch_stats'])
        variables = {**variables, **updates}
        np.testing.assert_allclose(model(x), want, **TOL)
    assert_trees_close(J.to_linen_variables(model), variables)
    model.eval()
    x = jnp.asarray(draw((4, 8, 8, 3), seed=5))
    np.testing.assert_allclose(model(x), linen.apply(variables, x, train=False), **TOL)


def test_nnx_resnet_options_equal_linen_on_sequences():
    """Pre-activation blocks, strided 3x3 projection shortcuts (conv + norm), skipinit gains,
    one spatial axis ((N, L, C) sequences, spatial_dims=1)."""
    options = dict(stage_sizes=(2, 1), stage_widths=(8, 16), stem_width=8, preact=True,
                   shortcut='conv3x3', skipinit=True)
    linen = LinenResNet(num_classes=5, norm='bn', **options)
    x = jnp.asarray(draw((4, 16, 3), seed=1))
    variables = random_variables(linen, x)
    model = J.from_linen_variables(nnx.eval_shape(lambda: ResNet(
        5, 3, norm='bn', spatial_dims=1, rngs=rngs(), **options)), variables)
    assert isinstance(model.stage2_block1.shortcut_norm, J.BatchNorm)
    want, updates = linen.apply(variables, x, train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(model(x), want, **TOL)
    model.eval()
    np.testing.assert_allclose(model(x), linen.apply({**variables, **updates}, x), **TOL)


def test_jitted_nnx_optimizer_step_equals_the_linen_step():
    """One SGD step under nnx.jit: loss, gradients through BatchNorm and WeightNormConv (a
    custom family, given as a Linen NormSpec and translated), updated params and running
    statistics; nnx.Optimizer(wrt=nnx.Param) leaves the BatchStats to the model. One stage
    of one block keeps the compile short."""
    norm = L.NormSpec('bn_wn', L.BatchNorm, L.ReLU, conv=L.WeightNormConv, conv_bias=True)
    linen, variables, model = resnets(norm, stage_sizes=(1,), stage_widths=(16,))
    assert isinstance(model.stem.conv, J.WeightNormConv)
    x, labels = jnp.asarray(draw((4, 8, 8, 3), loc=0.3)), jnp.arange(4) % 10

    def cross_entropy(logits):
        return -jax.nn.log_softmax(logits)[jnp.arange(4), labels].mean()

    def linen_loss(params):
        logits, updates = linen.apply({**variables, 'params': params}, x, train=True,
                                      mutable=['batch_stats'])
        return cross_entropy(logits), updates

    (want_loss, updates), grads = jax.jit(jax.value_and_grad(linen_loss, has_aux=True))(
        variables['params'])
    want = {'params': jax.tree.map(lambda p, g: p - 0.1 * g, variables['params'], grads),
            **updates}
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x)))(model)
        optimizer.update(model, grads)
        return loss

    np.testing.assert_allclose(train_step(model, optimizer, x), want_loss, **TOL)
    assert_trees_close(J.to_linen_variables(model), want, rtol=1e-5, atol=1e-6)


def test_mimic_resnet_init_and_weight_mean_selection_match_linen():
    x = jnp.zeros((2, 8, 8, 3))
    linen = get_model('resnet20', norm='mimic', num_classes=10)
    linen_params = jax.eval_shape(linen.init, jax.random.key(0), x)['params']
    model = nnx.eval_shape(lambda: resnet20(num_classes=10, norm='mimic', rngs=rngs()))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # what nnx.Optimizer hands optax
    mask = traverse_util.flatten_dict(mimicnorm.weight_mean_mask(params))
    assert mask == traverse_util.flatten_dict(mimicnorm.weight_mean_mask(linen_params))
    assert sum(mask.values()) == 18  # every 3x3 conv but the RGB stem
    # initial values (a narrow net: every random init shape costs a compile)
    model = ResNet(10, 3, stage_sizes=(1, 1, 1), stage_widths=(C, C, C), stem_width=C,
                   shortcut='zero_pad', norm='mimic', rngs=rngs())
    kernel = model.stage2_block1.conv1.kernel[...]  # the centred N(0, 2 / fan_in) init
    np.testing.assert_allclose(kernel.mean((0, 1, 2)), 0, atol=1e-6)
    assert kernel.std() == pytest.approx(np.sqrt(2 / (9 * C)), rel=0.2)
    assert np.abs(model.stem.conv.kernel[...].mean((0, 1, 2))).min() > 1e-4  # fan-in 27: free
    gains = [getattr(model, name).skip_gain[...] for name in model.block_names]
    np.testing.assert_allclose(gains, [1.2 ** 2 / k for k in (1, 2, 3)], rtol=1e-6)
    assert model.logit_norm.scale is None and model.logit_norm.bias is None
    # the projection through nnx.Optimizer re-centres a moved kernel and leaves the stem free
    tx = optax.chain(optax.sgd(0.1), mimicnorm.weight_mean_projection())
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    model.stage2_block1.conv1.kernel[...] = kernel + 1.0
    stem = model.stem.conv.kernel[...]
    optimizer.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    np.testing.assert_allclose(model.stage2_block1.conv1.kernel[...], kernel, atol=1e-6)
    np.testing.assert_array_equal(model.stem.conv.kernel[...], stem)


# ------------------------------------------------------------------- registry and errors


def test_registry_names_options_and_errors_are_the_linen_registry():
    assert J.norm_names() == L.norm_names()
    assert J.get_norm('gn', num_groups=8).norm(16, rngs=rngs()).num_groups == 8
    assert J.get_norm('sws', epsilon_on_std=True).conv(
        4, 4, (3, 3), kernel_init=numpy_kernel_init, rngs=rngs()).epsilon_on_std
    spec = J.get_norm('frn')
    assert J.get_norm(spec) is spec
    assert J.get_norm(L.get_norm('frn')) == spec
    with pytest.raises(TypeError, match='already built'):
        J.get_norm(spec, epsilon=1.0)
    with pytest.raises(ValueError, match=r"unknown norm 'batchnorm'.*bn, ln, in, gn, frn"):
        J.get_norm('batchnorm')
    with pytest.raises(TypeError, match=r"'gn'.*\['bogus'\]"):
        J.get_norm('gn', bogus=1)
    with pytest.raises(TypeError, match='num_groups=2.5 must be int'):
        J.get_norm('gn', num_groups=2.5)
    with pytest.raises(ValueError, match='momentum must be in'):
        J.get_norm('bn', momentum=1.5)
    with pytest.raises(TypeError, match='no flax.nnx twin'):
        J.get_norm(L.NormSpec('custom', L.Identity, nn.Dropout))


@pytest.mark.parametrize('build,message', [
    (lambda: J.GroupNorm(12, num_groups=5, rngs=rngs()), r'group_norm.*C=12.*G=5'),
    (lambda: J.EvoNormS0(48, num_groups=32, rngs=rngs()), r'evonorm_s0.*C=48.*G=32'),
    (lambda: J.GroupNorm(12, num_groups=3, group_size=4, rngs=rngs()), 'not both'),
    (lambda: J.BatchNorm(C, momentum=-0.1, rngs=rngs()), r'BatchNorm: momentum must be in'),
    (lambda: J.VarianceNorm(C, epsilon=-1.0, rngs=rngs()), r'VarianceNorm: epsilon must be'),
    (lambda: J.LayerNorm(C, epsilon=float('nan'), rngs=rngs()), 'epsilon must be >= 0'),
], ids=['gn-groups', 'evonorm-s0-groups', 'both', 'momentum', 'epsilon', 'nan'])
def test_bad_options_fail_at_construction_with_the_linen_messages(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize('module', [J.BatchNorm(3, rngs=rngs()), J.LayerNorm(3, rngs=rngs()),
                                    J.EvoNormB0(3, rngs=rngs()), J.TLU(3, rngs=rngs()),
                                    J.FilterResponseNorm(3, rngs=rngs())],
                         ids=lambda m: type(m).__name__)
def test_wrong_rank_integer_and_channel_errors(module):
    with pytest.raises(ValueError, match='rank 1'):
        module(jnp.zeros((3,)))
    with pytest.raises(TypeError, match='int32'):
        module(jnp.zeros((2, 4, 4, 3), jnp.int32))
    with pytest.raises(ValueError, match=r'num_features=3 channels.*\(2, 4, 4, 5\)'):
        module(jnp.zeros((2, 4, 4, 5)))


def test_other_errors():
    with pytest.raises(ValueError, match='needs a spatial axis'):
        J.InstanceNorm(C, rngs=rngs())(jnp.zeros((4, C)))
    with pytest.raises(TypeError, match='rngs'):
        J.BatchNorm(C)
    with pytest.raises(TypeError, match='rngs'):
        J.WeightNormConv(C, C, (3, 3))
    with pytest.raises(ValueError, match='use_running_average is None'):
        J.BatchNorm(C, use_running_average=None, rngs=rngs())(jnp.ones((2, C)))
    model = nnx.eval_shape(lambda: resnet20(num_classes=10, norm='gn', rngs=rngs()))
    with pytest.raises(ValueError, match='at least 8x8'):
        model(jnp.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match='spatial_dims=2'):
        model(jnp.zeros((2, 16, 3)))
    _, variables, _ = resnets('bn')
    wn_model = nnx.eval_shape(lambda: resnet20(num_classes=10, norm='wn', rngs=rngs()))
    with pytest.raises(ValueError, match=r'missing.*stem/conv/bias.*unused.*stem/norm/scale'):
        J.from_linen_variables(wn_model, variables)
    with pytest.raises(ValueError, match='unknown shortcut'):
        nnx.eval_shape(lambda: resnet20(num_classes=10, shortcut='conv5x5', rngs=rngs()))
