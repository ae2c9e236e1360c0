"""The optax transforms of optim/ and the pruning tools of prune/ on Flax NNX models (#24).

``nnx.Optimizer(model, tx, wrt=nnx.Param)`` calls ``tx.init`` on ``nnx.state(model, wrt)``,
whose leaves are ``nnx.Variable`` objects (``jax.tree_util`` reaches the array through a
``.value`` entry), and ``tx.update(grads, state, params)`` on ``nnx.as_pure`` of the same
state (plain arrays). ``jaxnorm.trees`` names both a kernel ``'head/kernel'``, the Linen
name, so masks by regex select the same leaves at init, at update and on Linen params.
``jnnx.edit_opt_state`` runs the functions that rewrite an optimizer state
(``prune.install_masks``, ``optim.new_task``) on the pure state and writes it back.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optim
import prune
from jaxnorm import data, layers, trees
from jaxnorm import nnx as jnnx
from jaxnorm.losses import mean_cross_entropy

WIDTHS = (8, 16)


# --- helpers ---------------------------------------------------------------------------------

def nnx_params(model, wrt=nnx.Param):
    """The model's parameters as a pure ``nnx.State`` (paths as in Linen)."""
    return nnx.as_pure(nnx.state(model, wrt))


# --- models ---------------------------------------------------------------------------------

BN = jnnx.get_norm('bn')           # jaxnorm's BatchNorm, NNX twin
LINEN_BN = layers.get_norm('bn')   # and its Linen module


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, num_classes: int = 10):
        self.conv1 = nnx.Conv(1, WIDTHS[0], (3, 3), rngs=rngs)
        self.bn1 = BN.norm(WIDTHS[0], rngs=rngs)
        self.conv2 = nnx.Conv(WIDTHS[0], WIDTHS[1], (3, 3), strides=2, rngs=rngs)
        self.bn2 = BN.norm(WIDTHS[1], rngs=rngs)
        self.head = nnx.Linear(WIDTHS[1], num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(axis=(1, 2)))


class NnxMLP(nnx.Module):
    """A one-hidden-layer MLP (cheaper to compile than the CNN, for the many-optimizer tests)."""

    def __init__(self, rngs: nnx.Rngs, num_classes: int = 10):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.bn1 = BN.norm(32, rngs=rngs)
        self.head = nnx.Linear(32, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn1(self.hidden(x.reshape(x.shape[0], -1)))))


class LinenCNN(nn.Module):
    """The same network in Linen, BatchNorm in training mode (batch statistics)."""
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(LINEN_BN.norm(name='bn1')(nn.Conv(WIDTHS[0], (3, 3), name='conv1')(x),
                                              train=True))
        x = nn.relu(LINEN_BN.norm(name='bn2')(
            nn.Conv(WIDTHS[1], (3, 3), strides=2, name='conv2')(x), train=True))
        return nn.Dense(self.num_classes, name='head')(x.mean(axis=(1, 2)))


def linen_apply(params, x):
    """LinenCNN's logits in training mode (its running-statistics update discarded)."""
    logits, _ = LinenCNN().apply({'params': params, 'batch_stats': LINEN_STATS}, x,
                                 mutable=['batch_stats'])
    return logits


LINEN_STATS = {f'bn{i + 1}': {'mean': jnp.zeros(w), 'var': jnp.ones(w)}
               for i, w in enumerate(WIDTHS)}


@functools.cache
def _initialized(cls, seed: int):
    # RBG keys: threefry's random bits take seconds to compile for every kernel shape on CPU.
    return cls(nnx.Rngs(jax.random.key(seed, impl='rbg')))


def fresh_model(seed: int = 0, cls=NnxCNN):
    """A new ``cls`` initialized from ``seed`` (built once per class and seed)."""
    return nnx.clone(_initialized(cls, seed))


