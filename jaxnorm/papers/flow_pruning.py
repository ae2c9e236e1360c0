"""Gradient-flow pruning (Lubana & Dick, arXiv:2009.11839): which importance measures to use
when pruning early in training.

Claims (abstract): (i) magnitude-based pruning removes the parameters that contribute least
to reducing the loss, so magnitude-pruned models converge faster than with
magnitude-agnostic measures; (ii) loss-preservation pruning preserves the first-order model
dynamics; (iii) gradient-norm-based pruning (GraSP) changes second-order dynamics, and
raising the gradient norm by pruning gives poor models; the proposed gradient-norm
preservation |θ·Hg| does better, and GraSP damages early layers.

Setup: digits (1,437 train / 360 test, 8x8), vgg_cfg10 (VGG-13's ten convs, stride-2
downsampling, conv -> BN -> ReLU) at width 0.25 (16..128 filters), SGD momentum 0.9, weight
decay 1e-4, batch 64. Pruning starts from initialization: at ``--quick`` 2 rounds of 1 epoch
at lr 0.1 (still iterative), each removing r_k = p / (k p + n (1 - p)) of the alive filters
by one global ranking of raw scores (per-layer minimum floor(0.05 w) + 1), so that p = 75 %
of the filters are gone after the second epoch; then 4 epochs of cosine fine-tuning from
lr 0.1 (fresh optimizer each phase, as the reference). Measures: magnitude, loss
preservation |θg| (T = 1), its magnitude-biased variant, GraSP θ·Hg (T = 200),
gradient-norm preservation |θ·Hg| (T = 1), random, and the dense model on the same schedule;
BN scores in eval mode, g over 4 random batches of 64, Hg over one class-balanced batch per
class (16 images each). Every training phase (each round, the
fine-tuning) of a measure is one engine run (``jaxnorm.train.fit``) with the seeds as lanes
and the masks held by the ``sparsity`` extension, in ``OUT/flow_pruning/runs/<measure>-phase<p>``
(a rerun resumes them); phase p draws its batches with seed ``s + 1000 p``
(:data:`jaxnorm.pruning.PHASE_SEED_STRIDE`). Every run of a seed shares its initialization
and data orders, so measures are compared in pairs.

Checks (declared before the run by :func:`declare_checks`; the unit of replication is the
seed, every measure of a seed sharing its initialization and data order, so each claim is
judged on per-seed paired differences with the 90 % paired t-interval of
:mod:`jaxnorm.papers.checks`; the paper states no effect sizes, so no check is powered):
  * claim (i) ``magnitude_converges_faster``: loss_preservation - magnitude in mean training
    loss over the first half of fine-tuning (nats), superiority over 0.
  * claim (ii) ``loss_preservation_least_loss_change``: for every other pruning measure, its
    |training-loss change| at a masking step (mean over the rounds) minus loss
    preservation's (nats), superiority over 0 in every cell (Holm).
  * claim (iii-a) ``grad_norm_preservation_beats_grasp``: grad_norm_preservation - grasp in
    final test accuracy (points), superiority over 0.
  * claim (iii-b) ``grasp_thins_early_layers``: grad_norm_preservation's share of filters
    kept in the first third of the layers minus GraSP's (points; the paper's comparison: the
    fix it proposes for GraSP), superiority over 0. The share against the mean of all other
    measures is reported too (random and magnitude pruning thin early layers for reasons
    unrelated to the claim).
  * sanity ``equal_filter_budget``: in every seed, every measure removed the same number of
    filters (the global ranking removes floor(r_k x alive) each round by construction).
  * Diagnostic without a check: the share of the alive filters' |g|^2 = -dL/dt that the
    removed filters carried (claim i's mechanism, in this operationalization).

    python scripts/experiments/flow_pruning.py --quick --out results        # ~2 min, 2 CPU cores
    python scripts/experiments/flow_pruning.py --seeds 5 --out results       # 25 rounds, width 1
    python scripts/experiments/flow_pruning.py --scale paper --out results  # VGG-13, CIFAR-10

The settings of each scale are :func:`get_config`'s. At ``--scale paper`` (:data:`PAPER`, the
paper's VGG-13 on CIFAR-10, or a ``scripts/prune_model.py`` config of PruneSettings fields given
with ``--config``) the engine trains the seeds' lanes over every device.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import time
from typing import Any, Mapping

import numpy as np

from jaxnorm import pruning, pruning_report
from jaxnorm.papers import checks, common
from jaxnorm.pruning_report import by_measure, mean_and_std

NAME = 'flow_pruning'
CLAIM = ('Pruning early in training (Lubana & Dick): magnitude-pruned models converge faster '
         'than loss-preservation-pruned ones; loss preservation changes the loss least at '
         'masking; gradient-norm preservation |θ·Hg| is more accurate than GraSP; GraSP '
         'thins the early layers.')
MEASURES = ('magnitude', 'loss_preservation', 'biased_loss_preservation', 'grasp',
            'grad_norm_preservation', 'random', pruning.DENSE)


# The paper's run (research/prune.md 1.5, the reference code's recipe): VGG-13 on CIFAR-10, 75 %
# of the filters removed in 25 one-epoch rounds from initialization, then fine-tuning; a round
# trains one epoch at the constant pruning rate 0.1, scores, and removes
# r_k = p / (k p + n (1 - p)) of the current filters; SGD momentum 0.9, weight decay 1e-4,
# batch 128; 160 epochs in all. Deviation: the code fine-tunes with [0.1, 0.01, 0.001] for
# [80 - rounds, 40, 40] epochs; jaxnorm-prune uses a cosine schedule over the same 135 epochs.
# The code's temperature T = 5 on the logits for training and scoring is kept for the
# gradient-based measures (GraSP uses its own T = 200). ``scripts/configs/flow_pruning.py``
# hands these values (PruneSettings fields) to ``scripts/prune_model.py``.
PAPER = {
    'model': 'vgg13',
    'model_kwargs': {},
    'dataset': 'cifar10',
    'target': 0.75,
    'rounds': 25,
    'round_epochs': 1,
    'finetune_epochs': 135,
    'batch_size': 128,
    'prune_lr': 0.1,
    'lr': 0.1,
    'momentum': 0.9,
    'weight_decay': 1e-4,
    'gradient_temperature': 5.0,
    'grasp_temperature': 200.0,
}


def get_config(scale: str) -> pruning.PruneSettings:
    """The pruning settings at ``scale``: ``'quick'`` vgg_cfg10 at width 0.25 on digits, 2
    one-epoch rounds, 4 epochs of fine-tuning (3 left accuracies at 76-91 %), 4 gradient
    batches and 16 images per class for Hg (the module docstring's setup; 21 engine runs, whose per-run tracing, init and
    plotting, and the two train-step and two scoring compiles, cost about as much as the
    training itself);
    ``'standard'`` the reference schedule's 25 one-epoch rounds at full width, 40 epochs of
    fine-tuning, 64 images per class for Hg and 20 gradient batches; ``'paper'`` the paper's
    VGG-13 on CIFAR-10 (:data:`PAPER`)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return pruning.PruneSettings(model='vgg_cfg10', model_kwargs={'width': 0.25},
                                     rounds=2, round_epochs=1, finetune_epochs=4,
                                     gradient_batches=4, hvp_per_class=16)
    return pruning.PruneSettings(model='vgg_cfg10', model_kwargs={'width': 1.0}, rounds=25,
                                 round_epochs=1, finetune_epochs=40, hvp_per_class=64,
                                 gradient_batches=20)


