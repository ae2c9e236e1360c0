"""Verdicts, tables and plots of ``scripts/experiments/beyond_bn.py`` (numpy, matplotlib).

Each experiment's records hold per-seed lists (first axis: seed). A verdict function returns
``{'checks': {...}, 'verdict': str, 'table': [markdown lines], ...}``; the rules are those of
the experiment's module docstring.
"""
from __future__ import annotations

import os

import numpy as np

ACTIVATION_NORMS = ('bn', 'ln', 'in', 'gn', 'frn', 'vn', 'evonorm_b0', 'evonorm_s0')
LINEAR_BOUND = 50.0        # growth over 27 blocks allowed to activations-based normalizers
EXPONENTIAL_FLOOR = 1e4    # growth required of WN / sWS / none without SkipInit
SPEARMAN_CEILING = -0.8    # first-layer gradient norm vs group size


def _stats(values) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, sample std (ddof 1) and count over the seed axis."""
    a = np.asarray(values, dtype=np.float64)
    return a.mean(axis=0), a.std(axis=0, ddof=1), a.shape[0]


def _se_diff(std_a, std_b, n: int) -> float:
    return float(np.sqrt((std_a ** 2 + std_b ** 2) / n))


def _spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _group_label(group_size) -> str:
    return 'C (LN)' if group_size == 'C' else str(group_size)


def _verdict(checks: dict) -> str:
    failed = [name + (f" ({', '.join(check['failing'])})" if check.get('failing') else '')
              for name, check in checks.items() if not check['pass']]
    return 'supported' if not failed else f"not supported: {'; '.join(failed)} fail"


# ----------------------------------------------------------------------------- verdicts


def _growth_check(growth: dict, rule: str, holds) -> dict:
    failing = [f'{k[0]}/{k[1]}' for k, g in growth.items() if not holds(g)]
    return {'rule': rule, 'pass': not failing, 'failing': failing,
            'range': [float(min(g.min() for g in growth.values())),
                      float(max(g.max() for g in growth.values()))]}


def forward_verdict(records: list[dict]) -> dict:
    growth = {}
    for r in records:
        variance = np.asarray(r['variance'])
        growth[(r['network'], r['norm'], r['skipinit'])] = variance[:, -1] / variance[:, 0]
    activation = {k: g for k, g in growth.items() if k[1] in ACTIVATION_NORMS and not k[2]}
    parametric = {k: g for k, g in growth.items() if k[1] not in ACTIVATION_NORMS and not k[2]}
    skipinit = {k: g for k, g in growth.items() if k[2]}
    checks = {
        'activation_norms_linear': _growth_check(
            activation, f'every seed: growth < {LINEAR_BOUND:g}x',
            lambda g: g.max() < LINEAR_BOUND),
        'parametric_exponential': _growth_check(
            parametric, f'every seed: growth > {EXPONENTIAL_FLOOR:g}x',
            lambda g: g.min() > EXPONENTIAL_FLOOR),
        'skipinit_flattens': _growth_check(
            skipinit, f'with SkipInit every seed grows < {LINEAR_BOUND:g}x',
            lambda g: g.max() < LINEAR_BOUND),
    }
    table = ['| network | norm | var block 1 | block 9 | block 18 | block 27 | growth 27/1 '
             '(seed range) | with SkipInit |', '|---|---|---|---|---|---|---|---|']
    for r in records:
        if r['skipinit']:
            continue
        mean = np.asarray(r['variance']).mean(axis=0)
        key = (r['network'], r['norm'])
        g, gs = growth[(*key, False)], growth[(*key, True)]
        table.append(f"| {key[0]} | {key[1]} | " + ' | '.join(
            f'{mean[i]:.3g}' for i in (0, 8, 17, 26))
            + f' | {g.mean():.3g} ({g.min():.3g}-{g.max():.3g}) | {gs.mean():.3g} |')
    return {'checks': checks, 'verdict': _verdict(checks), 'table': table,
            'growth': {f'{k[0]}/{k[1]}{"/skipinit" if k[2] else ""}': g.tolist()
                       for k, g in growth.items()}}


def _by_network(records: list[dict]) -> dict[str, list[dict]]:
    out = {}
    for r in records:
        out.setdefault(r['network'], []).append(r)
    return out


def _width_ratio(r: dict) -> float:
    """C / group size at the last layer (1 for a single group)."""
    return 1.0 if r['group_size'] == 'C' else r['last_width'] / r['group_size']


def informative_verdict(records: list[dict]) -> dict:
    checks, fits = {}, {}
    table = ['| network | group size | stable rank | mean cosine | bound c*sqrt(C/g) |',
             '|---|---|---|---|---|']
    for net, recs in _by_network(records).items():
        rank_m, rank_s, n = _stats(np.transpose([r['stable_rank'] for r in recs]))
        cos_m, cos_s, _ = _stats(np.transpose([r['cosine'] for r in recs]))
        steps = range(len(recs) - 1)
        ratio = np.array([_width_ratio(r) for r in recs])
        # The bound is an inequality, so its constant is fitted as the largest c with
        # rank >= c sqrt(C/g) at every measured g; the log-log slope says how fast the rank
        # actually grows with C/g (the bound's exponent is 1/2).
        c_fit = float(np.min(rank_m / np.sqrt(ratio)))
        slope = float(np.polyfit(np.log(ratio), np.log(rank_m), 1)[0])
        fits[net] = {'c': c_fit, 'loglog_slope': slope, 'bound_slope': 0.5,
                     'c_least_squares': float(np.sum(np.sqrt(ratio) * rank_m) / np.sum(ratio))}
        checks[f'{net}_rank_decreases'] = {
            'rule': 'each step rank[g+1] <= rank[g] + 2 SE, and rank[1] - rank[C] > 2 SE',
            'pass': bool(all(rank_m[i + 1] <= rank_m[i] + 2 * _se_diff(rank_s[i], rank_s[i + 1], n)
                             for i in steps)
                         and rank_m[0] - rank_m[-1] > 2 * _se_diff(rank_s[0], rank_s[-1], n)),
            'strictly_decreasing_means': bool(np.all(np.diff(rank_m) < 0))}
        checks[f'{net}_cosine_increases'] = {
            'rule': 'each step cos[g+1] >= cos[g] - 2 SE, and cos[C] - cos[1] > 2 SE',
            'pass': bool(all(cos_m[i + 1] >= cos_m[i] - 2 * _se_diff(cos_s[i], cos_s[i + 1], n)
                             for i in steps)
                         and cos_m[-1] - cos_m[0] > 2 * _se_diff(cos_s[0], cos_s[-1], n)),
            'strictly_increasing_means': bool(np.all(np.diff(cos_m) > 0))}
        for i, r in enumerate(recs):
            table.append(f"| {net} | {_group_label(r['group_size'])} | {rank_m[i]:.2f} ± "
                         f'{rank_s[i]:.2f} | {cos_m[i]:.3f} ± {cos_s[i]:.3f} | '
                         f'{c_fit * np.sqrt(ratio[i]):.2f} |')
    return {'checks': checks, 'verdict': _verdict(checks), 'table': table, 'bound_fit': fits}


def backward_verdict(records: list[dict]) -> dict:
    checks = {}
    table = ['| network | group size | grad norm first conv | last conv | first / last |',
             '|---|---|---|---|---|']
    for net, recs in _by_network(records).items():
        # tapped = every conv then the Dense head: index 0 is the first conv, -2 the last.
        first_m, first_s, n = _stats(np.transpose([np.asarray(r['grad_norm'])[:, 0]
                                                   for r in recs]))
        last_m, _, _ = _stats(np.transpose([np.asarray(r['grad_norm'])[:, -2] for r in recs]))
        rho = _spearman(np.arange(len(recs)), first_m)
        checks[f'{net}_small_groups_larger_early_gradients'] = {
            'rule': f'first-conv grad norm: gs 1 - gs C > 2 SE and Spearman(group size, norm) '
                    f'<= {SPEARMAN_CEILING}',
            'pass': bool(first_m[0] - first_m[-1] > 2 * _se_diff(first_s[0], first_s[-1], n)
                         and rho <= SPEARMAN_CEILING),
            'ratio_gs1_over_C': float(first_m[0] / first_m[-1]), 'spearman': rho}
        for i, r in enumerate(recs):
            table.append(f"| {net} | {_group_label(r['group_size'])} | {first_m[i]:.3g} ± "
                         f'{first_s[i]:.2g} | {last_m[i]:.3g} | {first_m[i] / last_m[i]:.2f} |')
    return {'checks': checks, 'verdict': _verdict(checks), 'table': table}


def _mean_of_maxima(traces) -> float:
    """Mean over seeds of each trace's largest finite value (NaN when none was recorded)."""
    traces = np.asarray(traces, dtype=np.float64)
    if not np.isfinite(traces).any():
        return float('nan')
    return float(np.nanmean(np.nanmax(traces, axis=1)))