def loss_fn(model, x, y):
    return mean_cross_entropy(model(x), y)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def train(model, optimizer, x, y, steps: int) -> list[float]:
    return [float(train_step(model, optimizer, x, y)) for _ in range(steps)]


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """512 standardized training digits as one batch, (512, 8, 8, 1) and (512,)."""
    splits = data.load_standardized('digits', data_dir=str(tmp_path_factory.mktemp('data')))
    return jnp.asarray(splits.train_images[:512]), jnp.asarray(splits.train_labels[:512])


@functools.partial(jax.jit, static_argnums=(1,), static_argnames='scope')
def magnitude_masks(params, sparsity: float, scope: str = 'layer'):
    """Magnitude masks pruning ``sparsity`` of every kernel but the head's."""
    return prune.unstructured_masks(prune.parameter_scores('magnitude', params), sparsity,
                                    prune.select_leaves(params, r'^(?!head/)'), scope=scope)


def flat(tree) -> dict:
    names, leaves, _ = trees.named_leaves(tree)
    return {name: np.asarray(leaf) for name, leaf in zip(names, leaves)}


# --- the paths ------------------------------------------------------------------------------

def test_variable_state_paths_are_the_linen_names():
    model = fresh_model(0)
    variable_paths = trees.named_leaves(nnx.state(model, nnx.Param))[0]
    pure_paths = trees.named_leaves(nnx_params(model))[0]
    assert 'head/kernel' in pure_paths and variable_paths == pure_paths
    # nnx.split's state has Variable leaves too; nnx.to_pure_dict's plain arrays.
    assert trees.named_leaves(nnx.split(model, nnx.Param, ...)[1])[0] == pure_paths
    assert trees.named_leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0] == pure_paths
    # So a mask anchored at the end of the path selects at init (on Variables) as at update.
    tx = optim.lawn(optax.sgd(0.1), free_steps=1, mask=optim.regex_mask('head/kernel$'))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    targets = trees.find_state(nnx.as_pure(optimizer.opt_state), optim.LawnState).target_norms
    assert list(flat(targets)) == ['head/kernel']
    with pytest.raises(ValueError, match="matches no parameter.*conv1/kernel, "):
        nnx.Optimizer(model, optim.lawn(optax.sgd(0.1), free_steps=1,
                                        mask=optim.regex_mask('kernel/value$')), wrt=nnx.Param)


@pytest.mark.parametrize('pattern', [r'head/kernel$', r'^(?!head/)', r'kernel$', r'^conv\d/',
                                     r'bn1/(scale|bias)$', r'conv2'])
