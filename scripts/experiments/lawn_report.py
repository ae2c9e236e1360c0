"""Verdicts, accuracy table and plots of ``scripts/experiments/lawn.py`` (numpy, matplotlib).

Every run record holds ``role`` (``grid``: a (model, batch, optimizer) cell with and without
LAWN; ``sweep``: another free-phase length; ``mask_variant``: another constrained set),
``model``, ``batch``, ``optimizer``, ``free_fraction`` (None without LAWN), ``mask``,
``final`` (per-seed final metrics) and ``curve`` (seed means against the step).
"""
from __future__ import annotations

import os

import numpy as np

OPTIMIZERS = ('sgd', 'adam', 'lamb')
SWEEP_CELL = {'model': 'mlp_ln', 'batch': 'full', 'optimizer': 'adam'}


def in_sweep(r: dict) -> bool:
    return r['role'] in ('grid', 'sweep') and all(r[k] == v for k, v in SWEEP_CELL.items())


def mean(values) -> float:
    return float(np.mean(values))


def accuracy_comparison(plain: dict, lawn: dict) -> dict:
    a, b = np.asarray(plain['test_accuracy']), np.asarray(lawn['test_accuracy'])
    gain = b.mean() - a.mean()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 else 0.0
    outcome = 'better' if gain > 2 * se else 'worse' if gain < -2 * se else 'tie'
    return {'gain': float(gain), 'se': float(se), 'outcome': outcome}


SUPPORTED = ('supported', 'pass')


def verdicts(records: list[dict], s: dict) -> dict:
    """The checks of the module docstring, computed from the per-run summaries."""
    cells = {}
    for r in records:
        if r['role'] == 'grid':
            key = (r['model'], r['batch'], r['optimizer'])
            cells.setdefault(key, {})['lawn' if r['free_fraction'] else 'plain'] = r['final']
    cells = {k: v for k, v in cells.items() if len(v) == 2}
    compare = {f'{m}/{b}/{o}': {**accuracy_comparison(v['plain'], v['lawn']),
                                'logit_norm': [mean(v['plain']['logit_norm']),
                                               mean(v['lawn']['logit_norm'])],
                                'train_loss': [mean(v['plain']['train_loss']),
                                               mean(v['lawn']['train_loss'])]}
               for (m, b, o), v in cells.items()}
    norm_error = max(r['final']['max_norm_error'] for r in records if r['free_fraction'])
    sweep = sorted(filter(in_sweep, records), key=lambda r: r['free_fraction'] or 1.0)
    sweep_logits = [mean(r['final']['logit_norm']) for r in sweep]
    sweep_loss = [mean(r['final']['train_loss']) for r in sweep]
    checks = {
        'norms_constant_after_switch': {
            'rule': 'max relative norm error after the switch <= 1e-4', 'value': norm_error,
            'pass': norm_error <= 1e-4},
        'logits_attenuated': {
            'rule': 'final train logit norm lower with LAWN in every cell',
            'value': sum(c['logit_norm'][1] < c['logit_norm'][0] for c in compare.values()),
            'of': len(compare)},
        'loss_floor_higher': {
            'rule': 'final train loss higher with LAWN in every cell',
            'value': sum(c['train_loss'][1] > c['train_loss'][0] for c in compare.values()),
            'of': len(compare)},
        'free_phase_monotone': {
            'rule': 'logit norm non-decreasing and train loss non-increasing in the free '
                    'fraction (Adam, mlp_ln, full batch; plain = 1.0)',
            'fractions': [r['free_fraction'] or 1.0 for r in sweep],
            'logit_norm': sweep_logits, 'train_loss': sweep_loss,
            'pass': bool(np.all(np.diff(sweep_logits) >= 0) and np.all(np.diff(sweep_loss) <= 0))},
    }
    for name in ('logits_attenuated', 'loss_floor_higher'):
        checks[name]['pass'] = checks[name]['value'] == checks[name]['of']
    groups = {}
    for key, c in compare.items():
        model, batch, optimizer = key.split('/')
        groups.setdefault((model, batch), {})[optimizer] = c['gain']
    multi = {k: g for k, g in groups.items() if len(g) > 1}
    adam_best = sum(max(g, key=g.get) == 'adam' for g in multi.values())
    adam_gain = mean([g['adam'] for g in multi.values()]) if multi else float('nan')
    full = {k: c['outcome'] for k, c in compare.items() if '/full/' in k}
    claims = {
        'adam_gains_most': {
            'rule': "Adam's accuracy gain largest in most (model, batch) cells and > 0 on average",
            'adam_largest_in': adam_best, 'of': len(multi), 'mean_adam_gain': adam_gain,
            'verdict': 'supported' if multi and 2 * adam_best > len(multi) and adam_gain > 0
            else 'not supported'},
        'all_improve_at_large_batch': {
            'rule': 'every full-batch cell "better" (gain > 2 SE); any "worse" contradicts',
            'outcomes': full,
            'verdict': 'supported' if full and all(o == 'better' for o in full.values())
            else 'contradicted' if 'worse' in full.values() else 'not shown (within noise)'},
        'non_inferiority_1pt': {
            'rule': 'no cell loses more than 1 accuracy point with LAWN',
            'verdict': 'pass' if all(c['gain'] > -0.01 for c in compare.values()) else 'fail'},
    }
    mechanics = all(c['pass'] for c in checks.values())
    summary = (f"mechanics {'hold' if mechanics else 'FAIL'}; Adam gains most: "
               f"{claims['adam_gains_most']['verdict']}; all improve at large batch: "
               f"{claims['all_improve_at_large_batch']['verdict']}; non-inferiority: "
               f"{claims['non_inferiority_1pt']['verdict']}")
    variant = next(r for r in records if r['role'] == 'mask_variant')
    default = next(r for r in records if in_sweep(r) and r['free_fraction'] == s['free_fraction'])
    plain = next(r for r in records if in_sweep(r) and r['free_fraction'] is None)
    diagnostics = {'last_norm_affine': {
        'note': f"Adam, mlp_ln, full batch: final logit norm and train loss without LAWN, "
                f"with LAWN on the head, and with LAWN on {variant['mask']!r}",
        'logit_norm': [mean(r['final']['logit_norm']) for r in (plain, default, variant)],
        'train_loss': [mean(r['final']['train_loss']) for r in (plain, default, variant)],
        'test_accuracy': [mean(r['final']['test_accuracy']) for r in (plain, default, variant)]}}
    report_checks = [{'name': name, 'rule': c['rule'], 'holds': c['pass']}
                     for name, c in checks.items()]
    report_checks += [{'name': name, 'rule': c['rule'], 'holds': c['verdict'] in SUPPORTED}
                      for name, c in claims.items()]
    return {'cells': compare, 'mechanics': checks, 'claims': claims, 'checks': report_checks,
            'diagnostics': diagnostics, 'verdict': summary}


