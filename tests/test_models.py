"""Tests for jaxnorm.models against published counts, closed forms and numpy references."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm.layers import get_norm, norm_names
from jaxnorm.models import BasicBlock, get_model, model_names, zero_pad_shortcut
from jaxnorm.models.common import make_conv

BN_EPS = 1e-5


def _init_shapes(model, shape):
    """Variables as ShapeDtypeStructs: no allocation, no compilation."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))


def _count(tree):
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def _conv(x, kernel, strides):
    """PyTorch-geometry conv (padding kernel//2 each side) as an independent reference."""
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest')


def _resnet_formula(stage_sizes, widths, stem, shortcut_kernel, in_channels=3, classes=10):
    """BN ResNet parameter count: 3x3 convs, 2C per BN, optional projection conv + BN."""
    total = 9 * in_channels * stem + 2 * stem
    cin = stem
    for num_blocks, width in zip(stage_sizes, widths):
        for _ in range(num_blocks):
            total += 9 * cin * width + 2 * width + 9 * width * width + 2 * width
            if cin != width and shortcut_kernel:
                total += shortcut_kernel ** 2 * cin * width + 2 * width
            cin = width
    return total + cin * classes + classes


def _plain_cnn_formula(widths, in_channels=3, classes=10):
    """BN plain CNN parameter count: 3x3 convs without bias, 2C per BN, Dense head."""
    total, cin = 0, in_channels
    for width in widths:
        total += 9 * cin * width + 2 * width
        cin = width
    return total + cin * classes + classes


@pytest.mark.parametrize('name, options, expected', [
    # Published: resnet20 with 1x1 projection (option B) shortcuts 0.27M, resnet56 with
    # option A 0.85M, CIFAR ResNet-18 11.2M, CIFAR MobileNet-V1 3.2M.
    ('resnet20', {'shortcut': 'conv1x1'}, 272_474),
    ('resnet56', {}, 853_018),
    ('resnet18', {}, 11_173_962),
    ('mobilenet_v1', {}, 3_217_226),
    ('resnet20', {}, _resnet_formula((3, 3, 3), (16, 32, 64), 16, 0)),
    ('resnet32', {}, _resnet_formula((5, 5, 5), (16, 32, 64), 16, 0)),
    ('resnet56_wide', {}, _resnet_formula((9, 9, 9), (32, 64, 128), 32, 3)),
    ('resnet34', {}, _resnet_formula((3, 4, 6, 3), (64, 128, 256, 512), 64, 1)),
    ('resnet20', {'width': 2}, _resnet_formula((3, 3, 3), (32, 64, 128), 32, 0)),
    ('vgg_cfg10', {}, _plain_cnn_formula((64, 64, 128, 128, 256, 256, 512, 512, 512, 512))),
    ('vgg11', {}, _plain_cnn_formula((64, 128, 256, 256, 512, 512, 512, 512))),
    ('vgg13', {}, _plain_cnn_formula((64, 64, 128, 128, 256, 256, 512, 512, 512, 512))),
    # Explicit per-conv widths (a compacted filter-pruned VGG) override the layer list.
    ('vgg13', {'channels': (5, 7, 9, 11, 13, 15, 17, 19, 21, 23)},
     _plain_cnn_formula((5, 7, 9, 11, 13, 15, 17, 19, 21, 23))),
])
def test_parameter_counts(name, options, expected):
    model = get_model(name, num_classes=10, **options)
    assert _count(_init_shapes(model, (1, 32, 32, 3))['params']) == expected


def test_mlp_parameter_count_and_hidden_option():
    model = get_model('mlp', num_classes=10, hidden=(32, 16), width=2)
    expected = 64 * 64 + 2 * 64 + 64 * 32 + 2 * 32 + 32 * 10 + 10
    assert _count(_init_shapes(model, (1, 8, 8, 1))['params']) == expected


def test_float_width_rounds_channels_and_skipinit_adds_one_gain_per_block():
    model = get_model('resnet20', num_classes=10, width=1.5, skipinit=True)
    params = _init_shapes(model, (1, 8, 8, 1))['params']
    assert params['stem']['conv']['kernel'].shape == (3, 3, 1, 24)
    assert params['stage3_block3']['conv2']['kernel'].shape == (3, 3, 96, 96)
    gains = [block['skip_gain'] for block in params.values() if 'skip_gain' in block]
    assert len(gains) == 9 and all(gain.shape == () for gain in gains)


