"""Tests for jaxnorm.mimicnorm and norm='mimic' (arXiv:2010.09278) against numpy references."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import config as config_lib
from jaxnorm import mimicnorm, theory, train
from jaxnorm.models import channels, get_model

# name -> (shape, centred under the authors' rule: conv, fan_in > 50, not depthwise)
LAYOUTS = {
    'conv3x3': ((3, 3, 16, 8), True),        # fan_in 144
    'pointwise': ((1, 1, 64, 32), True),     # fan_in 64
    'small_pointwise': ((1, 1, 32, 32), False),  # fan_in 32
    'rgb_stem': ((3, 3, 3, 16), False),      # fan_in 27
    'depthwise3x3': ((3, 3, 1, 32), False),  # fan_in 9
    'depthwise9x9': ((9, 9, 1, 4), False),   # fan_in 81 but depthwise
    'grouped': ((3, 3, 8, 16), True),        # groups=2 of 16 inputs: fan_in 72
    'conv1d': ((5, 12, 6), True),            # fan_in 60
    'dense': ((128, 10), False),             # Dense kernels are never centred
}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    params = {name: {'kernel': rng.normal(0.3, 1.0, shape).astype(np.float32),
                     'bias': rng.normal(size=shape[-1]).astype(np.float32)}
              for name, (shape, _) in LAYOUTS.items()}
    return jax.tree.map(jnp.asarray, params)


def _np_center(w):
    w = np.asarray(w, np.float64)
    return w - w.mean(axis=tuple(range(w.ndim - 1)), keepdims=True)


def _filter_means(kernel):
    k = np.asarray(kernel, np.float64)
    return k.mean(axis=tuple(range(k.ndim - 1)))


def test_mask_follows_the_authors_rule():
    mask = mimicnorm.weight_mean_mask(_params())
    assert mask == {name: {'kernel': centred, 'bias': False}
                    for name, (_, centred) in LAYOUTS.items()}
    # The bar is strict (fan_in > min_fan_in) and configurable.
    assert mimicnorm.weight_mean_mask(_params(), 64)['pointwise']['kernel'] is False
    assert mimicnorm.weight_mean_mask(_params(), 26)['rgb_stem']['kernel'] is True


def test_center_kernels_matches_numpy_on_selected_leaves_only():
    params = _params()
    out = jax.jit(mimicnorm.center_kernels)(params)
    for name, (_, centred) in LAYOUTS.items():
        expected = _np_center(params[name]['kernel']) if centred else params[name]['kernel']
        np.testing.assert_allclose(out[name]['kernel'], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[name]['bias'], params[name]['bias'])


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_projection_lands_on_centred_weights_and_leaves_the_inner_optimizer_alone(momentum):
    params = _params()
    grads = jax.tree.map(lambda p: jnp.asarray(
        np.random.default_rng(p.size).normal(size=p.shape), jnp.float32), params)
    inner = optax.sgd(0.1, momentum=momentum or None)
    tx = optax.chain(inner, mimicnorm.weight_mean_projection())
    state = tx.init(params)
    inner_state = inner.init(params)
    step = jax.jit(tx.update)
    for _ in range(2):
        updates, state = step(grads, state, params)
        inner_updates, inner_state = inner.update(grads, inner_state, params)
        new = optax.apply_updates(params, updates)
        for name, (_, centred) in LAYOUTS.items():
            raw = np.asarray(params[name]['kernel'], np.float64) + np.asarray(
                inner_updates[name]['kernel'], np.float64)
            np.testing.assert_allclose(new[name]['kernel'], _np_center(raw) if centred else raw,
                                       rtol=1e-5, atol=1e-5)
            # Untouched leaves get exactly the inner update.
            np.testing.assert_allclose(updates[name]['bias'], inner_updates[name]['bias'],
                                       rtol=1e-6, atol=1e-7)
        # The inner optimizer (momentum) saw the unprojected gradient, as in the paper's code.
        for a, b in zip(jax.tree.leaves(state[0]), jax.tree.leaves(inner_state)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert isinstance(state[1], mimicnorm.WeightMeanProjectionState)
        params = new


def test_projection_takes_a_bool_tree_or_callable_mask():
    params = _params()
    grads = jax.tree.map(jnp.ones_like, params)
    only_dense = jax.tree.map(lambda _: False, params)
    only_dense['dense']['kernel'] = True  # a user may centre Dense kernels explicitly
    for mask in (only_dense, lambda p: only_dense):
        tx = mimicnorm.weight_mean_projection(mask)
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        np.testing.assert_allclose(new['dense']['kernel'],
                                   _np_center(params['dense']['kernel'] + 1.0), atol=1e-5)
        np.testing.assert_array_equal(updates['conv3x3']['kernel'], grads['conv3x3']['kernel'])


def test_projection_errors():
    params = _params()
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = mimicnorm.weight_mean_projection()
    with pytest.raises(ValueError, match='needs the current params'):
        tx.update(grads, tx.init(params), None)
    with pytest.raises(ValueError, match='does not match'):
        mimicnorm.weight_mean_projection({'conv3x3': {'kernel': True}}).update(
            grads, tx.init(params), params)
    bias_mask = jax.tree.map(lambda _: False, params)
    bias_mask['conv3x3']['bias'] = True
    with pytest.raises(ValueError, match='rank >= 2'):
        mimicnorm.weight_mean_projection(bias_mask).update(grads, tx.init(params), params)
    array_mask = jax.tree.map(lambda _: jnp.array(True), params)
    with pytest.raises(TypeError, match='must be a Python bool'):
        mimicnorm.center_kernels(params, array_mask)


@pytest.mark.parametrize('gain, shape', [(2.0, (3, 3, 64, 256)), (2.8, (1, 1, 512, 128)),
                                         (2.0, (3, 3, 3, 512))])
def test_centred_init_equals_centring_a_normal_init(gain, shape):
    key = jax.random.key(3)
    kernel = mimicnorm.centered_kernel_init(gain)(key, shape)
    draw = np.asarray(jax.random.normal(key, shape), np.float64) * math.sqrt(
        gain / math.prod(shape[:-1]))
    expected = _np_center(draw) if mimicnorm.is_centered_kernel(shape) else draw
    np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-6)
    assert abs(np.std(draw) / math.sqrt(gain / math.prod(shape[:-1])) - 1) < 0.05


def test_logit_batch_norm_matches_numpy_in_train_and_eval():
    z = np.random.default_rng(0).normal(2.0, 3.0, (16, 5)).astype(np.float32)
    module = mimicnorm.LogitBatchNorm()
    variables = module.init(jax.random.key(0), z, train=False)
    assert 'params' not in variables  # no affine
    y, state = module.apply(variables, z, train=True, mutable=['batch_stats'])
    mean, var = z.mean(0), z.var(0)
    np.testing.assert_allclose(y, (z - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    stats = state['batch_stats']
    np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * var, rtol=1e-5)
    y_eval = module.apply({'batch_stats': stats}, z, train=False)
    np.testing.assert_allclose(y_eval, (z - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-5),
                               rtol=1e-4, atol=1e-5)


def _init(model, shape):
    return model.init(jax.random.key(0), jnp.zeros(shape))


def test_mimic_resnet20_architecture():
    variables = _init(get_model('resnet20', norm='mimic', num_classes=10), (2, 8, 8, 3))
    params = variables['params']
    blocks = [f'stage{s}_block{b}' for s in (1, 2, 3) for b in (1, 2, 3)]
    np.testing.assert_allclose([params[b]['skip_gain'] for b in blocks],
                               [1.2 ** 2 / k for k in range(1, 10)], rtol=1e-6)
    # The only state is the last BN's; every conv has a bias; the body has no normalizer.
    assert set(variables['batch_stats']) == {'logit_norm'}
    assert all('bias' in params[b][c] for b in blocks for c in ('conv1', 'conv2'))
    assert not any('norm' in key for b in blocks for key in params[b])
    assert np.max(np.abs(_filter_means(params['stage1_block1']['conv1']['kernel']))) < 1e-6
    assert np.max(np.abs(_filter_means(params['stem']['conv']['kernel']))) > 1e-3  # fan_in 27
    with pytest.raises(ValueError, match='skipinit'):
        _init(get_model('resnet20', norm='mimic', num_classes=10, skipinit=True), (2, 8, 8, 3))


def test_mimic_vgg_gain_centring_and_normalised_logits():
    model = get_model('vgg_cfg10', norm='mimic', num_classes=10, width=0.5)
    x = jax.random.normal(jax.random.key(1), (32, 8, 8, 3))
    variables = _init(model, x.shape)
    kernel = variables['params']['layer9']['conv']['kernel']  # 3x3, 256 -> 256
    assert abs(float(jnp.std(kernel)) / math.sqrt(2.8 / (9 * 256)) - 1) < 0.03
    assert np.max(np.abs(_filter_means(kernel))) < 1e-6
    assert not any('skip_gain' in layer for layer in variables['params'].values())
    logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
    logits = np.asarray(logits, np.float64)
    np.testing.assert_allclose(logits.mean(0), 0, atol=1e-5)


def test_structured_pruning_refuses_mimic_models():
    model = get_model('vgg_cfg10', norm='mimic', num_classes=10, width=0.25)
    with pytest.raises(ValueError, match="'mimic'"):
        channels.channel_groups(model, _init(model, (1, 8, 8, 1)))


def test_fit_keeps_selected_kernels_centred_only_with_mimic(tmp_path):
    means = {}
    for norm in ('mimic', 'none'):
        cfg = config_lib.apply_overrides(config_lib.default_config(), {
            'model': 'vgg_cfg10', 'model_kwargs': {'width': 0.125}, 'norm': norm,
            'epochs': 1, 'lr': 0.05, 'progress': False, 'workdir': str(tmp_path / norm)})
        params = train.fit(cfg).state.params
        mask = mimicnorm.weight_mean_mask(params)
        kernels = [k for k, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
        assert len(kernels) == 9  # every conv but the 1-channel stem
        means[norm] = max(np.max(np.abs(_filter_means(k))) / np.std(k) for k in kernels)
    assert means['mimic'] < 1e-5
    assert means['none'] > 1e-3


def test_weight_mean_keeps_deep_features_apart_like_bn():
    """norm.md 2.8 at small scale: at init, deep features of a plain CNN collapse together
    (cosine -> 1) without normalization, but not with weight mean or BN."""
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    cosine = {}
    for norm in ('none', 'mimic', 'bn'):
        model = theory.uniform_cnn(norm, depth=12, width=32)
        variables = _init(model, x.shape)
        out = jax.jit(functools.partial(theory.probe_arrays, model, layers=lambda p, m: (
            p.startswith('layer') and p.count('/') == 0)))(variables, x)
        cosine[norm] = float(out['cosine'][-1])
    assert cosine['none'] > cosine['mimic'] + 0.2
    assert abs(cosine['mimic'] - cosine['bn']) < abs(cosine['none'] - cosine['bn'])


@pytest.mark.parametrize('name, norm, options', [
    ('vgg_cfg10', 'mimic', {'width': 0.25}),
    ('resnet20', 'none', {'width': 0.5, 'skipinit': True, 'shortcut': 'conv1x1'}),
])
def test_quick_arms_are_the_declared_recipe_in_the_engine(name, norm, options):
    """Two engine steps of an experiment arm equal the paper-section recipe written with optax:
    SGD momentum 0.9, LR 0.05 cosine over 2 epochs of 22 steps, no weight decay, the
    weight-mean projection chained after SGD for MimicNorm; models built independently."""
    from jaxnorm.papers import mimicnorm as experiment
    config = config_lib.apply_overrides(experiment.get_config('quick'),
                                        experiment.arm(name, norm, options['width']))
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    batch = {'image': images, 'label': jnp.arange(16) % 10}
    model, extensions, tx = train.build(config, (8, 8, 1), 10, 22)
    variables = model.init(jax.random.key(1), images[:1])
    state = train.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables['params'],
        batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(variables['params']),
        rng=jax.random.key_data(jax.random.key(2)), apply_fn=model.apply, tx=tx)
    step = jax.jit(lambda s: train.train_step(s, batch, extensions=tuple(extensions)))

    reference = get_model(name, norm=norm, num_classes=10, **options)
    ref_tx = optax.sgd(optax.cosine_decay_schedule(0.05, 2 * 22), momentum=0.9)
    if norm == 'mimic':
        ref_tx = optax.chain(ref_tx, mimicnorm.weight_mean_projection())
    params, stats = variables['params'], variables.get('batch_stats', {})
    opt = ref_tx.init(params)

    def loss(p, stats):
        logits, new = reference.apply({'params': p, 'batch_stats': stats}, images, train=True,
                                      mutable=['batch_stats'])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, batch['label']).mean(), new.get('batch_stats', {})

    for _ in range(2):
        state, _ = step(state)
        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats)
        updates, opt = ref_tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                 state.params, params)


def test_memory_check_compiles_the_engine_step_on_the_whole_state():
    """The memory check's argument bytes are the state and batch, counted by hand: params,
    their momentum, batch stats, the batch, and the step, key and schedule counters."""
    from jaxnorm.papers import mimicnorm as experiment
    config = config_lib.apply_overrides(experiment.get_config('quick'),
                                        experiment.arm('resnet20', 'mimic', 0.25))
    memory, _ = experiment.step_memory(config, 4, 8)
    model = get_model('resnet20', norm='mimic', num_classes=10, width=0.25, shortcut='conv1x1')
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))

    def nbytes(tree):
        return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))
    expected = (2 * nbytes(variables['params']) + nbytes(variables['batch_stats'])
                + 4 * 8 * 8 * 3 * 4 + 4 * 4 + 4 + 8 + 4)
    assert memory['argument'] == expected
    assert memory['temp'] > 0 and memory['output'] > 0


@pytest.mark.slow
def test_quick_section_reports_the_engine_runs(tmp_path, monkeypatch):
    """``--quick`` end to end on one small model: its accuracies are those of the library's
    own seed-batched ``train.fit`` of the arm (with MimicNorm's head re-drawn), and every
    declared check is evaluated."""
    import json
    from jaxnorm.papers import common, mimicnorm as experiment
    monkeypatch.setattr(experiment, 'MODELS', {'resnet20': 0.25})
    monkeypatch.setattr(experiment, 'MEMORY_BATCH', 4)
    monkeypatch.setattr(experiment, 'MEMORY_SIZE', 8)
    out = tmp_path / 'out'
    # One compilation cache for both: the direct run loads the section's compiled programs.
    with common.shared_compilations():
        assert experiment.main(['--quick', '--seeds', '2', '--out', str(out)]) == 0
        direct = train.fit(config_lib.apply_overrides(experiment.get_config('quick'), {
            **experiment.arm('resnet20', 'mimic', 0.25), 'num_seeds': 2,
            'workdir': str(tmp_path / 'direct')}),
            initial_state=mimicnorm.head_initial_state()).history
    results = json.loads((out / 'mimicnorm' / 'results.json').read_text())
    assert results['runs']['accuracy']['resnet20/mimic'] == [
        r['test_accuracy'] for r in direct if r['epoch'] == 2]
    assert [c['name'] for c in results['checks']] == ['accuracy resnet20', 'memory resnet20',
                                                      'init cosine']
    assert sorted(p.name for p in (out / 'mimicnorm' / 'runs').iterdir()) == [
        'resnet20-bn', 'resnet20-mimic', 'resnet20-none']


# --- #21: head init, 1x1 shortcut with bias, ablation arms, LR pick, plateau, memory rule.

def _variance_tolerance(n: int) -> float:
    """Declared tolerance of a sample variance relative to the true one: 5 standard errors
    of s^2 / sigma^2 for n Gaussian draws (sqrt(2 / (n - 1)) each), ~1e-6 two-sided."""
    return 5 * math.sqrt(2 / (n - 1))


def test_redraw_head_draws_n0_2_over_fan_in_and_leaves_the_rest():
    fan_in, classes = 1024, 64
    params = {'head': {'kernel': jnp.full((fan_in, classes), 0.3), 'bias': jnp.arange(64.)},
              'conv': {'kernel': jnp.ones((3, 3, 2, 4))}}
    out = mimicnorm.redraw_head(params, jax.random.key(0))
    kernel = np.asarray(out['head']['kernel'], np.float64)
    n, target = kernel.size, 2 / fan_in
    assert abs(kernel.var() / target - 1) < _variance_tolerance(n)
    assert abs(kernel.mean()) < 5 * math.sqrt(target / n)
    # Gaussian, not uniform: the fourth standardized moment is 3 (uniform: 1.8).
    assert abs(np.mean(kernel ** 4) / kernel.var() ** 2 - 3) < 0.15
    np.testing.assert_array_equal(out['head']['bias'], params['head']['bias'])
    np.testing.assert_array_equal(out['conv']['kernel'], params['conv']['kernel'])
    with pytest.raises(ValueError, match='rank-2'):
        mimicnorm.redraw_head({'conv': params['conv']}, jax.random.key(0))
    with pytest.raises(ValueError, match='positive'):
        mimicnorm.redraw_head(params, jax.random.key(0), gain=0.0)


def test_head_initial_state_redraws_each_lane_of_a_seed_batched_state_only_in_the_head():
    """On the engine's own seed-batched state: every lane's head is N(0, 2 / fan_in) (pooled
    over lanes, the declared tolerance), the lanes differ, lane k equals the redraw of seed
    k's single-seed state, and every other leaf is bit-identical."""
    config = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'vgg_cfg10', 'model_kwargs': {'width': 0.5}, 'norm': 'mimic'})
    model, extensions, tx = train.build(config, (8, 8, 1), 10, 4)
    from jaxnorm import parallel
    mesh = parallel.data_mesh(jax.devices()[:1])
    state = train.create_train_state(model, tx, (8, 8, 1), seed=0, mesh=mesh,
                                     extensions=extensions, seeds=[0, 1, 2])
    start = mimicnorm.head_initial_state()
    new = start(state)
    heads = np.asarray(new.params['head']['kernel'], np.float64)  # (3, 256, 10)
    fan_in = heads.shape[1]
    assert abs(heads.var() / (2 / fan_in) - 1) < _variance_tolerance(heads.size)
    old_var = float(np.var(state.params['head']['kernel']))
    assert abs(old_var / (1 / (3 * fan_in)) - 1) < _variance_tolerance(heads.size)  # torch
    assert not np.allclose(heads[0], heads[1])
    single = train.seed_slice(state, 2)  # the engine's seed-2 state (its batching contract)
    np.testing.assert_array_equal(start(single).params['head']['kernel'], heads[2])
    rest = lambda p: {k: v for k, v in p.items() if k != 'head'}  # noqa: E731
    jax.tree.map(np.testing.assert_array_equal, rest(new.params), rest(state.params))
    np.testing.assert_array_equal(new.params['head']['bias'], state.params['head']['bias'])


