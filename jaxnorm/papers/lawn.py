"""LAWN (arXiv:2108.05839): SGD-momentum, Adam and LAMB with and without LAWN, tuned baselines.

Claim (abstract): LAWN, stacked onto any optimizer, constrains the weight norms of the final
homogeneous sub-network and so attenuates the logits; it generalizes better, with the largest
gain for Adam, and improves every optimizer at large batch sizes.

Setup (:func:`get_config`). Model: an MLP with LayerNorm (two hidden layers of 100 at
``standard``, the MNIST-1D paper's MLP width without its residual, so that the last LayerNorm
is followed by the head alone); an MLP is the model that trains an 8-seed, two-dataset,
three-optimizer grid with full-batch runs in minutes on 2 CPU cores (a CNN's per-seed
convolutions are several times slower there). LAWN's constrained set is the default mask of
:func:`jaxnorm.homogeneous.final_homogeneous_mask`: the head's kernel and the last
LayerNorm's scale and offset (a ``head_only`` variant, the kernels-only mask of earlier
versions, runs in one cell per dataset as a diagnostic). Arms per (dataset, batch, optimizer)
cell: plain (Adam's plain arm is AdamW: decoupled decay, ``optimizer='adamw'``; SGD coupled L2;
LAMB its own decoupled decay; every parameter decayed) with a weight decay tuned from
:data:`WD_GRID`, and LAWN (no decay: its premise) with a free-phase fraction tuned from
``free_fractions``: the same budget, three values each, trained with ``tune_seeds`` seeds on a
held-out validation split of the training data (never the test set) and picked by mean
validation accuracy (ties: the first). The picked arms then train with every seed on the
training set and are tested. Learning rates (:data:`LEARNING_RATES`, [infer]: common values
for each optimizer, not tuned, the same for both arms; at ``standard`` the full batch's are
8x, square-root scaling from batch 64, ``lr_scale``), 5 % warmup then cosine.

Datasets at ``standard``: ``mnist1d_large``, trained on its first 4,000 training sequences (a
full-batch step over all 40,000 costs ten times as much), validated on its last 4,000
(``train[36000:]``, never trained on) and tested on its 10,000 test sequences (ten times
mnist1d's test set, so less test noise); ``mnist5k`` at 14 x 14 (bilinear, a 4x cheaper first
layer), 4,000 train / 1,000 test, tuned on an 80/20 split of its training set. Batches: 64
(12 passes) and the full training set (100 steps), each for the budget in ``batches``
(``(batch, epochs, passes per epoch)``: an engine epoch is ``passes`` passes, so runs are
logged and checkpointed at ``epochs`` points only). ``quick``: digits, batch 32 and full, no
tuning (one value per grid: WD 0, free fraction 0.1; not powered), plus free fraction 0.3 in
the Adam full-batch cell and the head-only variant (14 runs, about a minute).

Training: every run is the engine, ``jaxnorm.train.fit`` (seed-batched, in-memory splits,
checkpointed under ``OUT/lawn/runs/<run>``, resumed or skipped when rerun); each final state is
measured in eval mode (:class:`Measure`: train cross-entropy, mean and largest train-logit
norm, accuracy on the evaluation split, the constrained norm and the logit bound
:func:`logit_norm_bound`).

Checks (declared in :func:`jaxnorm.papers.lawn_report.declare_checks` before any run; seeds
are the unit of replication, plain and LAWN share each seed's initialization and batch order):
sanity rules (the mechanics): norms constant after the switch, logits bounded by the frozen
norms, logits lower and loss floor higher than plain training without decay (on the tuning
runs at ``standard``: every free fraction against WD 0); claims on a seed's LAWN-minus-plain
test accuracy (points) per (dataset, optimizer, batch) cell, 90 % paired intervals, Holm over
cells: adam_improves, adam_gains_most, all_improve_at_large_batch, non_inferiority_1pt. The
paper gives no number the notes could read (``research/lawn_unify_papers.md``), so the
standard checks are not powered for a paper number: they declare 1 point, the smallest gain
worth detecting (about what the abstract's "greatly improves" must exceed on these test sets).

    python -m jaxnorm.papers.lawn --quick --out results     # 14 fits, about a minute
    python -m jaxnorm.papers.lawn --scale standard --seeds 8 --out results
    python -m jaxnorm.papers.lawn --scale paper --out results   # jaxnorm.papers.lawn_paper
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import optim
from jaxnorm import checkpoints, config as config_lib, data, homogeneous, models
from jaxnorm.losses import precise_cross_entropy
from jaxnorm.papers import checks, common
from jaxnorm.papers.lawn_paper import CLAIM, PAPER, paper_scale, paper_setting  # noqa: F401
from jaxnorm.papers.lawn_report import (accuracy_table, declare_checks, diagnostics,
                                        evaluate_checks, plot)

LEARNING_RATES = {'sgd': 0.05, 'adam': 2e-3, 'lamb': 1e-2}
# Plain arms: Adam's is AdamW (decoupled decay; optax.adamw with weight_decay 0 is Adam).
PLAIN_OPTIMIZER = {'sgd': 'sgd', 'adam': 'adamw', 'lamb': 'lamb'}
# [infer] Weight decay grids: 0 (the untuned baseline) and two values a decade apart around
# each optimizer's usual setting (SGD coupled L2 5e-4; AdamW's and LAMB's decoupled decay,
# multiplied by the learning rate in optax, 0.01-0.1), moved up a little where a pilot picked
# the top of {0, 5e-4, 5e-3} (SGD) and {0, 0.05, 0.5} (AdamW) at batch 64.
WD_GRID = {'sgd': (0.0, 1e-3, 1e-2), 'adam': (0.0, 0.1, 1.0), 'lamb': (0.0, 0.01, 0.1)}
# [infer] LAWN's free-phase fractions: a pilot over (0.05, 0.2, 0.5) picked 0.5 in 11 of 12
# cells, so the grid reaches past it.
FREE_FRACTIONS = (0.1, 0.3, 0.7)
# Training / evaluation splits per dataset and stage ('tune': a held-out part of the training
# split, never the test set), plus load options.
DATASETS = {
    'digits': {'train': 'train', 'test': 'test', 'tune': ('train[:80%]', 'train[80%:]')},
    'mnist1d_large': {'train': 'train[:4000]', 'test': 'test',
                      'tune': ('train[:4000]', 'train[36000:]')},
    'mnist5k': {'train': 'train', 'test': 'test', 'tune': ('train[:80%]', 'train[80%:]'),
                'image_size': 14, 'resize': 'bilinear'},
}


def get_config(scale: str):
    """What the experiment runs at ``scale`` (module docstring): ``'quick'`` the README's CPU
    demonstration on digits (14 fits of 3 seeds, about a minute), ``'standard'`` the committed
    report (mnist1d_large and mnist5k, tuned arms), ``'paper'`` the engine config of Adam-LAWN
    on VGG-13, CIFAR-10 (:data:`PAPER`)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, 'jaxnorm.papers.lawn_paper.PAPER')
    if scale == 'quick':
        return {'datasets': ('digits',), 'model': ('mlp', 'ln', {'width': 0.5}),
                'batches': {'small': (32, 12, 1), 'full': (None, 5, 20)},
                'free_fractions': (0.1,), 'wd_grid': {o: (0.0,) for o in LEARNING_RATES},
                'tune_seeds': 0, 'sweep': (0.3,), 'variant_cell': ('small', 'lamb'),
                'lr_scale': {'small': 1.0, 'full': 1.0}, 'effect': None}
    return {'datasets': ('mnist1d_large', 'mnist5k'),
            'model': ('mlp', 'ln', {'hidden': (100, 100)}),
            # 12 epochs at batch 64 logged at 3 points; 100 full-batch steps at 4.
            'batches': {'small': (64, 3, 4), 'full': (None, 4, 25)},
            'free_fractions': FREE_FRACTIONS, 'wd_grid': WD_GRID, 'tune_seeds': 2,
            'sweep': (), 'variant_cell': ('small', 'lamb'),
            # [infer] square-root LR scaling from batch 64 to the full 4,000 (x sqrt(62.5)):
            # with the batch-64 rates, 100 full-batch steps leave mnist1d at 33-43 %.
            'lr_scale': {'small': 1.0, 'full': 8.0}, 'effect': 1.0}


