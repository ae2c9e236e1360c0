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
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

import optim
from jaxnorm import afan, checkpoints, data, eman, homogeneous, metrics, models, optimizers, parallel
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
      teacher: the EMAN teacher (:mod:`jaxnorm.eman`) as a dict of
        :class:`~jaxnorm.eman.TeacherState`'s fields, or None when EMAN is off.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    teacher: dict | None = None

    def arrays(self) -> dict:
        """The state's arrays as a plain dict (what a checkpoint holds)."""
        arrays = {'step': self.step, 'params': self.params, 'batch_stats': self.batch_stats,
                  'opt_state': self.opt_state, 'rng': self.rng}
        return arrays if self.teacher is None else {**arrays, 'teacher': self.teacher}

    def variables(self) -> dict:
        """Model variables for ``apply_fn``."""
        return {'params': self.params, 'batch_stats': self.batch_stats}


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state, one metrics record per epoch, the workdir."""

    state: TrainState
    history: list[dict]
    workdir: str


# ----------------------------------------------------------------------------- steps


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing, in float32."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, batch: dict, *, label_smoothing: float = 0.0,
               afan_config: afan.AFANConfig | None = None) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``image``, ``label``); returns the new state and metrics.

    With ``afan_config`` the loss is A-FAN's (:func:`jaxnorm.afan.afan_loss`, arXiv:2103.12171).
    """
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        if afan_config is not None:
            loss, aux = afan.afan_loss(
                state.apply_fn, {'params': params, 'batch_stats': state.batch_stats}, batch,
                step_key, afan_config,
                loss_fn=lambda z, y: cross_entropy(z, y, label_smoothing).mean())
            return loss, (aux.logits, {'batch_stats': aux.batch_stats})
        logits, updates = state.apply_fn(
            {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
            mutable=['batch_stats'], rngs={'dropout': step_key})
        loss = cross_entropy(logits, batch['label'], label_smoothing).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
        batch_stats=updates.get('batch_stats', state.batch_stats), opt_state=opt_state)
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
    return {'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
            'correct': jnp.sum(correct * mask), 'count': jnp.sum(mask)}


def create_train_state(model, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       *, seed: int, mesh, teacher: bool = False) -> TrainState:
    """Initialise parameters, statistics and optimizer state, replicated over ``mesh``.

    With ``teacher`` the state also holds an EMAN teacher equal to the student (eman.init).

    The initialisation is jitted with replicated outputs and no inputs, so every process of a
    multi-process run builds the identical state without any host-to-device transfer.
    """
    def init():
        key = jax.random.key(seed)
        init_key, run_key = jax.random.split(key)
        variables = model.init({'params': init_key}, jnp.zeros((1, *image_shape)), train=False)
        params = variables['params']
        state = {'step': jnp.zeros((), jnp.int32), 'params': params,
                'batch_stats': variables.get('batch_stats', {}), 'opt_state': tx.init(params),
                'rng': jax.random.key_data(run_key)}
        if teacher:
            init_teacher = eman.init(params, state['batch_stats'])._asdict()
            return {**state, 'teacher': init_teacher}
        return state

    arrays = jax.jit(init, out_shardings=parallel.replicated(mesh))()
    return TrainState(apply_fn=model.apply, tx=tx, **arrays)


def compile_steps(mesh, label_smoothing: float, afan_config: afan.AFANConfig | None = None,
                  eman_momentum: float | None = None) -> tuple[Callable, Callable]:
    """Jitted train and eval steps: replicated state, batch sharded over ``mesh``.

    With ``eman_momentum`` each step also moves the state's teacher (:func:`eman.update`).
    """
    repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step_fn = functools.partial(train_step, label_smoothing=label_smoothing,
                                afan_config=afan_config)
    if eman_momentum is not None:
        step_fn = eman.with_teacher_update(step_fn, eman_momentum)
    train = jax.jit(step_fn, in_shardings=(repl, sharded), out_shardings=(repl, repl))
    evaluate = jax.jit(eval_step, in_shardings=(repl, sharded), out_shardings=repl)
    return train, evaluate