def test_mimic_resnet_projection_shortcut_is_a_1x1_conv_with_bias():
    """The paper's CIFAR ResNets: a 1x1 strided projection conv with bias and no norm under
    MimicNorm; conv without bias + BN under BN."""
    x = jnp.zeros((1, 8, 8, 3))
    for norm, has_bias in (('mimic', True), ('bn', False)):
        model = get_model('resnet20', norm=norm, num_classes=10, width=0.5, shortcut='conv1x1')
        params = jax.eval_shape(model.init, jax.random.key(0), x)['params']['stage2_block1']
        assert params['shortcut_conv']['kernel'].shape == (1, 1, 8, 16)
        assert ('bias' in params['shortcut_conv']) == has_bias
        assert ('shortcut_norm' in params) == (not has_bias)


def test_ablation_arms_remove_one_component_each():
    from jaxnorm.papers import mimicnorm as experiment
    x = jax.random.normal(jax.random.key(3), (16, 8, 8, 1))
    built = {}
    for name in ('mimic', 'wm_only', 'lastbn_only'):
        overrides = experiment.arm('resnet20', name, 0.5, lr=0.1)
        assert overrides['lr'] == 0.1 and overrides['model_kwargs']['shortcut'] == 'conv1x1'
        model = get_model('resnet20', norm=overrides['norm'], num_classes=10,
                          norm_kwargs=overrides['norm_kwargs'], **overrides['model_kwargs'])
        built[name] = (model, _init(model, x.shape))
    kernel = lambda v: v['params']['stage2_block1']['conv2']['kernel']  # noqa: E731 fan_in 144
    assert np.max(np.abs(_filter_means(kernel(built['wm_only'][1])))) < 1e-6
    assert np.max(np.abs(_filter_means(kernel(built['lastbn_only'][1])))) > 1e-3
    # weight mean only: no last BN, the logits are the head's output (numpy reference)
    model, variables = built['wm_only']
    assert 'batch_stats' not in variables
    logits, feats = model.apply(variables, x, capture_intermediates=lambda m, _: m.name == 'head',
                                mutable=['intermediates'])
    np.testing.assert_array_equal(logits, feats['intermediates']['head']['__call__'][0])
    # last BN only: the extension's projection selects nothing
    cfg = config_lib.apply_overrides(experiment.get_config('quick'),
                                     experiment.arm('resnet20', 'lastbn_only', 0.5))
    min_fan_in = cfg.norm_kwargs['min_fan_in']
    assert not any(jax.tree.leaves(mimicnorm.weight_mean_mask(built['lastbn_only'][1]['params'],
                                                              min_fan_in)))
    with pytest.raises(ValueError, match='unknown arm'):
        experiment.arm('resnet20', 'gn', 0.5)


