"""Prune a jaxnorm model early in training: train -> score -> prune, in rounds, then fine-tune.

The procedure of Lubana & Dick's code (arXiv:2009.11839; [code] flowandprune ``main.py``),
with masks instead of rebuilding the network each round, every training phase one run of the
engine (:func:`jaxnorm.train.fit`):

1. For each round ``k = 1..n``: train ``round_epochs`` epochs with a fresh SGD (constant
   ``prune_lr``, momentum, coupled weight decay; the reference builds a new optimizer every
   round, so momentum restarts), score every alive filter (:func:`prune.filter_scores`), and
   remove the fraction ``r_k`` of the alive filters (:func:`prune.round_fractions`) by one
   global ranking with a per-layer minimum (:func:`prune.select_survivors`). Filters, their
   normalizer entries and the next layer's inputs are masked (:func:`prune.structured_masks`).
2. Fine-tune the pruned model with a fresh optimizer and a cosine schedule from ``lr``.

**Engine runs.** A measure's seeds are the lanes of one seed-batched run per phase
(``num_seeds = S``, seeds ``s .. s + S - 1``): ``n`` round runs and one fine-tuning run. The
``sparsity`` extension holds each lane's mask ``m`` and applies :math:`\\theta \\leftarrow
m \\odot \\theta` after every step; since SGD with momentum and coupled decay acts entry by
entry, the kept entries move as under :func:`prune.masked_optimizer` and the pruned ones are
exactly 0 (their momentum, which that wrapper keeps at 0, is never used). A phase starts
from the previous phase's parameters and BatchNorm statistics per lane
(``fit(initial_state=...)``); between phases every lane is scored and pruned on its own.
Every run trains on the runner's splits, loaded once (``fit(splits=...)``).

**Data order.** A run numbers its epochs from 0 and draws epoch ``e`` of lane seed ``s`` as
``f(s, e)``, so phase ``p`` runs with ``config.seed = s + PHASE_SEED_STRIDE * p``: each phase
has its own batch order, the same for every measure of a seed (pairs). The initial parameters
are seed ``s``'s (phase 0); later phases start from the previous one, so the offset changes
nothing else (these models have no dropout). Phase ``p`` of ``measure`` runs in
``<out_dir>/runs/<measure>-phase<p>``; a rerun resumes or skips it.

Scores use :math:`\\bar g` over ``gradient_batches`` random training batches at
``gradient_temperature``; GraSP and gradient-norm preservation use :math:`\\bar g` and
:math:`Hg` over one class-balanced batch per class (``hvp_per_class`` images each) at their
own temperatures (reference: 200 and 1). BatchNorm scores in eval mode as the reference
(``net.eval()``), or in train mode with ``score_bn_train`` (exact scale invariance, see
:mod:`prune.flow`). Each round also records diagnostics of the flow framework: the share of
the alive filters' :math:`\\lVert g\\rVert^2` (the loss-decrease rate) that the removed filters
carried, the training loss just before and after masking (whole training set, or with
``masking_loss_images='scoring'`` the round's gradient images), and
:math:`\\lVert m \\odot g\\rVert^2 = -dL/dt` of the masked flow just before and after masking
on the gradient images (:func:`prune.flow.masking_change`). The training temperature is the
model's ``temperature`` option where it has one (``vgg3``: logits / T in training and
testing); the scoring temperatures are absolute, on the raw logits.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

import prune
from jaxnorm import config as config_lib, data, models, parallel, sparsity, train
from jaxnorm.models import channels

DENSE = 'dense'  # the unpruned baseline, trained on the same schedule
# Phase p of lane seed s draws its batches with seed s + PHASE_SEED_STRIDE * p.
PHASE_SEED_STRIDE = 1000
HISTORY_KEYS = ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
# Settings added after runs were recorded: left out of prune_settings.json at these values.
NEW_DEFAULTS = {'score_one_batch': False, 'masking_loss_images': 'train'}


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
    # Score over all gradient images (and all class-balanced images) as one batch: the same
    # means as batch by batch with eval-mode BatchNorm (equal batch sizes), and much faster
    # on CPU than the scan over batches. Needs score_bn_train=False.
    score_one_batch: bool = False
    # Where the loss change at masking is measured: 'train' (the whole training set) or
    # 'scoring' (the round's gradient images, the ones |m g|^2 uses).
    masking_loss_images: str = 'train'

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
        if self.score_one_batch and self.score_bn_train:
            raise ValueError('score_one_batch needs score_bn_train=False (train-mode BatchNorm '
                             'statistics depend on the batch)')
        if self.masking_loss_images not in ('train', 'scoring'):
            raise ValueError(f"masking_loss_images must be 'train' or 'scoring', got "
                             f'{self.masking_loss_images!r}')
        for name in ('gradient_temperature', 'grasp_temperature', 'grad_norm_temperature'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be positive')


class LaneStart(NamedTuple):
    """Where one lane (seed) starts a phase: the previous phase's ``params`` and
    ``batch_stats`` and the structured ``masks`` (bool, mirroring the params)."""

    params: Any
    batch_stats: Any
    masks: Any


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as a list if they are the consecutive lane seeds of one seed-batched run
    (``s, s + 1, ...``, fewer than :data:`PHASE_SEED_STRIDE`), else ``ValueError``."""
    seeds = [int(seed) for seed in seeds]
    if not seeds or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f'seeds must be consecutive integers s, s + 1, ..., got {seeds}')
    if len(seeds) >= PHASE_SEED_STRIDE:
        raise ValueError(f'at most {PHASE_SEED_STRIDE - 1} seeds: phase p trains with seeds '
                         f'offset by {PHASE_SEED_STRIDE} p')
    return seeds


