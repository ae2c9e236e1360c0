"""Task-incremental continual learning: multi-head models, a jit/vmap-able training sequence
and the accuracy / forgetting metrics.

The whole sequence (every task's SGD steps, the task boundaries and the evaluation after each
task) is one pure function of ``(init key, learning rate, strength, batch order)``, so a grid
over learning rates, regularization strengths and seeds runs as one ``jax.vmap``.

Protocol (after the EMR authors' v1 code, arXiv:2102.02805): SGD with momentum 0.9 on the
task's cross-entropy, batch 10, a fresh optimizer state (momentum) at every task boundary,
:func:`optim.new_task` between tasks, one head per task (evaluation of task j always uses
head j, equivalent to the reference's head snapshots), heads never regularized.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optim
from jaxnorm.data.continual import Benchmark
from jaxnorm.losses import mean_cross_entropy

METHODS = ('finetune', 'quadratic', 'emr')
HEAD_MASK = r'^(?!head)'  # regularize every parameter except the heads


class MultiHeadMLP(nn.Module):
    """ReLU MLP trunk with one linear head per task; returns logits ``(B, tasks, classes)``."""

    num_tasks: int
    classes_per_task: int
    hidden: Sequence[int] = (128, 128)

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for index, width in enumerate(self.hidden, start=1):
            x = nn.relu(nn.Dense(width, name=f'dense{index}')(x))
        logits = nn.Dense(self.num_tasks * self.classes_per_task, name='head')(x)
        return logits.reshape(x.shape[0], self.num_tasks, self.classes_per_task)


class MultiHeadCNN(nn.Module):
    """The reference's "vanilla" CNN (conv3x3 64-64-M-128-128-M-256-256-M, ReLU, no norm)
    with one linear head per task; returns logits ``(B, tasks, classes)``."""

    num_tasks: int
    classes_per_task: int
    channels: Sequence[int] = (64, 64, 128, 128, 256, 256)

    @nn.compact
    def __call__(self, x):
        for index, width in enumerate(self.channels, start=1):
            x = nn.relu(nn.Conv(width, (3, 3), padding=1, name=f'conv{index}')(x))
            if index % 2 == 0:
                x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        logits = nn.Dense(self.num_tasks * self.classes_per_task, name='head')(x)
        return logits.reshape(x.shape[0], self.num_tasks, self.classes_per_task)


def average_accuracy(matrix) -> float:
    """Mean accuracy over all tasks after the last one: mean of the last row of ``R``.

    ``R[i, j]`` is the test accuracy on task j after training task i (tasks > i ignored)."""
    matrix = np.asarray(matrix, np.float64)
    _check_matrix(matrix)
    return float(matrix[-1].mean())


def average_forgetting(matrix) -> float:
    """Mean over tasks 0..T-2 of (best accuracy seen on task j after training it, i >= j)
    minus its final accuracy."""
    matrix = np.asarray(matrix, np.float64)
    _check_matrix(matrix)
    tasks = matrix.shape[0]
    if tasks < 2:
        return 0.0
    drops = [matrix[j:, j].max() - matrix[-1, j] for j in range(tasks - 1)]
    return float(np.mean(drops))


def _check_matrix(matrix: np.ndarray) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f'accuracy matrix must be square (tasks x tasks), got {matrix.shape}')


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one sequence runs: the method, its importance, the schedule."""

    method: str = 'emr'  # one of METHODS
    importance: str = 'ewc'
    epochs: int = 1
    batch_size: int = 10
    momentum: float = 0.9
    model: str = 'mlp'  # 'mlp' or 'cnn'
    hidden: tuple[int, ...] = (128, 128)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f'unknown method {self.method!r}; choose one of {METHODS}')
        optim.importance.check_importance(self.importance)
        if self.model not in ('mlp', 'cnn'):
            raise ValueError(f"model must be 'mlp' or 'cnn', got {self.model!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('epochs and batch_size must be >= 1')


def stack_tasks(benchmark: Benchmark):
    """Train/test images and labels of all tasks padded to common sizes, with validity masks.

    Returns ``(x_train (T, N, ...), y_train (T, N), n_train (T,), x_test, y_test,
    test_valid (T, M))``."""
    def stack(splits):
        size = max(len(s) for s in splits)
        xs = np.zeros((len(splits), size, *splits[0].images.shape[1:]), np.float32)
        ys = np.zeros((len(splits), size), np.int32)
        valid = np.zeros((len(splits), size), bool)
        for k, s in enumerate(splits):
            xs[k, :len(s)], ys[k, :len(s)], valid[k, :len(s)] = s.images, s.labels, True
        return xs, ys, valid
    x_train, y_train, train_valid = stack([t.train for t in benchmark.tasks])
    x_test, y_test, test_valid = stack([t.test for t in benchmark.tasks])
    return x_train, y_train, train_valid.sum(1), x_test, y_test, test_valid


def batch_order(n_train: np.ndarray, setup: Setup, seed: int) -> np.ndarray:
    """Indices ``(T, steps, batch)``: per task, ``epochs`` shuffled passes (seeded), cut to
    the same number of full batches for every task (that of the smallest task)."""
    steps = setup.epochs * (int(n_train.min()) // setup.batch_size)
    if steps == 0:
        raise ValueError(f'the smallest task has {int(n_train.min())} training examples, '
                         f'fewer than one batch of {setup.batch_size}')
    rng = np.random.default_rng(seed)
    order = []
    for n in n_train:
        flat = np.concatenate([rng.permutation(int(n)) for _ in range(setup.epochs)])
        order.append(flat[:steps * setup.batch_size].reshape(steps, setup.batch_size))
    return np.stack(order).astype(np.int32)


def build_model(setup: Setup, benchmark: Benchmark) -> nn.Module:
    if setup.model == 'mlp':
        return MultiHeadMLP(benchmark.num_tasks, benchmark.classes_per_task, setup.hidden)
    return MultiHeadCNN(benchmark.num_tasks, benchmark.classes_per_task)


def make_sequence(setup: Setup, benchmark: Benchmark):
    """``run(key, lr, strength, order) -> R`` (accuracy matrix, float32 (T, T)); pure, so
    ``jax.jit(jax.vmap(run))`` runs a grid. ``strength`` is ignored unless the method is
    ``quadratic``; ``order`` comes from :func:`batch_order`."""
    model = build_model(setup, benchmark)
    x_train, y_train, _, x_test, y_test, test_valid = (jnp.asarray(a) for a in
                                                       stack_tasks(benchmark))
    tasks = benchmark.num_tasks
    mask = optim.regex_mask(HEAD_MASK)

    def apply(params, x):
        return model.apply({'params': params}, x)

    def run(key, lr, strength, order):
        params = model.init(key, x_train[0, :1])['params']
        inner = optax.sgd(lr, momentum=setup.momentum)
        if setup.method == 'emr':
            tx = optim.emr(inner, setup.importance, mask=mask)
        else:
            lam = strength if setup.method == 'quadratic' else 0.0
            tx = optim.quadratic(inner, setup.importance, lam, mask=mask)
        opt_state = tx.init(params)

        def evaluate(params):
            def one(task):
                logits = apply(params, x_test[task])[:, task]
                hits = (jnp.argmax(logits, -1) == y_test[task]) & test_valid[task]
                return hits.sum() / test_valid[task].sum()
            return jax.vmap(one)(jnp.arange(tasks))

        def train_task(carry, task):
            params, opt_state = carry

            def step(carry, idx):
                params, opt_state = carry
                x, y = x_train[task][idx], y_train[task][idx]

                def loss(p):
                    return mean_cross_entropy(apply(p, x)[:, task], y)
                grads = jax.grad(loss)(params)
                extra = {}
                if setup.importance == 'mas':
                    norm = optim.importance.squared_output_norm(
                        lambda p, inputs: apply(p, inputs)[:, task])
                    extra['mas_grads'] = jax.grad(norm)(params, x)
                updates, opt_state = tx.update(grads, opt_state, params, **extra)
                return (optax.apply_updates(params, updates), opt_state), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order[task])
            opt_state = optim.new_task(opt_state, params, inner_state=inner.init(params))
            return (params, opt_state), evaluate(params)

        _, matrix = jax.lax.scan(train_task, (params, opt_state), jnp.arange(tasks))
        return matrix

    return run


def run_grid(setup: Setup, benchmark: Benchmark, lrs, strengths, seeds) -> np.ndarray:
    """Accuracy matrices for every (lr, strength, seed): array ``(L, S, seeds, T, T)``.

    All runs go through one ``jax.vmap``; seed s uses init key ``PRNGKey(s)`` and batch order
    ``batch_order(..., seed=s)``, shared across methods and hyperparameters (paired runs)."""
    run = make_sequence(setup, benchmark)
    _, _, n_train, _, _, _ = stack_tasks(benchmark)
    lrs, strengths, seeds = list(lrs), list(strengths), list(seeds)
    orders = np.stack([batch_order(n_train, setup, s) for s in seeds])
    grid = [(i, j, k) for i in range(len(lrs)) for j in range(len(strengths))
            for k in range(len(seeds))]
    keys = jnp.stack([jax.random.PRNGKey(seeds[k]) for _, _, k in grid])
    lr = jnp.asarray([lrs[i] for i, _, _ in grid], jnp.float32)
    lam = jnp.asarray([strengths[j] for _, j, _ in grid], jnp.float32)
    order = jnp.asarray(orders[[k for _, _, k in grid]])
    out = np.asarray(jax.jit(jax.vmap(run))(keys, lr, lam, order))
    return out.reshape(len(lrs), len(strengths), len(seeds), *out.shape[1:])
