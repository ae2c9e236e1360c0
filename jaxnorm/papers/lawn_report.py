"""Declared checks, accuracy table, diagnostics and plots of :mod:`jaxnorm.papers.lawn`.

Every run record holds ``stage`` (``tune``: trained on part of the training split, evaluated
on a held-out part; ``final``: trained on the training split, tested), ``role`` (``tune``,
``grid``: a cell's plain or LAWN arm at the chosen values, ``sweep``: another free fraction,
``mask_variant``: the head-only mask), ``dataset``, ``batch``, ``optimizer``,
``free_fraction`` (None without LAWN), ``weight_decay``, ``mask`` (``default`` or
``head_only``), ``final`` (per-seed final metrics, eval mode; ``test_accuracy`` is on the
stage's evaluation split) and ``curve`` (seed means of the engine's per-epoch records).

The checks follow ``jaxnorm.papers.checks``: seeds are the unit of replication, accuracy
claims are paired tests per (dataset, optimizer, batch) cell with Holm control, the mechanics
are sanity rules held in every seed.
"""
from __future__ import annotations

import os

import numpy as np

from jaxnorm.papers import checks

OPTIMIZERS = ('sgd', 'adam', 'lamb')
NORM_TOLERANCE = 1e-4  # relative; the retraction's float32 rounding is far below it
BOUND_TOLERANCE = 1e-5  # relative slack of the logit bound for float32 rounding
NON_INFERIORITY_MARGIN = 1.0  # points
# nats: where both arms reach a near-zero loss (LAMB at full batch: 1e-4 to 2e-3 nats) the
# order of two such losses is float noise, not the mechanism (pilot: LAWN 2e-4, plain 1.9e-3
# in one seed with LAWN's logits at a third of plain's).
LOSS_TOLERANCE = 1e-3
GAIN = ("LAWN (tuned free fraction, no decay) minus plain (tuned weight decay; Adam: AdamW) "
        "final test accuracy (points) of one seed in the (dataset, optimizer, batch) cell; "
        "the arms share the seed's initialization and batch order")


def mean(values) -> float:
    return float(np.nanmean(values))


def declare_checks(seeds: int, s: dict) -> dict[str, checks.Check]:
    """The checks, declared before any run (``seeds`` per arm; ``s['effect']``: the gain in
    points the claims are powered for, None at the quick scale)."""
    effect = s['effect']
    mechanics = ('tuning runs (every free fraction against the plain arm without decay)'
                 if s['tune_seeds'] > 0 else 'tested runs without decay')
    declared = (
        checks.Check(
            'norms_constant_after_switch',
            "LAWN holds every constrained group's norm at its value at the switch (what its "
            'retraction does by construction)', 'sanity',
            'largest relative error of a constrained norm against its target over the logged '
            'points after the switch, one seed of one LAWN run', 'rule', seeds,
            rule=f'relative norm error after the switch <= {NORM_TOLERANCE:g} in every seed '
                 'of every LAWN run'),
        checks.Check(
            'logits_bounded', 'with the default mask (head kernel and the last LayerNorm\'s '
            'scale and offset) the frozen norms bound every logit vector: ||z|| <= ||W||_F '
            '(sqrt(d) ||gamma|| + ||beta||) + ||b|| (jaxnorm.homogeneous)', 'sanity',
            'largest train-logit norm and the bound from the final parameters, one seed of '
            'one LAWN run', 'rule', seeds,
            rule=f'largest logit norm <= bound x (1 + {BOUND_TOLERANCE:g}) in every seed of '
                 'every default-mask LAWN run'),
        checks.Check(
            'logits_attenuated', "LAWN's frozen norms keep the train logits smaller than plain "
            "training's without decay (the method's mechanism)", 'sanity',
            f'final mean train-logit norm of LAWN and plain, one seed; {mechanics}', 'rule',
            seeds, rule='final train-logit norm lower with LAWN in every cell and seed'),
        checks.Check(
            'loss_floor_higher', "LAWN keeps the training loss off zero: its final train loss "
            "lies above plain training's without decay (the method's mechanism)", 'sanity',
            f'final train cross-entropy (nats) of LAWN and plain, one seed; {mechanics}',
            'rule', seeds, rule=f'final train loss with LAWN above plain\'s minus '
                                f'{LOSS_TOLERANCE:g} nats in every cell and seed (a floor '
                                'not lower than plain training\'s)'),
        checks.Check(
            'adam_improves', "LAWN improves Adam's generalization over tuned AdamW (abstract: "
            '"LAWN is particularly impressive in improving Adam"), in every (dataset, batch)',
            'claim', GAIN, 'superiority', seeds, effect=effect),
        checks.Check(
            'adam_gains_most', "LAWN's accuracy gain is largest for Adam: above SGD's and "
            "LAMB's in every (dataset, batch)", 'claim',
            "Adam's LAWN gain minus SGD's or LAMB's (points) of one seed", 'superiority',
            seeds, effect=effect),
        checks.Check(
            'all_improve_at_large_batch', 'LAWN improves every optimizer at large batch '
            '(abstract: "it greatly improves all optimizers when used with large batch '
            'sizes"): full batch, SGD, Adam and LAMB, every dataset', 'claim', GAIN,
            'superiority', seeds, effect=effect),
        checks.Check(
            'non_inferiority_1pt', 'LAWN, stacked onto any optimizer, costs no accuracy: no '
            f'(dataset, optimizer, batch) cell loses more than {NON_INFERIORITY_MARGIN:g} '
            'point', 'claim', GAIN, 'non_inferiority', seeds, margin=NON_INFERIORITY_MARGIN),
    )
    return {check.name: check for check in declared}