@pytest.mark.parametrize('name', model_names())
@pytest.mark.parametrize('norm', ['bn', 'none'])
def test_every_model_maps_smallest_input_to_logits(name, norm):
    size = 32 if name in ('vgg11', 'vgg13', 'vgg13_tempered') else 8
    model = get_model(name, norm=norm, num_classes=7)
    x = jnp.zeros((2, size, size, 1))
    variables = _init_shapes(model, x.shape)
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    assert logits.shape == (2, 7)
    assert ('batch_stats' in variables) == (norm == 'bn' and name != 'logistic')


@pytest.mark.parametrize('norm', norm_names())
def test_every_registered_norm_builds_every_model_family(norm):
    """The NormSpec contract: a registry entry works in all models without model changes."""
    x = jnp.zeros((2, 8, 8, 3))
    for name, options in (('mlp', {}), ('resnet20', {'preact': True}), ('resnet18', {}),
                          ('vgg_cfg10', {}), ('mobilenet_v1', {})):
        model = get_model(name, norm=norm, num_classes=10, **options)
        variables = _init_shapes(model, x.shape)
        logits, _ = jax.eval_shape(
            functools.partial(model.apply, train=True, mutable=['batch_stats']), variables, x)
        assert logits.shape == (2, 10), (norm, name)


@pytest.mark.parametrize('name', ['resnet20', 'resnet56_wide', 'resnet18'])
def test_residual_options_trace(name):
    model = get_model(name, num_classes=10, preact=True, skipinit=True, width=0.5)
    x = jnp.zeros((2, 8, 8, 3))
    variables = _init_shapes(model, x.shape)
    logits, state = jax.eval_shape(
        functools.partial(model.apply, train=True, mutable=['batch_stats']), variables, x)
    assert logits.shape == (2, 10)
    assert jax.tree.structure(state['batch_stats']) == jax.tree.structure(
        variables['batch_stats'])


@pytest.mark.parametrize('features, kernel_size, in_channels, groups', [
    (512, 3, 512, 1), (256, 1, 512, 1), (1024, 3, 1024, 1024)])
