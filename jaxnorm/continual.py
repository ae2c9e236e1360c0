"""Task-incremental continual learning through the engine: EMR and the quadratic regularizers
as a :mod:`jaxnorm.extension`, task sequences as chained :func:`jaxnorm.train.fit` runs, and
the accuracy / forgetting metrics.

Protocol (after the EMR authors' v1 code, arXiv:2102.02805): SGD with momentum 0.9 on the
task's cross-entropy, batch 10, a fresh optimizer state (momentum) at every task boundary,
:func:`optim.new_task` between tasks, one head per task (:mod:`jaxnorm.models.multihead`;
evaluation of task j always uses head j), heads never regularized. Three behaviours of that
code are :class:`Setup` fields and :class:`Continual` options whose defaults are the
reference's: MAS's online objective is the squared norm of the features entering the head
summed over the batch (``mas_objective='features_sum'``; ``'logits_mean'``: the current
head's logits averaged, Aljundi et al.'s per-example form), QR's online importance reads the
penalized gradient (``penalized_importance``), RWalk's Fisher is kept across tasks
(``keep_fisher``).

Task t of a sequence is one ``fit`` on that task's in-memory splits (``fit(splits=...)``)
with ``model_kwargs={'task': t}``; it starts (``fit(initial_state=...)``) from task t-1's
parameters and regularizer state after :func:`optim.new_task`, with the momentum reset. A
whole grid of (learning rate, strength, seed) runs as the lanes of those fits: lane ``n``
holds its own learning-rate multiplier and λ in the optimizer state (``optax.
inject_hyperparams``), and takes the initialization and batch order of its seed, so every
configuration of a seed is paired with the others. A lane whose λ makes it diverge keeps
running (``stop_on_divergence=False``), as the stability comparison needs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optim
from jaxnorm import config as config_lib, data, extension, models, parallel, train, trees
from jaxnorm.data.continual import Benchmark

METHODS = ('finetune', 'quadratic', 'emr')
HEAD_MASK = r'^(?!head)'  # regularize every parameter except the heads
# MAS's online objective: the EMR v1 code's squared norm of the features entering the head,
# summed over the batch (the reference), or the current head's logits averaged over it.
MAS_OBJECTIVES = ('features_sum', 'logits_mean')


def head_features(model, variables, images) -> jax.Array:
    """The input of the model's ``head`` Dense (the features before the classifier), read with
    ``flax.linen.intercept_methods`` from one forward pass of ``model``."""
    captured = []

    def interceptor(next_fun, args, kwargs, context):
        if context.module.name == 'head' and context.method_name == '__call__':
            captured.append(args[0])
        return next_fun(*args, **kwargs)
    with nn.intercept_methods(interceptor):
        model.apply(variables, images)
    if not captured:
        raise ValueError("mas_objective='features_sum' needs a model with a submodule named "
                         "'head' (the multi-head models)")
    return captured[-1]


@extension.register
class Continual(extension.Extension):
    """EMR (explicit interpolation after the step) or a quadratic regularizer (penalty before
    it) with an online importance, as the run's update rule; ``finetune`` is the quadratic
    form at λ = 0. The learning rate of a lane is ``config.lr`` times its ``lr_scale`` and its
    λ is ``strength``, both hyperparameters in the optimizer state (:func:`set_lane_values`).
    """

    name = 'continual'
    summary = ('EMR (arXiv:2102.02805) or a quadratic regularizer (EWC, MAS, SI, RWalk) '
               'across the tasks of a sequence')
    options = {
        'method': extension.Option(None, 'emr, quadratic or finetune (None: off)', str,
                                   choices=(None, *METHODS)),
        'importance': extension.Option('ewc', 'online importance',
                                       choices=optim.importance.IMPORTANCES),
        'strength': extension.Option(0.0, "the quadratic regularizer's λ"),
        'regularized': extension.Option(
            HEAD_MASK, 'regex over parameter paths of the regularized leaves (default: all '
            'but the heads)'),
        'mas_objective': extension.Option(
            'features_sum', "MAS's online objective: squared feature norm summed over the "
            'batch (the reference) or the head logits averaged', choices=MAS_OBJECTIVES),
        'penalized_importance': extension.Option(
            True, "QR's online importance from the penalized gradient (the reference) or the "
            'raw task gradient (False)'),
        'keep_fisher': extension.Option(
            True, "RWalk's Fisher kept across tasks (the reference) or reset (False)"),
    }
    switch = 'method'

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        method, importance = self.section.method, self.section.importance
        mask = trees.regex_mask(self.section.regularized)

        keep = bool(self.section.keep_fisher)
        penalized = bool(self.section.penalized_importance)

        def rule(lr_scale, strength):
            inner = optax.chain(tx, optax.scale(lr_scale))
            if method == 'emr':
                return optim.emr(inner, importance, mask=mask, keep_fisher=keep)
            return optim.quadratic(inner, importance,
                                   strength if method == 'quadratic' else 0.0, mask=mask,
                                   penalized_importance=penalized, keep_fisher=keep)
        return optax.inject_hyperparams(rule)(lr_scale=1.0, strength=self.section.strength)

    def optimizer_args(self, train_state: Any, batch: dict) -> dict:
        if self.section.importance != 'mas':
            return {}

        features = self.section.mas_objective == 'features_sum'

        def outputs(params, images):
            variables = {'params': params, 'batch_stats': train_state.batch_stats}
            if features:
                return head_features(self.context.model, variables, images)
            return self.context.model.apply(variables, images)
        norm = optim.importance.squared_output_norm(outputs, 'sum' if features else 'mean')
        return {'mas_grads': jax.grad(norm)(train_state.params, batch['image'])}


def set_lane_values(opt_state: Any, **values: jax.Array) -> Any:
    """``opt_state`` with the :class:`Continual` rule's hyperparameters (``lr_scale``,
    ``strength``) replaced, e.g. by one value per lane."""
    def visit(node):
        if isinstance(node, optax.InjectStatefulHyperparamsState) and set(values) <= set(
                node.hyperparams):
            hyper = {k: jnp.asarray(values.get(k, v), jnp.asarray(v).dtype).reshape(
                jnp.shape(v)) for k, v in node.hyperparams.items()}
            return node._replace(hyperparams=hyper)
        return node
    return jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(
        n, optax.InjectStatefulHyperparamsState))


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
    # the three reference-code behaviours (Continual's options; defaults: the reference's)
    mas_objective: str = 'features_sum'
    penalized_importance: bool = True
    keep_fisher: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f'unknown method {self.method!r}; choose one of {METHODS}')
        optim.importance.check_importance(self.importance)
        if self.model not in ('mlp', 'cnn'):
            raise ValueError(f"model must be 'mlp' or 'cnn', got {self.model!r}")
        if self.mas_objective not in MAS_OBJECTIVES:
            raise ValueError(f'unknown mas_objective {self.mas_objective!r}; choose one of '
                             f'{MAS_OBJECTIVES}')
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('epochs and batch_size must be >= 1')


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


class TaskBatches:
    """One lane's batches of one task: the rows of ``order`` (steps, batch), all in the one
    engine epoch of the task's run (a :class:`jaxnorm.train.BatchSource`)."""

    def __init__(self, dataset: data.ArrayDataset, order: np.ndarray):
        self.dataset, self.order = dataset, order

    def __len__(self) -> int:
        return len(self.order)

    def epoch(self, epoch: int):
        for rows in self.order:
            yield {'image': self.dataset.images[rows], 'label': self.dataset.labels[rows]}


