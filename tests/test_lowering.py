"""Every jitted entry point a user runs lowers for CPU, CUDA, ROCm and TPU (no device needed).

``jax.export`` lowers for platforms the machine has no device for, so these run in the CPU
suite; on an accelerator (``pytest -m accelerator``) they run unchanged. Each export would
fail on a host callback or a primitive without a lowering rule for one of the platforms.
"""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend import core as jax_core
from jax.interpreters import mlir

import optim
import prune
from jaxnorm import config as config_lib
from jaxnorm import eman, layers, losses, mimicnorm, models, parallel, portability, theory, train
from jaxnorm.models import channels
from prune.unify import UnifySpec

pytestmark = pytest.mark.accelerator  # also the first thing to run on a real accelerator

ALL = portability.PLATFORMS
F32 = jnp.float32
IMAGE = (8, 8, 3)
BATCH = 8


def spec(shape, dtype=F32, sharding=None):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def batch_spec(dtype=F32, mesh=None, n=BATCH):
    sharded = None if mesh is None else parallel.batch_sharded(mesh)
    return {'image': spec((n, *IMAGE), dtype, sharded), 'label': spec((n,), jnp.int32, sharded)}


def small_state(norm: str, tx=None, dtype=F32, model='cnn_small', **model_options):
    """The abstract TrainState of a small model (shapes only, nothing compiled), in ``dtype``."""
    model = models.get_model(model, norm=norm, num_classes=10, **model_options)
    tx = optax.sgd(0.1, momentum=0.9) if tx is None else tx
    mesh = parallel.data_mesh(jax.devices()[:1])
    state = jax.eval_shape(
        lambda: train.create_train_state(model, tx, IMAGE, seed=0, mesh=mesh))
    if dtype != F32:
        params = jax.tree.map(lambda p: spec(p.shape, dtype), state.params)
        state = state.replace(params=params, opt_state=jax.eval_shape(tx.init, params))
    return model, state


def assert_exports(fn, *args, **kwargs):
    exported = portability.export_for_platforms(fn, *args, **kwargs)
    assert exported.platforms == ALL
    return exported


# ----------------------------------------------------------------------------- the engine