def per_seed(fn):
    """``fn`` over a leading seed axis of every argument, one seed after the other."""
    return lambda *args: jax.lax.map(lambda seed_args: fn(*seed_args), args)


def load_splits(dataset: str, stage: str, data_dir: str | None) -> data.StandardizedSplits:
    """The standardized (train, evaluation) splits of ``dataset`` at ``stage``: ``'final'``
    trains on the training slice and evaluates on the test split, ``'tune'`` trains on a part
    of the training split and evaluates on a held-out part of it (:data:`DATASETS`)."""
    if dataset not in DATASETS:
        raise ValueError(f'unknown dataset {dataset!r}; choose one of {tuple(DATASETS)}')
    spec = DATASETS[dataset]
    train, evaluate = spec['tune'] if stage == 'tune' else (spec['train'], spec['test'])
    return data.load_standardized(dataset, data_dir=data_dir, train_split=train,
                                  test_split=evaluate, image_size=spec.get('image_size'),
                                  resize=spec.get('resize', 'pad'))


def logit_norm_bound(params, norm: str, head: str = 'head') -> jax.Array:
    """Upper bound on every sample's logit norm of an MLP whose layer ``norm`` (LayerNorm:
    :math:`\\lVert\\hat x\\rVert \\le \\sqrt d`) is followed by ReLU and the Dense ``head``:
    :math:`\\lVert W\\rVert_F(\\sqrt d\\lVert\\gamma\\rVert + \\lVert\\beta\\rVert) +
    \\lVert b\\rVert` (:mod:`jaxnorm.homogeneous`). LAWN's default mask freezes every norm in
    it but the head bias's."""
    gamma, beta = params[norm]['scale'], params[norm]['bias']
    bias = params[head].get('bias', jnp.zeros(()))
    return (jnp.linalg.norm(params[head]['kernel'])
            * (jnp.sqrt(gamma.size) * jnp.linalg.norm(gamma) + jnp.linalg.norm(beta))
            + jnp.linalg.norm(bias))


