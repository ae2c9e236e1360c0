"""optim.orthoreg against numpy: penalty, gradient, layer weights, metric, and a training run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
from jaxnorm import data

RNG = np.random.default_rng(0)
# Dense (in, out) with out < in (rows), conv HWIO with out > fan_in (columns), a depthwise
# (H, W, 1, C) kernel (columns, 9x9), and a bias that the default mask skips.
PARAMS = {
    'dense': {'kernel': RNG.normal(size=(6, 4)).astype(np.float32),
              'bias': RNG.normal(size=(4,)).astype(np.float32)},
    'conv': {'kernel': RNG.normal(size=(1, 1, 3, 5)).astype(np.float32)},
    'depthwise': {'kernel': RNG.normal(size=(3, 3, 1, 12)).astype(np.float32)},
}


def numpy_matrix(kernel):
    """(out, fan_in): row f is filter f's weights, for flax HWIO / (in, out) layouts."""
    out = kernel.shape[-1]
    return np.stack([kernel[..., f].ravel() for f in range(out)])


def numpy_penalty(params, paths, size='gram'):
    weights, terms = {}, {}
    for path in paths:
        m = numpy_matrix(params[path]['kernel']).astype(np.float64)
        g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        terms[path] = np.abs(g - np.eye(len(g))).sum()  # entrywise L1
        weights[path] = np.sqrt(min(m.shape) if size == 'gram' else m.shape[0])
    total = sum(weights.values())
    return sum(weights[p] / total * terms[p] for p in paths)


def numpy_penalty_grad(params, paths, size='gram'):
    """Closed form: d sum|MM^T - I| / dM = 2 S M, d sum|M^T M - I| / dM = 2 M S, S = sign."""
    roots = {p: np.sqrt(min(numpy_matrix(params[p]['kernel']).shape) if size == 'gram'
                        else params[p]['kernel'].shape[-1]) for p in paths}
    total = sum(roots.values())
    out = {}
    for path in paths:
        kernel = params[path]['kernel'].astype(np.float64)
        m = numpy_matrix(kernel)
        if m.shape[0] <= m.shape[1]:
            d = 2 * np.sign(m @ m.T - np.eye(m.shape[0])) @ m
        else:
            d = 2 * m @ np.sign(m.T @ m - np.eye(m.shape[1]))
        # Undo numpy_matrix: row f back into kernel[..., f].
        grad = np.stack([d[f].reshape(kernel.shape[:-1]) for f in range(m.shape[0])], -1)
        out[path] = roots[path] / total * grad
    return out