def _splits(task) -> data.StandardizedSplits:
    """A task's splits as they are (the benchmark's images are already scaled)."""
    channels = task.train.images.shape[-1]
    return data.StandardizedSplits(task.train, task.test, np.zeros(channels, np.float32),
                                   np.ones(channels, np.float32))


def head_options(setup: Setup, benchmark: Benchmark, task: int) -> dict:
    """The multi-head model's options for training or evaluating ``task``."""
    options = {'num_tasks': benchmark.num_tasks, 'task': task}
    if setup.model == 'mlp':
        options['hidden'] = tuple(setup.hidden)
    return options


def task_config(setup: Setup, benchmark: Benchmark, lanes: int, task: int, workdir: str,
                first_seed: int = 0):
    """The run config of one task's fit of ``lanes`` lanes (seeds ``first_seed`` ...)."""
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': f'multihead_{setup.model}', 'model_kwargs': head_options(setup, benchmark, task),
        'norm': 'none',
        'dataset': benchmark.name, 'augment': 'none', 'optimizer': 'sgd', 'lr': 1.0,
        'momentum': setup.momentum, 'schedule': 'constant', 'weight_decay': 0.0,
        'batch_size': setup.batch_size, 'epochs': 1, 'num_seeds': lanes, 'seed': first_seed,
        'continual.method': setup.method, 'continual.importance': setup.importance,
        'continual.mas_objective': setup.mas_objective,
        'continual.penalized_importance': setup.penalized_importance,
        'continual.keep_fisher': setup.keep_fisher,
        'stop_on_divergence': False, 'keep_checkpoints': 1, 'progress': False,
        'workdir': os.path.join(workdir, f'task{task}')})