def training_verdict(records: list[dict]) -> dict:
    summary = {}
    for r in records:
        loss = np.asarray(r['loss'], dtype=np.float64)
        finite = np.all(np.isfinite(loss), axis=1)
        last_epoch = loss[:, -r['steps_per_epoch']:].mean(axis=1)
        summary[_group_label(r['group_size'])] = {
            'final_loss': float(np.mean(last_epoch[finite])) if finite.any() else float('nan'),
            'final_loss_std': float(np.std(last_epoch[finite], ddof=1)) if finite.sum() > 1
            else float('nan'),
            'mean_loss': float(np.nanmean(loss)),
            'jitter': float(np.nanmean(np.abs(np.diff(loss, axis=1)))),
            'max_grad_norm': _mean_of_maxima(r['grad_norm']),
            'diverged_seeds': int((~finite).sum())}
    labels = list(summary)
    slowest = max(labels, key=lambda k: np.nan_to_num(summary[k]['final_loss'], nan=np.inf))
    least_stable = max(labels, key=lambda k: (summary[k]['diverged_seeds'], summary[k]['jitter']))
    checks = {
        'ln_slowest': {'rule': 'one group has the highest last-epoch mean training loss',
                       'observed': slowest, 'pass': slowest == 'C (LN)'},
        'in_least_stable': {'rule': 'group size 1 has the most diverged seeds, then the largest '
                                    'mean |step-to-step loss change|',
                            'observed': least_stable, 'pass': least_stable == '1'}}
    table = ['| group size | last-epoch train loss | mean loss, all steps | mean abs loss change '
             'per step | mean max grad norm | diverged seeds |', '|---|---|---|---|---|---|']
    table += [f"| {k} | {v['final_loss']:.3f} ± {v['final_loss_std']:.3f} | {v['mean_loss']:.3f} "
              f"| {v['jitter']:.3f} | {v['max_grad_norm']:.3g} | {v['diverged_seeds']} |"
              for k, v in summary.items()]
    verdict = (f"LN slowest: {'yes' if slowest == 'C (LN)' else 'no'} (slowest: group size "
               f"{slowest}); IN least stable: {'yes' if least_stable == '1' else 'no'} (least "
               f'stable: group size {least_stable})')
    return {'checks': checks, 'verdict': verdict, 'table': table, 'summary': summary}