@pytest.mark.parametrize('size', ['gram', 'filters'])
def test_penalty_and_gradient_match_numpy(size):
    paths = ['dense', 'conv', 'depthwise']
    value, grads = jax.jit(jax.value_and_grad(
        lambda p: optim.orthoreg_penalty(p, size=size)))(PARAMS)
    np.testing.assert_allclose(value, numpy_penalty(PARAMS, paths, size), rtol=1e-5)
    expected = numpy_penalty_grad(PARAMS, paths, size)
    for path in paths:
        np.testing.assert_allclose(grads[path]['kernel'], expected[path], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(grads['dense']['bias'], 0.0)


def test_entrywise_not_induced_norm():
    # ones((2, 2)): G - I = [[1, 2], [2, 1]]; entrywise L1 6, induced 1-norm (max column sum) 3.
    value = optim.orthoreg_penalty({'d': {'kernel': np.ones((2, 2), np.float32)}})
    assert float(value) == pytest.approx(6.0)
    # |x| at 0 has subgradient 0: an orthonormal kernel is a stationary point.
    grads = jax.grad(optim.orthoreg_penalty)({'d': {'kernel': np.eye(3, dtype=np.float32)}})
    np.testing.assert_array_equal(grads['d']['kernel'], 0.0)


def test_mask_restricts_the_layers_and_renormalizes_weights():
    mask = {'dense': {'kernel': True, 'bias': False}, 'conv': {'kernel': False},
            'depthwise': {'kernel': True}}
    value = optim.orthoreg_penalty(PARAMS, mask=mask)
    np.testing.assert_allclose(value, numpy_penalty(PARAMS, ['dense', 'depthwise']), rtol=1e-5)
    weights = optim.layer_weights(PARAMS, mask=mask, size='filters')
    assert weights == pytest.approx({'dense/kernel': 2 / (2 + np.sqrt(12)),
                                     'depthwise/kernel': np.sqrt(12) / (2 + np.sqrt(12))})


def test_transform_adds_strength_times_penalty_gradient():
    kappa = 0.03
    tx = optim.orthoreg(kappa)
    grads = jax.tree.map(lambda x: np.ones_like(x), PARAMS)
    updates, _ = jax.jit(tx.update)(grads, tx.init(PARAMS), PARAMS)
    expected = numpy_penalty_grad(PARAMS, ['dense', 'conv', 'depthwise'])
    for path in expected:
        np.testing.assert_allclose(updates[path]['kernel'], 1.0 + kappa * expected[path],
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(updates['dense']['bias'], 1.0)


def test_strength_zero_is_identity_and_bad_input_raises():
    tx = optax.chain(optim.orthoreg(0.0), optax.sgd(0.1, momentum=0.9))
    bare = optax.sgd(0.1, momentum=0.9)
    grads = jax.tree.map(lambda x: 0.5 * x, PARAMS)
    ours, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    ref, _ = bare.update(grads, bare.init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, ours, ref)
    with pytest.raises(ValueError, match='strength must be >= 0'):
        optim.orthoreg(-1.0)
    with pytest.raises(ValueError, match='needs the current params'):
        optim.orthoreg(0.1).update(grads, optim.OrthoRegState())
    only_bias = {'dense': {'kernel': False, 'bias': True}, 'conv': False, 'depthwise': False}
    with pytest.raises(ValueError, match='selects no kernel'):
        optim.orthoreg(0.1, mask=only_bias).init(PARAMS)


def test_orthonormality_metric_matches_numpy():
    metric = optim.orthonormality(PARAMS)
    for path in ['dense', 'conv', 'depthwise']:
        m = numpy_matrix(PARAMS[path]['kernel']).astype(np.float64)
        g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        np.testing.assert_allclose(metric[f'{path}/kernel'],
                                   np.abs(np.diag(g)).sum() / np.abs(g).sum(), rtol=1e-5)
    q, _ = np.linalg.qr(RNG.normal(size=(5, 5)))
    assert float(optim.orthonormality({'d': {'kernel': q}})['d/kernel']) == pytest.approx(1.0)


def test_training_with_orthoreg_raises_orthonormality():
    """Margin fixed before running: mean diagonal share >= unregularized + 0.1."""
    ds = data.load('digits', 'train')
    x = jnp.asarray(ds.images.reshape(len(ds.labels), -1)[:512], jnp.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = jnp.asarray(ds.labels[:512])
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {'dense1': {'kernel': jax.random.normal(k1, (64, 32)) / 8},
              'dense2': {'kernel': jax.random.normal(k2, (32, 32)) / np.sqrt(32)},
              'head': {'kernel': jax.random.normal(k3, (32, 10)) / np.sqrt(32)}}
    mask = optim.regex_mask('^(?!head)')

    def loss(p):
        h = jax.nn.relu(jax.nn.relu(x @ p['dense1']['kernel']) @ p['dense2']['kernel'])
        return optax.softmax_cross_entropy_with_integer_labels(h @ p['head']['kernel'], y).mean()

    def train(tx):
        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=150)
        return p, loss(p)

    plain, plain_loss = jax.jit(lambda: train(optax.sgd(0.05, momentum=0.9)))()
    ortho, ortho_loss = jax.jit(lambda: train(optax.chain(optim.orthoreg(0.05, mask=mask),
                                                         optax.sgd(0.05, momentum=0.9))))()
    plain_metric = np.mean(list(jax.device_get(optim.orthonormality(plain, mask)).values()))
    ortho_metric = np.mean(list(jax.device_get(optim.orthonormality(ortho, mask)).values()))
    assert ortho_metric >= plain_metric + 0.1
    assert ortho_loss < np.log(10) / 2  # still learns the task


def model_kernels(name, image=(32, 32, 3)):
    """``{path: shape}`` of a model's conv/Dense kernels (shapes only, no initialization)."""
    from jaxnorm import models
    from jaxnorm.trees import named_leaves
    model = models.get_model(name, norm='bn', num_classes=100)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image)))['params']
    names, leaves, _ = named_leaves(params)
    return params, {n: leaf.shape for n, leaf in zip(names, leaves) if len(leaf.shape) >= 2}