class Measure:
    """Eval-mode metrics of a trained model, every seed at once (measurement only) on one
    (dataset, stage)'s splits: train cross-entropy, mean and largest train-logit norm,
    accuracy on the evaluation split, the norm of the default constrained set and
    :func:`logit_norm_bound` (LayerNorm MLPs)."""

    def __init__(self, model, splits: data.StandardizedSplits, last_norm: str | None):
        self.model, self.last_norm = model, last_norm
        self.train_x, self.train_y = jnp.asarray(splits.train_images), splits.train_labels
        self.test_x, self.test_y = jnp.asarray(splits.test_images), splits.test_labels
        self.mask = homogeneous.final_homogeneous_mask(model, self.train_x[:1])
        self.measure = jax.jit(per_seed(self._measure))

    def _measure(self, params, stats):
        variables = {'params': params, 'batch_stats': stats}
        train_logits = self.model.apply(variables, self.train_x, train=False)
        test_logits = self.model.apply(variables, self.test_x, train=False)
        logit_norms = jnp.linalg.norm(train_logits, axis=-1)
        norms = optim.constrained_norms(params, self.mask)
        out = {'train_loss': precise_cross_entropy(train_logits, self.train_y).mean(),
               'logit_norm': logit_norms.mean(), 'max_logit_norm': logit_norms.max(),
               'test_accuracy': jnp.mean(jnp.argmax(test_logits, -1) == self.test_y),
               'weight_norm': jnp.sqrt(sum(jnp.square(n) for n in norms.values()))}
        if self.last_norm is not None:
            out['logit_bound'] = logit_norm_bound(params, self.last_norm)
        return out


BASE = {'momentum': 0.9, 'schedule': 'cosine', 'weight_decay': 0.0, 'progress': False,
        'keep_checkpoints': 1, 'eval_batch_size': 2000}


def run_name(run: dict) -> str:
    """The run's folder under ``OUT/lawn/runs``."""
    arm = ('plain-wd' + f"{run['weight_decay']:g}" if run['free_fraction'] is None
           else f"lawn{run['free_fraction']:g}")
    return '-'.join([run['stage'], run['dataset'], run['batch'], run['optimizer'], arm]
                    + ([run['mask']] if run['mask'] != 'default' else []))


def run_overrides(run: dict, s: dict, train_size: int) -> dict:
    """The engine config of one run (over :data:`BASE`): 5 % warmup, cosine; plain arms with
    their weight decay (Adam's as AdamW), LAWN without decay."""
    name, norm, options = s['model']
    batch, epochs, passes = s['batches'][run['batch']]
    fraction, spec = run['free_fraction'], DATASETS[run['dataset']]
    lawn = {} if fraction is None else {
        'lawn.free_epochs': fraction * epochs,
        'lawn.last_norm_affine': run['mask'] == 'default'}
    return {'model': name, 'norm': norm, 'model_kwargs': options, 'dataset': run['dataset'],
            'image_size': spec.get('image_size'), 'resize': spec.get('resize'),
            'batch_size': batch or train_size, 'epochs': epochs, 'passes_per_epoch': passes,
            'optimizer': (PLAIN_OPTIMIZER[run['optimizer']] if fraction is None
                          else run['optimizer']),
            'lr': LEARNING_RATES[run['optimizer']] * s['lr_scale'][run['batch']],
            'warmup_epochs': 0.05 * epochs,
            'weight_decay': run['weight_decay'], **lawn}


