"""Tables, notes and figures of the MimicNorm section (:mod:`jaxnorm.papers.mimicnorm`).

Kept apart from the experiment so that it stays a list of runs and checks; nothing here
trains or decides a check.
"""
from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from jaxnorm.papers import common, stats  # noqa: E402

MIB = 2 ** 20


def tables(s: dict, acc: dict, memory: dict, cosine: dict, picked: dict, scores: dict,
           labels: dict, timed: bool) -> list[str]:
    """Markdown rows: per (model, arm) the test accuracy, picked LR and (norms with a compiled
    step) the train-step memory; the init cosines; the tuning grid's validation accuracies."""
    when = 'B=128, full width' if timed else 'not timed at this scale'
    rows = [f'| model | arm | LR | test acc % | step temp MiB | temp+arg+out MiB (peak) '
            f'| step ms ({when}) |', '|---|---|---|---|---|---|---|']
    for name, arms in s['arms'].items():
        for a in arms:
            m = memory.get((name, a))
            peak = None if m is None else sum(m[k] for k in ('temp', 'argument', 'output'))
            mem = ('— | — | —' if m is None else
                   f"{m['temp'] / MIB:.1f} | {peak / MIB:.1f} | "
                   + (f"{m['ms']:.1f}" if 'ms' in m else '—'))
            rows.append(f'| {name} | {labels[a]} | {picked[name, a]:g} | '
                        f'{common.mean_std(acc[name, a], 100)} | {mem} |')
    rows += ['', '| init cosine at layer 20 (uniform CNN, width 64) | bn | mimic | none |',
             '|---|---|---|---|',
             '| mean ± std over seeds | ' + ' | '.join(common.mean_std(cosine[n], 1, 3)
                                                       for n in ('bn', 'mimic', 'none')) + ' |']
    if scores:
        lrs = sorted({lr for _, _, lr in scores})
        rows += ['', '| validation accuracy % (tuning, train[:80%] -> train[80%:]) | '
                 + ' | '.join(f'LR {lr:g}' for lr in lrs) + ' | picked |',
                 '|---' * (len(lrs) + 2) + '|']
        for name, a in sorted({(m, a) for m, a, _ in scores}):
            rows.append(f'| {name} / {labels[a]} | '
                        + ' | '.join(common.mean_std(scores[name, a, lr], 100) for lr in lrs)
                        + f' | {picked[name, a]:g} |')
    return rows


def ablation_notes(acc: dict, labels: dict) -> list[str]:
    """Reported rows (not checks): every other arm minus MimicNorm, paired over seeds, with
    its 90 % t-interval (points)."""
    notes = []
    for (name, a), values in acc.items():
        if a in ('mimic', 'bn') or (name, 'mimic') not in acc:
            continue
        a_values, m_values = 100 * np.asarray(values), 100 * np.asarray(acc[name, 'mimic'])
        ok = np.isfinite(a_values) & np.isfinite(m_values)
        if ok.sum() < 2:
            notes.append(f'{name}: {labels[a]} minus MimicNorm: fewer than 2 finite seeds.')
            continue
        i = stats.paired_interval(a_values[ok], m_values[ok])
        notes.append(f'{name}: {labels[a]} minus MimicNorm test accuracy {i.mean:+.2f} points, '
                     f'90 % paired t-interval [{i.low:+.2f}, {i.high:+.2f}] (n = {i.n}); a '
                     'reported row, not a check.')
    return notes


def ran(args, config, s: dict, memory_batch: int) -> str:
    """The section's "Ran." sentence."""
    size = f"{s['image_size']}x{s['image_size']} (bilinear)" if s['image_size'] else 'native size'
    tuning = (f"LR picked per arm from {', '.join(f'{lr:g}' for lr in s['lrs'])} by mean "
              f"validation accuracy of {s['tune_seeds']} seeds (train[:80%] -> train[80%:]), "
              'the same budget for bn / mimic / none, the ablations take MimicNorm\'s'
              if s['tune_seeds'] and len(s['lrs']) > 1 else f"LR {s['lrs'][0]:g}, not tuned")
    return (f"{s['dataset']} at {size}, {args.seeds} seeds, {config.epochs} epochs, SGD m=0.9, "
            f"{config.warmup_epochs:g} warmup epochs then cosine, weight decay "
            f"{config.weight_decay:g}, batch {config.batch_size}, no augmentation; {tuning}; "
            + ', '.join(f'{m} width {w}' for m, w in s['models'].items())
            + ' (ResNets: 1x1 projection shortcuts, with bias under MimicNorm; without norm: '
            'skipinit); MimicNorm-family heads re-drawn from N(0, 2/fan_in); every arm a '
            'seed-batched jaxnorm.train.fit run; memory from XLA memory_analysis of the '
            f"engine's train step at B={memory_batch}, 32x32x3, full width; init cosine: "
            'uniform_cnn depth 20 width 64, B=32 8x8x3 Gaussian inputs. Peak = temp + argument '
            '+ output (XLA reports no peak; buffers may alias, so it is an upper bound).')


def plot(acc: dict, memory: dict, models, norms, memory_batch: int, path: str,
         dataset: str) -> str:
    """Bars: test accuracy per (model, norm) and train-step memory."""
    fig, (ax_acc, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    offsets = np.arange(len(models))
    for i, norm in enumerate(norms):
        means = [100 * np.nanmean(acc[m, norm]) for m in models]
        stds = [100 * np.nanstd(acc[m, norm], ddof=1) for m in models]
        ax_acc.bar(offsets + 0.27 * (i - 1), means, 0.27, yerr=stds, label=norm, capsize=3)
        total = [sum(memory[m, norm][k] for k in ('temp', 'argument', 'output')) / MIB
                 for m in models]
        ax_mem.bar(offsets + 0.27 * (i - 1), total, 0.27, label=norm)
    for ax, title in ((ax_acc, f'{dataset} test accuracy (%)'),
                      (ax_mem, f'train-step memory, MiB (B={memory_batch}, 32x32, full width)')):
        ax.set_xticks(offsets, list(models))
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(losses: dict, labels: dict, path: str) -> str:
    """Train loss per epoch (mean over seeds, log scale), one panel per model: the plateau."""
    models = list(dict.fromkeys(m for m, _ in losses))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        for (m, a), curve in losses.items():
            if m == name:
                mean = np.nanmean(curve, axis=0)
                ax.plot(np.arange(1, mean.size + 1), mean, marker='.', label=labels[a])
        ax.set_yscale('log')
        ax.set_xlabel('epoch'), ax.set_ylabel('train loss (nats)')
        ax.set_title(f'{name}: train loss, mean over seeds', fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
