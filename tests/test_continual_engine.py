"""Continual sequences through the engine: multi-head models, the `continual` extension and the
lane grid of `continual.run_grid` against the protocol replayed by hand with optax."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim
from jaxnorm import continual as cl, models, parallel, train
from jaxnorm.data import continual as dc


@pytest.fixture(scope='module')
def split(tmp_path_factory):
    """The first three tasks of split digits (two task boundaries)."""
    data_dir = os.environ.get('JAXNORM_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))
    benchmark = dc.split_digits(data_dir=data_dir)
    return dataclasses.replace(benchmark, tasks=benchmark.tasks[:3])


def test_multihead_mlp_returns_the_chosen_heads_slice():
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    model = models.get_model('multihead_mlp', norm='none', num_classes=2, num_tasks=3, task=2,
                             hidden=(5,))
    params = model.init(jax.random.key(0), x)['params']
    p = jax.tree.map(np.asarray, params)
    hidden = np.maximum(x.reshape(3, -1) @ p['dense1']['kernel'] + p['dense1']['bias'], 0)
    every_head = (hidden @ p['head']['kernel'] + p['head']['bias']).reshape(3, 3, 2)
    np.testing.assert_allclose(model.apply({'params': params}, x), every_head[:, 2],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='task 3 is not in'):
        models.get_model('multihead_mlp', norm='none', num_classes=2, num_tasks=3,
                         task=3).init(jax.random.key(0), x)


def reference_grid(setup, benchmark, lrs, strengths, seeds):
    """The protocol by hand, every (lr, strength, seed) at once in one vmapped function: a
    fresh momentum SGD per task, optim.new_task between tasks, head t for task t, the engine's
    initialization of each seed. Returns (L, S, seeds, T, T)."""
    tasks = benchmark.num_tasks
    heads = [models.get_model('multihead_mlp', norm='none', num_classes=2, num_tasks=tasks,
                              task=t) for t in range(tasks)]
    n_train = np.array([len(task.train) for task in benchmark.tasks])
    mask = optim.regex_mask(cl.HEAD_MASK)

    def sequence(params, lr, strength, order):
        inner = optax.sgd(lr, momentum=setup.momentum)
        tx = (optim.emr(inner, setup.importance, mask=mask) if setup.method == 'emr' else
              optim.quadratic(inner, setup.importance, strength, mask=mask))
        state, rows = tx.init(params), []
        for t, (task, model) in enumerate(zip(benchmark.tasks, heads)):
            def step(carry, idx, task=task, model=model):
                params, state = carry
                x, y = jnp.asarray(task.train.images)[idx], jnp.asarray(task.train.labels)[idx]

                def loss(p):
                    logits = model.apply({'params': p}, x)
                    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 2) * jax.nn.log_softmax(logits),
                                             -1))
                extra = {}
                if setup.importance == 'mas':  # the reference: features summed over the batch
                    def features(p):  # the MLP trunk written out
                        h = x.reshape(x.shape[0], -1)
                        for name in ('dense1', 'dense2'):
                            h = jax.nn.relu(h @ p[name]['kernel'] + p[name]['bias'])
                        return h
                    extra['mas_grads'] = jax.grad(lambda p: jnp.sum(features(p) ** 2))(params)
                updates, state = tx.update(jax.grad(loss)(params), state, params, **extra)
                return (optax.apply_updates(params, updates), state), None
            (params, state), _ = jax.lax.scan(step, (params, state), order[t])
            state = optim.new_task(state, params, inner_state=inner.init(params))
            rows.append(jnp.stack([jnp.mean(jnp.argmax(head.apply({'params': params},
                                                                  other.test.images), -1)
                                            == other.test.labels)
                                   for head, other in zip(heads, benchmark.tasks)]))
        return jnp.stack(rows)

    inits = [train.create_train_state(heads[0], optax.identity(), (8, 8, 1), seed=seed,
                                      mesh=parallel.data_mesh()).params for seed in seeds]
    orders = [cl.batch_order(n_train, setup, seed) for seed in seeds]
    grid = [(lr, strength, k) for lr in lrs for strength in strengths for k in range(len(seeds))]
    stack = lambda values: jax.tree.map(lambda *xs: jnp.stack(xs), *values)  # noqa: E731
    out = jax.jit(jax.vmap(sequence))(
        stack([inits[k] for _, _, k in grid]), jnp.array([lr for lr, _, _ in grid]),
        jnp.array([strength for _, strength, _ in grid]),
        jnp.stack([orders[k] for _, _, k in grid]))
    return np.asarray(out).reshape(len(lrs), len(strengths), len(seeds), tasks, tasks)


# λ stays where the quadratic regularizer is stable: past it, the last bits decide the blow-up.
@pytest.mark.parametrize('method, importance', [('emr', 'mas'), ('quadratic', 'ewc')])
def test_every_lane_of_the_grid_is_its_own_hand_replayed_sequence(split, tmp_path, method,
                                                                  importance):
    setup = cl.Setup(method=method, importance=importance)
    # 8 lanes: one per simulated device.
    lrs, strengths, seeds = [0.1, 0.01], [0.1, 10.0], [0, 1]
    if method == 'emr':
        strengths, seeds = [0.0], [0, 1, 2, 3]
    grid = cl.run_grid(setup, split, lrs, strengths, seeds, workdir=str(tmp_path))
    # One test image in a few hundred may flip on the last bits.
    np.testing.assert_allclose(grid, reference_grid(setup, split, lrs, strengths, seeds),
                               atol=0.01)
    # A rerun resumes every task's run instead of training again.
    again = cl.run_grid(setup, split, lrs, strengths, seeds, workdir=str(tmp_path))
    np.testing.assert_array_equal(again, grid)


def test_a_diverging_lane_does_not_stop_the_grid(split, tmp_path):
    setup = cl.Setup(method='quadratic', importance='ewc')
    grid = cl.run_grid(setup, split, [0.1, 0.05], [0.0, 1e12], [0, 1], workdir=str(tmp_path))
    assert np.all(np.diagonal(grid[:, 0], axis1=-2, axis2=-1) > 0.85)  # λ = 0 learns each task
    assert np.all(grid[:, 1, :, -1].mean(-1) < 0.8)  # λ = 1e12 blew up after the first task
    records = list(open(tmp_path / 'task1' / 'metrics.jsonl'))
    assert any('diverged_at_step' in line for line in records)
