"""prune.scores against a dense Hessian, the BatchNorm scale-invariance identities and numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import prune
from jaxnorm.models import VGG, ResNet

NUM_CLASSES = 3


def tiny_vgg(**norm_kwargs):
    # 8x8 -> stride-2 conv -> 4x4: conv -> BN -> ReLU three times, ~360 parameters.
    return VGG(num_classes=NUM_CLASSES, layers=(4, (4, 2), 4), norm='bn',
               norm_kwargs=norm_kwargs or None)


def tiny_resnet(**norm_kwargs):
    # Stem, one identity block and one stride-2 block with the zero-padding shortcut.
    return ResNet(num_classes=NUM_CLASSES, stage_sizes=(1, 1), stage_widths=(4, 8),
                  stem_width=4, shortcut='zero_pad', norm='bn', norm_kwargs=norm_kwargs or None)


def stacked_batches(num_batches, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    return {'image': jnp.asarray(rng.normal(size=(num_batches, batch_size, 8, 8, 1)),
                                 jnp.float32),
            'label': jnp.asarray(rng.integers(0, NUM_CLASSES, (num_batches, batch_size)))}


def model_loss(model, batches, seed=0):
    variables = jax.jit(model.init)(jax.random.key(seed), batches["image"][0])
    loss = prune.classifier_loss(model.apply, {'batch_stats': variables['batch_stats']},
                                 train=True)
    return loss, variables['params']


def test_hg_matches_dense_hessian_times_mean_gradient():
    """Hg by jvp-of-grad (BN in train mode, two batches) equals mean_b(H_b) @ mean_b(g_b)."""
    batches = stacked_batches(2, 16)
    loss, params = model_loss(tiny_vgg(), batches)
    grads, hg = jax.jit(lambda p, b: prune.gradient_and_hg(loss, p, b))(params, batches)

    flat, unravel = ravel_pytree(params)
    per_batch = [jax.tree.map(lambda x, i=i: x[i], batches) for i in range(2)]
    flat_loss = lambda w, b: loss(unravel(w), b)  # noqa: E731
    hessian, gradient = jax.jit(jax.hessian(flat_loss)), jax.jit(jax.grad(flat_loss))
    dense_h = np.mean([hessian(flat, b) for b in per_batch], axis=0)
    mean_g = np.mean([gradient(flat, b) for b in per_batch], axis=0)
    assert dense_h.shape == (flat.size, flat.size)
    np.testing.assert_allclose(ravel_pytree(grads)[0], mean_g, rtol=1e-5, atol=1e-7)
    reference = dense_h @ mean_g
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ravel_pytree(hg)[0], reference, rtol=1e-5, atol=1e-5 * scale)


# BN's epsilon breaks scale invariance by a relative O(eps / (sigma_f^2 + eps)), sigma_f^2 the
# filter's output variance (here O(1e-2..1)), so eps = 1e-5 is checked at 1e-3. With
# eps = 1e-10 only float32 rounding is left: measured <= 1e-6, checked at 2e-5. Errors are
# relative to the Cauchy-Schwarz size of each dot product, |a.b| <= |a||b|.
@pytest.mark.parametrize('build, epsilon, tolerance', [
    (tiny_vgg, 1e-5, 1e-3), (tiny_vgg, 1e-10, 2e-5), (tiny_resnet, 1e-5, 1e-3)],
    ids=['vgg-eps1e-5', 'vgg-eps1e-10', 'resnet-eps1e-5'])
def test_filters_feeding_train_mode_bn_are_scale_invariant(build, epsilon, tolerance):
    """theta_f . g_f = 0 and theta_f . (Hg)_f = -|g_f|^2 for every conv filter (all feed BN)."""
    batches = stacked_batches(2, 32, seed=1)
    loss, params = model_loss(build(epsilon=epsilon), batches, seed=1)
    grads, hg = jax.jit(lambda p, b: prune.gradient_and_hg(loss, p, b))(params, batches)
    kernels = [path for path in prune.named_leaves(params)[0]
               if path.endswith('kernel') and not path.startswith('head')]
    assert len(kernels) == (3 if build is tiny_vgg else 5)
    flows = prune.filter_flow(params, grads, hg, [prune.Slot(p, -1) for p in kernels])
    hg_leaves = dict(zip(*prune.named_leaves(hg)[:2]))
    for path, f in flows.items():
        theta_norm = np.sqrt(np.asarray(f['theta_sq']))
        grad_norm = np.sqrt(np.asarray(f['grad_sq']))
        hg_norm = np.sqrt(np.sum(np.square(hg_leaves[path]), axis=(0, 1, 2)))
        assert np.all(grad_norm > 0), path
        first = np.abs(f['theta_g']) / (theta_norm * grad_norm)
        second = np.abs(f['theta_hg'] + f['grad_sq']) / (theta_norm * hg_norm)
        assert first.max() < tolerance, (path, first.max())
        assert second.max() < tolerance, (path, second.max())


def random_tree(seed, shapes):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32)
            for name, shape in shapes.items()}


def test_filter_scores_aggregate_like_the_reference_code():
    """Per-filter sums against numpy, with |.| inside the sum or outside it as tabled."""
    shapes = {'conv': (3, 3, 2, 5), 'dense': (5, 4)}
    params, grads, hg = (random_tree(s, shapes) for s in (0, 1, 2))
    groups = [prune.ChannelGroup('conv', 5, prune.Slot('conv', -1),
                                 (prune.Slot('conv', -1), prune.Slot('dense', -2)))]
    t, g, h = (np.asarray(tree['conv'], np.float64).reshape(-1, 5)
               for tree in (params, grads, hg))
    expected = {'magnitude': (t ** 2).sum(0),
                'loss_preservation': np.abs(t * g).sum(0),
                'biased_loss_preservation': (t ** 2 * np.abs(g)).sum(0),
                'grasp': (t * h).sum(0),
                'grad_norm_preservation': np.abs((t * h).sum(0))}
    for measure, reference in expected.items():
        scores = jax.jit(lambda p, gr, hv, m=measure: prune.filter_scores(
            m, p, groups, grads=gr, hg=hv))(params, grads, hg)
        np.testing.assert_allclose(scores['conv'], reference, rtol=1e-5, err_msg=measure)
    per_parameter = prune.parameter_scores('grad_norm_preservation', params, grads=grads,
                                           hg=hg)
    np.testing.assert_allclose(per_parameter['dense'], np.abs(params['dense'] * hg['dense']),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="'grasp' needs the Hessian-gradient product"):
        prune.filter_scores('grasp', params, groups, grads=grads)
    with pytest.raises(ValueError, match='unknown measure'):
        prune.filter_scores('snip', params, groups)
