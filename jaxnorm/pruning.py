"""Prune a jaxnorm model early in training: train -> score -> prune, in rounds, then fine-tune.

The procedure of Lubana & Dick's code (arXiv:2009.11839; [code] flowandprune ``main.py``),
with masks instead of rebuilding the network each round:

1. For each round ``k = 1..n``: train ``round_epochs`` epochs with a fresh SGD (the
   reference builds a new optimizer every round, so momentum restarts), score every alive
   filter (:func:`prune.filter_scores`), and remove the fraction ``r_k`` of the alive filters
   (:func:`prune.round_fractions`) by one global ranking with a per-layer minimum
   (:func:`prune.select_survivors`). Filters, their normalizer entries and the next layer's
   inputs are masked (:func:`prune.structured_masks`); :func:`prune.masked_optimizer` keeps
   them at zero.
2. Fine-tune the pruned model with a fresh optimizer and a cosine schedule.

Scores use :math:`\\bar g` over ``gradient_batches`` random training batches at
``gradient_temperature``; GraSP and gradient-norm preservation use :math:`\\bar g` and
:math:`Hg` over one class-balanced batch per class (``hvp_per_class`` images each) at their
own temperatures (reference: 200 and 1). BatchNorm scores in eval mode as the reference
(``net.eval()``), or in train mode with ``score_bn_train`` (exact scale invariance, see
:mod:`prune.flow`). Each round also records diagnostics of the flow framework: the share of
the alive filters' :math:`\\lVert g\\rVert^2` (the loss-decrease rate) that the removed filters
carried, and the training loss just before and after masking.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import prune
from jaxnorm import config as config_lib, data, models, optimizers, parallel, train
from jaxnorm.models import channels

DENSE = 'dense'  # the unpruned baseline, trained on the same schedule


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """Everything a pruning run depends on besides the measure and the seed."""

    model: str = 'vgg_cfg10'
    model_kwargs: dict = dataclasses.field(default_factory=lambda: {'width': 0.25})
    norm: str = 'bn'
    dataset: str = 'digits'
    data_dir: str | None = None
    target: float = 0.75  # fraction of the prunable filters removed in all
    rounds: int = 5
    round_epochs: int = 1
    finetune_epochs: int = 15
    batch_size: int = 64
    prune_lr: float = 0.1  # constant, during the rounds (reference lr_prune)
    lr: float = 0.1  # peak of the cosine fine-tuning schedule
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gradient_batches: int = 8
    hvp_per_class: int = 32
    gradient_temperature: float = 1.0
    grasp_temperature: float = 200.0
    grad_norm_temperature: float = 1.0
    score_bn_train: bool = False
    min_keep_fraction: float = 0.05
    protect: str = 'highest_index'

    def check(self) -> None:
        """Raise ``ValueError`` on a value no run could use."""
        prune.check_ratio(self.target, 'target')
        prune.check_ratio(self.min_keep_fraction, 'min_keep_fraction')
        counts = {'rounds': self.rounds, 'round_epochs': self.round_epochs,
                  'batch_size': self.batch_size, 'gradient_batches': self.gradient_batches,
                  'hvp_per_class': self.hvp_per_class}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        if self.finetune_epochs < 0:
            raise ValueError(f'finetune_epochs must be >= 0, got {self.finetune_epochs}')
        for name in ('gradient_temperature', 'grasp_temperature', 'grad_norm_temperature'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be positive')


def _optimizer(settings: PruneSettings, lr: float, schedule: str, epochs: int,
               steps_per_epoch: int):
    """The library's SGD (coupled decay) for one phase, inside :func:`prune.masked_optimizer`."""
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'optimizer': 'sgd', 'lr': lr, 'momentum': settings.momentum, 'schedule': schedule,
        'epochs': max(epochs, 1), 'weight_decay': settings.weight_decay})
    return prune.masked_optimizer(optimizers.make_optimizer(cfg, steps_per_epoch))


