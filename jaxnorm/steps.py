"""The engine's steps: the train state, one optimizer step, evaluation, and their jitted,
sharded and seed-batched forms. :func:`jaxnorm.train.fit` runs them in its loop; code that needs
a step without the loop (cost planning, lowering checks, bespoke evaluation) imports them from
here or from :mod:`jaxnorm.train`, which re-exports them.

A step's randomness is ``fold_in(rng, step)`` of the run's root key, so a resumed run repeats
the uninterrupted one exactly.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import extension, losses, parallel

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




def forward_loss(apply_fn: Callable, label_smoothing: float = 0.0) -> extension.ForwardLoss:
    """The plain step loss: ``(params, batch_stats, batch, key) -> (loss, (logits,
    batch_stats, metrics))``, a training-mode forward pass on ``batch['image']``, the mean
    cross-entropy against ``batch['label']`` and no extra metrics (``{}``)."""
    def forward(params, batch_stats, batch, key):
        logits, updates = apply_fn(
            {'params': params, 'batch_stats': batch_stats}, batch['image'], train=True,
            mutable=['batch_stats'], rngs={'dropout': key})
        loss = losses.mean_cross_entropy(logits, batch['label'], label_smoothing)
        return loss, (logits, updates.get('batch_stats', batch_stats), {})
    return forward


def train_step(state: TrainState, batch: dict, *, label_smoothing: float = 0.0,
               extensions: Sequence[extension.Extension] = ()) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``image``, ``label`` and any keys the extensions
    read); returns the new state and the step's metrics.

    Each extension may replace the loss, seeing the state before the step
    (:meth:`~jaxnorm.extension.Extension.wrap_loss`), and update the state after it
    (:meth:`~jaxnorm.extension.Extension.after_step`). The metrics are the loss, the accuracy
    and mean logit norm of the logits the loss returns, whether every gradient is finite, and
    the loss wrappers' own per-step metrics.
    """
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    forward = forward_loss(state.apply_fn, label_smoothing)
    for ext in extensions:
        forward = ext.wrap_loss(forward, state)
    (loss, (logits, batch_stats, extra)), grads = jax.value_and_grad(forward, has_aux=True)(
        state.params, state.batch_stats, batch, step_key)
    optimizer_args = {}
    for ext in extensions:
        optimizer_args.update(ext.optimizer_args(state, batch))
    param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                               **optimizer_args)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
        batch_stats=batch_stats, opt_state=opt_state)
    for ext in extensions:
        new_state = ext.after_step(new_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    logit_norm = jnp.mean(jnp.linalg.norm(logits.astype(jnp.float32), axis=-1))
    grads_finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return new_state, {**extra, 'loss': loss, 'accuracy': accuracy, 'logit_norm': logit_norm,
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
