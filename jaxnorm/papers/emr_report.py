"""Tables, figures and notes of the EMR experiment (:mod:`jaxnorm.papers.emr`), kept apart so
that the experiment module holds only its settings, runs and checks."""
from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from jaxnorm.papers import common  # noqa: E402


def tables(results: dict, bench_name: str, lrs, importances) -> list[str]:
    """Markdown rows: the tuned comparison, the LR grid and the per-layer analysis."""
    ms = common.mean_std
    rows = [f'**{bench_name}**: tuned on the held-out tasks, scored on the rest (mean ± std '
            'over seeds)', '', '| method | lr | λ | acc % | forg % |', '|---|---|---|---|---|']
    for name, e in results.items():
        lam = f"{e['strength']:g}" if name.startswith('qr') else '-'
        rows.append(f"| {name} | {e['lr']:g} | {lam} | {ms(e['accuracy'], 100, 1)} | "
                    f"{ms(e['forgetting'], 100, 1)} |")
    head = ' | '.join(f'lr {lr:g}' for lr in lrs)
    rows += ['', f'**{bench_name}**: over the LR grid (QR at its one tuned λ), acc % / forg %',
             '', f'| method | λ | {head} |', '|---' * (len(lrs) + 2) + '|']
    for name, e in results.items():
        lam = f"{e['fixed_strength']:g}" if name.startswith('qr') else '-'
        cells = ' | '.join(
            f"{100 * np.mean(e['lr_accuracy'][i]):.1f} / {100 * np.mean(e['lr_forgetting'][i]):.1f}"
            for i in range(len(lrs)))
        rows.append(f'| {name} | {lam} | {cells} |')
    first = next(iter(e for e in results.values() if 'layers' in e))
    names = first['layers']['layers']
    rows += ['', f'**{bench_name}**: per layer at the tuned configuration: share of the mean '
             'importance per parameter (%) / relative drift since the first scored task (%)',
             '', '| method | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
    for name, e in results.items():
        if 'layers' not in e:
            continue
        imp = np.asarray(e['layers']['importance']).mean(1)
        share = 100 * imp / max(imp.sum(), 1e-30)
        drift = 100 * np.asarray(e['layers']['drift']).mean(1)
        rows.append(f'| {name} | ' + ' | '.join(f'{s:.1f} / {d:.1f}'
                                                  for s, d in zip(share, drift)) + ' |')
    return rows


def notes(setting: dict) -> list[str]:
    """What the reader needs to know about how the checks were run (fixed before the run)."""
    tune = setting['tune_tasks']
    return [
        f'Tuning: the first {tune} tasks of each benchmark run as their own sequence over the '
        'whole grid (LR x λ x seeds); each method takes the (LR, λ) with the best mean average '
        "accuracy over seeds there (the reference's protocol holds out tasks 0-2) and is "
        'scored on a fresh sequence of the remaining tasks, from a new initialization of the '
        'same seed. QR and EMR get the same grid of LRs and seeds; QR also tunes λ.',
        "Robustness: QR's λ for the spread is the one with the best tuning accuracy on average "
        'over the LR grid; the spread is max - min over the LRs of one seed, paired with EMR '
        'in the same seed. No effect size is declared (the paper gives none), so these checks '
        'are not powered.',
        "The reference code's behaviours are on (Setup defaults): MAS's online objective is "
        'the squared feature norm summed over the batch, QR\'s online importance reads the '
        "penalized gradient, RWalk's Fisher is kept across tasks.",
        'Per-layer analysis: the regularized layers are the trunk (heads excluded); the '
        'importance is the merged past importance Ω_prev at the end of the scored sequence '
        '(its mean per parameter), the drift the relative distance a layer moved since the '
        'end of the first scored task. The depth checks compare the first and the deepest '
        'regularized layer of QR at its tuned configuration.',
        'The paper\'s +6.2 / -4.5 points are averages over its settings; the checks ask for '
        'them in every importance (aggregate "all"), Holm over the four importances.',
        f"The λ grid here has {len(setting['strengths'])} values "
        f"({min(setting['strengths']):g}..{max(setting['strengths']):g}); the reference's is "
        '1e-5..1e4 in decades; this one reaches below it (SI and RWalk, whose importances reach '
        '~1/1e-10, are only stable at small λ) and above it (EWC\'s squared minibatch '
        'gradients are ~1e-5 here). A tuned λ at an end of the grid is named in the table.',
    ]


def plot_lr(results: dict, path: str, title: str, lrs, importances) -> str:
    fig, (ax_acc, ax_forg) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = dict(zip(importances, ('C0', 'C1', 'C2', 'C3')))
    for name, entry in results.items():
        method, _, imp = name.partition('-')
        style = {'color': colors.get(imp, 'k'), 'ls': '-' if method == 'emr' else
                 ('--' if method == 'qr' else ':'), 'marker': 'o', 'capsize': 2}
        for ax, key in ((ax_acc, 'lr_accuracy'), (ax_forg, 'lr_forgetting')):
            values = 100 * np.asarray(entry[key])
            std = values.std(-1, ddof=1) if values.shape[-1] > 1 else None
            ax.errorbar(lrs, values.mean(-1), std, label=name, **style)
    for ax, label in ((ax_acc, 'average accuracy %'), (ax_forg, 'average forgetting %')):
        ax.set_xscale('log'), ax.set_xlabel('learning rate'), ax.set_ylabel(label)
    ax_acc.legend(fontsize=7, ncol=3)
    fig.suptitle(title + ' (QR at its one tuned λ)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_layers(results: dict, path: str, title: str, importances) -> str:
    fig, (ax_imp, ax_drift) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = dict(zip(importances, ('C0', 'C1', 'C2', 'C3')))
    for name, entry in results.items():
        if 'layers' not in entry:
            continue
        method, _, imp = name.partition('-')
        style = {'color': colors[imp], 'ls': '-' if method == 'emr' else '--', 'marker': 'o'}
        layers = entry['layers']
        depth = np.arange(1, len(layers['layers']) + 1)
        imp_mean = np.asarray(layers['importance']).mean(1)
        ax_imp.plot(depth, imp_mean / max(imp_mean.sum(), 1e-30), label=name, **style)
        ax_drift.plot(depth, 100 * np.asarray(layers['drift']).mean(1), label=name, **style)
    ax_imp.set_ylabel('share of mean importance per parameter')
    ax_drift.set_ylabel('relative drift since first scored task %')
    for ax in (ax_imp, ax_drift):
        ax.set_xlabel('regularized layer (depth)')
    ax_imp.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def headroom_notes(results: dict, bench_name: str, importances) -> list[str]:
    """Descriptive notes (no test): the importances where tuned QR leaves less than the
    paper's effect to gain (100 - accuracy < 6.2 points, or forgetting < 4.5 points), so that
    "refuted" there excludes an effect size the setting rules out."""
    notes = []
    tight_acc = [imp for imp in importances
                 if 100 * (1 - np.mean(results[f'qr-{imp}']['accuracy'])) < 6.2]
    tight_forg = [imp for imp in importances
                  if 100 * np.mean(results[f'qr-{imp}']['forgetting']) < 4.5]
    if tight_acc:
        notes.append(f"{bench_name}: tuned QR's accuracy leaves less than the paper's 6.2 points "
                     f"to gain for {', '.join(tight_acc)}: a refuted tuned-accuracy cell there "
                     "excludes an effect the ceiling rules out; the interval shows the sign.")
    if tight_forg:
        notes.append(f"{bench_name}: tuned QR forgets less than the paper's 4.5 points for "
                     f"{', '.join(tight_forg)}: EMR cannot reduce it by that much, so a refuted "
                     'tuned-forgetting cell there excludes an effect the setting rules out; the '
                     'interval shows the sign.')
    return notes