class PruneRunner:
    """Data, model, compiled steps and optimizers of one :class:`PruneSettings`; runs any
    measure and seed with them (every run shares the compiled functions)."""

    def __init__(self, settings: PruneSettings, mesh=None):
        settings.check()
        self.settings = s = settings
        splits = data.load_standardized(s.dataset, data_dir=s.data_dir)
        self.train_images, self.train_labels = splits.train_images, splits.train_labels
        self.test_images, self.test_labels = splits.test_images, splits.test_labels
        self.num_classes = splits.num_classes
        self.mesh = parallel.data_mesh() if mesh is None else mesh
        self.batches = lambda seed: data.BatchIterator(
            splits.train, s.batch_size, seed=seed, augment=data.default_augment(s.dataset),
            mean=splits.mean, std=splits.std)
        self.steps_per_epoch = len(self.batches(0))
        self.model = models.get_model(s.model, norm=s.norm, num_classes=self.num_classes,
                                      **s.model_kwargs)
        example = jnp.asarray(self.train_images[:1])
        template = jax.eval_shape(self.model.init, jax.random.key(0), example)
        self.groups = channels.channel_groups(self.model, template)
        self.positions = channels.kernel_positions(self.model, template, example)
        self.round_tx = _optimizer(s, s.prune_lr, 'constant', s.round_epochs,
                                   self.steps_per_epoch)
        self.finetune_tx = _optimizer(s, s.lr, 'cosine', s.finetune_epochs,
                                      self.steps_per_epoch)
        self.train_step, self.eval_step = train.compile_steps(self.mesh, 0.0)
        self.estimate = jax.jit(self._estimate, static_argnames='with_hg')
        self._init_variables = jax.jit(self._variables)

    def _variables(self, seed):
        # As jaxnorm.train.create_train_state: the first half of the seed's key initializes.
        init_key, run_key = jax.random.split(jax.random.key(seed))
        variables = self.model.init({'params': init_key},
                                    jnp.zeros((1, *self.train_images.shape[1:])), train=False)
        return variables['params'], variables.get('batch_stats', {}), jax.random.key_data(
            run_key)

    def _initial_state(self, seed: int) -> train.TrainState:
        """A fresh train state (compiled once per runner, not once per run)."""
        params, batch_stats, rng = jax.device_put(self._init_variables(seed),
                                                  parallel.replicated(self.mesh))
        return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                batch_stats=batch_stats, opt_state=self.round_tx.init(params),
                                rng=rng, apply_fn=self.model.apply, tx=self.round_tx)

    def _estimate(self, params, batch_stats, batches, temperature, *, with_hg: bool):
        loss = prune.classifier_loss(self.model.apply,
                                     {'batch_stats': batch_stats} if batch_stats else {},
                                     temperature=temperature,
                                     train=self.settings.score_bn_train)
        if with_hg:
            return prune.gradient_and_hg(loss, params, batches)
        return prune.mean_gradient(loss, params, batches), None

    def _evaluate(self, state, images, labels) -> dict:
        return train.evaluate_dataset(self.eval_step, state, images, labels, batch_size=512,
                                      mesh=self.mesh)

    def _score_batches(self, seed: int, round_index: int) -> tuple[dict, dict]:
        """Random training batches for ``g`` and one class-balanced batch per class."""
        s, rng = self.settings, np.random.default_rng([seed, round_index, 7])
        count = min(s.gradient_batches * s.batch_size, len(self.train_labels))
        rows = rng.permutation(len(self.train_labels))[:count - count % s.batch_size]
        gradient = {'image': self.train_images[rows].reshape(-1, s.batch_size,
                                                             *self.train_images.shape[1:]),
                    'label': self.train_labels[rows].reshape(-1, s.batch_size)}
        per_class = []
        for c in range(self.num_classes):
            members = np.flatnonzero(self.train_labels == c)
            if members.size < s.hvp_per_class:
                raise ValueError(f'class {c} has {members.size} training images, fewer than '
                                 f'hvp_per_class={s.hvp_per_class}')
            per_class.append(rng.choice(members, s.hvp_per_class, replace=False))
        per_class = np.stack(per_class)
        balanced = {'image': self.train_images[per_class], 'label': self.train_labels[per_class]}
        return gradient, balanced

    def _train_epoch(self, state, batches, epoch: int, phase: str, progress) -> tuple[Any, dict]:
        sums, steps = {'loss': 0.0, 'accuracy': 0.0}, 0
        for batch in batches.epoch(epoch):
            state, metrics = self.train_step(state, parallel.global_batch(batch, self.mesh))
            sums = {k: sums[k] + metrics[k] for k in sums}
            steps += 1
        test = self._evaluate(state, self.test_images, self.test_labels)
        if progress is not None:
            progress.update()
        return state, {'epoch': epoch + 1, 'phase': phase,
                       'train_loss': float(sums['loss']) / steps,
                       'train_accuracy': float(sums['accuracy']) / steps,
                       'test_loss': test['loss'], 'test_accuracy': test['accuracy']}

    def _prune_round(self, state, measure: str, alive: dict, fraction: float, seed: int,
                     round_index: int) -> tuple[Any, dict, dict]:
        s = self.settings
        gradient_batches, balanced = self._score_batches(seed, round_index)
        grads, hg = self.estimate(state.params, state.batch_stats, gradient_batches,
                                  s.gradient_temperature, with_hg=False)
        flow_grads = grads
        if measure in ('grasp', 'grad_norm_preservation'):
            temperature = (s.grasp_temperature if measure == 'grasp'
                           else s.grad_norm_temperature)
            grads, hg = self.estimate(state.params, state.batch_stats, balanced, temperature,
                                      with_hg=True)
        scores = prune.filter_scores(measure, state.params, self.groups, grads=grads, hg=hg,
                                     key=jax.random.fold_in(jax.random.key(seed), round_index))
        survivors = prune.select_survivors(
            jax.device_get(scores), alive, fraction, min_keep_fraction=s.min_keep_fraction,
            protect=s.protect)
        # The share of the loss-decrease rate -dL/dt = |g|^2 (over the alive filters, at the
        # training temperature) carried by the removed filters.
        grad_sq = jax.device_get(prune.filter_scores('magnitude', flow_grads, self.groups))
        removed_share = sum(float(grad_sq[n][alive[n] & ~survivors[n]].sum()) for n in alive)
        alive_share = sum(float(grad_sq[n][alive[n]].sum()) for n in alive)
        before = self._evaluate(state, self.train_images, self.train_labels)['loss']
        masks = prune.structured_masks(state.params, self.groups, survivors)
        state = state.replace(params=prune.apply_masks(state.params, masks))
        after = self._evaluate(state, self.train_images, self.train_labels)['loss']
        n_alive = sum(int(v.sum()) for v in alive.values())
        n_removed = n_alive - sum(int(v.sum()) for v in survivors.values())
        record = {'round': round_index + 1, 'fraction': float(fraction),
                  'removed_filters': n_removed, 'removed_filter_share': n_removed / n_alive,
                  'removed_grad_sq_share': removed_share / max(alive_share, 1e-30),
                  'train_loss_before': before, 'train_loss_after': after,
                  'kept': {name: int(v.sum()) for name, v in survivors.items()}}
        return state, survivors, record

    def run(self, measure: str | None, seed: int, progress: tqdm | None = None
            ) -> dict[str, Any]:
        """One run; ``measure='dense'`` (or None) trains unpruned on the same schedule.

        Returns:
          A JSON-ready record: ``history`` (one entry per epoch, ``phase`` 'prune' or
          'finetune'), ``rounds`` (per-round diagnostics), ``kept`` (filters per layer),
          ``filters``, ``accounting`` (totals of :func:`prune.layer_report`), and the final
          and best fine-tuning test accuracy.
        """
        s = self.settings
        dense = measure in (None, DENSE)
        if not dense:
            prune.check_measure(measure)
        state = self._initial_state(seed)
        alive = {g.name: np.ones(g.width, bool) for g in self.groups}
        masks = prune.ones_masks(state.params)
        batches, history, rounds, epoch = self.batches(seed), [], [], 0
        for k, fraction in enumerate(prune.round_fractions(s.target, s.rounds)):
            state = state.replace(opt_state=prune.install_masks(self.round_tx.init(state.params),
                                                                masks))
            for _ in range(s.round_epochs):
                state, record = self._train_epoch(state, batches, epoch, 'prune', progress)
                history.append(record)
                epoch += 1
            if not dense and fraction > 0:
                state, alive, record = self._prune_round(state, measure, alive, fraction, seed,
                                                         k)
                masks = prune.structured_masks(state.params, self.groups, alive)
                rounds.append(record)
        state = state.replace(tx=self.finetune_tx, opt_state=prune.install_masks(
            self.finetune_tx.init(state.params), masks))
        for _ in range(s.finetune_epochs):
            state, record = self._train_epoch(state, batches, epoch, 'finetune', progress)
            history.append(record)
            epoch += 1
        report = prune.layer_report(jax.device_get(state.params), jax.device_get(masks),
                                    positions=self.positions)
        finetune = [r['test_accuracy'] for r in history if r['phase'] == 'finetune'] or [
            history[-1]['test_accuracy']]
        return {'measure': DENSE if dense else measure, 'seed': seed, 'history': history,
                'rounds': rounds, 'kept': {n: int(v.sum()) for n, v in alive.items()},
                'widths': {g.name: g.width for g in self.groups},
                'filters': prune.filter_report(alive), 'accounting': report['total'],
                'final_test_accuracy': finetune[-1], 'best_test_accuracy': max(finetune)}

    def epochs_per_run(self) -> int:
        """Epochs of one run (for progress bars)."""
        return self.settings.rounds * self.settings.round_epochs + self.settings.finetune_epochs


def run_all(settings: PruneSettings, measures, seeds, *, description: str = 'prune'
            ) -> tuple[PruneRunner, list[dict]]:
    """Every (measure, seed) run of ``settings``, with one progress bar over all epochs."""
    runner = PruneRunner(settings)
    progress = tqdm(total=len(measures) * len(seeds) * runner.epochs_per_run(),
                    desc=description, unit='epoch')
    try:
        records = [runner.run(measure, seed, progress) for seed in seeds
                   for measure in measures]
    finally:
        progress.close()
    return runner, records


__all__ = ['DENSE', 'PruneRunner', 'PruneSettings', 'run_all']