def test_conv_init_is_kaiming_normal_fan_in(features, kernel_size, in_channels, groups):
    conv = make_conv(get_norm('bn'), features, kernel_size, groups=groups)
    x = jnp.zeros((1, kernel_size, kernel_size, in_channels))
    kernel = conv.init(jax.random.key(0), x)['params']['kernel']
    expected_std = math.sqrt(2 / (kernel_size ** 2 * in_channels // groups))
    assert abs(float(jnp.std(kernel)) / expected_std - 1) < 0.05
    assert abs(float(jnp.mean(kernel))) < 0.05 * expected_std


def test_resnet_init_and_norm_none():
    """Kaiming convs, zero conv biases, torch-default head, and no state without a norm."""
    model = get_model('resnet20', norm='none', num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    assert set(variables) == {'params'}
    params = variables['params']
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if path[-1].key == 'bias']
    assert len(biases) == 1 + 2 * 9 + 1  # stem, two per block, head
    assert all(not np.any(bias) for bias in biases)
    stage3 = jnp.concatenate([params[f'stage3_block{block}'][conv]['kernel'].ravel()
                              for block in (2, 3) for conv in ('conv1', 'conv2')])
    assert abs(float(jnp.std(stage3)) / math.sqrt(2 / (9 * 64)) - 1) < 0.05
    bound = 1 / math.sqrt(64)
    head = params['head']['kernel']
    assert float(jnp.max(jnp.abs(head))) <= bound
    assert abs(float(jnp.std(head)) / (bound / math.sqrt(3)) - 1) < 0.1

    _, state = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
        variables, jnp.ones((2, 8, 8, 1)))
    assert not state


@pytest.mark.parametrize('shape, features, strides', [
    ((2, 8, 8, 16), 32, 2), ((2, 7, 5, 3), 8, 2), ((1, 4, 4, 4), 6, 1)])
def test_zero_pad_shortcut_matches_numpy(shape, features, strides):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = np.zeros((shape[0], -(-shape[1] // strides), -(-shape[2] // strides), features),
                        np.float32)
    expected[..., :shape[3]] = x[:, ::strides, ::strides]
    np.testing.assert_array_equal(zero_pad_shortcut(jnp.asarray(x), features, strides),
                                  expected)


@pytest.mark.parametrize('size', [8, 7])
def test_strided_conv_windows_centre_on_subsampled_pixels(size):
    """A centre-tap 3x3 stride-2 conv must equal x[:, ::2, ::2], as option A assumes."""
    spec = get_norm('bn')
    conv = make_conv(spec, 3, 3, strides=2)
    x = jax.random.normal(jax.random.key(0), (1, size, size, 3))
    kernel = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
    out = conv.apply({'params': {'kernel': kernel}}, x)
    np.testing.assert_array_equal(out, x[:, ::2, ::2])


def _expected_shortcut(params, x, shortcut, strides, features, preact):
    """Shortcut path at init in eval mode, where BN is x / sqrt(1 + eps)."""
    if shortcut == 'identity':
        return x
    if shortcut == 'zero_pad':
        return jnp.asarray(np.pad(np.asarray(x)[:, ::strides, ::strides],
                                  ((0, 0),) * 3 + ((0, features - x.shape[-1]),)))
    kernel = params['shortcut_conv']['kernel']
    if preact:
        return _conv(x / math.sqrt(1 + BN_EPS), kernel, strides)
    return _conv(x, kernel, strides) / math.sqrt(1 + BN_EPS)


@pytest.mark.parametrize('preact', [False, True])
@pytest.mark.parametrize('shortcut, strides, cin', [
    ('identity', 1, 8), ('zero_pad', 2, 4), ('conv1x1', 2, 4), ('conv3x3', 2, 4)])
def test_skipinit_block_starts_as_its_shortcut(preact, shortcut, strides, cin):
    features = 8
    block = BasicBlock(get_norm('bn'), features, strides,
                       'conv1x1' if shortcut == 'identity' else shortcut,
                       preact=preact, skipinit=True)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, cin))
    variables = block.init(jax.random.key(1), x)
    apply = jax.jit(functools.partial(block.apply, train=False))
    shortcut_out = _expected_shortcut(variables['params'], x, shortcut, strides, features,
                                      preact)
    expected = shortcut_out if preact else jax.nn.relu(shortcut_out)
    out = apply(variables, x)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)

    scrambled = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf * 3.0 + 1.0 if path[1].key in ('conv1', 'conv2') else leaf,
        variables)
    np.testing.assert_array_equal(apply(scrambled, x), out)

    def loss(gain):
        params = {**variables['params'], 'skip_gain': gain}
        return jnp.sum(apply({**variables, 'params': params}, x) ** 2)

    assert float(jnp.abs(jax.grad(loss)(jnp.zeros(())))) > 0