def accuracy_table(records: list[dict], cells: dict) -> list[str]:
    """Markdown rows: final test accuracy (%) mean +- std over seeds, plain vs LAWN."""
    rows = ['| model | batch | optimizer | plain | LAWN | gain (pt) | outcome |',
            '|---|---|---|---|---|---|---|']
    finals = {(r['model'], r['batch'], r['optimizer'], bool(r['free_fraction'])): r['final']
              for r in records if r['role'] == 'grid'}
    for key, c in cells.items():
        model, batch, optimizer = key.split('/')
        cell = [100 * np.asarray(finals[(model, batch, optimizer, lawn)]['test_accuracy'])
                for lawn in (False, True)]
        rows.append(f'| {model} | {batch} | {optimizer} | '
                    + ' | '.join(f'{a.mean():.2f} ± {a.std():.2f}' for a in cell)
                    + f" | {100 * c['gain']:+.2f} | {c['outcome']} |")
    return rows


def plot(records: list[dict], out_dir: str) -> list[str]:
    """Training curves per (model, batch) and the free-phase sweep, as PNGs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = (('weight_norm', 'constrained weight norm', 'linear'),
              ('logit_norm', 'mean train logit norm', 'linear'),
              ('train_loss', 'train loss', 'log'), ('test_accuracy', 'test accuracy', 'linear'))
    paths = []
    settings_seen = sorted({(r['model'], r['batch']) for r in records})
    for model, batch in settings_seen:
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
        for r in records:
            if (r['model'], r['batch']) != (model, batch) or r['role'] == 'sweep':
                continue
            color = f"C{OPTIMIZERS.index(r['optimizer'])}"
            style = ':' if r['mask'] else '--' if r['free_fraction'] else '-'
            label = (f"{r['optimizer']}{'-LAWN' if r['free_fraction'] else ''}"
                     f"{' + last norm affine' if r['mask'] else ''}")
            for ax, (key, title, scale) in zip(axes, panels):
                ax.plot(r['curve']['steps'], r['curve'][key], style, color=color, label=label)
                ax.set(title=title, xlabel='step', yscale=scale)
        axes[0].legend(fontsize=8)
        fig.suptitle(f'LAWN on digits: {model}, {batch} batch (mean over seeds)')
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f'curves_{model}_{batch}.png'))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    sweep = sorted(filter(in_sweep, records), key=lambda r: r['free_fraction'] or 1.0)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    fractions = [r['free_fraction'] or 1.0 for r in sweep]
    for ax, (key, title, scale) in zip(axes, panels):
        ax.plot(fractions, [mean(r['final'][key]) for r in sweep], 'o-')
        ax.set(title=f'final {title}', xlabel='free fraction (1.0 = plain Adam)', yscale=scale)
    fig.suptitle('Free-phase sweep: Adam-LAWN, mlp_ln, full batch')
    fig.tight_layout()
    paths.append(os.path.join(out_dir, 'free_phase_sweep.png'))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