def cells(s: dict):
    return [(d, b, o) for d in s['datasets'] for b in s['batches'] for o in LEARNING_RATES]


def tuned(s: dict) -> bool:
    """Whether the setting tunes (a grid with more than one value and tuning seeds)."""
    return s['tune_seeds'] > 0 and (len(s['free_fractions']) > 1 or any(
        len(g) > 1 for g in s['wd_grid'].values()))


def tuning_plan(s: dict) -> list[dict]:
    """The tuning runs: every weight decay of the plain arm and every free fraction of LAWN."""
    if not tuned(s):
        return []
    return [{'stage': 'tune', 'role': 'tune', 'dataset': d, 'batch': b, 'optimizer': o,
             'free_fraction': f, 'weight_decay': w, 'mask': 'default'}
            for d, b, o in cells(s)
            for f, w in [(None, w) for w in s['wd_grid'][o]]
            + [(f, 0.0) for f in s['free_fractions']]]


def choose(s: dict, tune_records: list[dict]) -> dict:
    """``{(dataset, batch, optimizer): {'weight_decay', 'free_fraction'}}``: the values with
    the best mean validation accuracy (ties: the first of the grid); without tuning, the
    first value of each grid."""
    chosen = {}
    for d, b, o in cells(s):
        runs = [r for r in tune_records if (r['dataset'], r['batch'], r['optimizer']) == (d, b, o)]

        def best(key, grid, lawn):
            scores = {r[key]: float(np.nanmean(r['final']['test_accuracy'])) for r in runs
                      if (r['free_fraction'] is not None) == lawn}
            return max(grid, key=lambda v: (scores.get(v, -1.0), -grid.index(v)))
        chosen[d, b, o] = {'weight_decay': best('weight_decay', s['wd_grid'][o], False),
                           'free_fraction': best('free_fraction', s['free_fractions'], True)}
    return chosen


def final_plan(s: dict, chosen: dict) -> list[dict]:
    """The tested runs: each cell's plain and LAWN arm at the chosen values, the quick sweep
    (Adam, full batch) and the head-only mask variant in ``variant_cell`` per dataset."""
    runs = []
    for d, b, o in cells(s):
        c = chosen[d, b, o]
        base = {'stage': 'final', 'dataset': d, 'batch': b, 'optimizer': o, 'mask': 'default'}
        runs += [{**base, 'role': 'grid', 'free_fraction': None,
                  'weight_decay': c['weight_decay']},
                 {**base, 'role': 'grid', 'free_fraction': c['free_fraction'],
                  'weight_decay': 0.0}]
        if (b, o) == ('full', 'adam'):
            runs += [{**base, 'role': 'sweep', 'free_fraction': f, 'weight_decay': 0.0}
                     for f in s['sweep'] if f != c['free_fraction']]
        if (b, o) == tuple(s['variant_cell']):
            runs.append({**base, 'role': 'mask_variant', 'mask': 'head_only',
                         'free_fraction': c['free_fraction'], 'weight_decay': 0.0})
    return runs


def summarize(run: dict, runs: list[list[dict]], measured: dict) -> dict:
    """Final per-seed metrics (eval mode), and the worst relative norm error after LAWN's
    switch over the engine's per-epoch records."""
    out = {key: np.asarray(value).tolist() for key, value in measured.items()}
    if run['free_fraction'] is not None:
        out['norm_error_per_seed'] = [
            max((abs(r['lawn_weight_norms'][path] / target - 1) for r in records
                 if r['step'] > run['free_steps'] and 'lawn_weight_norms' in r
                 for path, target in r['lawn_target_norms'].items() if target > 0),
                default=float('nan'))
            for records in runs]
    return out


def curve(runs: list[list[dict]]) -> dict:
    """Seed means of the engine's per-epoch records against the step."""
    def norm(r):
        return (np.sqrt(sum(n ** 2 for n in r['lawn_weight_norms'].values()))
                if 'lawn_weight_norms' in r else np.nan)
    epochs = range(len(runs[0]))
    return {'steps': [runs[0][e].get('step', np.nan) for e in epochs],
            'weight_norm': [float(np.mean([norm(rs[e]) for rs in runs])) for e in epochs],
            **{key: [float(np.mean([rs[e][field] for rs in runs])) for e in epochs]
               for key, field in (('logit_norm', 'mean_logit_norm'),
                                  ('train_loss', 'train_loss'),
                                  ('test_accuracy', 'test_accuracy'))}}


def last_norm_name(s: dict) -> str | None:
    """The LayerNorm MLP's last norm layer (for :func:`logit_norm_bound`), else None."""
    name, norm, options = s['model']
    if name != 'mlp' or norm != 'ln':
        return None
    return f"norm{len(options.get('hidden', (256, 256)))}"