def test_skipinit_resnet_ignores_block_weights_at_init():
    model = get_model('resnet20', num_classes=10, skipinit=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    variables = model.init(jax.random.key(1), x)
    apply = jax.jit(functools.partial(model.apply, train=False))
    scrambled = jax.tree_util.tree_map_with_path(
        lambda path, leaf: -leaf if path[1].key.startswith('stage') and path[-1].key == 'kernel'
        else leaf, variables)
    np.testing.assert_array_equal(apply(scrambled, x), apply(variables, x))

    # With zero gains and option-A shortcuts the net is stem -> relu -> subsample/pad -> head.
    params = variables['params']
    stem = jax.nn.relu(_conv(x, params['stem']['conv']['kernel'], 1) / math.sqrt(1 + BN_EPS))
    features = zero_pad_shortcut(zero_pad_shortcut(stem, 32, 2), 64, 2)
    expected = features.mean(axis=(1, 2)) @ params['head']['kernel'] + params['head']['bias']
    np.testing.assert_allclose(apply(variables, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('norm, norm_kwargs, keep', [
    ('bn', None, 0.9), (get_norm('bn', momentum=0.5), None, 0.5), ('bn', {'momentum': 0.7}, 0.7)])
def test_batchnorm_train_mode_updates_running_mean(norm, norm_kwargs, keep):
    model = get_model('resnet20', norm=norm, norm_kwargs=norm_kwargs, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1)) + 1.0
    variables = model.init(jax.random.key(1), x)
    _, state = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
        variables, x)
    stem_out = _conv(x, variables['params']['stem']['conv']['kernel'], 1)
    # Found by name so the test does not depend on how BatchNorm nests its variables.
    (running_mean,) = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
        state['batch_stats']['stem']['norm']) if path[-1].key == 'mean']
    np.testing.assert_allclose(running_mean, (1 - keep) * stem_out.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    assert jax.tree.structure(state) == jax.tree.structure(
        {'batch_stats': variables['batch_stats']})


def test_batchnorm_eval_output_is_per_sample_and_train_output_is_not():
    model = get_model('vgg_cfg10', num_classes=10, width=0.25)
    batch = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    other = batch.at[1:].set(jax.random.normal(jax.random.key(2), (3, 8, 8, 1)))
    variables = model.init(jax.random.key(1), batch)
    evaluate = jax.jit(functools.partial(model.apply, train=False))
    train = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
    np.testing.assert_allclose(evaluate(variables, batch)[0], evaluate(variables, other)[0],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(train(variables, batch)[0][0], train(variables, other)[0][0])


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_model('resnet99', num_classes=10)
    assert all(name in str(error.value) for name in model_names())
    assert len(model_names()) == 20


def test_unknown_option_names_model_and_valid_options():
    with pytest.raises(TypeError, match=r"'vgg11'.*skipinit.*valid options: width"):
        get_model('vgg11', num_classes=10, skipinit=True)
    with pytest.raises(TypeError, match='stage_sizes'):
        get_model('resnet20', num_classes=10, stage_sizes=(1, 1, 1))


def test_unknown_norm_and_shortcut_are_rejected():
    with pytest.raises(ValueError, match='unknown norm'):
        get_model('resnet20', norm='batchnorm', num_classes=10)
    with pytest.raises(ValueError, match='unknown shortcut'):
        _init_shapes(get_model('resnet20', num_classes=10, shortcut='option_a'), (1, 8, 8, 3))


@pytest.mark.parametrize('name, shape, message', [
    ('resnet20', (1, 4, 8, 3), 'at least 8x8'),
    ('vgg11', (1, 16, 16, 3), 'at least 32x32'),
    ('mobilenet_v1', (1, 7, 7, 3), 'at least 8x8'),
    ('resnet18', (8, 8), r'rank 4\) or \(N, L, C\) sequences'),
    ('vgg11', (8, 32, 3), 'rank 4'),
    ('resnet20', (2, 4, 3), 'at least 8, got 4'),
    ('mnist1d_cnn', (2, 2, 1), 'too small'),
    ('mlp', (64,), 'rank >= 2'),
])
def test_bad_input_shapes_raise_at_trace_time(name, shape, message):
    model = get_model(name, num_classes=10)
    with pytest.raises(ValueError, match=message):
        _init_shapes(model, shape)


def test_resnet_inner_channels_change_only_block_internal_widths():
    """conv1 outputs / conv2 inputs per block, counted against the formula with C_mid."""
    inner = (3, 5, 7, 9, 11, 13, 15, 17, 19)
    model = get_model('resnet20', num_classes=10, inner_channels=inner)
    expected, cin, mids = 9 * 3 * 16 + 2 * 16, 16, iter(inner)
    for width in (16, 32, 64):
        for _ in range(3):
            mid = next(mids)
            expected += 9 * cin * mid + 2 * mid + 9 * mid * width + 2 * width
            cin = width
    expected += 64 * 10 + 10
    assert _count(_init_shapes(model, (1, 8, 8, 3))['params']) == expected
    with pytest.raises(ValueError, match='has 9 blocks, but 2 channel counts'):
        _init_shapes(get_model('resnet20', num_classes=10, inner_channels=(4, 4)), (1, 8, 8, 3))
    with pytest.raises(ValueError, match='must be a positive int'):
        _init_shapes(get_model('vgg_cfg10', num_classes=10, channels=(0,) * 10), (1, 8, 8, 3))


# ------------------------------------------------------------- 1-D models (MNIST-1D)


@pytest.mark.parametrize('name, expected', [
    # The parameter counts the MNIST-1D authors' models print (notebooks/models.py):
    # ConvBase 5,210, MLPBase 15,210, LinearBase 410, on length-40 inputs.
    ('mnist1d_cnn', 5_210), ('mnist1d_mlp', 15_210), ('logistic', 410)])
def test_mnist1d_models_have_the_authors_parameter_counts(name, expected):
    model = get_model(name, norm='none', num_classes=10)
    assert _count(_init_shapes(model, (1, 40, 1))['params']) == expected


def _random_params(model, shape, seed=0):
    variables = model.init(jax.random.key(seed), jnp.zeros(shape))
    leaves, treedef = jax.tree.flatten(variables['params'])
    rng = np.random.default_rng(seed)
    return {'params': jax.tree.unflatten(
        treedef, [rng.normal(0, 0.3, leaf.shape).astype(np.float32) for leaf in leaves])}


def _np_conv1d(x, kernel, bias, stride, padding):
    """PyTorch Conv1d (cross-correlation) on (N, L, C) with kernel (k, C_in, C_out)."""
    x = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
    taps = kernel.shape[0]
    length = (x.shape[1] - taps) // stride + 1
    windows = np.stack([x[:, t * stride:t * stride + taps] for t in range(length)], axis=1)
    return np.einsum('nlkc,kco->nlo', windows, kernel) + bias


def test_mnist1d_cnn_matches_the_authors_conv_geometry():
    # ConvBase: Conv1d(1, 25, 5, stride 2, padding 1), then two Conv1d(25, 25, 3, 2, 1),
    # ReLU after each, flatten 25 x 5, Linear. Written here in numpy from that definition.
    model = get_model('mnist1d_cnn', norm='none', num_classes=10)
    variables = _random_params(model, (3, 40, 1))
    x = np.random.default_rng(1).normal(size=(3, 40, 1)).astype(np.float32)
    p = jax.tree.map(np.asarray, variables['params'])
    h = x
    for index, taps in ((1, 5), (2, 3), (3, 3)):
        conv = p[f'layer{index}']['conv']
        assert conv['kernel'].shape[0] == taps
        h = np.maximum(_np_conv1d(h, conv['kernel'], conv['bias'], 2, 1), 0)
    assert h.shape == (3, 5, 25)
    expected = h.reshape(3, -1) @ p['head']['kernel'] + p['head']['bias']
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), expected, rtol=1e-4,
                               atol=1e-4)


