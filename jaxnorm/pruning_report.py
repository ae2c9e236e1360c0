"""Tables and plots of pruning runs (records of :meth:`jaxnorm.pruning.PruneRunner.run`)."""
from __future__ import annotations

import os
from typing import Iterable

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def by_measure(records: Iterable[dict]) -> dict[str, list[dict]]:
    """Records grouped by measure, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record['measure'], []).append(record)
    return groups


def mean_and_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def kept_fractions(record: dict) -> list[float]:
    """Fraction of filters kept in each prunable layer, in forward order."""
    return [record['kept'][name] / record['widths'][name] for name in record['widths']]


def summary_table(records: list[dict]) -> list[str]:
    """Final / best test accuracy, filters pruned and speed-up, mean ± std over seeds."""
    rows = [f'{"measure":<26}{"final acc %":>15}{"best acc %":>15}{"filters pruned":>16}'
            f'{"compression":>13}{"speed-up":>10}']
    for measure, runs in by_measure(records).items():
        final = mean_and_std([100 * r['final_test_accuracy'] for r in runs])
        best = mean_and_std([100 * r['best_test_accuracy'] for r in runs])
        pruned = 100 * np.mean([r['filters']['fraction_pruned'] for r in runs])
        compression = np.mean([r['accounting']['compression'] for r in runs])
        speedup = np.mean([r['accounting']['speedup'] for r in runs])
        rows.append(f'{measure:<26}{final[0]:>8.2f} ± {final[1]:<4.2f}{best[0]:>8.2f} ± '
                    f'{best[1]:<4.2f}{pruned:>15.1f}%{compression:>12.2f}x{speedup:>9.2f}x')
    return rows


def _curve(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([[h[key] for h in r['history']] for r in runs], np.float64)
    return values.mean(0), values.std(0)


def plot_runs(records: list[dict], path: str, title: str = '') -> str:
    """Three panels: training loss per epoch, test accuracy per epoch, filters kept per layer
    (means over seeds; bands and error bars are one standard deviation)."""
    groups = by_measure(records)
    fig, (ax_loss, ax_acc, ax_width) = plt.subplots(1, 3, figsize=(16, 4.4))
    first = records[0]
    pruning_epochs = sum(h['phase'] == 'prune' for h in first['history'])
    epochs = np.arange(1, len(first['history']) + 1)
    for index, (measure, runs) in enumerate(groups.items()):
        color = f'C{index}'
        for ax, key, scale in ((ax_loss, 'train_loss', 1), (ax_acc, 'test_accuracy', 100)):
            mean, std = _curve(runs, key)
            ax.plot(epochs, scale * mean, color=color, label=measure)
            ax.fill_between(epochs, scale * (mean - std), scale * (mean + std), color=color,
                            alpha=0.15, linewidth=0)
        widths = np.array([kept_fractions(r) for r in runs])
        layers = np.arange(1, widths.shape[1] + 1)
        ax_width.errorbar(layers + 0.06 * (index - len(groups) / 2), 100 * widths.mean(0),
                          yerr=100 * widths.std(0), color=color, marker='o', ms=3,
                          capsize=2, label=measure)
    for ax in (ax_loss, ax_acc):
        ax.axvline(pruning_epochs + 0.5, color='gray', linestyle='--', linewidth=0.8)
        ax.set_xlabel('epoch (dashed: end of the pruning rounds)')
        ax.grid(alpha=0.3)
    ax_loss.set(ylabel='training cross-entropy', yscale='log', title='training loss')
    ax_acc.set(ylabel='test accuracy (%)', title='test accuracy')
    ax_width.set(xlabel='prunable layer (forward order)', ylabel='filters kept (%)',
                 title='surviving width per layer', xticks=layers)
    ax_width.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rounds(records: list[dict], path: str) -> str:
    """Per pruning round: the removed filters' share of the alive filters' |g|^2, against the
    share of filters removed, and the training-loss change caused by the masking."""
    groups = {m: runs for m, runs in by_measure(records).items() if runs[0]['rounds']}
    fig, (ax_share, ax_jump) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (measure, runs) in enumerate(groups.items()):
        rounds = np.arange(1, len(runs[0]['rounds']) + 1)
        share = np.array([[d['removed_grad_sq_share'] for d in r['rounds']] for r in runs])
        jump = np.array([[d['train_loss_after'] - d['train_loss_before'] for d in r['rounds']]
                         for r in runs])
        ax_share.plot(rounds, share.mean(0), marker='o', color=f'C{index}', label=measure)
        ax_jump.plot(rounds, jump.mean(0), marker='o', color=f'C{index}', label=measure)
    if groups:
        runs = next(iter(groups.values()))
        ax_share.plot(rounds, [d['removed_filter_share'] for d in runs[0]['rounds']], 'k--',
                      label='share of filters removed')
    ax_share.set(xlabel='round', ylabel='removed share of alive filters\' |g|²',
                 title='loss-decrease rate removed (-dL/dt = |g|²)')
    ax_jump.set(xlabel='round', ylabel='train loss after - before masking',
                title='loss change at each pruning step')
    for ax in (ax_share, ax_jump):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_share.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(records: list[dict], out_dir: str, prefix: str, title: str = '') -> list[str]:
    """Both figures as ``<out_dir>/<prefix>.png`` and ``<prefix>_rounds.png``."""
    os.makedirs(out_dir, exist_ok=True)
    return [plot_runs(records, os.path.join(out_dir, f'{prefix}.png'), title),
            plot_rounds(records, os.path.join(out_dir, f'{prefix}_rounds.png'))]
