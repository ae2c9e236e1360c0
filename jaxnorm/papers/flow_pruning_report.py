"""Diagnostics and the results table of the gradient-flow pruning section
(:mod:`jaxnorm.papers.flow_pruning`; Lubana & Dick, arXiv:2009.11839).

Per measure (mean ± sample std over seeds): final and best test accuracy, the fine-tuning
training-loss AUC (claim i), |ΔL| and the relative change ρ of |m g|^2 = -dL/dt at masking
(claims ii, iii) as means over the rounds and per round, the share of the alive filters'
|g|^2 that the removed filters carried, the early-layer kept share and the kept filters per
layer; plus the uniform reference (the overall kept fraction) for the per-layer widths.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from jaxnorm.pruning_report import by_measure, mean_and_std


def diagnostics(records: list[dict], early_layer_share: Callable, finetune_loss_auc: Callable,
                rate_change: Callable) -> dict:
    """The per-measure diagnostics (module docstring); the metric functions are the
    section's (passed in, so this module imports no experiment)."""
    out = {}
    for measure, runs in by_measure(records).items():
        row = {'final_test_accuracy': mean_and_std([100 * r['final_test_accuracy']
                                                    for r in runs]),
               'best_test_accuracy': mean_and_std([100 * r['best_test_accuracy'] for r in runs]),
               'finetune_loss_auc': mean_and_std([finetune_loss_auc(r) for r in runs]),
               'early_layer_share_kept': mean_and_std([early_layer_share(r) for r in runs])}
        if runs[0]['rounds']:
            def per_round(value):
                return np.array([[value(d) for d in r['rounds']] for r in runs], np.float64)
            abs_dl = per_round(lambda d: abs(d['train_loss_after'] - d['train_loss_before']))
            rho = per_round(rate_change)
            row['abs_loss_change_at_masking'] = mean_and_std(abs_dl.mean(1))
            row['rate_change_at_masking'] = mean_and_std(rho.mean(1))
            row['abs_rate_change_at_masking'] = mean_and_std(np.abs(rho).mean(1))
            row['per_round'] = {'abs_loss_change': abs_dl.mean(0).tolist(),
                                'rate_change': rho.mean(0).tolist(),
                                'removed_filter_share': per_round(
                                    lambda d: d['removed_filter_share']).mean(0).tolist()}
            row['removed_grad_sq_share'] = mean_and_std(
                per_round(lambda d: d['removed_grad_sq_share']).mean(1))
            row['kept_per_layer'] = {name: mean_and_std([r['kept'][name] for r in runs])
                                     for name in runs[0]['kept']}
            row['uniform_kept_share'] = mean_and_std(
                [sum(r['kept'].values()) / sum(r['widths'].values()) for r in runs])
        out[measure] = row
    return out


def _cell(row: dict, key: str, digits: int, scale: float = 1.0) -> str:
    if key not in row:
        return '-'
    mean, std = row[key]
    return f'{scale * mean:.{digits}f} ± {scale * std:.{digits}f}'


def table(diag: dict) -> list[str]:
    """Markdown table of the diagnostics, mean ± std over seeds."""
    rows = ['| measure | final test acc % | fine-tune loss AUC | abs(ΔL) at masking | '
            'ρ = Δ‖mg‖²/‖mg‖² at masking | removed ‖g‖² share | early-layer filters kept % '
            '(uniform %) |', '|---|---|---|---|---|---|---|']
    for measure, row in diag.items():
        uniform = (f" ({_cell(row, 'uniform_kept_share', 1, 100)})"
                   if 'uniform_kept_share' in row else '')
        rows.append(f"| {measure} | {_cell(row, 'final_test_accuracy', 2)} | "
                    f"{_cell(row, 'finetune_loss_auc', 4)} | "
                    f"{_cell(row, 'abs_loss_change_at_masking', 4)} | "
                    f"{_cell(row, 'rate_change_at_masking', 3)} | "
                    f"{_cell(row, 'removed_grad_sq_share', 3)} | "
                    f"{_cell(row, 'early_layer_share_kept', 1, 100)}{uniform} |")
    return rows