def test_mnist1d_mlp_is_the_authors_residual_mlp():
    # MLPBase: h = relu(linear1(x)); h = h + relu(linear2(h)); linear3(h).
    model = get_model('mnist1d_mlp', norm='none', num_classes=10)
    variables = _random_params(model, (4, 40, 1))
    x = np.random.default_rng(2).normal(size=(4, 40, 1)).astype(np.float32)
    p = jax.tree.map(np.asarray, variables['params'])

    def dense(name, h):
        return h @ p[name]['kernel'] + p[name]['bias']

    h = np.maximum(dense('dense1', x.reshape(4, -1)), 0)
    h = h + np.maximum(dense('dense2', h), 0)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), dense('head', h), rtol=1e-4,
                               atol=1e-4)


def test_zero_pad_shortcut_on_sequences_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 9, 3)).astype(np.float32)
    expected = np.zeros((2, 5, 8), np.float32)
    expected[..., :3] = x[:, ::2]
    np.testing.assert_array_equal(zero_pad_shortcut(jnp.asarray(x), 8, 2), expected)


@pytest.mark.parametrize('norm', ['bn', 'gn', 'evonorm_s0', 'wn'])
def test_resnet20_on_sequences_uses_three_tap_convs_and_the_2d_parameter_layout(norm):
    model = get_model('resnet20', norm=norm, num_classes=10, preact=norm == 'wn',
                      skipinit=norm == 'wn')
    params_1d = _init_shapes(model, (2, 40, 1))['params']
    params_2d = _init_shapes(model, (2, 40, 40, 1))['params']
    # Same modules and parameters; each 3x3 kernel (3, 3, in, out) is a 3-tap (3, in, out).
    flat_1d = dict(jax.tree_util.tree_flatten_with_path(params_1d)[0])
    flat_2d = dict(jax.tree_util.tree_flatten_with_path(params_2d)[0])
    assert flat_1d.keys() == flat_2d.keys()
    for path, leaf in flat_1d.items():
        other = flat_2d[path].shape
        assert leaf.shape == (other if len(other) < 4 else (other[0], *other[2:])), path


