"""prune.compact + jaxnorm.models.channels: the compacted model computes the masked model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prune
from jaxnorm.models import VGG, ResNet, channels, get_model

MODELS = {
    'vgg_bn': lambda: VGG(num_classes=5, layers=(6, (8, 2), 'M', 8), norm='bn'),
    'vgg_none': lambda: VGG(num_classes=5, layers=(6, (8, 2), 'M', 8), norm='none'),
    'vgg_vn': lambda: VGG(num_classes=5, layers=(6, 8), norm='vn'),
    'resnet_zero_pad': lambda: ResNet(num_classes=5, stage_sizes=(2, 1), stage_widths=(6, 8),
                                      stem_width=6, shortcut='zero_pad', norm='bn'),
    'resnet_preact_conv': lambda: ResNet(num_classes=5, stage_sizes=(1, 1),
                                         stage_widths=(6, 8), stem_width=6,
                                         shortcut='conv1x1', preact=True, norm='bn'),
    'mlp': lambda: get_model('mlp', norm='bn', num_classes=5, hidden=(12, 10)),
}


def perturbed(variables, seed):
    """Random parameters and running statistics, so that no channel is trivially equal."""
    rng = np.random.default_rng(seed)
    out = {'params': jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype),
                                  variables['params'])}
    if 'batch_stats' in variables:
        out['batch_stats'] = jax.tree.map(
            lambda s: jnp.asarray(rng.uniform(0.5, 2.0, size=s.shape), s.dtype),
            variables['batch_stats'])
    return out


def count(tree):
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('name', list(MODELS))
def test_compacted_model_equals_masked_model(name):
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 8, 8, 1)), jnp.float32)
    variables = perturbed(jax.jit(model.init)(jax.random.key(0), x), seed=1)
    groups = channels.channel_groups(model, variables)
    alive = {g.name: rng.random(g.width) < 0.5 for g in groups}
    for vector in alive.values():
        vector[rng.integers(vector.size)] = True
    masks = prune.structured_masks(variables['params'], groups, alive)
    masked = {**variables, 'params': prune.apply_masks(variables['params'], masks)}
    small_vars, widths = prune.compact(masked, groups, prune.channels_alive(masks, groups))
    small = channels.compact_model(model, widths)

    assert count(small_vars['params']) == prune.count_kept(masks)
    small_shapes = jax.eval_shape(small.init, jax.random.key(0), x)
    assert jax.tree.structure(small_shapes) == jax.tree.structure(small_vars)
    def logits(module, variables):
        train_out, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
        return module.apply(variables, x, train=False), train_out

    for dense_out, small_out in zip(jax.jit(logits, static_argnums=0)(model, masked),
                                    jax.jit(logits, static_argnums=0)(small, small_vars)):
        np.testing.assert_allclose(small_out, dense_out, rtol=1e-5, atol=1e-5)
    # Accounting: the FLOPs the masks keep are the compacted model's dense FLOPs.
    positions = channels.kernel_positions(model, masked, x[:1])
    report = prune.layer_report(masked['params'], masks, positions=positions)
    small_report = prune.layer_report(small_vars['params'],
                                      positions=channels.kernel_positions(small, small_vars,
                                                                          x[:1]))
    assert report['total']['flops_kept'] == small_report['total']['flops']
    assert report['total']['kept'] == small_report['total']['params']
    assert report['total']['speedup'] == pytest.approx(
        report['total']['flops'] / small_report['total']['flops'])


def test_normalizers_mixing_channels_and_mobilenet_are_refused():
    x = jnp.zeros((1, 8, 8, 1))
    model = VGG(num_classes=5, layers=(4, 4), norm='ln')
    with pytest.raises(ValueError, match="per-channel normalizer .* 'ln' is not one"):
        channels.channel_groups(model, model.init(jax.random.key(0), x))
    mobilenet = get_model('mobilenet_v1', num_classes=5, width=0.125)
    with pytest.raises(ValueError, match='not MobileNetV1'):
        channels.channel_groups(mobilenet, jax.eval_shape(mobilenet.init, jax.random.key(0), x))