TITLES = {'forward': '(i) Forward stability', 'informative': '(ii) Informative forward',
          'backward': '(iii) Backward stability', 'training': 'Speed-stability trade-off'}


def contract(experiments: dict) -> dict:
    """The fields ``scripts/reproduce.py`` reads (claim, ran, table, checks, figures,
    seconds), gathered over the experiments present, in the paper's order."""
    present = [name for name in TITLES if name in experiments]
    table, checks = [], []
    for name in present:
        e = experiments[name]
        table += [f"**{TITLES[name]}**: {e['verdict']}", '', *e['table'], '']
        checks += [{'name': f'{name}: {check}', 'rule': c['rule'], 'holds': bool(c['pass'])}
                   for check, c in e['checks'].items()]
    runs = {}  # informative and backward share one set of probes, hence one description
    for name in present:
        runs.setdefault(experiments[name]['ran'], []).append(TITLES[name])
    return {'claim': ' '.join(f"{TITLES[n]}: {experiments[n]['claim']}" for n in present),
            'ran': ' '.join(f"{' and '.join(titles)}: {text}" for text, titles in runs.items()),
            'table': table[:-1], 'checks': checks, 'figures': [f'{n}.png' for n in present],
            'seconds': sum(experiments[n]['seconds'] for n in present)}