def test_pick_lr_rule_and_plateau_statistic():
    from jaxnorm.papers import mimicnorm as experiment
    lrs = (0.02, 0.05, 0.1)
    assert experiment.pick_lr([[0.9, 0.9], [0.95, 0.93], [0.96, np.nan]], lrs) == 0.05
    assert experiment.pick_lr([[0.9, 0.92], [0.92, 0.9], [0.5, 0.5]], lrs) == 0.02  # tie
    with pytest.raises(ValueError):
        experiment.pick_lr([[0.9]], lrs)
    loss = np.array([[2.0, 1.0, 0.5, 0.40, 0.30, 0.2, 0.15, 0.12],
                     [2.0, 1.0, 0.5, 0.42, 0.32, 0.2, 0.17, 0.10]])
    # 8 epochs: epoch 6 (ceil(3 * 8 / 4)) vs epoch 8, means over seeds
    assert experiment.plateau(loss) == pytest.approx(abs(0.11 - 0.2))


def test_memory_claim_is_the_declared_ten_percent_rule():
    from jaxnorm.papers import mimicnorm as experiment
    declared = experiment.declare_checks(3, ['resnet20'], convergence=True)
    assert declared['memory resnet20'].kind == 'claim'
    acc = {('resnet20', a): np.array([0.9, 0.91, 0.92]) for a in ('bn', 'mimic')}
    cosine = {'bn': np.array([0.4, 0.41, 0.42]), 'mimic': np.array([0.38, 0.39, 0.37]),
              'none': np.array([0.9, 0.95, 0.93])}
    flat = np.tile([1.0, 0.5, 0.3, 0.3], (3, 1))
    for ratio, outcome in ((0.85, 'supported'), (0.95, 'refuted')):
        results, _ = experiment.evaluate(
            declared, acc, {('resnet20', 'bn'): 100.0, ('resnet20', 'mimic'): 100.0 * ratio},
            cosine, {('resnet20', 'bn'): flat})
        by_name = {r['name']: r for r in results}
        assert by_name['memory resnet20']['outcome'] == outcome
        assert by_name['converged']['outcome'] == 'supported'