def run_grid(setup: Setup, benchmark: Benchmark, lrs, strengths, seeds, *,
             workdir: str | None = None, probe=None) -> np.ndarray:
    """Accuracy matrices for every (lr, strength, seed): array ``(L, S, seeds, T, T)``.

    One seed-batched fit per task trains every configuration as a lane (module docstring);
    configuration ``(i, j, k)`` takes the initialization of seed ``seeds[k]`` and its batch
    order ``batch_order(..., seed=seeds[k])``, shared across methods and hyperparameters
    (paired runs). ``strength`` is ignored unless the method is ``quadratic``. The task runs
    live in ``workdir/task<t>`` (a temporary folder without one) and a rerun resumes them.
    ``probe(t, state)``, if given, sees the :class:`jaxnorm.train.TrainState` after task t
    (leaves with a leading lane axis, lane ``(i * S + j) * len(seeds) + k``, when there is
    more than one lane), e.g. to record per-layer parameters and importances.
    """
    lrs, strengths, seeds = list(lrs), list(strengths), list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f'seeds must be consecutive integers (the engine numbers its lanes '
                         f'from the first), got {seeds}')
    grid = [(i, j, k) for i in range(len(lrs)) for j in range(len(strengths))
            for k in range(len(seeds))]
    n_train = np.array([len(task.train) for task in benchmark.tasks])
    orders = [batch_order(n_train, setup, seed) for seed in seeds]
    lane_lr = np.array([lrs[i] for i, _, _ in grid], np.float32)
    lane_strength = np.array([strengths[j] for _, j, _ in grid], np.float32)
    # Lane k < len(seeds) is seed seeds[k]; every lane of that seed starts as it.
    seed_lane = np.array([k for _, _, k in grid])
    tasks = benchmark.num_tasks
    matrix = np.zeros((len(grid), tasks, tasks), np.float32)
    # Whole lanes per device: the continual batches (10) rarely split over the devices.
    devices = parallel.data_mesh().devices.ravel()
    mesh = parallel.data_mesh(devices[:math.gcd(len(grid), devices.size)])
    # One eval step and one model per head for the whole grid: each head compiles once.
    evaluate = train.compile_steps(mesh, 0.0, (), len(grid) if len(grid) > 1 else None)[1]
    heads = [models.get_model(f'multihead_{setup.model}', norm='none',
                              num_classes=benchmark.classes_per_task,
                              **head_options(setup, benchmark, j))
             for j in range(tasks)]
    with tempfile.TemporaryDirectory() as scratch:
        previous = None
        for t, task in enumerate(benchmark.tasks):
            config = task_config(setup, benchmark, len(grid), t, workdir or scratch, seeds[0])

            def start(fresh, t=t, previous=previous):
                if t == 0:
                    if len(grid) == 1:  # a one-lane run has no lane axis
                        params, init = fresh.params, fresh.tx.init
                    else:
                        params = jax.tree.map(lambda x: x[seed_lane], fresh.params)
                        init = jax.vmap(fresh.tx.init)
                    return fresh.replace(params=params, opt_state=set_lane_values(
                        init(params), lr_scale=lane_lr, strength=lane_strength))
                def next_task(opt_state, params, inner_state):
                    return optim.new_task(opt_state, params, inner_state=inner_state)
                if len(grid) > 1:
                    next_task = jax.vmap(next_task)
                fresh_inner = trees.find_state(fresh.opt_state, optim.ContinualState).inner_state
                return fresh.replace(params=previous.params, opt_state=next_task(
                    previous.opt_state, previous.params, fresh_inner))

            def lane_batches(lane_seed, task=task, t=t):
                return TaskBatches(task.train, orders[seed_lane[lane_seed - seeds[0]]][t])
            previous = train.fit(config, resume=True, initial_state=start, mesh=mesh,
                                 splits=_splits(task), batches=lane_batches).state
            if probe is not None:
                probe(t, previous)
            for j, other in enumerate(benchmark.tasks):
                matrix[:, t, j] = _accuracy(evaluate, previous.replace(apply_fn=heads[j].apply),
                                            other, mesh, config)
    # Without this, JAX's global caches keep executables compiled for this grid's own
    # closures, which no later grid hits: each small grid left ~275 memory maps behind, and
    # the EMR sweep ran into Linux's 65,530-map limit (measured; flat with the clear).
    jax.clear_caches()
    return matrix.reshape(len(lrs), len(strengths), len(seeds), tasks, tasks)


def _accuracy(evaluate, state: train.TrainState, task, mesh, config) -> np.ndarray:
    """Every lane's test accuracy on ``task`` (``state.apply_fn``: that task's head)."""
    batch = -(-config.eval_batch_size // mesh.size) * mesh.size
    if config.num_seeds == 1:
        result = train.evaluate_dataset(evaluate, state, task.test.images, task.test.labels,
                                        batch_size=batch, mesh=mesh)
        return np.atleast_1d(np.asarray(result['accuracy'], np.float32))
    placement = parallel.SeedPlacement(mesh, config.num_seeds)
    result = train.evaluate_dataset(
        evaluate, state, task.test.images, task.test.labels, batch_size=batch, mesh=mesh,
        place=lambda b: placement.put(b, sharding=placement.eval_batch))
    return np.asarray(result['accuracy'], np.float32)