def lane_states(state: train.TrainState, count: int) -> list[train.TrainState]:
    """The ``count`` one-seed states (on the host) of a fit's final state; a one-seed run's
    state has no seed axis and is its own lane."""
    host = jax.device_get(state)
    return [host] if count == 1 else [train.seed_slice(host, k) for k in range(count)]


def stack_lanes(trees: Sequence[Any]) -> Any:
    """Inverse of :func:`lane_states` for any per-lane trees: stacked on a leading seed axis
    (one lane: the tree itself)."""
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *xs: np.stack(xs), *trees)


class PruneRunner:
    """Data, model, engine configs and compiled scoring of one :class:`PruneSettings`; runs
    any measure over consecutive seeds, its phases' engine runs under ``out_dir/runs``."""

    def __init__(self, settings: PruneSettings, out_dir: str, mesh=None):
        settings.check()
        self.settings = s = settings
        self.out_dir = out_dir
        # Loaded once: every phase's fit trains on these in-memory splits instead of decoding
        # the dataset again (their fingerprint joins each run's checkpoint identity).
        self.splits = splits = data.load_standardized(s.dataset, data_dir=s.data_dir)
        self.train_images, self.train_labels = splits.train_images, splits.train_labels
        self.test_images, self.test_labels = splits.test_images, splits.test_labels
        self.num_classes = splits.num_classes
        self.mesh = parallel.data_mesh() if mesh is None else mesh
        # Logit temperature of training and testing (the reference's --T): a model option
        # (``temperature`` of ``vgg3``), so the engine trains and tests at it; the
        # scoring temperatures stay absolute (on the raw logits).
        self.train_temperature = float(s.model_kwargs.get('temperature', 1.0))
        self.model = models.get_model(s.model, norm=s.norm, num_classes=self.num_classes,
                                      **s.model_kwargs)
        example = jnp.asarray(self.train_images[:1])
        template = jax.eval_shape(self.model.init, jax.random.key(0), example)
        self.groups = channels.channel_groups(self.model, template)
        self.positions = channels.kernel_positions(self.model, template, example)
        self.base_config = config_lib.apply_overrides(config_lib.default_config(), {
            'model': s.model, 'model_kwargs': s.model_kwargs, 'norm': s.norm,
            'dataset': s.dataset, 'data_dir': s.data_dir, 'batch_size': s.batch_size,
            'optimizer': 'sgd', 'momentum': s.momentum, 'weight_decay': s.weight_decay,
            'warmup_epochs': 0.0, 'label_smoothing': 0.0, 'sparsity.masked': True,
            'progress': False, 'keep_checkpoints': 1})
        _, self.eval_step = train.compile_steps(self.mesh, 0.0)
        self.estimate = jax.jit(self._estimate, static_argnames='with_hg')
        self.masking = jax.jit(self._masking)
        self._check_out_dir()

    def _check_out_dir(self) -> None:
        """Record the settings in ``out_dir/runs/prune_settings.json``, or refuse a folder of
        other settings: the engine checks its own config only, and a resumed phase would keep
        masks that other scoring settings would not choose."""
        path = os.path.join(self.out_dir, 'runs', 'prune_settings.json')
        settings = json.loads(json.dumps(
            {k: v for k, v in dataclasses.asdict(self.settings).items() if k != 'data_dir'
             and not (k in NEW_DEFAULTS and v == NEW_DEFAULTS[k])}))  # folders from before these fields lack them
        saved = settings
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
        if changed := sorted(k for k in settings.keys() | saved.keys()
                             if settings.get(k) != saved.get(k)):
            raise ValueError(f'{os.path.dirname(path)} holds pruning runs with other '
                             f'settings ({", ".join(changed)}); choose another output dir')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(settings, f, indent=1)

    def phase_config(self, measure: str, phase: int, first_seed: int,
                     num_seeds: int) -> ml_collections.ConfigDict:
        """The engine config of ``phase`` (rounds ``0 .. n - 1``, then fine-tuning ``n``) of
        ``measure``'s lanes ``first_seed .. first_seed + num_seeds - 1``."""
        s = self.settings
        finetune = phase == s.rounds
        return config_lib.apply_overrides(self.base_config, {
            'lr': s.lr if finetune else s.prune_lr,
            'schedule': 'cosine' if finetune else 'constant',
            'epochs': s.finetune_epochs if finetune else s.round_epochs,
            'seed': first_seed + PHASE_SEED_STRIDE * phase, 'num_seeds': num_seeds,
            'workdir': os.path.join(self.out_dir, 'runs', f'{measure}-phase{phase}')})

    def fit_phase(self, config: ml_collections.ConfigDict,
                  starts: Sequence[LaneStart] | None) -> train.FitResult:
        """One engine run of every lane (resumed if its workdir holds one).

        Args:
          config: a :meth:`phase_config`.
          starts: each lane's starting point; its params are masked and its masks held by
            the ``sparsity`` extension. None: the seeds' fresh initialization, unmasked.
        """
        def initial_state(fresh: train.TrainState) -> train.TrainState:
            state = fresh.replace(params=stack_lanes([lane.params for lane in starts]),
                                  batch_stats=stack_lanes([lane.batch_stats for lane in starts]))
            return sparsity.with_mask(state, stack_lanes([lane.masks for lane in starts]))
        return train.fit(config, resume=True, mesh=self.mesh, splits=self.splits,
                         initial_state=None if starts is None else initial_state)

    def _estimate(self, params, batch_stats, batches, temperature, *, with_hg: bool):
        # ``temperature`` is absolute: the model already divides its logits by its own.
        loss = prune.classifier_loss(self.model.apply,
                                     {'batch_stats': batch_stats} if batch_stats else {},
                                     temperature=temperature / self.train_temperature,
                                     train=self.settings.score_bn_train)
        if with_hg:
            return prune.gradient_and_hg(loss, params, batches)
        return prune.mean_gradient(loss, params, batches), None

    def _masking(self, params, batch_stats, batch, old_masks, new_masks):
        """:func:`prune.flow.masking_change` of the eval-mode training loss (the model's
        own temperature) on one batch."""
        loss = prune.classifier_loss(self.model.apply,
                                     {'batch_stats': batch_stats} if batch_stats else {},
                                     train=False)
        return prune.flow.masking_change(lambda p: loss(p, batch), params, old_masks,
                                         new_masks)

    def evaluate(self, params, batch_stats, images, labels) -> dict:
        """Mean loss and accuracy of one network (eval mode) on an array dataset."""
        state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 batch_stats=batch_stats, opt_state=(), rng=(),
                                 apply_fn=self.model.apply, tx=None)
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
        if s.score_one_batch:
            gradient, balanced = (jax.tree.map(lambda x: x.reshape(1, -1, *x.shape[2:]), tree)
                                  for tree in (gradient, balanced))
        return gradient, balanced

    def score(self, measure: str, params, batch_stats, seed: int, round_index: int
              ) -> tuple[dict, Any]:
        """One network's filter scores for round ``round_index`` of seed ``seed``.

        Returns:
          ``({group: scores (width,)}, g)``: the scores of ``measure`` (higher = more
          important) and the mean gradient :math:`\\bar g` at ``gradient_temperature``.
        """
        s = self.settings
        gradient_batches, balanced = self._score_batches(seed, round_index)
        grads, hg = self.estimate(params, batch_stats, gradient_batches,
                                  s.gradient_temperature, with_hg=False)
        flow_grads = grads
        if measure in ('grasp', 'grad_norm_preservation'):
            temperature = (s.grasp_temperature if measure == 'grasp'
                           else s.grad_norm_temperature)
            grads, hg = self.estimate(params, batch_stats, balanced, temperature,
                                      with_hg=True)
        scores = prune.filter_scores(measure, params, self.groups, grads=grads, hg=hg,
                                     key=jax.random.fold_in(jax.random.key(seed), round_index))
        return jax.device_get(scores), flow_grads

    def prune_lane(self, measure: str, lane: train.TrainState, alive: dict, fraction: float,
                   seed: int, round_index: int) -> tuple[dict, dict]:
        """Score one lane after its round and remove ``fraction`` of its alive filters.

        Returns:
          The new channel-alive vectors and the round's diagnostics record.
        """
        s = self.settings
        scores, flow_grads = self.score(measure, lane.params, lane.batch_stats, seed,
                                        round_index)
        survivors = prune.select_survivors(scores, alive, fraction,
                                           min_keep_fraction=s.min_keep_fraction,
                                           protect=s.protect)
        # The share of the loss-decrease rate -dL/dt = |g|^2 (over the alive filters, at the
        # training temperature) carried by the removed filters.
        grad_sq = jax.device_get(prune.filter_scores('magnitude', flow_grads, self.groups))
        removed_share = sum(float(grad_sq[n][alive[n] & ~survivors[n]].sum()) for n in alive)
        alive_share = sum(float(grad_sq[n][alive[n]].sum()) for n in alive)
        rate_batches = self._score_batches(seed, round_index)[0]
        old_masks = prune.structured_masks(lane.params, self.groups, alive)
        new_masks = prune.structured_masks(lane.params, self.groups, survivors)
        if s.masking_loss_images == 'scoring':
            # Loss and dL/dt = -|m g|^2 of the masked flow just before and after masking, on
            # the scoring images at the training temperature (eval-mode BatchNorm).
            change = jax.device_get(self.masking(lane.params, lane.batch_stats, jax.tree.map(
                lambda x: x.reshape(-1, *x.shape[2:]), rate_batches), old_masks, new_masks))
            before = float(change['loss_before'])
            after = before + float(change['loss_change'])
            grad_sq_before = float(change['grad_sq_before'])
            grad_sq_after = float(change['grad_sq_after'])
        else:
            before = self.evaluate(lane.params, lane.batch_stats, self.train_images,
                                   self.train_labels)['loss']
            masked = prune.apply_masks(lane.params, new_masks)
            after = self.evaluate(masked, lane.batch_stats, self.train_images,
                                  self.train_labels)['loss']
            # The same rates on the scoring batches at the training temperature.
            if s.gradient_temperature == self.train_temperature:
                g_before = flow_grads
            else:
                g_before, _ = self.estimate(lane.params, lane.batch_stats, rate_batches,
                                            self.train_temperature, with_hg=False)
            g_after, _ = self.estimate(masked, lane.batch_stats, rate_batches,
                                       self.train_temperature, with_hg=False)
            grad_sq_before = float(prune.flow.masked_grad_sq(g_before, old_masks))
            grad_sq_after = float(prune.flow.masked_grad_sq(g_after, new_masks))
        n_alive = sum(int(v.sum()) for v in alive.values())
        n_removed = n_alive - sum(int(v.sum()) for v in survivors.values())
        return survivors, {
            'round': round_index + 1, 'fraction': float(fraction), 'removed_filters': n_removed,
            'removed_filter_share': n_removed / n_alive,
            'removed_grad_sq_share': removed_share / max(alive_share, 1e-30),
            'train_loss_before': before, 'train_loss_after': after,
            'grad_sq_before': grad_sq_before, 'grad_sq_after': grad_sq_after,
            'kept': {name: int(v.sum()) for name, v in survivors.items()}}

    def phases(self) -> int:
        """Engine runs per measure: the rounds, then fine-tuning if it has epochs."""
        return self.settings.rounds + (self.settings.finetune_epochs > 0)

    def run(self, measure: str | None, seeds: Sequence[int], progress: tqdm | None = None
            ) -> list[dict]:
        """Every seed of one measure, as lanes; ``measure='dense'`` (or None) trains
        unpruned on the same schedule.

        Args:
          measure: a :data:`prune.MEASURES` name or ``'dense'``.
          seeds: consecutive seeds (:func:`check_seeds`).
          progress: advanced by one per seed and epoch.

        Returns:
          One JSON-ready record per seed: ``history`` (one entry per epoch, ``phase``
          'prune' or 'finetune'), ``rounds`` (per-round diagnostics), ``kept`` (filters per
          layer), ``filters``, ``accounting`` (totals of :func:`prune.layer_report`), and the
          final and best fine-tuning test accuracy.
        """
        s, seeds = self.settings, check_seeds(seeds)
        dense = measure in (None, DENSE)
        measure = DENSE if dense else prune.check_measure(measure)
        fractions = prune.round_fractions(s.target, s.rounds)
        alive = [{g.name: np.ones(g.width, bool) for g in self.groups} for _ in seeds]
        histories, rounds = [[] for _ in seeds], [[] for _ in seeds]
        starts = None
        for phase in range(self.phases()):
            config = self.phase_config(measure, phase, seeds[0], len(seeds))
            result = self.fit_phase(config, starts)
            finetune, offset = phase == s.rounds, phase * s.round_epochs
            for record in result.history:
                histories[record['seed'] - config.seed].append(
                    {'epoch': offset + record['epoch'],
                     'phase': 'finetune' if finetune else 'prune',
                     **{key: record[key] for key in HISTORY_KEYS}})
            if progress is not None:
                progress.update(len(result.history))
            lanes = lane_states(result.state, len(seeds))
            if not (dense or finetune) and fractions[phase] > 0:
                for k, seed in enumerate(seeds):
                    alive[k], diagnostics = self.prune_lane(measure, lanes[k], alive[k],
                                                            fractions[phase], seed, phase)
                    rounds[k].append(diagnostics)
            starts = [LaneStart(lane.params, lane.batch_stats,
                                prune.structured_masks(lane.params, self.groups, alive[k]))
                      for k, lane in enumerate(lanes)]
        return [self._summary(measure, seed, start, alive[k], histories[k], rounds[k])
                for k, (seed, start) in enumerate(zip(seeds, starts))]

    def _summary(self, measure: str, seed: int, final: LaneStart, alive: dict,
                 history: list[dict], rounds: list[dict]) -> dict:
        """A seed's record (see :meth:`run`); ``final`` holds its last params and masks."""
        report = prune.layer_report(prune.apply_masks(final.params, final.masks),
                                    jax.device_get(final.masks), positions=self.positions)
        finetune = [r['test_accuracy'] for r in history if r['phase'] == 'finetune'] or [
            history[-1]['test_accuracy']]
        return {'measure': measure, 'seed': seed, 'history': history, 'rounds': rounds,
                'kept': {n: int(v.sum()) for n, v in alive.items()},
                'widths': {g.name: g.width for g in self.groups},
                'filters': prune.filter_report(alive), 'accounting': report['total'],
                'final_test_accuracy': finetune[-1], 'best_test_accuracy': max(finetune)}

    def epochs_per_run(self) -> int:
        """Epochs of one seed's run (for progress bars)."""
        return self.settings.rounds * self.settings.round_epochs + self.settings.finetune_epochs