@pytest.mark.parametrize('dtype', [F32, jnp.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('norm', layers.norm_names())
def test_engine_train_and_eval_steps_lower_for_every_platform(norm, dtype):
    _, state = small_state(norm, dtype=dtype)
    assert_exports(functools.partial(train.train_step, label_smoothing=0.1), state,
                   batch_spec(dtype))
    eval_batch = {**batch_spec(dtype), 'mask': spec((BATCH,), jnp.bool_)}
    assert_exports(train.eval_step, state, eval_batch)


def test_data_parallel_step_keeps_its_sharding_over_eight_devices():
    mesh = parallel.data_mesh(jax.devices('cpu'))
    assert mesh.size == 8, 'tests/conftest.py simulates 8 CPU devices'
    _, state = small_state('bn')
    train_fn, _ = train.compile_steps(mesh, label_smoothing=0.0)
    exported = assert_exports(train_fn, state, batch_spec(mesh=mesh, n=16))
    assert exported.nr_devices == 8
    *state_shardings, image_sharding, label_sharding = exported.in_shardings_jax(mesh)
    assert image_sharding.spec == label_sharding.spec == parallel.batch_sharded(mesh).spec
    assert all(s.spec == parallel.replicated(mesh).spec
               for s in [*state_shardings, *exported.out_shardings_jax(mesh)])
    assert 'sdy.sharding<@mesh, [{"data"}' in exported.mlir_module()


def engine_state(overrides: dict, mesh=None, seeds=None):
    """The abstract state, extensions and step options of a config's engine run."""
    cfg = config_lib.apply_overrides(config_lib.default_config(),
                                     {'model': 'cnn_small', **overrides})
    model, extensions, tx = train.build(cfg, IMAGE, 10, steps_per_epoch=100)
    mesh = mesh or parallel.data_mesh(jax.devices()[:1])
    state = jax.eval_shape(lambda: train.create_train_state(
        model, tx, IMAGE, seed=0, mesh=mesh, extensions=extensions, seeds=seeds))
    return state, extensions


def test_extension_steps_lower():
    """A-FAN's loss, EMAN's after-step teacher and LAWN's wrapped optimizer in one step."""
    state, extensions = engine_state({'afan.layer': 'layer2', 'afan.steps': 2,
                                      'eman.momentum': 0.999, 'lawn.free_epochs': 1.0})
    assert [ext.name for ext in extensions] == ['afan', 'eman', 'lawn']
    assert_exports(functools.partial(train.train_step, extensions=extensions), state,
                   batch_spec())
    teacher = jax.eval_shape(eman.init, state.params, state.batch_stats)
    update = functools.partial(eman.update, momentum=eman.cosine_momentum(0.999, 100))
    assert_exports(lambda t, p, s: update(t, p, s), teacher, state.params, state.batch_stats)


def test_seed_batched_step_spreads_the_seeds_over_eight_devices():
    mesh = parallel.data_mesh(jax.devices('cpu'))
    state, extensions = engine_state({'eman.momentum': 0.9}, mesh, seeds=range(8))
    train_fn, _ = train.compile_steps(mesh, 0.0, extensions, num_seeds=8)
    batch = {key: spec((8, *value.shape), value.dtype, None)
             for key, value in batch_spec(n=16).items()}
    exported = assert_exports(train_fn, state, batch)
    assert exported.nr_devices == 8
    assert all(s.spec == parallel.batch_sharded(mesh).spec
               for s in [*exported.in_shardings_jax(mesh), *exported.out_shardings_jax(mesh)])


# ----------------------------------------------------------------------------- optax transforms


def _params():
    return {'conv': {'kernel': spec((3, 3, 4, 8))}, 'norm': {'scale': spec((8,))},
            'dense': {'kernel': spec((8, 16)), 'bias': spec((16,))},
            'head': {'kernel': spec((16, 10)), 'bias': spec((10,))}}


def _concrete(tree, key=0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return treedef.unflatten([jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)])


TRANSFORMS = {
    'lawn': lambda: optim.lawn(optax.adam(1e-3), free_steps=3, mask=optim.regex_mask('kernel')),
    'ewc': lambda: optim.ewc(optax.sgd(0.1), 1.0),
    'mas': lambda: optim.mas(optax.sgd(0.1), 1.0),
    'si': lambda: optim.si(optax.sgd(0.1), 1.0),
    'rwalk': lambda: optim.rwalk(optax.sgd(0.1), 1.0),
    'emr': lambda: optim.emr(optax.sgd(0.1), 'ewc'),
    'orthoreg': lambda: optax.chain(optim.orthoreg(1e-2), optax.sgd(0.1, momentum=0.9)),
    'admm': lambda: prune.admm(optax.sgd(0.1), UnifySpec((1, 4), 0.5, 0.25, pattern='dense'),
                               rho=prune.rho_schedule(1e-3, 1.3, 10)),
    'masked': lambda: prune.masked_optimizer(optax.sgd(0.1, momentum=0.9)),
    'mimic_projection': lambda: optax.chain(optax.sgd(0.1),
                                            mimicnorm.weight_mean_projection()),
}


@pytest.mark.parametrize('name', TRANSFORMS)
def test_every_optax_transform_lowers(name):
    tx = TRANSFORMS[name]()
    params = _concrete(_params())
    extra = {'mas_grads': params} if name == 'mas' else {}
    states = [tx.init(params)]
    if name == 'lawn':  # the free phase and the constrained phase are different code
        step = jax.jit(tx.update)
        for _ in range(4):
            states.append(step(params, states[-1], params)[1])
        states = [states[0], states[-1]]
    for state in states:
        assert_exports(lambda g, s, p, e: tx.update(g, s, p, **e), portability.abstract(params),
                       portability.abstract(state), portability.abstract(params),
                       portability.abstract(extra))


def test_tied_retraining_and_new_task_lower():
    params = _concrete(_params())
    unify = UnifySpec((1, 4), 0.5, 0.25, pattern='dense')
    tied = prune.tied_optimizer(optax.sgd(0.1), unify, train_magnitudes=True)
    codes = prune.unify.select_blocks(params, unify)
    state = prune.install_codes(tied.init(params), params, codes, unify)
    assert_exports(lambda g, s, p: tied.update(g, s, p), portability.abstract(params),
                   portability.abstract(state), portability.abstract(params))
    ewc = optim.ewc(optax.sgd(0.1), 1.0)
    assert_exports(lambda s, p: optim.new_task(s, p), portability.abstract(ewc.init(params)),
                   portability.abstract(params))


# ----------------------------------------------------------------------------- pruning and theory


@pytest.fixture(scope='module')
def scored_model():
    model, state = small_state('bn', model='resnet20', width=0.5)
    stats = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), state.batch_stats)
    state = state.replace(batch_stats=stats)  # closed over by the losses: concrete
    loss = prune.classifier_loss(model.apply, {'batch_stats': stats}, temperature=5.0)
    batches = {'image': spec((2, BATCH, *IMAGE)), 'label': spec((2, BATCH), jnp.int32)}
    return model, state, loss, batches