def cell_key(r: dict) -> tuple:
    return r['dataset'], r['batch'], r['optimizer']


def grid(records: list[dict]) -> dict:
    """``{(dataset, batch, optimizer, lawn): final}`` of the tested arms."""
    return {(*cell_key(r), r['free_fraction'] is not None): r['final']
            for r in records if r['role'] == 'grid'}


def seed_gain(finals: dict, dataset: str, batch: str, optimizer: str) -> np.ndarray:
    """Per seed: LAWN minus plain test accuracy (points)."""
    return 100 * (np.asarray(finals[dataset, batch, optimizer, True]['test_accuracy'], float)
                  - np.asarray(finals[dataset, batch, optimizer, False]['test_accuracy'], float))


def mechanics_groups(records: list[dict]) -> dict:
    """``{cell: (plain without decay, [LAWN runs])}`` of the stage the mechanics are judged
    on (the tuning runs when there are any), default mask only."""
    stage = 'tune' if any(r['stage'] == 'tune' for r in records) else 'final'
    groups = {}
    for r in records:
        if r['stage'] != stage or r['mask'] != 'default':
            continue
        plain, lawn = groups.setdefault(cell_key(r), [None, []])
        if r['free_fraction'] is None and r['weight_decay'] == 0:
            groups[cell_key(r)][0] = r
        elif r['free_fraction'] is not None:
            lawn.append(r)
    return {k: (p, sorted(ls, key=lambda r: r['free_fraction'])) for k, (p, ls) in groups.items()
            if p is not None and ls}


def evaluate_checks(records: list[dict], s: dict, declared: dict[str, checks.Check]
                    ) -> tuple[list[dict], list[str]]:
    """The declared checks on the per-run summaries; the results and notes."""
    lawn_runs = [r for r in records if r['free_fraction'] is not None]
    errors = np.concatenate([r['final']['norm_error_per_seed'] for r in lawn_runs])
    results = [declared['norms_constant_after_switch'].evaluate_rule(
        errors <= NORM_TOLERANCE, value=float(np.nanmax(errors)))]
    bounded = [r for r in lawn_runs if r['mask'] == 'default' and 'logit_bound' in r['final']]
    ratios = np.concatenate([np.asarray(r['final']['max_logit_norm'])
                             / np.asarray(r['final']['logit_bound']) for r in bounded])
    results.append(declared['logits_bounded'].evaluate_rule(
        ratios <= 1 + BOUND_TOLERANCE, value=float(np.nanmax(ratios))))
    failures, groups = [], mechanics_groups(records)
    for name, key, sign in (('logits_attenuated', 'logit_norm', 1),
                            ('loss_floor_higher', 'train_loss', -1)):
        holds, slack = [], 0.0 if key == 'logit_norm' else -LOSS_TOLERANCE
        for cell, (plain, lawns) in groups.items():
            for r in lawns:
                ok = sign * (np.asarray(plain['final'][key]) - np.asarray(r['final'][key])) > slack
                holds += ok.tolist()
                failures += [f"{name} fails in {'/'.join(cell)} free fraction "
                             f"{r['free_fraction']:g} seed {k} (plain "
                             f"{plain['final'][key][k]:.3g}, LAWN {r['final'][key][k]:.3g})"
                             for k in np.flatnonzero(~ok)]
        results.append(declared[name].evaluate_rule(holds, value=int(np.sum(holds))))

    finals = grid(records)
    tested = sorted({k[:3] for k in finals if (*k[:3], True) in finals
                     and (*k[:3], False) in finals})
    gains = {f'{d}/{o}/{b}': seed_gain(finals, d, b, o) for d, b, o in tested}
    results.append(declared['adam_improves'].evaluate_cells(
        {c: (g, None) for c, g in gains.items() if c.split('/')[1] == 'adam'}))
    versus = {f'{d}/adam vs {other}/{b}': (gains[f'{d}/adam/{b}'], gains[f'{d}/{other}/{b}'])
              for d, b, o in tested if o == 'adam'
              for other in OPTIMIZERS if other != 'adam' and f'{d}/{other}/{b}' in gains}
    results.append(declared['adam_gains_most'].evaluate_cells(versus))
    results.append(declared['all_improve_at_large_batch'].evaluate_cells(
        {c: (g, None) for c, g in gains.items() if c.endswith('/full')}))
    results.append(declared['non_inferiority_1pt'].evaluate_cells(
        {c: (g, None) for c, g in gains.items()}))
    notes = [
        'Cells: one per (dataset, optimizer, batch); plain arms use the weight decay and LAWN '
        'the free fraction picked ' + ('on the validation split (table)' if s['tune_seeds']
                                       else 'as the first grid value (no tuning at this '
                                       'scale)') + "; Holm's step-down controls the cells of "
        'one check.',
        'logits_attenuated and loss_floor_higher are judged on the '
        + ('tuning runs: every free fraction against the plain arm without decay (the tested '
           'plain arms carry a tuned decay, which attenuates logits too).' if s['tune_seeds']
           else 'tested runs (no decay anywhere at this scale).')
        + (' ' + '; '.join(failures) + '.' if failures else '')]
    if s['effect'] is not None:
        notes.append(f"Effects: the paper gives no number the notes could read, so the claims "
                     f"are not powered for a paper number; they declare {s['effect']:g} point, "
                     'the smallest gain worth detecting on these test sets.')
    return results, notes