def test_regex_masks_select_the_same_leaves_as_on_linen_params(pattern):
    model = fresh_model(0)
    linen = jax.eval_shape(LinenCNN().init, jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    linen = linen['params']  # the shapes are enough for paths and ndim
    def path_names(tree):
        return [trees.path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert path_names(nnx_params(model)) == path_names(linen)
    nnx_flags = flat(optim.regex_mask(pattern)(nnx_params(model)))
    linen_flags = flat(optim.regex_mask(pattern)(linen))
    assert nnx_flags == linen_flags
    assert any(nnx_flags.values()) and not all(nnx_flags.values())
    # prune.select_leaves (regex and ndim) agrees too.
    assert (flat(prune.select_leaves(nnx_params(model), pattern, min_ndim=1))
            == flat(prune.select_leaves(linen, pattern, min_ndim=1)))


# --- training through nnx.Optimizer ---------------------------------------------------------

def test_lawn_in_nnx_optimizer_trains_and_keeps_the_head_norm(digits):
    x, y = digits
    model = fresh_model(0)
    free = 10
    tx = optim.lawn(optax.sgd(0.3, momentum=0.9), free_steps=free,
                    mask=optim.regex_mask(r'head/kernel$'))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    head_norm = lambda: float(jnp.linalg.norm(model.head.kernel[...]))  # noqa: E731
    start = head_norm()
    losses = train(model, optimizer, x, y, free)
    at_switch = head_norm()
    assert abs(at_switch - start) > 1e-3  # the free phase moved the head
    losses += train(model, optimizer, x, y, 20)
    assert losses[-1] < 0.6 * losses[0]
    state = trees.find_state(nnx.as_pure(optimizer.opt_state), optim.LawnState)
    assert int(state.count) == free + 20
    np.testing.assert_allclose(float(state.target_norms['head']['kernel']), at_switch, rtol=1e-6)
    np.testing.assert_allclose(head_norm(), at_switch, rtol=1e-5)


def set_strength(state, strength: float):
    """The ``optax.inject_hyperparams`` state with a new EWC strength."""
    return state._replace(hyperparams={**state.hyperparams,
                                       'strength': jnp.asarray(strength, jnp.float32)})


def test_ewc_in_nnx_optimizer_over_two_tasks(digits):
    x, y = digits
    # Two tasks of 240 digits each (one shape: one compiled step): classes 0-4, then 5-9.
    tasks = [(x[part][:240], y[part][:240]) for part in (y < 5, y >= 5)]
    inner = optax.sgd(0.1, momentum=0.9)
    # One transform for both runs (one compiled step), lambda as a hyperparameter.
    tx = optax.inject_hyperparams(
        lambda strength: optim.ewc(inner, strength, mask=optim.regex_mask('^(?!head/)')))(
            strength=0.0)
    drift = {}
    for strength in (0.0, 3e4):
        model = fresh_model(0, NnxMLP)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        jnnx.edit_opt_state(optimizer, set_strength, strength)
        losses = train(model, optimizer, *tasks[0], 15)
        assert losses[-1] < 0.1 * losses[0]
        anchor = nnx_params(model)
        jnnx.edit_opt_state(optimizer, optim.new_task, anchor, inner_state=inner.init(anchor))
        state = trees.find_state(nnx.as_pure(optimizer.opt_state), optim.ContinualState)
        assert bool(state.importance.has_anchor)
        assert float(jnp.abs(state.importance.anchor['hidden']['kernel']
                             - model.hidden.kernel[...]).max()) == 0.0
        assert float(jnp.sum(state.importance.omega_prev['hidden']['kernel'])) > 0.0
        assert float(nnx.as_pure(optimizer.opt_state).hyperparams['strength']) == strength
        losses = train(model, optimizer, *tasks[1], 15)
        assert losses[-1] < 0.1 * losses[0]
        drift[strength] = float(jnp.linalg.norm(model.hidden.kernel[...]
                                                - anchor['hidden']['kernel']))
    # The penalty holds the regularized weights nearer the first task's end point.
    assert drift[3e4] < 0.9 * drift[0.0]


def _tasks_on_dicts():
    """name -> factory of the transform; each is run through nnx.Optimizer and on dicts."""
    mask = optim.regex_mask('^(?!head/)')
    return {
        'lawn': lambda: optim.lawn(optax.adam(1e-2), free_steps=1,
                                   mask=optim.regex_mask(r'(hidden|head)/kernel$'),
                                   per_unit=True),
        'ewc': lambda: optim.ewc(optax.sgd(0.05, momentum=0.9), 100.0, mask=mask),
        'mas': lambda: optim.mas(optax.sgd(0.05), 100.0, mask=mask),
        'emr_si': lambda: optim.emr(optax.sgd(0.05, momentum=0.9), 'si', mask=mask),
        'masked': lambda: prune.masked_optimizer(optax.adamw(1e-2, weight_decay=1e-2)),
    }


OUTPUT_NORM = optim.importance.squared_output_norm(lambda model, inputs: model(inputs))


@nnx.jit(static_argnames='mas')
def step_returning_grads(model, optimizer, x, y, mas=False):
    """One ``optimizer.update``; returns the gradients (and MAS's) it used, as dicts."""
    grads = nnx.grad(loss_fn)(model, x, y)
    extra = {'mas_grads': nnx.grad(OUTPUT_NORM)(model, x)} if mas else {}
    optimizer.update(model, grads, **extra)
    return (nnx.to_pure_dict(nnx.as_pure(grads)),
            {k: nnx.to_pure_dict(nnx.as_pure(v)) for k, v in extra.items()})


@pytest.mark.parametrize('name', list(_tasks_on_dicts()))
def test_nnx_optimizer_equals_the_transform_on_the_param_dict(name, digits):
    """Three updates through nnx.Optimizer (under nnx.jit) equal ``tx.update`` on plain
    dicts, with a task boundary (``new_task``) or new masks (``install_masks``) after the
    first."""
    x, y = digits[0][:64], digits[1][:64]
    factory = _tasks_on_dicts()[name]
    model = fresh_model(1, NnxMLP)
    optimizer = nnx.Optimizer(model, factory(), wrt=nnx.Param)
    tx = factory()
    update = jax.jit(tx.update)
    params = nnx.to_pure_dict(nnx_params(model))
    state = tx.init(params)
    for step in range(3):
        grads, extra = step_returning_grads(model, optimizer, x, y, mas=name == 'mas')
        expected, state = update(grads, state, params, **extra)
        params = optax.apply_updates(params, expected)
        after = flat(nnx_params(model))
        assert after.keys() == flat(params).keys()
        for path, value in after.items():
            np.testing.assert_allclose(value, flat(params)[path], rtol=1e-5, atol=1e-6,
                                       err_msg=f'{name} step {step} {path}')
        if step == 0 and name in ('ewc', 'mas', 'emr_si'):
            jnnx.edit_opt_state(optimizer, optim.new_task, nnx_params(model))
            state = optim.new_task(state, params)
        if step == 0 and name == 'masked':
            masks = magnitude_masks(params, 0.5)
            jnnx.edit_opt_state(optimizer, prune.install_masks, masks)
            state = prune.install_masks(state, masks)
    if name == 'masked':
        assert min(float(np.mean(v == 0)) for p, v in flat(params).items()
                   if p.endswith('kernel') and not p.startswith('head')) >= 0.5
    if name == 'lawn':
        norms = np.linalg.norm(np.asarray(model.hidden.kernel[...]), axis=0)
        target = trees.find_state(nnx.as_pure(optimizer.opt_state), optim.LawnState)
        np.testing.assert_allclose(norms, np.ravel(target.target_norms['hidden']['kernel']),
                                   rtol=1e-5)


# --- OrthoReg against the Linen model and a closed form --------------------------------------

def numpy_penalty_grad(kernels: dict) -> dict:
    """d/dW of sum_l w_l sum_ij |G_l - I|_ij (w_l = sqrt(gram side) normalized), in numpy:
    d sum|MM^T - I| / dM = 2 sign(MM^T - I) M, d sum|M^T M - I| / dM = 2 M sign(M^T M - I)."""
    matrices = {p: np.asarray(k, np.float64).reshape(-1, k.shape[-1]).T
                for p, k in kernels.items()}
    roots = {p: np.sqrt(min(m.shape)) for p, m in matrices.items()}
    out = {}
    for path, m in matrices.items():
        if m.shape[0] <= m.shape[1]:
            d = 2 * np.sign(m @ m.T - np.eye(m.shape[0])) @ m
        else:
            d = 2 * m @ np.sign(m.T @ m - np.eye(m.shape[1]))
        out[path] = roots[path] / sum(roots.values()) * d.T.reshape(kernels[path].shape)
    return out


def test_orthoreg_update_equals_the_linen_model_and_the_closed_form(digits):
    x, y = digits[0][:64], digits[1][:64]
    kappa, lr = 1e-2, 0.1
    model = fresh_model(2)
    # The NNX weights are a valid Linen params dict of the same network ...
    params = nnx.to_pure_dict(nnx_params(model))
    shapes = jax.eval_shape(LinenCNN().init, jax.random.key(0), x)['params']
    trees.check_like(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), params,
                     'NNX params', against='Linen params')
    # ... with the same outputs and gradients.
    linen_logits, linen_grads = jax.jit(lambda p: (linen_apply(p, x), jax.grad(
        lambda q: mean_cross_entropy(linen_apply(q, x), y))(p)))(params)
    np.testing.assert_allclose(nnx.jit(lambda m: m(x))(model), linen_logits, rtol=1e-5,
                               atol=1e-5)

    mask = optim.regex_mask('^(?!head/)')
    make_tx = lambda: optax.chain(optim.orthoreg(kappa, mask=mask), optax.sgd(lr))  # noqa: E731
    optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
    grads, _ = step_returning_grads(model, optimizer, x, y)
    for path, g in flat(grads).items():
        np.testing.assert_allclose(g, flat(linen_grads)[path], rtol=1e-4, atol=1e-6)
    after, before = flat(nnx_params(model)), flat(params)

    linen_tx = make_tx()
    expected = flat(jax.jit(linen_tx.update)(linen_grads, linen_tx.init(params), params)[0])
    assert after.keys() == expected.keys()
    for path in after:
        np.testing.assert_allclose(after[path], before[path] + expected[path], rtol=1e-5,
                                   atol=1e-6, err_msg=path)
    # Independent of optim.orthoreg: -lr (g + kappa dR/dW) on the convs, -lr g elsewhere.
    penalty = numpy_penalty_grad({p: before[p] for p in ('conv1/kernel', 'conv2/kernel')})
    for path, g in flat(linen_grads).items():
        want = -lr * (g + kappa * penalty[path]) if path in penalty else -lr * g
        np.testing.assert_allclose(expected[path], want, rtol=1e-4, atol=1e-7, err_msg=path)
        np.testing.assert_allclose(after[path], before[path] + want, rtol=1e-5, atol=1e-6,
                                   err_msg=path)
    assert np.abs(lr * kappa * penalty['conv2/kernel']).max() > 1e-5  # the term shows


# --- pruning an NNX model --------------------------------------------------------------------

def test_magnitude_mask_on_nnx_state_keeps_pruned_weights_zero(digits):
    x, y = digits
    model = fresh_model(3)
    params = nnx_params(model)
    masks = magnitude_masks(params, 0.7, scope='global')
    kept = {p: m for p, m in flat(masks).items()}
    total = sum(kept[p].size for p in ('conv1/kernel', 'conv2/kernel'))
    assert sum(int(kept[p].sum()) for p in ('conv1/kernel', 'conv2/kernel')) == round(
        0.3 * total)
    assert all(kept[p].all() for p in kept if not p.endswith('kernel') or p.startswith('head'))
    # The kept entries are the largest magnitudes.
    conv = np.abs(flat(params)['conv2/kernel'])
    assert conv[kept['conv2/kernel']].min() >= conv[~kept['conv2/kernel']].max()

    nnx.update(model, prune.apply_masks(params, masks))
    optimizer = nnx.Optimizer(model, prune.masked_optimizer(
        optax.adamw(3e-2, weight_decay=1e-2)), wrt=nnx.Param)
    jnnx.edit_opt_state(optimizer, prune.install_masks, masks)
    losses = train(model, optimizer, x, y, 25)
    assert losses[-1] < 0.6 * losses[0]
    after = flat(nnx_params(model))
    for path, keep in kept.items():
        assert np.all(after[path][~keep] == 0.0), path
        assert not np.signbit(after[path][~keep]).any(), path  # +0.0, never -0.0
    moved = np.abs(after['conv2/kernel'] - flat(params)['conv2/kernel'])[kept['conv2/kernel']]
    assert moved.min() > 0.0