def train_runs(runs: list[dict], s: dict, seeds: int, out_dir: str,
               data_dir: str | None) -> list[dict]:
    """Train every run with :func:`jaxnorm.train.fit` and measure its final state."""
    base = config_lib.apply_overrides(config_lib.default_config(), BASE)
    name, norm, options = s['model']
    splits, measures, records = {}, {}, []
    for run in tqdm(runs, desc='lawn', unit='run', disable=not runs):
        key = (run['dataset'], run['stage'])
        if key not in splits:
            splits[key] = load_splits(*key, data_dir)
            model = models.get_model(name, norm=norm, num_classes=splits[key].num_classes,
                                     **options)
            measures[key] = Measure(model, splits[key], last_norm_name(s))
        n = len(splits[key].train_labels)
        overrides = run_overrides(run, s, n)
        run_seeds = s['tune_seeds'] if run['stage'] == 'tune' else seeds
        workdir = os.path.join(out_dir, 'runs', run_name(run))
        per_seed_records = common.fit_arms(base, {run_name(run): overrides}, run_seeds, out_dir,
                                           splits=splits[key])[run_name(run)]
        steps_per_epoch = n // overrides['batch_size'] * overrides['passes_per_epoch']
        # The rounding of jaxnorm.lawn.constrain.
        run['free_steps'] = (None if run['free_fraction'] is None else
                             round(overrides['lawn.free_epochs'] * steps_per_epoch))
        saved = checkpoints.load_arrays(workdir)
        measured = jax.device_get(measures[key].measure(saved['params'],
                                                        saved.get('batch_stats') or {}))
        records.append({**run, 'batch_size': overrides['batch_size'], 'seeds': run_seeds,
                        'total_steps': overrides['epochs'] * steps_per_epoch,
                        'final': summarize(run, per_seed_records, measured),
                        'curve': curve(per_seed_records)})
    return records


def run_all(s: dict, seeds: int, out_dir: str, data_dir: str | None) -> tuple[list, dict]:
    """Tuning runs, the choice per cell, then the tested runs; every record, and the choice."""
    with common.shared_compilations():
        tune_records = train_runs(tuning_plan(s), s, seeds, out_dir, data_dir)
        chosen = choose(s, tune_records)
        records = tune_records + train_runs(final_plan(s, chosen), s, seeds, out_dir, data_dir)
    return records, chosen


def main(argv=None) -> int:
    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    if args.scale == 'paper':
        return paper_scale(args, setting, common.output_dir(args, 'lawn'), time.perf_counter())
    s = setting
    declared = declare_checks(common.declared_seeds(args), s)
    started = time.perf_counter()
    out_dir = common.output_dir(args, 'lawn')
    records, chosen = run_all(s, args.seeds, out_dir, args.data_dir)
    results, notes = evaluate_checks(records, s, declared)
    setup = {'quick': args.quick, 'seeds': args.seeds, 'engine': 'jaxnorm.train.fit',
             'learning_rates': LEARNING_RATES, 'plain_optimizer': PLAIN_OPTIMIZER,
             'schedule': '5 % linear warmup, then cosine', 'splits': DATASETS,
             **{k: v for k, v in s.items() if k != 'model'},
             'model': {'name': s['model'][0], 'norm': s['model'][1], 'options': s['model'][2]},
             'chosen': {'/'.join(k): v for k, v in chosen.items()}}
    batches = ', '.join(f"{b} ({'full' if size is None else size}: {e} x {p} passes)"
                        for b, (size, e, p) in s['batches'].items())
    ran = (f"SGD-momentum, Adam and LAMB with and without LAWN on {', '.join(s['datasets'])}: "
           f"{s['model'][0]}/{s['model'][1]}, batches {batches}, {args.seeds} seeds; plain arms "
           f"(Adam: AdamW) with weight decay from {s['wd_grid']}, LAWN (no decay) with free "
           f"fraction from {s['free_fractions']}"
           + (f", each tuned on a held-out validation split with {s['tune_seeds']} seeds."
              if tuned(s) else ' (one value each: not tuned).'))
    checks.write_results(out_dir, paper='LAWN, arXiv:2108.05839', claim=CLAIM, ran=ran,
                         scale=args.scale, seeds=args.seeds,
                         table=accuracy_table(records, chosen), checks=results,
                         figures=plot(records, out_dir), started=started, notes=notes,
                         setup=setup, diagnostics=diagnostics(records, s), runs=records)
    return 0


if __name__ == '__main__':
    sys.exit(main())