def evaluate_dataset(eval_fn: Callable, state: TrainState, images: np.ndarray,
                     labels: np.ndarray, *, batch_size: int, mesh) -> dict:
    """Mean loss and accuracy over a whole array dataset.

    The data is padded to whole batches (padding masked out), so every batch has one shape and
    the step compiles once; each process feeds its own slice of every global batch.
    """
    parallel.check_divisible(batch_size, mesh, 'eval batch size')
    n = len(labels)
    padded = math.ceil(n / batch_size) * batch_size
    pad = padded - n
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.arange(padded) < n
    local = batch_size // jax.process_count()
    offset = jax.process_index() * local
    totals = None
    for start in range(0, padded, batch_size):
        rows = slice(start + offset, start + offset + local)
        batch = parallel.global_batch(
            {'image': images[rows], 'label': labels[rows], 'mask': mask[rows]}, mesh)
        sums = eval_fn(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    return {'loss': float(totals['loss'] / totals['count']),
            'accuracy': float(totals['correct'] / totals['count'])}


# ----------------------------------------------------------------------------- the loop


def lawn_diagnostics(params: Any, lawn_mask: Any) -> dict:
    """LAWN's per-epoch record: the Frobenius norm of each constrained leaf (constant after
    the switch, per layer and per unit alike)."""
    norms = jax.device_get(optim.constrained_norms(params, lawn_mask))
    return {'lawn_weight_norms': {path: float(n) for path, n in norms.items()}}


def run_identity(config: ml_collections.ConfigDict, num_classes: int) -> dict:
    """The settings a checkpoint must share with the run that resumes it."""
    return {'model': config.model, 'model_kwargs': dict(config.model_kwargs),
            'norm': config.norm, 'norm_kwargs': dict(config.norm_kwargs),
            'dataset': config.dataset, 'image_size': config.image_size,
            'num_classes': num_classes, 'optimizer': config.optimizer,
            # LAWN changes the optimizer state's structure.
            'lawn_free_epochs': config.lawn_free_epochs, 'lawn_mask': config.lawn_mask,
            'lawn_per_unit': config.lawn_per_unit,
            # EMAN adds a teacher to the checkpoint.
            'eman_momentum': config.eman_momentum}


def default_workdir(config: ml_collections.ConfigDict) -> str:
    """A fresh folder name for a run: ``runs/<model>-<norm>-<dataset>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    return os.path.join('runs', f'{config.model}-{config.norm}-{config.dataset}-{stamp}')


def fit(config: ml_collections.ConfigDict, *, resume: bool = False,
        resume_from: int | None = None, accept_changes: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None, mesh=None) -> FitResult:
    """Train ``config.model`` on ``config.dataset``; write checkpoints, metrics and plots.

    Everything that can be wrong with the inputs (model, norm, dataset, batch size, input size,
    an incompatible workdir) is checked before anything is written.

    Args:
      config: a run config (:func:`jaxnorm.config.default_config` and overrides). Without a
        ``workdir`` each run gets a new folder (:func:`default_workdir`).
      resume: continue from the newest checkpoint in ``config.workdir``. Without it a workdir
        that already holds checkpoints is an error, so no run is overwritten by accident.
        Settings that change the trajectory (anything but
        :data:`jaxnorm.config.PRESENTATION_KEYS`) must
        equal the saved ``config.json``, so the resumed run equals an uninterrupted one.
      resume_from: restart from this epoch's checkpoint, deleting later checkpoints and
        records; changed settings are accepted (e.g. a lower learning rate after a
        divergence) and logged in ``config_history.jsonl`` and the next epoch's record.
      accept_changes: resume even though settings changed (logged the same way).
      on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint.
      mesh: the device mesh (default: every device, :func:`jaxnorm.parallel.data_mesh`).

    Returns:
      A :class:`FitResult` with the final state and the per-epoch records.

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

    # --- Data.
    train_ds = data.load(config.dataset, 'train', data_dir=config.data_dir,
                         image_size=config.image_size)
    test_ds = data.load(config.dataset, 'test', data_dir=config.data_dir,
                        image_size=config.image_size)
    mean, std = train_ds.channel_stats()
    train_batches = data.BatchIterator(
        train_ds, config.batch_size, seed=config.seed, shuffle=True, drop_remainder=True,
        augment=config.augment or data.default_augment(config.dataset), mean=mean, std=std,
        process_index=jax.process_index(), process_count=jax.process_count())
    test_images = ((test_ds.images - mean) / std).astype(np.float32)
    mesh = parallel.data_mesh() if mesh is None else mesh
    parallel.check_divisible(config.batch_size, mesh)
    eval_batch = math.ceil(config.eval_batch_size / mesh.size) * mesh.size
    steps_per_epoch = len(train_batches)

    # --- Model and state (tracing init also checks the input size against the model).
    model = models.get_model(config.model, norm=config.norm, num_classes=train_ds.num_classes,
                             norm_kwargs=dict(config.norm_kwargs), **config.model_kwargs)
    lawn_mask = None
    if config.lawn_free_epochs is not None:
        lawn_mask = optimizers.lawn_constrained_mask(config) or homogeneous.final_homogeneous_mask(
            model, jnp.zeros((1, *train_ds.images.shape[1:])))
    tx = optimizers.make_optimizer(config, steps_per_epoch, lawn_mask)
    state = create_train_state(model, tx, train_ds.images.shape[1:], seed=config.seed, mesh=mesh,
                               teacher=config.eman_momentum is not None)
    afan_config = afan.from_run_config(config, model, train_ds.images.shape[1:])
    train_fn, eval_fn = compile_steps(mesh, config.label_smoothing, afan_config,
                                      config.eman_momentum)

    # --- Checkpoints (everything is checked before anything is written).
    identity = run_identity(config, train_ds.num_classes)
    checkpointer.check_compatible(identity)
    if resume_from is not None:
        checkpointer.delete_after(resume_from)
    if start_epoch:
        state = state.replace(**checkpointer.restore(start_epoch, like=state.arrays()))
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
    guard = DivergenceGuard(config.divergence_factor)
    progress = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                    disable=not (config.progress and is_chief), desc='train', unit='step')

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

    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            sums, pending = None, None
            for batch in train_batches.epoch(epoch):
                state, step_metrics = train_fn(state, parallel.global_batch(batch, mesh))
                # Checking the previous step keeps one step in flight on the device.
                if pending is not None and (reason := guard.check(*jax.device_get(pending))):
                    raise diverged(epoch + 1, int(state.step) - 1, reason)
                pending = step_metrics.pop('loss'), step_metrics.pop('grads_finite')
                summed = {'loss': pending[0], **step_metrics}
                sums = summed if sums is None else jax.tree.map(jnp.add, sums, summed)
                progress.update()
            if reason := guard.check(*jax.device_get(pending)):
                raise diverged(epoch + 1, int(state.step), reason)
            train_loss = float(sums['loss']) / steps_per_epoch
            test = evaluate_dataset(eval_fn, state, test_images, test_ds.labels,
                                    batch_size=eval_batch, mesh=mesh)
            record = {'epoch': epoch + 1, 'step': int(state.step), 'train_loss': train_loss,
                      'train_accuracy': float(sums['accuracy']) / steps_per_epoch,
                      'mean_logit_norm': float(sums['logit_norm']) / steps_per_epoch,
                      'test_loss': test['loss'], 'test_accuracy': test['accuracy'],
                      'seconds': time.perf_counter() - started}
            if restart['changed'] and epoch == start_epoch:
                record['restart'] = restart
            if state.teacher is not None:
                teacher = evaluate_dataset(eval_fn, eman.teacher_view(state), test_images,
                                           test_ds.labels, batch_size=eval_batch, mesh=mesh)
                record.update(teacher_test_loss=teacher['loss'],
                              teacher_test_accuracy=teacher['accuracy'])
            if lawn_mask is not None:
                record.update(lawn_diagnostics(state.params, lawn_mask))
            history.append(record)
            if is_chief:
                metrics.append_jsonl(metrics_path, record)
            checkpointer.save(epoch + 1, state.arrays(), identity)
            progress.set_postfix(epoch=epoch + 1, loss=f'{train_loss:.3f}',
                                 test_acc=f"{test['accuracy']:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    finally:
        progress.close()
        checkpointer.close()
    if is_chief and history:
        metrics.plot_curves(history, os.path.join(config.workdir, 'curves.png'),
                            title=f'{config.model} / {config.norm} on {config.dataset}')
    return FitResult(state, history, config.workdir)
