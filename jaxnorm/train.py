"""Training: the epoch loop with checkpoints (the steps it runs are in :mod:`jaxnorm.steps`).

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
import hashlib
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Iterator, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxnorm import checkpoints, data, extension, metrics, models, optimizers, parallel
from jaxnorm import config as config_lib
from jaxnorm.divergence import DivergenceError, DivergenceGuard
from jaxnorm.steps import (TrainState, compile_steps, create_train_state, eval_step,
                           evaluate_dataset, forward_loss, seed_slice, train_step)

__all__ = ['BatchSource', 'FitResult', 'TrainState', 'build', 'compile_steps',
           'create_train_state', 'data_fingerprint', 'default_workdir', 'eval_step',
           'evaluate_dataset', 'fit', 'forward_loss', 'load_splits', 'run_identity',
           'run_seeds', 'seed_slice', 'train_step']


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state, one metrics record per epoch, the workdir."""

    state: TrainState
    history: list[dict]
    workdir: str


# Step metrics the engine reports under its own record names.
ENGINE_STEP_METRICS = ('loss', 'accuracy', 'logit_norm')


class BatchSource(Protocol):
    """What :func:`fit` draws one lane's training batches from (:class:`jaxnorm.data.
    BatchIterator` is one): ``len(source)`` batches per pass, and ``source.epoch(e)`` yields
    the batches of pass ``e`` as dicts of numpy arrays with at least ``image`` and ``label``
    (more keys, e.g. unlabeled images, go to the extensions' loss wrappers as they are). Every
    array has the batch as its leading axis, which is sharded over the devices, so its length
    must be divisible by their number."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]: ...




def run_identity(config: ml_collections.ConfigDict, num_classes: int,
                 extensions: Sequence[extension.Extension] = (),
                 data_hash: str | None = None) -> dict:
    """The settings a checkpoint must share with the run that resumes it (``data_hash``:
    :func:`data_fingerprint` of splits passed to :func:`fit` in memory)."""
    identity = {'model': config.model, 'model_kwargs': dict(config.model_kwargs),
                'norm': config.norm, 'norm_kwargs': dict(config.norm_kwargs),
                'dataset': config.dataset, 'image_size': config.image_size,
                'resize': config.resize, 'num_classes': num_classes,
                'optimizer': config.optimizer, 'num_seeds': config.num_seeds,
                'extensions': {ext.name: ext.identity() for ext in extensions}}
    if data_hash is not None:
        identity['data'] = data_hash
    return identity


def data_fingerprint(splits: data.StandardizedSplits) -> str:
    """A SHA-256 of both splits' images and labels and the standardization statistics, so a
    run trained on in-memory splits resumes only on the same data."""
    digest = hashlib.sha256()
    for array in (splits.train.images, splits.train.labels, splits.test.images,
                  splits.test.labels, splits.mean, splits.std):
        array = np.ascontiguousarray(array)
        digest.update(f'{array.dtype}{array.shape}'.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


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


def load_splits(config: ml_collections.ConfigDict) -> data.StandardizedSplits:
    """The standardized splits ``config`` trains and evaluates on (what :func:`fit` loads
    when it is given none)."""
    return data.load_standardized(config.dataset, data_dir=config.data_dir,
                                  image_size=config.image_size, resize=config.resize or 'pad')


def fit(config: ml_collections.ConfigDict, *, resume: bool = False,
        resume_from: int | None = None, accept_changes: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None, mesh=None,
        initial_state: Callable[[TrainState], TrainState] | None = None,
        splits: data.StandardizedSplits | None = None,
        batches: Callable[[int], BatchSource] | None = None) -> FitResult:
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
      splits: train and evaluate on these in-memory splits instead of loading
        ``config.dataset`` (e.g. one task of a continual sequence); ``config.dataset`` then
        only names them. Their :func:`data_fingerprint` joins the checkpoint identity.
      batches: maps a lane's seed to its :class:`BatchSource` of training batches, instead of
        a shuffled, augmented :class:`jaxnorm.data.BatchIterator` over the training split
        (e.g. labeled and unlabeled batches for semi-supervised learning). Every lane's
        source must have the same length and batch shapes. Not part of the checkpoint
        identity: pass the same function when resuming.

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
    data_hash = None if splits is None else data_fingerprint(splits)
    if splits is None:
        splits = load_splits(config)
    seeds = run_seeds(config)
    batched = len(seeds) > 1
    if batches is None:
        def batches(seed):
            return data.BatchIterator(
                splits.train, config.batch_size, seed=seed, shuffle=True, drop_remainder=True,
                augment=config.augment or data.default_augment(config.dataset),
                mean=splits.mean, std=splits.std, process_index=jax.process_index(),
                process_count=jax.process_count())
    iterators = [batches(seed) for seed in seeds]
    if len({len(it) for it in iterators}) > 1:
        raise ValueError('the lanes\' batch sources differ in length: '
                         f'{[len(it) for it in iterators]} batches per pass')
    mesh = parallel.data_mesh() if mesh is None else mesh
    if not (batched and parallel.SeedPlacement(mesh, len(seeds)).by_seed):
        parallel.check_divisible(config.batch_size, mesh)  # else each device holds whole lanes
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
        # The seed index is traced: one program for every seed (a static index compiled
        # one per seed and fit, thousands over a continual-learning grid).
        slice_fn = jax.jit(seed_slice, out_shardings=parallel.replicated(mesh))
    else:
        place_train, place_eval = (lambda batch: parallel.global_batch(batch, mesh)), None
        eval_single, slice_fn = eval_fn, (lambda st, _: st)

    def evaluate(one_seed_state):
        return evaluate_dataset(eval_single, one_seed_state, splits.test_images,
                                splits.test_labels, batch_size=eval_batch, mesh=mesh)

    # --- Checkpoints (everything is checked before anything is written).
    identity = run_identity(config, splits.num_classes, extensions, data_hash)
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

    diverged_at = {r['seed']: r['diverged_at_step'] for r in history[-len(seeds):]
                   if r.get('diverged_at_step')}

    def check(pending, epoch: int, step: int) -> None:
        step_losses, finite = (np.atleast_1d(v) for v in jax.device_get(pending))
        for seed, guard, loss, ok in zip(seeds, guards, step_losses, finite):
            if seed in diverged_at:
                continue
            if reason := guard.check(loss, bool(ok)):
                if config.stop_on_divergence:
                    raise diverged(epoch, step, reason + (f' (seed {seed})' if batched else ''))
                diverged_at[seed] = step

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
                          'seconds': seconds,
                          **{name: float(values[k]) for name, values in means.items()
                             if name not in ENGINE_STEP_METRICS}}
                if seed in diverged_at:
                    record['diverged_at_step'] = diverged_at[seed]
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