VERDICTS = {'forward': forward_verdict, 'informative': informative_verdict,
            'backward': backward_verdict, 'training': training_verdict}


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _band(ax, x, values, label, log: bool, **style):
    """Seed mean with a mean +- std band (clipped above 0 on log axes)."""
    mean, std, _ = _stats(values)
    line, = ax.plot(x, mean, label=label, **style)
    low = np.maximum(mean - std, mean * 1e-2) if log else mean - std
    ax.fill_between(x, low, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_forward(records: list[dict], out_dir: str) -> str:
    """Per network: every normalizer on a log scale, the activations-based ones alone on a
    linear scale (where linear growth shows as a line), and every normalizer with SkipInit."""
    plt = _pyplot()
    networks = list(dict.fromkeys(r['network'] for r in records))
    norms = list(dict.fromkeys(r['norm'] for r in records))
    fig, axes = plt.subplots(len(networks), 3, figsize=(18, 4.2 * len(networks)), squeeze=False)
    for r in records:
        row = axes[networks.index(r['network'])]
        blocks = np.arange(1, len(r['blocks']) + 1)
        activation = r['norm'] in ACTIVATION_NORMS
        style = {'linestyle': '-' if activation else '--',
                 'color': plt.cm.tab10(norms.index(r['norm'])) if norms.index(r['norm']) < 10
                 else 'black'}
        panels = [(row[2], True)] if r['skipinit'] else [(row[0], True)] + (
            [(row[1], False)] if activation else [])
        for ax, log in panels:
            _band(ax, blocks, r['variance'], r['norm'], log, **style)
    for net, row in zip(networks, axes):
        for ax, title, scale in ((row[0], 'no SkipInit', 'log'),
                                 (row[1], 'no SkipInit, activations-based only', 'linear'),
                                 (row[2], 'SkipInit (residual gain 0)', 'log')):
            ax.set(yscale=scale, xlabel='residual block', ylabel='activation variance',
                   title=f'{net}: {title}')
    axes[0, 0].legend(fontsize=8, ncol=2)
    fig.suptitle('Forward stability at init (mean ± std over seeds; dashed: parametric)')
    path = _save(fig, out_dir, 'forward.png')
    plt.close(fig)
    return path


def plot_informative(records: list[dict], out_dir: str) -> str:
    plt = _pyplot()
    groups = _by_network(records)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4 * len(groups)), squeeze=False)
    fits = informative_verdict(records)['bound_fit']
    for row, (net, recs) in enumerate(groups.items()):
        ratio = np.array([_width_ratio(r) for r in recs])
        labels = [_group_label(r['group_size']) for r in recs]
        _band(axes[row, 0], ratio, np.transpose([r['stable_rank'] for r in recs]),
              'stable rank, last layer', True, marker='o')
        dense = np.geomspace(ratio.min(), ratio.max(), 50)
        axes[row, 0].plot(dense, fits[net]['c'] * np.sqrt(dense), 'k--',
                          label=f"{fits[net]['c']:.2f} sqrt(C/g): largest c below every "
                                f"point (log-log slope {fits[net]['loglog_slope']:.2f})")
        _band(axes[row, 1], ratio, np.transpose([r['cosine'] for r in recs]),
              'mean cosine, last layer', False, marker='o', color='C1')
        for ax in axes[row]:
            ax.set(xscale='log', xlabel='C / group size (labels: group size)',
                   title=f'{net} (C = {recs[-1]["last_width"]})')
            ax.set_xticks(ratio, labels)
            ax.legend(fontsize=8)
        axes[row, 0].set(yscale='log', ylabel='stable rank')
        axes[row, 1].set(ylabel='mean cosine')
    fig.suptitle('Informative forward propagation at init, GroupNorm (mean ± std over seeds)')
    path = _save(fig, out_dir, 'informative.png')
    plt.close(fig)
    return path


def plot_backward(records: list[dict], out_dir: str) -> str:
    plt = _pyplot()
    groups = _by_network(records)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, (net, recs) in zip(axes[0], groups.items()):
        for i, r in enumerate(recs):
            layers = np.arange(1, len(r['tapped']) + 1)
            _band(ax, layers, r['grad_norm'], f"group size {_group_label(r['group_size'])}",
                  True, color=plt.cm.viridis(i / max(len(recs) - 1, 1)))
        ax.set(yscale='log', xlabel='layer (convs, then the Dense head)',
               ylabel='||dL/d layer output||', title=net)
        ax.legend(fontsize=8)
    fig.suptitle('Backward stability at init, GroupNorm (mean ± std over seeds)')
    path = _save(fig, out_dir, 'backward.png')
    plt.close(fig)
    return path


def plot_training(records: list[dict], out_dir: str) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    per_step = records[0]['steps_per_epoch'] > 1  # the papers' scale records epochs (fit)
    grad_norms = any(np.isfinite(np.asarray(r['grad_norm'], dtype=float)).any() for r in records)
    for i, r in enumerate(records):
        steps = np.arange(1, len(r['loss'][0]) + 1)
        color = plt.cm.viridis(i / max(len(records) - 1, 1))
        label = f"group size {_group_label(r['group_size'])}"
        _band(axes[0], steps, r['loss'], label, False, color=color)
        if grad_norms:
            _band(axes[1], steps, r['grad_norm'], label, True, color=color)
    unit = 'step' if per_step else 'epoch'
    axes[0].set(xlabel=unit, ylabel=f"{'minibatch' if per_step else 'epoch mean'} training loss",
                title='training loss')
    if grad_norms:
        axes[1].set(xlabel=unit, ylabel='global gradient norm', yscale='log',
                    title='gradient norm')
    else:
        axes[1].text(0.5, 0.5, 'gradient norm not recorded at this scale', ha='center')
        axes[1].set_axis_off()
    axes[0].legend(fontsize=8)
    fig.suptitle('GroupNorm by group size (mean ± std over seeds)')
    path = _save(fig, out_dir, 'training.png')
    plt.close(fig)
    return path


PLOTS = {'forward': plot_forward, 'informative': plot_informative, 'backward': plot_backward,
         'training': plot_training}