# ----------------------------------------------------------------------------- SmallCNN


def _small_cnn_reference(params, stats_update, x, features, global_pool):
    """SmallCNN(norm='bn') in training mode written out: 'SAME' convs with bias, batch
    statistics (biased variance, eps 1e-5), scale and bias, ReLU, then the head."""
    h = x
    for index in range(1, len(features) + 1):
        conv = params[f'conv{index}']
        strides = 1 if index == 1 else 2
        h = jax.lax.conv_general_dilated(h, conv['kernel'], (strides, strides), 'SAME',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                         precision='highest') + conv['bias']
        mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
        np.testing.assert_allclose(stats_update[f'norm{index}']['mean'], 0.1 * mean,
                                   rtol=1e-4, atol=1e-6)  # momentum 0.9 from 0
        norm = params[f'norm{index}']
        h = np.maximum((h - mean) / np.sqrt(var + BN_EPS) * norm['scale'] + norm['bias'], 0)
    h = h.mean((1, 2)) if global_pool else h.reshape(h.shape[0], -1)
    return h @ params['head']['kernel'] + params['head']['bias']


@pytest.mark.parametrize('global_pool, patch_convs', [(True, True), (False, False)])
def test_small_cnn_with_bn_is_conv_batchnorm_relu_written_out(global_pool, patch_convs):
    from jaxnorm.models import SmallCNN
    features = (4, 6, 8)
    model = SmallCNN(5, features=features, norm='bn', global_pool=global_pool,
                     patch_convs=patch_convs)
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 3))
    variables = _random_params(model, x.shape)
    logits, updates = jax.jit(lambda v: model.apply(v, x, train=True,
                                                    mutable=['batch_stats']))(variables)
    expected = _small_cnn_reference(jax.tree.map(np.asarray, variables['params']),
                                    updates['batch_stats'], np.asarray(x), features,
                                    global_pool)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_small_cnn_norm_slots_are_the_librarys_normalizers():
    import flax.linen as nn

    from jaxnorm import layers
    from jaxnorm.models import SmallCNN
    called = {}

    def record(next_fun, args, kwargs, context):
        called[context.module.name] = type(context.module)
        return next_fun(*args, **kwargs)

    for norm, expected in (('bn', layers.BatchNorm), ('gn', layers.GroupNorm),
                           ('none', layers.Identity)):
        model = SmallCNN(3, features=(4, 8), norm=norm)
        x = jnp.ones((2, 8, 8, 1))
        variables = model.init(jax.random.key(0), x)
        called.clear()
        with nn.intercept_methods(record):
            model.apply(variables, x, train=True, mutable=['batch_stats'])
        assert called['norm1'] is expected and called['norm2'] is expected, norm
        assert not any(issubclass(kind, nn.BatchNorm) for kind in called.values())


@pytest.mark.parametrize('features, norm, global_pool, side', [
    ((16, 32, 32), 'none', False, 8),  # the lottery experiment's CNN on digits
    ((16, 32, 64), 'none', False, 32),  # unification's, on CIFAR
    ((16, 32, 64), 'bn', True, 8),  # OrthoReg's
    ((5, 7), 'bn', False, 9),  # odd side: 'SAME' stride 2 rounds up
])
def test_small_cnn_parameter_count_closed_form(features, norm, global_pool, side):
    from jaxnorm.models import SmallCNN
    classes, channels = 10, 3
    model = SmallCNN(classes, features=features, norm=norm, global_pool=global_pool)
    variables = _init_shapes(model, (1, side, side, channels))
    widths = (channels, *features)
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))
    norms = 2 * sum(features) if norm == 'bn' else 0
    last = side
    for _ in features[1:]:
        last = -(-last // 2)  # ceil: 'SAME' padding at stride 2
    head_in = features[-1] * (1 if global_pool else last * last)
    assert _count(variables['params']) == convs + norms + head_in * classes + classes
    assert _count(variables.get('batch_stats', {})) == norms
