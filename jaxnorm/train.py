"""Training: train state, jitted steps and the epoch loop with checkpoints.

The loop is one function, :func:`fit`, in readable sections (data, model, state, checkpoint,
loop), in the spirit of big_vision's ``train.py``. It runs unchanged on one CPU, on every
local accelerator, and across processes: parameters are replicated, the batch is sharded over
a ``data`` mesh axis (:mod:`jaxnorm.parallel`), and BatchNorm statistics are therefore global.
Randomness inside a step is ``fold_in(rng, step)``, and the data order of epoch ``e`` is a
function of ``(seed, e)``, so a run resumed from its checkpoint continues the uninterrupted
run exactly.

Example::

    from jaxnorm import config, train
    cfg = config.apply_overrides(config.default_config(), {'epochs': 5, 'workdir': '/tmp/run'})
    result = train.fit(cfg)
    print(result.history[-1]['test_accuracy'])
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxnorm import checkpoints, data, extension, losses, metrics, models, optimizers, parallel
from jaxnorm import config as config_lib
from jaxnorm.divergence import DivergenceError, DivergenceGuard


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes, as one pytree.

    Attributes:
      step: number of optimizer steps taken.
      params: the ``params`` collection.
      batch_stats: the ``batch_stats`` collection (empty dict for models without one).
      opt_state: the optax state.
      rng: raw key data of the run's root key (``jax.random.wrap_key_data`` to use it).
      apply_fn: the model's ``apply`` (static).
      tx: the optimizer (static).
      extensions: each stateful extension's state by name (:mod:`jaxnorm.extension`).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    extensions: dict = flax.struct.field(default_factory=dict)

    def arrays(self) -> dict:
        """The state's arrays as a plain dict of dicts (what a checkpoint holds)."""
        arrays = {'step': self.step, 'params': self.params, 'batch_stats': self.batch_stats,
                  'opt_state': self.opt_state, 'rng': self.rng}
        if self.extensions:
            arrays['extensions'] = flax.serialization.to_state_dict(self.extensions)
        return arrays

    def with_arrays(self, arrays: dict) -> 'TrainState':
        """This state with the values of ``arrays`` (a restored :meth:`arrays`)."""
        arrays = dict(arrays)
        if 'extensions' in arrays:
            arrays['extensions'] = flax.serialization.from_state_dict(
                self.extensions, arrays['extensions'])
        return self.replace(**arrays)

    def variables(self) -> dict:
        """Model variables for ``apply_fn``."""
        return {'params': self.params, 'batch_stats': self.batch_stats}


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state, one metrics record per epoch, the workdir."""

    state: TrainState
    history: list[dict]
    workdir: str


# ----------------------------------------------------------------------------- steps


def forward_loss(apply_fn: Callable, label_smoothing: float = 0.0) -> extension.ForwardLoss:
    """The plain step loss: ``(params, batch_stats, batch, key) -> (loss, (logits,
    batch_stats))``, a training-mode forward pass and the mean cross-entropy."""
    def forward(params, batch_stats, batch, key):
        logits, updates = apply_fn(
            {'params': params, 'batch_stats': batch_stats}, batch['image'], train=True,
            mutable=['batch_stats'], rngs={'dropout': key})
        loss = losses.mean_cross_entropy(logits, batch['label'], label_smoothing)
        return loss, (logits, updates.get('batch_stats', batch_stats))
    return forward


def train_step(state: TrainState, batch: dict, *, label_smoothing: float = 0.0,
               extensions: Sequence[extension.Extension] = ()) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``image``, ``label``); returns the new state and metrics.

    Each extension may replace the loss (:meth:`~jaxnorm.extension.Extension.wrap_loss`) and
    update the state after the step (:meth:`~jaxnorm.extension.Extension.after_step`).
    """
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    forward = forward_loss(state.apply_fn, label_smoothing)
    for ext in extensions:
        forward = ext.wrap_loss(forward)
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(forward, has_aux=True)(
        state.params, state.batch_stats, batch, step_key)
    param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
        batch_stats=batch_stats, opt_state=opt_state)
    for ext in extensions:
        new_state = ext.after_step(new_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    logit_norm = jnp.mean(jnp.linalg.norm(logits.astype(jnp.float32), axis=-1))
    grads_finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return new_state, {'loss': loss, 'accuracy': accuracy, 'logit_norm': logit_norm,
                       'grads_finite': grads_finite}


def eval_step(state: TrainState, batch: dict) -> dict:
    """Summed loss, correct count and example count over the rows where ``batch['mask']``."""
    logits = state.apply_fn(state.variables(), batch['image'], train=False)
    mask = batch['mask'].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
    return {'loss': jnp.sum(losses.cross_entropy(logits, batch['label']) * mask),
            'correct': jnp.sum(correct * mask), 'count': jnp.sum(mask)}


def create_train_state(model, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       *, seed: int, mesh, extensions: Sequence[extension.Extension] = (),
                       seeds: Sequence[int] | None = None) -> TrainState:
    """Initialise parameters, statistics, optimizer and extension states over ``mesh``.

    The initialisation is jitted with no inputs and replicated outputs, so every process of a
    multi-process run builds the identical state without any host-to-device transfer.

    With ``seeds`` every leaf gains a leading seed axis: entry ``k`` is the state that
    ``seed=seeds[k]`` would give (placed by :class:`jaxnorm.parallel.SeedPlacement`).
    """
    def init(seed):
        init_key, run_key = jax.random.split(jax.random.key(seed))
        variables = model.init({'params': init_key}, jnp.zeros((1, *image_shape)), train=False)
        params, batch_stats = variables['params'], variables.get('batch_stats', {})
        states = {ext.name: ext.init_state(params, batch_stats) for ext in extensions}
        return {'step': jnp.zeros((), jnp.int32), 'params': params, 'batch_stats': batch_stats,
                'opt_state': tx.init(params), 'rng': jax.random.key_data(run_key),
                'extensions': {name: st for name, st in states.items() if st is not None}}

    # The initialisation is not sharded, so a partitionable PRNG buys nothing here, and XLA
    # compiles the classic threefry about 5x faster on CPU (ResNet-20: 9 s instead of 46 s).
    with jax.threefry_partitionable(False):
        if seeds is None:
            arrays = jax.jit(lambda: init(seed), out_shardings=parallel.replicated(mesh))()
        else:
            placement = parallel.SeedPlacement(mesh, len(seeds))
            arrays = jax.jit(jax.vmap(init), out_shardings=placement.state)(
                jnp.asarray(seeds, jnp.int32))
    return TrainState(apply_fn=model.apply, tx=tx, **arrays)


def compile_steps(mesh, label_smoothing: float, extensions: Sequence[extension.Extension] = (),
                  num_seeds: int | None = None) -> tuple[Callable, Callable]:
    """Jitted train and eval steps with the ``extensions``' hooks.

    One seed: replicated state, batch sharded over ``mesh``. ``num_seeds``: both steps are
    ``jax.vmap`` ped over the leading seed axis of the state (and of the train batch; all seeds
    evaluate the same batch), placed by :class:`jaxnorm.parallel.SeedPlacement`.
    """
    step_fn = functools.partial(train_step, label_smoothing=label_smoothing,
                                extensions=tuple(extensions))
    if num_seeds is None:
        repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        train = jax.jit(step_fn, in_shardings=(repl, sharded), out_shardings=(repl, repl))
        evaluate = jax.jit(eval_step, in_shardings=(repl, sharded), out_shardings=repl)
        return train, evaluate
    place = parallel.SeedPlacement(mesh, num_seeds)
    train = jax.jit(jax.vmap(step_fn), in_shardings=(place.state, place.train_batch),
                    out_shardings=(place.state, place.state))
    evaluate = jax.jit(jax.vmap(eval_step, in_axes=(0, None)),
                       in_shardings=(place.state, place.eval_batch), out_shardings=place.state)
    return train, evaluate


def evaluate_dataset(eval_fn: Callable, state: TrainState, images: np.ndarray,
                     labels: np.ndarray, *, batch_size: int, mesh,
                     place: Callable[[dict], dict] | None = None) -> dict:
    """Mean loss and accuracy over a whole array dataset (lists over seeds for a
    seed-batched ``eval_fn``).

    The data is padded to whole batches (padding masked out), so every batch has one shape and
    the step compiles once; each process feeds its own slice of every global batch, unless
    ``place`` puts each whole batch on the devices itself.
    """
    parallel.check_divisible(batch_size, mesh, 'eval batch size')
    n = len(labels)
    padded = math.ceil(n / batch_size) * batch_size
    pad = padded - n
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.arange(padded) < n
    local = batch_size if place else batch_size // jax.process_count()
    offset = 0 if place else jax.process_index() * local
    place = place or (lambda batch: parallel.global_batch(batch, mesh))
    totals = None
    for start in range(0, padded, batch_size):
        rows = slice(start + offset, start + offset + local)
        sums = eval_fn(state, place({'image': images[rows], 'label': labels[rows],
                                     'mask': mask[rows]}))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    return {'loss': (totals['loss'] / totals['count']).tolist(),
            'accuracy': (totals['correct'] / totals['count']).tolist()}


def seed_slice(state: TrainState, index: int) -> TrainState:
    """Seed ``index`` of a seed-batched state (as a one-seed state)."""
    return jax.tree.map(lambda leaf: leaf[index], state)


# ----------------------------------------------------------------------------- the loop


def run_identity(config: ml_collections.ConfigDict, num_classes: int,
                 extensions: Sequence[extension.Extension] = ()) -> dict:
    """The settings a checkpoint must share with the run that resumes it."""
    return {'model': config.model, 'model_kwargs': dict(config.model_kwargs),
            'norm': config.norm, 'norm_kwargs': dict(config.norm_kwargs),
            'dataset': config.dataset, 'image_size': config.image_size, 'resize': config.resize,
            'num_classes': num_classes, 'optimizer': config.optimizer,
            'num_seeds': config.num_seeds,
            'extensions': {ext.name: ext.identity() for ext in extensions}}


def default_workdir(config: ml_collections.ConfigDict) -> str:
    """A fresh folder name for a run: ``runs/<model>-<norm>-<dataset>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    return os.path.join('runs', f'{config.model}-{config.norm}-{config.dataset}-{stamp}')


def build(config: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int,
          steps_per_epoch: int) -> tuple[Any, list[extension.Extension], optax.GradientTransformation]:
    """The model, the active extensions and the optimizer (wrapped by them) of a run config:
    what :func:`fit` trains, for code that needs the engine's step without its loop (e.g.
    ``train_step`` with ``extensions=`` for cost planning)."""
    model = models.get_model(config.model, norm=config.norm, num_classes=num_classes,
                             norm_kwargs=dict(config.norm_kwargs), **config.model_kwargs)
    context = extension.RunContext(config, model, tuple(input_shape), num_classes,
                                   steps_per_epoch)
    extensions = extension.active(config, context)

    def wrap(tx):
        for ext in extensions:
            tx = ext.wrap_optimizer(tx)
        return tx
    return model, extensions, optimizers.make_optimizer(config, steps_per_epoch, wrap)


def run_seeds(config: ml_collections.ConfigDict) -> list[int]:
    """The seeds a run trains: ``seed, seed + 1, ..., seed + num_seeds - 1``."""
    return [config.seed + k for k in range(config.num_seeds)]


def fit(config: ml_collections.ConfigDict, *, resume: bool = False,
        resume_from: int | None = None, accept_changes: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None, mesh=None,
        initial_state: Callable[[TrainState], TrainState] | None = None) -> FitResult:
    """Train ``config.model`` on ``config.dataset``; write checkpoints, metrics and plots.

    Everything that can be wrong with the inputs (model, norm, dataset, batch size, input size,
    an incompatible workdir, an extension's settings) is checked before anything is written.

    With ``config.num_seeds = S > 1`` one jitted step trains the S seeds of :func:`run_seeds`
    at once (``jax.vmap`` over a leading seed axis of the state; each seed has its own data
    order, dropout and initialisation, as its one-seed run would). Each epoch then writes one
    record per seed (``record['seed']``), the checkpoint holds all seeds stacked
    (:func:`seed_slice`), and a divergence of any seed stops the run.

    Args:
      config: a run config (:func:`jaxnorm.config.default_config` and overrides). Without a
        ``workdir`` each run gets a new folder (:func:`default_workdir`). Its extension
        sections switch methods on (:mod:`jaxnorm.extension`).
      resume: continue from the newest checkpoint in ``config.workdir``. Without it a workdir
        that already holds checkpoints is an error, so no run is overwritten by accident.
        Settings that change the trajectory (anything but
        :data:`jaxnorm.config.PRESENTATION_KEYS`) must
        equal the saved ``config.json``, so the resumed run equals an uninterrupted one.
      resume_from: restart from this epoch's checkpoint, deleting later checkpoints and
        records; changed settings are accepted (e.g. a lower learning rate after a
        divergence) and logged in ``config_history.jsonl`` and the next epoch's record.
      accept_changes: resume even though settings changed (logged the same way).
      on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint
        (once per seed).
      mesh: the device mesh (default: every device, :func:`jaxnorm.parallel.data_mesh`).
      initial_state: maps the freshly initialised state (seed-batched: with the seed axis) to
        the one training starts from, e.g. another run's parameters or a pruning mask in an
        extension's state. Not part of the checkpoint identity: a resumed run restores its
        checkpoint instead, so pass the same function when resuming.

    Returns:
      A :class:`FitResult` with the final state and the per-epoch (and per-seed) records.

    Raises:
      DivergenceError: a step's loss or gradient became non-finite, or the loss exceeded
        ``config.divergence_factor`` x its reference (:mod:`jaxnorm.divergence`). Nothing of
        that epoch is saved; the message names the last good checkpoint.
      IncompatibleCheckpointError: the workdir holds another run, or changed settings.
    """
    if config.workdir is None:
        if resume or jax.process_count() > 1:
            raise ValueError('--resume and multi-process runs need an explicit --workdir')
        config = config_lib.apply_overrides(config, {'workdir': default_workdir(config)})

    # --- Resuming: the saved run's settings are checked before any data or compile.
    checkpointer = checkpoints.RunCheckpointer(config.workdir, keep=config.keep_checkpoints)
    start_epoch = checkpointer.latest_epoch() or 0
    if resume_from is not None:
        checkpointer.check_epoch(resume_from)
        start_epoch, resume, accept_changes = resume_from, True, True
    if start_epoch and not resume:
        raise checkpoints.IncompatibleCheckpointError(
            f'workdir {config.workdir} already holds checkpoints up to epoch {start_epoch}; '
            'pass --resume to continue that run or choose a new --workdir')
    config_path = os.path.join(config.workdir, 'config.json')
    changes = config_lib.changes_from_saved(config_path, config) if start_epoch else {}
    if changes and not accept_changes:
        raise checkpoints.IncompatibleCheckpointError(
            f'--resume would continue {config.workdir} with changed settings ('
            + '; '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in changes.items())
            + '), so it would match no uninterrupted run; restore them, or restart on '
            'purpose with --resume-from EPOCH')
    checkpointer.close()  # reopened when the run starts; nothing is held while data loads

    # --- Data: one batch order per seed.
    splits = data.load_standardized(config.dataset, data_dir=config.data_dir,
                                    image_size=config.image_size, resize=config.resize or 'pad')
    seeds = run_seeds(config)
    batched = len(seeds) > 1
    iterators = [data.BatchIterator(
        splits.train, config.batch_size, seed=seed, shuffle=True, drop_remainder=True,
        augment=config.augment or data.default_augment(config.dataset), mean=splits.mean,
        std=splits.std, process_index=jax.process_index(),
        process_count=jax.process_count()) for seed in seeds]
    mesh = parallel.data_mesh() if mesh is None else mesh
    parallel.check_divisible(config.batch_size, mesh)
    eval_batch = math.ceil(config.eval_batch_size / mesh.size) * mesh.size
    passes = config.passes_per_epoch
    steps_per_epoch = len(iterators[0]) * passes

    def epoch_batches(iterator, epoch: int):
        return itertools.chain.from_iterable(iterator.epoch(epoch * passes + k)
                                             for k in range(passes))
    input_shape = splits.train.images.shape[1:]

    # --- Model, extensions and state (tracing init also checks the input size).
    model, extensions, tx = build(config, input_shape, splits.num_classes, steps_per_epoch)
    state = create_train_state(model, tx, input_shape, seed=config.seed, mesh=mesh,
                               extensions=extensions, seeds=seeds if batched else None)
    if initial_state is not None:
        state = jax.device_put(initial_state(state), parallel.SeedPlacement(
            mesh, len(seeds)).state if batched else parallel.replicated(mesh))
    train_fn, eval_fn = compile_steps(mesh, config.label_smoothing, extensions,
                                      len(seeds) if batched else None)
    if batched:
        placement = parallel.SeedPlacement(mesh, len(seeds))
        place_train = functools.partial(placement.put, sharding=placement.train_batch)
        place_eval = functools.partial(placement.put, sharding=placement.eval_batch)
        _, eval_single = compile_steps(mesh, config.label_smoothing, extensions)
        slice_fn = jax.jit(seed_slice, static_argnums=1,
                           out_shardings=parallel.replicated(mesh))
    else:
        place_train, place_eval = (lambda batch: parallel.global_batch(batch, mesh)), None
        eval_single, slice_fn = eval_fn, (lambda st, _: st)

    def evaluate(one_seed_state):
        return evaluate_dataset(eval_single, one_seed_state, splits.test_images,
                                splits.test_labels, batch_size=eval_batch, mesh=mesh)

    # --- Checkpoints (everything is checked before anything is written).
    identity = run_identity(config, splits.num_classes, extensions)
    checkpointer.check_compatible(identity)
    if resume_from is not None:
        checkpointer.delete_after(resume_from)
    if start_epoch:
        state = state.with_arrays(checkpointer.restore(start_epoch, like=state.arrays()))
    is_chief = jax.process_index() == 0
    metrics_path = os.path.join(config.workdir, 'metrics.jsonl')
    history = [r for r in metrics.read_jsonl(metrics_path) if r['epoch'] <= start_epoch]
    if is_chief:
        os.makedirs(config.workdir, exist_ok=True)
        metrics.write_jsonl(metrics_path, history)
        with open(config_path, 'w') as f:
            f.write(config.to_json_best_effort(indent=2))
        metrics.append_jsonl(os.path.join(config.workdir, 'config_history.jsonl'), {
            'start_epoch': start_epoch, 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
            'changed': {k: list(v) for k, v in changes.items()},
            'config': json.loads(config.to_json_best_effort())})
    restart = {'from_epoch': start_epoch, 'changed': {k: list(v) for k, v in changes.items()}}

    # --- Train.
    guards = [DivergenceGuard(config.divergence_factor) for _ in seeds]
    progress = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                    disable=not (config.progress and is_chief), desc='train', unit='step')

    def check(pending, epoch: int, step: int) -> None:
        step_losses, finite = (np.atleast_1d(v) for v in jax.device_get(pending))
        for seed, guard, loss, ok in zip(seeds, guards, step_losses, finite):
            if reason := guard.check(loss, bool(ok)):
                raise diverged(epoch, step, reason + (f' (seed {seed})' if batched else ''))

    def diverged(epoch: int, step: int, reason: str) -> DivergenceError:
        checkpointer.wait()
        last = checkpointer.latest_epoch()
        if is_chief and history:
            metrics.plot_curves(history, os.path.join(config.workdir, 'curves.png'),
                                title=f'stopped: diverged in epoch {epoch}')
        advice = (f'The last good checkpoint is epoch {last} in {checkpointer.directory}; '
                  f'restart from it with a lower learning rate, e.g. --resume-from {last} '
                  f'--lr {config.lr / 10:g} (fit(config, resume_from={last}))' if last else
                  'No checkpoint was saved before it; start again with a lower learning rate '
                  'or more warmup.')
        return DivergenceError(
            f'training diverged at step {step} (epoch {epoch}): {reason}. Nothing of epoch '
            f'{epoch} was saved. {advice}', epoch=epoch, step=step, last_good_epoch=last)

    step = int(np.max(jax.device_get(state.step)))
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            sums, pending = None, None
            for batches in zip(*(epoch_batches(it, epoch) for it in iterators)):
                batch = ({k: np.stack([b[k] for b in batches]) for k in batches[0]}
                         if batched else batches[0])
                state, step_metrics = train_fn(state, place_train(batch))
                step += 1
                # Checking the previous step keeps one step in flight on the device.
                if pending is not None:
                    check(pending, epoch + 1, step - 1)
                pending = step_metrics.pop('loss'), step_metrics.pop('grads_finite')
                summed = {'loss': pending[0], **step_metrics}
                sums = summed if sums is None else jax.tree.map(jnp.add, sums, summed)
                progress.update()
            check(pending, epoch + 1, step)
            test = evaluate_dataset(eval_fn, state, splits.test_images, splits.test_labels,
                                    batch_size=eval_batch, mesh=mesh, place=place_eval)
            means = {k: np.atleast_1d(jax.device_get(v)) / steps_per_epoch
                     for k, v in sums.items()}
            seconds = time.perf_counter() - started
            records = []
            for k, seed in enumerate(seeds):
                record = {'epoch': epoch + 1, 'step': step, 'seed': seed,
                          'train_loss': float(means['loss'][k]),
                          'train_accuracy': float(means['accuracy'][k]),
                          'mean_logit_norm': float(means['logit_norm'][k]),
                          'test_loss': float(np.atleast_1d(test['loss'])[k]),
                          'test_accuracy': float(np.atleast_1d(test['accuracy'])[k]),
                          'seconds': seconds}
                if restart['changed'] and epoch == start_epoch:
                    record['restart'] = restart
                if extensions:
                    one_seed = slice_fn(state, k)
                    for ext in extensions:
                        record.update(ext.epoch_metrics(one_seed, evaluate))
                records.append(record)
            history.extend(records)
            if is_chief:
                for record in records:
                    metrics.append_jsonl(metrics_path, record)
            checkpointer.save(epoch + 1, state.arrays(), identity)
            progress.set_postfix(epoch=epoch + 1, loss=f"{np.mean(means['loss']):.3f}",
                                 test_acc=f"{np.mean(test['accuracy']):.3f}")
            if on_epoch_end is not None:
                for record in records:
                    on_epoch_end(epoch, record)
    finally:
        progress.close()
        checkpointer.close()
    if is_chief and history:
        metrics.plot_curves(history, os.path.join(config.workdir, 'curves.png'),
                            title=f'{config.model} / {config.norm} on {config.dataset}')
    return FitResult(state, history, config.workdir)
