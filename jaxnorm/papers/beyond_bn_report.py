"""Declared checks, their evaluation, tables and plots of :mod:`jaxnorm.papers.beyond_bn`.

:func:`declare_checks` declares every check of every experiment before the run
(:class:`jaxnorm.papers.checks.Check`); ``JUDGES[name](records, declared[name])`` evaluates
them on the experiment's records (per-seed lists, first axis: seed) and returns
``{'checks': [check results], 'table': [markdown lines], 'notes': [...], ...}``. Seeds are the
unit of replication: every seed draws its own weights and inputs, and two configurations of
one seed share that seed's inputs, so differences are paired by seed.

The init-time checks are rules judged in every seed (a rule fails if one seed breaks it) or,
where the paper claims a difference between two normalizers (group size 1 against one group),
paired superiority over seeds. The training checks are paired superiority of one group size
over each other one, Holm-controlled over those comparisons.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxnorm.papers import checks

ACTIVATION_NORMS = ('bn', 'ln', 'in', 'gn', 'frn', 'vn', 'evonorm_b0', 'evonorm_s0')
LINEAR_BOUND = 50.0        # growth over 27 blocks allowed to activations-based normalizers
EXPONENTIAL_FLOOR = 1e4    # growth required of WN / sWS / none without SkipInit
SPEARMAN_CEILING = -0.8    # first-layer gradient norm vs group size
ONE_GROUP = 'C'
TITLES = {'forward': '(i) Forward stability', 'informative': '(ii) Informative forward',
          'backward': '(iii) Backward stability', 'training': 'Speed-stability trade-off'}


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
    return 'C (LN)' if group_size == ONE_GROUP else str(group_size)


def _holds(value: bool) -> str:
    return 'held' if value else 'failed'


# ----------------------------------------------------------------------------- declared checks


def declare_checks(seeds: int, networks: Sequence[str], group_sizes: Sequence) -> dict:
    """Every check of every experiment, declared before the run.

    Args:
        seeds: seeds per configuration.
        networks: the networks of the informative and backward experiments.
        group_sizes: the training experiment's GN group sizes (``'C'``: one group).

    Returns:
        ``{experiment: {check name: Check}}``.
    """
    growth = 'growth var(block 27) / var(block 1) of one seed and configuration (ratio)'
    forward = {
        'forward: activation_norms_linear': checks.Check(
            'forward: activation_norms_linear',
            'Activations-based normalizers (BN, LN, IN, GN, FRN, VN, EvoNorm-B0/S0) keep the '
            'activation variance of a ResNet growing about linearly with depth (paper, claim '
            '(i)).', 'claim', growth, 'rule', seeds,
            rule=f'every activations-based normalizer grows < {LINEAR_BOUND:g}x over 27 blocks '
                 'on every network probed'),
        'forward: parametric_exponential': checks.Check(
            'forward: parametric_exponential',
            'Without SkipInit, WN, sWS and no normalization let the activation variance grow '
            'exponentially with depth (paper, claim (i)).', 'claim', growth, 'rule', seeds,
            rule=f'WN, sWS and none grow > {EXPONENTIAL_FLOOR:g}x over 27 blocks on every '
                 'network probed (2x per block would give 2^26)'),
        'forward: skipinit_flattens': checks.Check(
            'forward: skipinit_flattens',
            'SkipInit (residual branch gain 0 at init) keeps the activation variance flat for '
            'every normalizer, the parametric ones included (paper, claim (i)).', 'claim',
            growth + ', with SkipInit', 'rule', seeds,
            rule=f'with SkipInit every normalizer grows < {LINEAR_BOUND:g}x over 27 blocks on '
                 'every network probed'),
    }
    informative, backward = {}, {}
    for net in networks:
        informative[f'informative: {net}_rank_decreases'] = checks.Check(
            f'informative: {net}_rank_decreases',
            f'{net}: larger GroupNorm groups give a lower rank of the last layer\'s activations '
            '(paper, claim (ii): rank >= Omega(sqrt(width / group size))); here group size 1 '
            'against one group.', 'claim',
            'last-layer stable rank at group size 1 minus at one group (C), same seed '
            '(stable-rank units)', 'superiority', seeds, margin=0.0)
        informative[f'informative: {net}_rank_monotone'] = checks.Check(
            f'informative: {net}_rank_monotone',
            f'{net}: the last layer\'s stable rank falls as the GroupNorm group size grows '
            '(paper, claim (ii)).', 'claim',
            'last-layer stable rank at each group size, one seed', 'rule', seeds,
            rule='the stable rank does not increase from one group size to the next larger')
        informative[f'informative: {net}_cosine_increases'] = checks.Check(
            f'informative: {net}_cosine_increases',
            f'{net}: larger GroupNorm groups make samples look alike (paper, claim (ii)); here '
            'one group against group size 1.', 'claim',
            'mean pairwise cosine of the last layer\'s sample activations at one group (C) '
            'minus at group size 1, same seed (cosine units)', 'superiority', seeds, margin=0.0)
        informative[f'informative: {net}_cosine_monotone'] = checks.Check(
            f'informative: {net}_cosine_monotone',
            f'{net}: the samples\' mean cosine at the last layer rises as the GroupNorm group '
            'size grows (paper, claim (ii)).', 'claim',
            'last-layer mean cosine at each group size, one seed', 'rule', seeds,
            rule='the mean cosine does not decrease from one group size to the next larger')
        backward[f'backward: {net}_small_groups_larger_early_gradients'] = checks.Check(
            f'backward: {net}_small_groups_larger_early_gradients',
            f'{net}: small groups (InstanceNorm) give larger gradient norms in the early layers '
            'than large ones (paper, claim (iii)); here group size 1 against one group.',
            'claim', '||dL/d first conv output|| at group size 1 minus at one group (C), same '
            'seed (gradient-norm units)', 'superiority', seeds, margin=0.0)
        backward[f'backward: {net}_gradient_trend'] = checks.Check(
            f'backward: {net}_gradient_trend',
            f'{net}: the early-layer gradient norm falls as the GroupNorm group size grows '
            '(paper, claim (iii)).', 'claim',
            'Spearman correlation of the first conv\'s gradient norm with the group size, one '
            'seed', 'rule', seeds,
            rule=f'Spearman(group size, first-conv gradient norm) <= {SPEARMAN_CEILING}')
    others = [g for g in group_sizes if g != ONE_GROUP]
    training = {
        'training: ln_slowest': checks.Check(
            'training: ln_slowest',
            'LayerNorm (GroupNorm with one group) trains slowest: its training loss after the '
            f'budget is higher than that of every other group size ({others}) (paper: the '
            'speed side of the trade-off).', 'claim',
            'last-epoch mean training loss of one group (C) minus that of group size g, same '
            'seed (cross-entropy, nats); one cell per other g', 'superiority', seeds,
            margin=0.0),
        'training: in_least_stable': checks.Check(
            'training: in_least_stable',
            'InstanceNorm (group size 1) trains least stably (paper: the stability side of the '
            'trade-off), measured as the largest loss jitter. Caveat declared with the check: '
            'the mean |change of the loss from one epoch to the next| is not a stability '
            'measure independent of learning: it is large wherever the loss is high or falling '
            'fast and small for a run that does not learn at all (flat loss), so it rewards not '
            'learning and mixes instability with speed.', 'claim',
            'mean |epoch-to-epoch change of the epoch-mean training loss| (jaxnorm.train.fit '
            'records one training loss per epoch; the quick run measured the minibatch loss '
            'step to step before it trained with fit) of group size 1 minus that of group size '
            'g, same seed (nats; a diverged run counts its finite epochs); one cell per other g',
            'superiority', seeds, margin=0.0),
    }
    return {'forward': forward, 'informative': informative, 'backward': backward,
            'training': training}


def _paired(check: checks.Check, a, b) -> tuple[dict, int]:
    """``check.evaluate(a, b)`` (diverged seeds dropped) and how many seeds were dropped."""
    result = check.evaluate(a, b)
    return result, result['dropped']


def _paired_cells(check: checks.Check, cells: dict) -> tuple[dict, int]:
    """``check.evaluate_cells(cells)`` (diverged seeds dropped) and how many were dropped."""
    result = check.evaluate_cells(cells)
    return result, result['dropped']


# ----------------------------------------------------------------------------- judges


def forward_verdict(records: list[dict], declared: dict) -> dict:
    growth = {}
    for r in records:
        variance = np.asarray(r['variance'])
        growth[(r['network'], r['norm'], r['skipinit'])] = variance[:, -1] / variance[:, 0]
    groups = {
        'forward: activation_norms_linear': (
            {k: g for k, g in growth.items() if k[1] in ACTIVATION_NORMS and not k[2]},
            lambda g: g < LINEAR_BOUND),
        'forward: parametric_exponential': (
            {k: g for k, g in growth.items() if k[1] not in ACTIVATION_NORMS and not k[2]},
            lambda g: g > EXPONENTIAL_FLOOR),
        'forward: skipinit_flattens': (
            {k: g for k, g in growth.items() if k[2]}, lambda g: g < LINEAR_BOUND)}
    results, failing, ranges = [], {}, {}
    for name, (subset, rule) in groups.items():
        per_seed = np.all([rule(g) for g in subset.values()], axis=0)  # (seeds,)
        failing[name] = [f'{k[0]}/{k[1]}' for k, g in subset.items() if not rule(g).all()]
        ranges[name] = [float(min(g.min() for g in subset.values())),
                        float(max(g.max() for g in subset.values()))]
        extreme = ranges[name][0] if 'exponential' in name else ranges[name][1]
        results.append(declared[name].evaluate_rule(per_seed, value=extreme))
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
    notes = [f'{name}: fails in ' + ', '.join(f) for name, f in failing.items() if f]
    notes.append('forward: the three rules are the old ones, judged in every seed as before '
                 '(their reported value: the largest growth, or the smallest for the '
                 'exponential rule). With SkipInit the residual branches are multiplied by 0 at '
                 'init, so each block computes act(shortcut(x)): the variance can still change '
                 'through the activation after the sum (e.g. WN\'s centred ReLU) and through the '
                 'projection shortcuts, which is what the SkipInit rule measures.')
    return {'checks': results, 'table': table, 'notes': notes, 'failing': failing,
            'range': ranges,
            'growth': {f'{k[0]}/{k[1]}{"/skipinit" if k[2] else ""}': g.tolist()
                       for k, g in growth.items()}}


def _by_network(records: list[dict]) -> dict[str, list[dict]]:
    out = {}
    for r in records:
        out.setdefault(r['network'], []).append(r)
    return out


def _width_ratio(r: dict) -> float:
    """C / group size at the last layer (1 for a single group)."""
    return 1.0 if r['group_size'] == ONE_GROUP else r['last_width'] / r['group_size']


def bound_fit(records: list[dict]) -> dict:
    """Per network, the bound's constant and the log-log slope (reported, not judged).

    The bound is an inequality, so its constant is fitted as the largest c with
    rank >= c sqrt(C/g) at every measured g; the log-log slope says how fast the rank actually
    grows with C/g (the bound's exponent is 1/2).
    """
    fits = {}
    for net, recs in _by_network(records).items():
        rank_m = np.mean([r['stable_rank'] for r in recs], axis=1)
        ratio = np.array([_width_ratio(r) for r in recs])
        fits[net] = {'c': float(np.min(rank_m / np.sqrt(ratio))),
                     'loglog_slope': float(np.polyfit(np.log(ratio), np.log(rank_m), 1)[0]),
                     'bound_slope': 0.5,
                     'c_least_squares': float(np.sum(np.sqrt(ratio) * rank_m) / np.sum(ratio))}
    return fits


def _old_trend_rule(values: np.ndarray, sign: int) -> bool:
    """The old rule on (seeds, group sizes) ``values``: each step moves against ``sign`` by
    less than 2 SE of the mean difference (unpaired), and the ends differ by > 2 SE in the
    direction ``sign`` (+1 rising with the group size, -1 falling)."""
    mean, std, n = _stats(values)
    steps = all(sign * (mean[i + 1] - mean[i]) >= -2 * _se_diff(std[i], std[i + 1], n)
                for i in range(len(mean) - 1))
    return bool(steps and sign * (mean[-1] - mean[0]) > 2 * _se_diff(std[0], std[-1], n))


def informative_verdict(records: list[dict], declared: dict) -> dict:
    results, notes = [], []
    fits = bound_fit(records)
    table = ['| network | group size | stable rank | mean cosine | bound c*sqrt(C/g) |',
             '|---|---|---|---|---|']
    for net, recs in _by_network(records).items():
        rank = np.transpose([r['stable_rank'] for r in recs])   # (seeds, group sizes)
        cosine = np.transpose([r['cosine'] for r in recs])
        rank_m, rank_s, _ = _stats(rank)
        cos_m, cos_s, _ = _stats(cosine)
        ratio = np.array([_width_ratio(r) for r in recs])
        results += [
            declared[f'informative: {net}_rank_decreases'].evaluate(rank[:, 0], rank[:, -1]),
            declared[f'informative: {net}_rank_monotone'].evaluate_rule(
                np.all(np.diff(rank, axis=1) <= 0, axis=1),
                value=float(np.diff(rank, axis=1).max())),
            declared[f'informative: {net}_cosine_increases'].evaluate(cosine[:, -1],
                                                                     cosine[:, 0]),
            declared[f'informative: {net}_cosine_monotone'].evaluate_rule(
                np.all(np.diff(cosine, axis=1) >= 0, axis=1),
                value=float(np.diff(cosine, axis=1).min()))]
        notes.append(
            f'informative: {net}: the old rules (means over seeds, unpaired 2 SE: each step up '
            'in group size changes the mean by less than 2 SE the wrong way and the ends differ '
            f'by > 2 SE) {_holds(_old_trend_rule(rank, -1))} for the rank and '
            f'{_holds(_old_trend_rule(cosine, +1))} for the cosine on this run; each is now a '
            'paired superiority test of group size 1 against one group plus a rule that the '
            'trend holds at every step in every seed (no tolerance).')
        for i, r in enumerate(recs):
            table.append(f"| {net} | {_group_label(r['group_size'])} | {rank_m[i]:.2f} ± "
                         f'{rank_s[i]:.2f} | {cos_m[i]:.3f} ± {cos_s[i]:.3f} | '
                         f"{fits[net]['c'] * np.sqrt(ratio[i]):.2f} |")
    notes.append('informative: the bound\'s constant c (largest with rank >= c sqrt(C/g) at '
                 'every g) and the log-log slope of the rank against C/g are reported, not '
                 'judged: the bound is on the rank, the stable rank only bounds it from below.')
    return {'checks': results, 'table': table, 'notes': notes, 'bound_fit': fits}


def backward_verdict(records: list[dict], declared: dict) -> dict:
    results, notes, summary = [], [], {}
    table = ['| network | group size | grad norm first conv | last conv | first / last |',
             '|---|---|---|---|---|']
    for net, recs in _by_network(records).items():
        # tapped = every conv then the Dense head: index 0 is the first conv, -2 the last.
        first = np.transpose([np.asarray(r['grad_norm'])[:, 0] for r in recs])  # (seeds, g)
        first_m, first_s, n = _stats(first)
        last_m, _, _ = _stats(np.transpose([np.asarray(r['grad_norm'])[:, -2] for r in recs]))
        order = np.arange(len(recs))
        rho = np.array([_spearman(order, seed) for seed in first])
        results += [
            declared[f'backward: {net}_small_groups_larger_early_gradients'].evaluate(
                first[:, 0], first[:, -1]),
            declared[f'backward: {net}_gradient_trend'].evaluate_rule(
                rho <= SPEARMAN_CEILING, value=float(rho.max()))]
        rho_means = _spearman(order, first_m)
        old = bool(first_m[0] - first_m[-1] > 2 * _se_diff(first_s[0], first_s[-1], n)
                   and rho_means <= SPEARMAN_CEILING)
        summary[net] = {'ratio_gs1_over_C': float(first_m[0] / first_m[-1]),
                        'spearman_per_seed': rho.tolist(), 'spearman_of_means': rho_means}
        notes.append(
            f'backward: {net}: the old rule (mean first-conv gradient norm at group size 1 '
            f'exceeds that at C by > 2 SE, unpaired, and Spearman of the seed means <= '
            f'{SPEARMAN_CEILING}) {_holds(old)} on this run; it is now a paired superiority '
            f'test of group size 1 against C and the Spearman rule in every seed.')
        for i, r in enumerate(recs):
            table.append(f"| {net} | {_group_label(r['group_size'])} | {first_m[i]:.3g} ± "
                         f'{first_s[i]:.2g} | {last_m[i]:.3g} | {first_m[i] / last_m[i]:.2f} |')
    return {'checks': results, 'table': table, 'notes': notes, 'summary': summary}


def _jitter(loss: np.ndarray) -> np.ndarray:
    """Per seed, the mean |change| between consecutive finite losses of ``loss`` (seeds, T)."""
    change = np.abs(np.diff(loss, axis=1))
    change = np.where(np.isfinite(change), change, np.nan)
    with np.errstate(all='ignore'):
        return np.nanmean(change, axis=1) if change.size else np.full(len(loss), np.nan)


def training_verdict(records: list[dict], declared: dict) -> dict:
    """The training checks on per-epoch records: ``loss`` and ``test_accuracy`` (seeds,
    epochs) of each group size, NaN after a divergence."""
    summary, final, jitter = {}, {}, {}
    for r in records:
        loss = np.asarray(r['loss'], dtype=np.float64)
        finite = np.all(np.isfinite(loss), axis=1)
        accuracy = np.asarray(r['test_accuracy'], dtype=np.float64)[:, -1]
        label = _group_label(r['group_size'])
        final[r['group_size']], jitter[r['group_size']] = loss[:, -1], _jitter(loss)
        summary[label] = {
            'final_loss': float(np.mean(loss[finite, -1])) if finite.any() else float('nan'),
            'final_loss_std': float(np.std(loss[finite, -1], ddof=1)) if finite.sum() > 1
            else float('nan'),
            'mean_loss': float(np.nanmean(loss)),
            'jitter': float(np.nanmean(jitter[r['group_size']])),
            'test_accuracy': float(np.mean(accuracy[finite])) if finite.any() else float('nan'),
            'diverged_seeds': int((~finite).sum())}
    sizes = list(final)
    ln_result, ln_dropped = _paired_cells(
        declared['training: ln_slowest'],
        {f'C - {g}': (final[ONE_GROUP], final[g]) for g in sizes if g != ONE_GROUP})
    in_result, in_dropped = _paired_cells(
        declared['training: in_least_stable'],
        {f'1 - {_group_label(g)}': (jitter[1], jitter[g]) for g in sizes if g != 1})
    labels = list(summary)
    slowest = max(labels, key=lambda k: np.nan_to_num(summary[k]['final_loss'], nan=np.inf))
    least_stable = max(labels, key=lambda k: (summary[k]['diverged_seeds'], summary[k]['jitter']))
    changes = np.shape(records[0]['loss'])[1] - 1
    notes = [
        'training: the old rule "one group has the highest mean last-epoch loss" (ranking of '
        f'means, no noise model) {_holds(slowest == "C (LN)")} on this run (slowest: group '
        f'size {slowest}); it is now paired superiority of one group over every other group '
        'size, Holm-controlled over those cells.',
        'training: the old rule "group size 1 has the most diverged seeds, then the largest mean '
        f'|loss change|" {_holds(least_stable == "1")} on this run (least stable: group size '
        f'{least_stable}); it is now paired superiority of group size 1\'s loss jitter over '
        'every other group size (Holm); diverged seeds are counted in the table, not in the '
        'test. The measurement is not a clean stability measure: it is large where the loss is '
        'high or falling fast and small for a run that does not learn, so it rewards not '
        'learning (see the check\'s claim).',
        f'training: the runs are jaxnorm.train.fit\'s, which records one training loss per '
        f'epoch, so the jitter is the mean of {changes} epoch-to-epoch change(s) of the epoch '
        'mean per seed (the quick run used the minibatch loss step to step before); the '
        'last-epoch loss is the mean of that epoch\'s step losses, as before.']
    if ln_dropped or in_dropped:
        notes.append(f'training: seeds with a non-finite value were left out of the paired '
                     f'tests ({ln_dropped} pairs of the loss check, {in_dropped} of the jitter '
                     'check).')
    table = ['| group size | last-epoch train loss | mean loss, all epochs | mean abs loss change '
             'per epoch | final test accuracy % | diverged seeds |', '|---|---|---|---|---|---|']
    table += [f"| {k} | {v['final_loss']:.3f} ± {v['final_loss_std']:.3f} | {v['mean_loss']:.3f} "
              f"| {v['jitter']:.3f} | {100 * v['test_accuracy']:.1f} | {v['diverged_seeds']} |"
              for k, v in summary.items()]
    return {'checks': [ln_result, in_result], 'table': table, 'notes': notes,
            'summary': summary, 'old_rules': {'slowest': slowest, 'least_stable': least_stable}}


JUDGES = {'forward': forward_verdict, 'informative': informative_verdict,
          'backward': backward_verdict, 'training': training_verdict}


def contract(experiments: dict) -> dict:
    """The arguments of :func:`jaxnorm.papers.checks.write_results` (claim, ran, table,
    checks, figures, notes) gathered over the experiments present, in the paper's order, and
    the seconds they took."""
    present = [name for name in TITLES if name in experiments]
    table, results, notes = [], [], []
    for name in present:
        e = experiments[name]
        table += [f"**{TITLES[name]}**: {checks.verdict(e['checks'])}", '', *e['table'], '']
        results += e['checks']
        notes += e.get('notes', [])
    runs = {}  # informative and backward share one set of probes, hence one description
    for name in present:
        runs.setdefault(experiments[name]['ran'], []).append(TITLES[name])
    return {'claim': ' '.join(f"{TITLES[n]}: {experiments[n]['claim']}" for n in present),
            'ran': ' '.join(f"{' and '.join(titles)}: {text}" for text, titles in runs.items()),
            'table': table[:-1], 'checks': results, 'notes': notes,
            'figures': [f'{n}.png' for n in present],
            'seconds': sum(experiments[n]['seconds'] for n in present)}


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
    fits = bound_fit(records)
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
    """Per group size, the epoch-mean training loss and the test accuracy per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, r in enumerate(records):
        epochs = np.arange(1, len(r['loss'][0]) + 1)
        style = {'color': plt.cm.viridis(i / max(len(records) - 1, 1)), 'marker': 'o'}
        label = f"group size {_group_label(r['group_size'])}"
        _band(axes[0], epochs, r['loss'], label, False, **style)
        _band(axes[1], epochs, 100 * np.asarray(r['test_accuracy']), label, False, **style)
    axes[0].set(xlabel='epoch', ylabel='epoch-mean training loss', title='training loss')
    axes[1].set(xlabel='epoch', ylabel='test accuracy %', title='test accuracy')
    axes[0].legend(fontsize=8)
    fig.suptitle('GroupNorm by group size, trained by jaxnorm.train.fit (mean ± std over seeds)')
    path = _save(fig, out_dir, 'training.png')
    plt.close(fig)
    return path


PLOTS = {'forward': plot_forward, 'informative': plot_informative, 'backward': plot_backward,
         'training': plot_training}