def run_all(settings: PruneSettings, measures: Sequence[str], seeds: Sequence[int], *,
            out_dir: str | None = None, description: str = 'prune'
            ) -> tuple[PruneRunner, list[dict]]:
    """Every (measure, seed) run of ``settings``, with one progress bar over all epochs.

    Args:
      settings: the pruning settings.
      measures: measure names, ``'dense'`` included if wanted.
      seeds: consecutive seeds, trained as the lanes of each engine run.
      out_dir: where the engine runs live (``out_dir/runs/<measure>-phase<p>``) and are
        resumed from; None: a temporary folder, deleted afterwards.
      description: the progress bar's label.

    Returns:
      The runner and one record per (seed, measure) (:meth:`PruneRunner.run`), seed-major.
    """
    from jaxnorm.papers import common  # the experiments' compile cache; imports no paper
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix='jaxnorm-prune-'))
        stack.enter_context(common.shared_compilations())
        runner = PruneRunner(settings, out_dir)
        progress = stack.enter_context(tqdm(
            total=len(measures) * len(seeds) * runner.epochs_per_run(), desc=description,
            unit='epoch'))
        by_measure = {measure: runner.run(measure, seeds, progress) for measure in measures}
    return runner, [by_measure[measure][k] for k in range(len(seeds)) for measure in measures]


__all__ = ['DENSE', 'PHASE_SEED_STRIDE', 'LaneStart', 'PruneRunner', 'PruneSettings',
           'check_seeds', 'lane_states', 'run_all', 'stack_lanes']