def diagnostics(records: list[dict], s: dict) -> dict:
    """The free-phase sweep (final logit norm, train loss and evaluation accuracy against
    the free fraction, plain without decay as 1.0) per mechanics cell, and the head-only
    mask against the default one."""
    sweep = {}
    for cell, (plain, lawns) in mechanics_groups(records).items():
        rows = lawns + [plain]
        logits = [mean(r['final']['logit_norm']) for r in rows]
        losses = [mean(r['final']['train_loss']) for r in rows]
        sweep['/'.join(cell)] = {
            'fractions': [r['free_fraction'] or 1.0 for r in rows], 'logit_norm': logits,
            'train_loss': losses,
            'accuracy': [mean(r['final']['test_accuracy']) for r in rows],
            'monotone': bool(np.all(np.diff(logits) >= 0) and np.all(np.diff(losses) <= 0))}
    variants = {}
    for v in (r for r in records if r['role'] == 'mask_variant'):
        default = next(r for r in records if r['role'] == 'grid' and cell_key(r) == cell_key(v)
                       and r['free_fraction'] is not None)
        plain = next(r for r in records if r['role'] == 'grid' and cell_key(r) == cell_key(v)
                     and r['free_fraction'] is None)
        variants['/'.join(cell_key(v))] = {
            'order': ['plain (tuned decay)', 'LAWN default mask', 'LAWN head only'],
            **{key: [mean(r['final'][key]) for r in (plain, default, v)]
               for key in ('logit_norm', 'max_logit_norm', 'train_loss', 'test_accuracy')}}
    return {'free_phase_sweep': sweep, 'head_only_mask': variants,
            'sweep_monotone_cells': sum(c['monotone'] for c in sweep.values())}


def accuracy_table(records: list[dict], chosen: dict) -> list[str]:
    """Markdown rows: final test accuracy (%) mean +- std over seeds, plain vs LAWN."""
    rows = ['| dataset | batch | optimizer | plain (wd) | LAWN (free fraction) | gain (pt) |',
            '|---|---|---|---|---|---|']
    finals = grid(records)
    for (d, b, o), c in chosen.items():
        if (d, b, o, True) not in finals or (d, b, o, False) not in finals:
            continue
        acc = [100 * np.asarray(finals[d, b, o, lawn]['test_accuracy'], float)
               for lawn in (False, True)]
        rows.append(f"| {d} | {b} | {o} | {acc[0].mean():.2f} ± {acc[0].std():.2f} "
                    f"(wd {c['weight_decay']:g}) | {acc[1].mean():.2f} ± {acc[1].std():.2f} "
                    f"({c['free_fraction']:g}) | {np.mean(acc[1] - acc[0]):+.2f} |")
    return rows


def plot(records: list[dict], out_dir: str) -> list[str]:
    """Training curves of the tested runs per (dataset, batch), as PNGs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = (('weight_norm', 'constrained norm (LAWN runs)', 'linear'),
              ('logit_norm', 'mean train logit norm (epoch mean)', 'linear'),
              ('train_loss', 'train loss (epoch mean)', 'log'),
              ('test_accuracy', 'test accuracy', 'linear'))
    paths = []
    for dataset, batch in sorted({(r['dataset'], r['batch']) for r in records
                                  if r['stage'] == 'final'}):
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
        for r in records:
            if (r['stage'], r['dataset'], r['batch']) != ('final', dataset, batch) \
                    or r['role'] == 'sweep':
                continue
            style = ':' if r['mask'] != 'default' else '--' if r['free_fraction'] else '-'
            label = (f"{r['optimizer']}{'-LAWN' if r['free_fraction'] else ''}"
                     f"{' head only' if r['mask'] != 'default' else ''}")
            for ax, (key, title, scale) in zip(axes, panels):
                ax.plot(r['curve']['steps'], r['curve'][key], style, marker='.',
                        color=f"C{OPTIMIZERS.index(r['optimizer'])}", label=label)
                ax.set(title=title, xlabel='step', yscale=scale)
        axes[0].legend(fontsize=8)
        fig.suptitle(f'LAWN on {dataset}: {batch} batch (mean over seeds)')
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f'curves_{dataset}_{batch}.png'))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
