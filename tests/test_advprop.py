"""AdvProp-style pixel PGD (jaxnorm.advprop), the A-FAN section's pixel-level arm: the attack
against a brute-force loop, and the loss and statistics against a hand-written BN network."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxnorm import advprop, config as config_lib, steps


def _section(**kw):
    values = dict(epsilon=0.3, steps=3, step_size=0.1, random_start=False, input_min=None,
                  input_max=None, clean_weight=0.5)
    return ml_collections.ConfigDict({**values, **kw})


@pytest.mark.parametrize('bounds', [(None, None), (-0.2, 0.25)])
def test_pixel_pgd_is_the_clipped_sign_ascent(bounds):
    x = jax.random.normal(jax.random.key(0), (5, 4)) * 0.2
    w = jax.random.normal(jax.random.key(1), (4, 3))
    y = jnp.arange(5) % 3

    def loss(image):
        z = image @ w
        return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(5), y])

    adv, _ = jax.jit(lambda x: advprop.pixel_pgd(
        loss, x, jax.random.key(2), steps=4, step_size=0.1, epsilon=0.25, random_start=False,
        input_min=bounds[0], input_max=bounds[1]))(x)
    delta = np.zeros(x.shape, np.float32)
    for _ in range(4):  # brute force: numpy clip of each sign step
        grad = np.asarray(jax.grad(loss)(x + delta))
        delta = np.clip(delta + 0.1 * np.sign(grad), -0.25, 0.25)
        if bounds[0] is not None:
            delta = np.clip(np.asarray(x) + delta, *bounds) - np.asarray(x)
    np.testing.assert_allclose(adv, np.asarray(x) + delta, atol=1e-6)
    assert float(jnp.max(jnp.abs(adv - x))) <= 0.25 + 1e-6
    if bounds[0] is None:  # linear logits, small steps: the radius is reached
        assert float(jnp.max(jnp.abs(adv - x))) == pytest.approx(0.25, rel=1e-5)


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        h = nn.Dense(6, name='dense1')(x)
        h = nn.BatchNorm(use_running_average=not train, name='bn')(h)
        return nn.Dense(3, name='dense2')(nn.relu(h))


def _by_hand(p, x, y):
    """The network in train mode written out: BN with the batch's own biased statistics and
    eps 1e-5 (flax's), the shared affine; returns (mean CE, batch mean, batch variance)."""
    h = x @ p['dense1']['kernel'] + p['dense1']['bias']
    mean, var = h.mean(0), h.var(0)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * p['bn']['scale'] + p['bn']['bias']
    z = jnp.maximum(h, 0) @ p['dense2']['kernel'] + p['dense2']['bias']
    return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(len(y)), y]), mean, var


def test_advprop_loss_normalizes_adversarial_images_with_their_own_statistics():
    model = _BNNet()
    x = jax.random.normal(jax.random.key(3), (8, 5))
    y = jnp.arange(8) % 3
    variables = model.init(jax.random.key(4), x)
    ext = advprop.AdversarialPixels(_section(steps=1), None)
    forward = ext.wrap_loss(steps.forward_loss(model.apply), None)
    loss, (_, stats, metrics) = jax.jit(forward)(variables['params'], variables['batch_stats'],
                                                 {'image': x, 'label': y}, jax.random.key(5))
    p = variables['params']
    clean, mean, _ = _by_hand(p, x, y)
    x_adv = x + 0.1 * jnp.sign(jax.grad(lambda i: _by_hand(p, i, y)[0])(x))
    adv = _by_hand(p, x_adv, y)[0]
    np.testing.assert_allclose(metrics['advprop_adv_loss'], adv, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * (clean + adv), rtol=1e-5)
    assert float(adv) > float(clean)  # the attack raised the loss
    # Running statistics: the clean batch's update only (flax momentum 0.99, start at 0).
    np.testing.assert_allclose(stats['bn']['mean'], 0.01 * mean, rtol=1e-5, atol=1e-7)
    # Gradients: of the hand-written loss with x_adv held constant.
    grads = jax.grad(lambda q: forward(q, variables['batch_stats'], {'image': x, 'label': y},
                                       jax.random.key(5))[0])(p)
    ref = jax.grad(lambda q: 0.5 * (_by_hand(q, x, y)[0] + _by_hand(q, x_adv, y)[0]))(p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads,
                 ref)


def test_config_switch_and_errors():
    cfg = config_lib.default_config()
    assert not advprop.AdversarialPixels.is_active(cfg)
    assert advprop.AdversarialPixels.is_active(
        config_lib.apply_overrides(cfg, {'advprop.epsilon': 0.1}))
    for bad, match in (({'advprop.epsilon': -1.0}, 'epsilon'),
                       ({'advprop.epsilon': 0.1, 'advprop.clean_weight': 2.0}, 'clean_weight'),
                       ({'advprop.epsilon': 0.1, 'advprop.input_min': 1.0,
                         'advprop.input_max': 0.0}, 'input_min')):
        with pytest.raises(ValueError, match=match):
            advprop.AdversarialPixels.check_section(config_lib.apply_overrides(cfg, bad))