def test_hessian_vector_product_and_flow_quantities_lower(scored_model):
    _, state, loss, batches = scored_model
    params = state.params
    assert_exports(lambda p, b: prune.gradient_and_hg(loss, p, b), params, batches)
    assert_exports(lambda p, b, v: prune.hessian_vector_product(loss, p, b, v), params, batches,
                   params)
    assert_exports(lambda p, g, hg: prune.flow_quantities(p, g, hg), params, params, params)


@pytest.mark.parametrize('measure', prune.scores.MEASURES)
def test_every_pruning_score_lowers(scored_model, measure):
    model, state, _, _ = scored_model
    params = state.params
    key = spec((), jax.random.key(0).dtype)
    groups = channels.channel_groups(model, state.variables())

    def scores(p, g, hg, k):
        return (prune.parameter_scores(measure, p, grads=g, hg=hg, key=k),
                prune.filter_scores(measure, p, groups, grads=g, hg=hg, key=k))
    assert_exports(scores, params, params, params, key)


def test_importance_estimates_and_theory_probes_lower(scored_model):
    model, state, _, _ = scored_model
    params = state.params
    images = spec((BATCH, *IMAGE))
    stats = {'batch_stats': state.batch_stats}

    def batch_loss(p, batch):
        logits = model.apply({'params': p, **stats}, batch['image'])
        return losses.mean_cross_entropy(logits, batch['label'])

    def outputs(p, x):
        return model.apply({'params': p, **stats}, x)
    assert_exports(lambda p, b: optim.importance.ewc_importance(batch_loss, p, [b]), params,
                   batch_spec())
    assert_exports(lambda p, x: optim.importance.mas_importance(outputs, p, [x]), params, images)
    assert_exports(lambda v, x: theory.probe_arrays(model, v, x), state.variables(), images)


# ----------------------------------------------------------------------------- the guard itself


def test_a_host_callback_in_a_step_is_named_with_its_source_line():
    _, state = small_state('bn')

    def step_with_callback(state, batch):
        new_state, metrics = train.train_step(state, batch)
        logged = jax.pure_callback(np.asarray, spec((), F32), metrics['loss'])
        return new_state, {**metrics, 'logged': logged}

    with pytest.raises(portability.LoweringError, match='pure_callback') as info:
        portability.export_for_platforms(step_with_callback, state, batch_spec())
    assert info.value.primitive == 'pure_callback'
    assert any(re.search(r'test_lowering\.py:\d+:\d+ \(.*step_with_callback', where)
               for where in info.value.locations), info.value.locations


def test_a_primitive_without_a_tpu_lowering_is_named_with_platform_and_line():
    cpu_only = jax_core.Primitive('cpu_only_double')
    cpu_only.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(cpu_only, mlir.lower_fun(lambda x: x * 2, multiple_results=False),
                           platform='cpu')

    def uses_it(x):
        return cpu_only.bind(x).sum()

    x = spec((4,))
    assert portability.export_for_platforms(uses_it, x, platforms=('cpu',)).platforms == ('cpu',)
    with pytest.raises(portability.LoweringError, match='cpu_only_double') as info:
        portability.export_for_platforms(uses_it, x)
    assert info.value.platform in ('cuda', 'rocm', 'tpu')
    assert any('uses_it' in where for where in info.value.locations), info.value.locations
    with pytest.raises(ValueError, match='unknown platform'):
        portability.export_for_platforms(uses_it, x, platforms=('metal',))