def paired(runs: dict[str, list[dict]], a: str, b: str, metric) -> dict:
    """Mean and standard error of the per-seed differences metric(a) - metric(b) (the old
    rules' statistic, kept for the notes)."""
    d = per_seed(runs, a, metric) - per_seed(runs, b, metric)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
    return {'a': a, 'b': b, 'mean_a': float(per_seed(runs, a, metric).mean()),
            'mean_b': float(per_seed(runs, b, metric).mean()), 'mean_difference': float(d.mean()),
            'se': se, 'per_seed': d.tolist()}


def per_seed(runs: dict[str, list[dict]], measure: str, metric) -> np.ndarray:
    """metric(record) of ``measure``'s runs in seed order (so measures pair by seed)."""
    return np.array([metric(r) for r in sorted(runs[measure], key=lambda r: r['seed'])],
                    np.float64)


def early_finetune_loss(record: dict) -> float:
    losses = [h['train_loss'] for h in record['history'] if h['phase'] == 'finetune']
    return float(np.mean(losses[:max(1, len(losses) // 2)]))


def early_layer_share(record: dict) -> float:
    names = list(record['widths'])[:max(1, len(record['widths']) // 3)]
    return sum(record['kept'][n] for n in names) / sum(record['widths'][n] for n in names)


def abs_loss_change(record: dict) -> float:
    """|training loss after - before masking|, mean over the pruning rounds."""
    return float(np.mean([abs(d['train_loss_after'] - d['train_loss_before'])
                          for d in record['rounds']]))


def filters_removed(record: dict) -> int:
    return sum(record['widths'].values()) - sum(record['kept'].values())


PRUNED = tuple(m for m in MEASURES if m != pruning.DENSE)
LOSS_CHANGE_RIVALS = tuple(m for m in PRUNED if m != 'loss_preservation')


def declare_checks(seeds: int) -> dict[str, checks.Check]:
    """The section's checks, declared before any training (see the module docstring)."""
    return {check.name: check for check in (
        checks.Check(
            'magnitude_converges_faster',
            'Claim (i): magnitude-pruned models converge faster than loss-preservation-pruned '
            'ones (lower training loss early in fine-tuning).',
            'claim', 'loss_preservation minus magnitude mean training cross-entropy over the '
            'first half of fine-tuning (nats; > 0: magnitude lower)', 'superiority', seeds),
        checks.Check(
            'loss_preservation_least_loss_change',
            'Claim (ii): loss-preservation pruning preserves the first-order dynamics, so '
            'masking changes the training loss less than with any other measure.',
            'claim', 'other measure minus loss_preservation |training-loss change| at a '
            'masking step, mean over the rounds (nats); one cell per other measure ('
            + ', '.join(LOSS_CHANGE_RIVALS) + ')', 'superiority', seeds, aggregate='all'),
        checks.Check(
            'grad_norm_preservation_beats_grasp',
            'Claim (iii): raising the gradient norm by pruning (GraSP) gives poorer models than '
            'the proposed gradient-norm preservation |θ·Hg|.',
            'claim', 'grad_norm_preservation minus grasp final test accuracy (points)',
            'superiority', seeds),
        checks.Check(
            'grasp_thins_early_layers',
            'Claim (iii): GraSP damages the early layers: it keeps fewer of their filters than '
            'gradient-norm preservation, the fix the paper proposes for it.',
            'claim', "grad_norm_preservation minus grasp share of the filters kept in the "
            "first third of the layers (points)", 'superiority', seeds),
        checks.Check(
            'equal_filter_budget',
            'Every measure removes the same number of filters (the global ranking removes '
            'floor(r_k x alive filters) each round by construction).',
            'sanity', 'filters removed by each pruning measure in a seed', 'rule', seeds,
            rule='every pruning measure removed the same number of filters'),
    )}


def evaluate_checks(declared: dict[str, checks.Check], records: list[dict]) -> list[dict]:
    """The declared checks on the per-seed numbers of ``records``."""
    runs = by_measure(records)
    lp = per_seed(runs, 'loss_preservation', abs_loss_change)
    accuracy = lambda r: 100 * r['final_test_accuracy']  # noqa: E731
    early = lambda r: 100 * early_layer_share(r)  # noqa: E731
    removed = np.array([[filters_removed(r) for r in sorted(runs[m], key=lambda r: r['seed'])]
                        for m in PRUNED])
    return [
        declared['magnitude_converges_faster'].evaluate(
            per_seed(runs, 'loss_preservation', early_finetune_loss),
            per_seed(runs, 'magnitude', early_finetune_loss)),
        declared['loss_preservation_least_loss_change'].evaluate_cells(
            {m: (per_seed(runs, m, abs_loss_change), lp) for m in LOSS_CHANGE_RIVALS}),
        declared['grad_norm_preservation_beats_grasp'].evaluate(
            per_seed(runs, 'grad_norm_preservation', accuracy), per_seed(runs, 'grasp', accuracy)),
        declared['grasp_thins_early_layers'].evaluate(
            per_seed(runs, 'grad_norm_preservation', early), per_seed(runs, 'grasp', early)),
        declared['equal_filter_budget'].evaluate_rule(
            (removed == removed[:1]).all(0), value=float(removed.mean())),
    ]


def old_rules(records: list[dict]) -> dict:
    """The rules of the pre-declared-checks version (mean against 2 SE, or every seed), on
    this run: kept for the notes."""
    runs = by_measure(records)
    faster = paired(runs, 'magnitude', 'loss_preservation', early_finetune_loss)
    faster['verdict'] = ('reproduced' if faster['mean_difference'] < -2 * faster['se'] else
                         'direction only' if faster['mean_difference'] < 0 else 'not reproduced')
    accuracy = paired(runs, 'grad_norm_preservation', 'grasp',
                      lambda r: 100 * r['final_test_accuracy'])
    gap, se = accuracy['mean_difference'], accuracy['se']
    accuracy['verdict'] = ('reproduced' if gap > 2 * se else
                           'not reproduced' if gap < -2 * se else 'tie')
    thins = paired(runs, 'grasp', 'grad_norm_preservation', early_layer_share)
    d = np.asarray(thins['per_seed'])
    thins['verdict'] = ('reproduced' if np.all(d < 0) else
                        'direction only' if d.mean() < 0 else 'not reproduced')
    others = [m for m in runs if m not in ('grasp', pruning.DENSE)]
    thins['all_other_measures_early_share'] = float(np.mean(
        [early_layer_share(r) for m in others for r in runs[m]]))
    thins['early_layers'] = list(records[0]['widths'])[:max(1, len(records[0]['widths']) // 3)]
    return {'magnitude_converges_faster': {
                'rule': 'magnitude - loss_preservation, mean training loss over the first half '
                        'of fine-tuning; reproduced if < -2 SE', **faster},
            'grad_norm_preservation_at_least_grasp': {
                'rule': 'grad_norm_preservation - grasp, final test accuracy (points); '
                        'reproduced if > 2 SE, tie if within 2 SE', **accuracy},
            'grasp_thins_early_layers': {
                'rule': "GraSP's share of filters kept in the first third of the layers minus "
                        "grad_norm_preservation's; reproduced if < 0 in every seed", **thins}}


def notes(declared: dict[str, checks.Check], old: dict) -> list[str]:
    """The old rules, their outcomes on this run, and the declared rules that replace them."""
    renamed = {'grad_norm_preservation_at_least_grasp': 'grad_norm_preservation_beats_grasp'}
    out = []
    for name, rule in old.items():
        new = declared[renamed.get(name, name)]
        out.append(f"Old rule {name!r} ({rule['rule']}): '{rule['verdict']}' on this run "
                   f"(held: {'yes' if rule['verdict'] == 'reproduced' else 'no'}; mean "
                   f"{rule['mean_difference']:+.4g} ± {rule['se']:.2g} SE). New: {new.name!r}, "
                   f"{new.describe()}.")
    out += [
        "'grad_norm_preservation_at_least_grasp' is renamed 'grad_norm_preservation_beats_grasp':"
        " the old rule held only when the gap exceeded 2 SE ('tie' did not hold), i.e. "
        'superiority, which the new check keeps.',
        "'loss_preservation_least_loss_change' was a diagnostic without a verdict (the table's "
        'abs(dL) at masking column); it is now a claim check (claim ii).',
        "'equal_filter_budget' is new: a sanity check that the measures are compared at the "
        'same number of removed filters.',
        "The removed |g|^2 share (claim i's mechanism) stays a diagnostic in the table, without "
        'a check: the paper states it as an explanation, not as a measured claim.',
        'The paper states no effect sizes: no check is powered.',
    ]
    return out


def diagnostics(records: list[dict]) -> dict:
    """Per measure: loss change at masking, removed |g|^2 share, final accuracy (mean, std)."""
    out = {}
    for measure, runs in by_measure(records).items():
        row = {'final_test_accuracy': mean_and_std([100 * r['final_test_accuracy']
                                                    for r in runs]),
               'best_test_accuracy': mean_and_std([100 * r['best_test_accuracy'] for r in runs]),
               'early_finetune_train_loss': mean_and_std([early_finetune_loss(r) for r in runs]),
               'early_layer_share_kept': mean_and_std([early_layer_share(r) for r in runs])}
        if runs[0]['rounds']:
            row['abs_loss_change_at_masking'] = mean_and_std(
                [np.mean([abs(d['train_loss_after'] - d['train_loss_before'])
                          for d in r['rounds']]) for r in runs])
            row['removed_grad_sq_share'] = mean_and_std(
                [np.mean([d['removed_grad_sq_share'] for d in r['rounds']]) for r in runs])
            row['kept_per_layer'] = {name: mean_and_std([r['kept'][name] for r in runs])
                                     for name in runs[0]['kept']}
        out[measure] = row
    return out


def table(diag: dict) -> list[str]:
    """Markdown table of the diagnostics, mean ± std over seeds."""
    def cell(row, key, digits, scale=1.0):
        if key not in row:
            return '-'
        mean, std = row[key]
        return f'{scale * mean:.{digits}f} ± {scale * std:.{digits}f}'
    rows = ['| measure | final test acc % | early fine-tune loss | abs(dL) at masking | '
            'removed abs(g)² share | early-layer filters kept % |', '|---|---|---|---|---|---|']
    for measure, row in diag.items():
        rows.append(f"| {measure} | {cell(row, 'final_test_accuracy', 2)} | "
                    f"{cell(row, 'early_finetune_train_loss', 3)} | "
                    f"{cell(row, 'abs_loss_change_at_masking', 3)} | "
                    f"{cell(row, 'removed_grad_sq_share', 3)} | "
                    f"{cell(row, 'early_layer_share_kept', 1, 100)} |")
    return rows


def paper_setting(values: Mapping[str, Any], source: str) -> pruning.PruneSettings:
    """The settings of paper-scale ``values`` (``scripts/prune_model.py`` config values:
    PruneSettings fields; ``source`` names them in errors), checked; ValueError on unknown
    fields or bad values."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(pruning.PruneSettings)})
    if unknown:
        raise ValueError(f'{source}: unknown setting(s) {unknown}; valid: PruneSettings fields')
    settings = pruning.PruneSettings(**copy.deepcopy(dict(values)))  # PAPER stays as it is
    settings.check()
    return settings


def main(argv=None) -> int:
    args, base = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    started = time.perf_counter()
    s = dataclasses.replace(base, data_dir=args.data_dir)
    declared = declare_checks(common.declared_seeds(args))
    out_dir = common.output_dir(args, NAME)
    runner, records = pruning.run_all(s, MEASURES, list(range(args.seeds)), out_dir=out_dir,
                                      description=NAME)
    judged = evaluate_checks(declared, records)
    old, diag = old_rules(records), diagnostics(records)
    network = s.model + ''.join(f', {k} {v}' for k, v in s.model_kwargs.items())
    plots = pruning_report.write_plots(
        records, out_dir, NAME, f'{network} / BN on {s.dataset}: '
        f'{100 * s.target:.0f} % of filters pruned in {s.rounds} one-epoch rounds, '
        f'{args.seeds} seeds')
    ran = (f'{network} with BatchNorm on {s.dataset}: '
           f'{100 * s.target:.0f} % of the filters removed in {s.rounds} one-epoch rounds from '
           f'initialization by each of {len(MEASURES) - 1} measures (global ranking), then '
           f'{s.finetune_epochs} epochs of fine-tuning; dense baseline; {args.seeds} seeds.')
    checks.write_results(
        out_dir, paper='Lubana & Dick, arXiv:2009.11839', claim=CLAIM, ran=ran,
        scale=args.scale, seeds=args.seeds, table=table(diag), checks=judged,
        figures=plots, started=started, notes=notes(declared, old),
        setup={'quick': args.quick, 'seeds': args.seeds, 'settings': dataclasses.asdict(s),
               'layers': [g.name for g in runner.groups]},
        old_rules=old, diagnostics=diag, runs=records)
    return 0


if __name__ == '__main__':
    sys.exit(main())