def test_resnet34_reference_weights_stem_by_filters():
    """The reference's ResNet rule: sqrt(min(C_out, C_in k k)) per conv, the stem sqrt(C_out)."""
    from optim.orthoreg import REFERENCE_RULES
    params, shapes = model_kernels('resnet34')
    mask = optim.regex_mask('^(?!head)')
    roots = {}
    for path, (kh, kw, cin, cout) in ((p, s) for p, s in shapes.items() if p != 'head/kernel'):
        roots[path] = np.sqrt(cout) if path == 'stem/conv/kernel' else np.sqrt(min(cout,
                                                                                kh * kw * cin))
    total = sum(roots.values())
    weights = optim.layer_weights(params, mask, REFERENCE_RULES['resnet34']['size'])
    assert weights == pytest.approx({p: r / total for p, r in roots.items()})
    # sqrt(64) for the stem, where the plain Gram-side rule gives sqrt(min(64, 27)).
    gram_rule = optim.layer_weights(params, mask, 'gram')
    assert weights['stem/conv/kernel'] / weights['stage1_block1/conv1/kernel'] == pytest.approx(1)
    assert gram_rule['stem/conv/kernel'] / gram_rule['stage1_block1/conv1/kernel'] == \
        pytest.approx(np.sqrt(27 / 64))


def test_mobilenet_reference_weights_and_columns_gram():
    """Stem sqrt(32), depthwise sqrt(C), pointwise sqrt(C_in); M^T M for every kernel."""
    from optim.orthoreg import REFERENCE_RULES
    params, shapes = model_kernels('mobilenet_v1')
    mask = optim.regex_mask('^(?!head)')
    roots = {}
    for path, (kh, kw, cin, cout) in ((p, s) for p, s in shapes.items() if p != 'head/kernel'):
        if path == 'stem/conv/kernel':
            roots[path] = np.sqrt(32)
        elif 'depthwise' in path:
            roots[path] = np.sqrt(cout)  # (3, 3, 1, C)
        else:
            roots[path] = np.sqrt(cin)   # (1, 1, C_in, C_out)
    total = sum(roots.values())
    rule = REFERENCE_RULES['mobilenet_v1']
    assert optim.layer_weights(params, mask, rule['size']) == pytest.approx(
        {p: r / total for p, r in roots.items()})
    # A square pointwise kernel: R uses M^T M (C_in x C_in), which differs from M M^T.
    kernel = RNG.normal(size=(1, 1, 6, 6)).astype(np.float32) / 2
    tree = {'stem': {'kernel': RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)},
            'pw': {'kernel': kernel}}
    m = numpy_matrix(kernel).astype(np.float64)
    stem = numpy_matrix(tree['stem']['kernel']).astype(np.float64)
    w_stem, w_pw = np.sqrt(4), np.sqrt(6)
    expected = (w_stem * np.abs(stem.T @ stem - np.eye(27)).sum()
                + w_pw * np.abs(m.T @ m - np.eye(6)).sum()) / (w_stem + w_pw)
    value = optim.orthoreg_penalty(tree, **{k: v for k, v in rule.items()})
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    rows = (w_stem * np.abs(stem @ stem.T - np.eye(4)).sum()
            + w_pw * np.abs(m @ m.T - np.eye(6)).sum()) / (w_stem + w_pw)
    assert abs(float(optim.orthoreg_penalty(tree, size='mobilenet')) - rows) < 1e-3 * rows
    assert abs(expected - rows) > 1e-2 * rows
    metric = optim.orthonormality(tree, gram_side='columns')['pw/kernel']
    np.testing.assert_allclose(metric, np.abs(np.diag(m.T @ m)).sum() / np.abs(m.T @ m).sum(),
                               rtol=1e-5)


def test_reference_rules_reject_bad_input():
    with pytest.raises(ValueError, match='gram_side must be one of'):
        optim.orthoreg(0.1, gram_side='rows')
    with pytest.raises(ValueError, match='no selected kernel path matches'):
        optim.layer_weights(PARAMS, size='resnet')
    with pytest.raises(ValueError, match='neither the stem'):
        optim.layer_weights({'stem': {'kernel': np.ones((3, 3, 1, 4))},
                             'conv': {'kernel': np.ones((3, 3, 2, 4))}}, size='mobilenet')
