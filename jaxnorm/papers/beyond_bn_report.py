"""Declared checks, their evaluation, tables and plots of :mod:`jaxnorm.papers.beyond_bn`.

:func:`declare_checks` declares every check of every experiment before the run
(:class:`jaxnorm.papers.checks.Check`); ``JUDGES[name](records, declared[name])`` evaluates
them on the experiment's records (per-seed lists, first axis: seed) and returns
``{'checks': [check results], 'table': [markdown lines], 'notes': [...], ...}``. Seeds are the
unit of replication: every seed draws its own weights and inputs, and two configurations of
one seed share that seed's inputs, so differences are paired by seed.

The init-time checks are rules judged in every seed (a rule fails if one seed breaks it) or,
where the paper claims a difference between two normalizers (group size 1 against one group),
paired superiority over seeds; the numerical rank's growth, non-inferiority of its log-log
slope to the bound's 1/2. The training checks live in :mod:`jaxnorm.papers.beyond_bn_training`.
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
BOUND_EXPONENT = 0.5       # rank >= Omega(sqrt(width / group size)): log-log slope 1/2
SLOPE_MARGIN = 0.1         # [infer] non-inferiority margin of the numerical-rank slope
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


def declare_checks(seeds: int, networks: Sequence[str]) -> dict:
    """Every check of every experiment, declared before the run.

    Args:
        seeds: seeds per configuration.
        networks: the networks of the informative and backward experiments.

    Returns:
        ``{experiment: {check name: Check}}`` for the init-time experiments (the training
        checks: :func:`jaxnorm.papers.beyond_bn_training.declare_checks`).
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
            'every normalizer, the parametric ones included (paper, claim (i)). Judged on the '
            'block each normalizer was run with by the authors: the parametric ones (WN, sWS, '
            'none) in the block with the activation before the residual sum, '
            's * act(norm(conv(x))) + x; the activations-based ones in the default block. The '
            'parametric ones on uniform_resnet27 are left to the sanity check below (there '
            'they are flat by construction).', 'claim',
            growth + ', with SkipInit', 'rule', seeds,
            rule=f'with SkipInit every normalizer grows < {LINEAR_BOUND:g}x over 27 blocks on '
                 'every network probed (parametric ones: act-before-sum block; not '
                 'uniform_resnet27)'),
        'forward: skipinit_identity': checks.Check(
            'forward: skipinit_identity',
            'In uniform_resnet27 (identity shortcuts only) with the act-before-sum block and '
            'SkipInit, every block computes exactly its input, so the variance is constant: '
            'holds by construction (sanity of the block variant and the probe).', 'sanity',
            growth + ', with SkipInit, act-before-sum block', 'rule', seeds,
            rule='|growth - 1| < 1e-5 for WN, sWS and none'),
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
        informative[f'informative: {net}_numerical_rank_slope'] = checks.Check(
            f'informative: {net}_numerical_rank_slope',
            f'{net}: the numerical rank of the last layer\'s activations grows at least like '
            'the bound sqrt(width / group size) (paper, claim (ii): rank >= '
            'Omega(sqrt(C / g))). A lower bound with an unknown constant is testable over a '
            'range of C/g only through its growth: a rank growing more slowly than sqrt(C/g) '
            'falls below c sqrt(C/g) for every c once C/g is large, so the check is that the '
            'log-log slope is not below 1/2 (non-inferiority, margin '
            f'{SLOPE_MARGIN:g} [infer]; a steeper slope is consistent with a loose bound). The '
            'rank cannot exceed the batch B, so group sizes at which a seed\'s rank is B '
            '(saturated) are left out of that seed\'s fit; a seed with fewer than 2 '
            'unsaturated group sizes has no slope (dropped).', 'claim',
            'least-squares slope of log(numerical rank) on log(C / g) over the unsaturated '
            'group sizes of one seed, minus 1/2 (numerical rank: singular values of the '
            'unit-norm sample rows above s_max * max(B, D) * eps(float32))',
            'non_inferiority', seeds, margin=SLOPE_MARGIN)
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
    return {'forward': forward, 'informative': informative, 'backward': backward}


# ----------------------------------------------------------------------------- judges


def _forward_key(r: dict) -> tuple:
    return (r['network'], r['norm'], r['skipinit'], r.get('block', 'act_after_sum'))


def _forward_label(k: tuple) -> str:
    return (f'{k[0]}/{k[1]}{"/skipinit" if k[2] else ""}'
            f'{"/act_before_sum" if k[3] == "act_before_sum" else ""}')


def forward_verdict(records: list[dict], declared: dict) -> dict:
    growth = {}
    for r in records:
        variance = np.asarray(r['variance'])
        growth[_forward_key(r)] = variance[:, -1] / variance[:, 0]
    after, before = 'act_after_sum', 'act_before_sum'
    uniform = 'uniform_resnet27'

    def skipinit_judged(k):  # the authors' block per normalizer; not flat by construction
        if not k[2]:
            return False
        if k[1] in ACTIVATION_NORMS:
            return k[3] == after
        return k[3] == before and k[0] != uniform

    groups = {
        'forward: activation_norms_linear': (
            {k: g for k, g in growth.items()
             if k[1] in ACTIVATION_NORMS and not k[2] and k[3] == after},
            lambda g: g < LINEAR_BOUND),
        'forward: parametric_exponential': (
            {k: g for k, g in growth.items() if k[1] not in ACTIVATION_NORMS and not k[2]},
            lambda g: g > EXPONENTIAL_FLOOR),
        'forward: skipinit_flattens': (
            {k: g for k, g in growth.items() if skipinit_judged(k)}, lambda g: g < LINEAR_BOUND),
        'forward: skipinit_identity': (
            {k: g for k, g in growth.items()
             if k[2] and k[3] == before and k[0] == uniform and k[1] not in ACTIVATION_NORMS},
            lambda g: np.abs(g - 1) < 1e-5)}
    results, failing, ranges = [], {}, {}
    for name, (subset, rule) in groups.items():
        if name not in declared:
            continue
        if not subset:  # e.g. a network list without the rows this check is judged on
            results.append(declared[name].evaluate_rule([], value=None)
                           | {'outcome': 'inconclusive'})
            failing[name], ranges[name] = [], [None, None]
            continue
        per_seed = np.all([rule(g) for g in subset.values()], axis=0)  # (seeds,)
        failing[name] = [_forward_label(k) for k, g in subset.items() if not rule(g).all()]
        ranges[name] = [float(min(g.min() for g in subset.values())),
                        float(max(g.max() for g in subset.values()))]
        extreme = ranges[name][0] if 'exponential' in name else ranges[name][1]
        results.append(declared[name].evaluate_rule(per_seed, value=extreme))
    table = ['| network | norm | block | var block 1 | block 9 | block 18 | block 27 | growth '
             '27/1 (seed range) | with SkipInit |', '|---|---|---|---|---|---|---|---|---|']
    for r in records:
        if r['skipinit']:
            continue
        mean = np.asarray(r['variance']).mean(axis=0)
        key = _forward_key(r)
        g, gs = growth[key], growth[(key[0], key[1], True, key[3])]
        table.append(f"| {key[0]} | {key[1]} | {key[3].replace('_', ' ')} | " + ' | '.join(
            f'{mean[i]:.3g}' for i in (0, 8, 17, 26))
            + f' | {g.mean():.3g} ({g.min():.3g}-{g.max():.3g}) | {gs.mean():.3g} |')
    notes = [f'{name}: fails in ' + ', '.join(f) for name, f in failing.items() if f]
    notes.append('forward: growth is judged in every seed. In the default block (activation '
                 'after the sum) SkipInit leaves act(shortcut(x)), so a normalizer whose '
                 'activation is not variance-preserving (WN\'s centred ReLU: x 2.93 per block) '
                 'still grows; the authors ran WN and SkipInit with the activation before the '
                 'sum, s * act(norm(conv(x))) + x, where SkipInit leaves shortcut(x): the '
                 'parametric normalizers\' SkipInit rule is judged on that block. Default-block '
                 'SkipInit growth of the parametric ones (reported, not judged): ' + ', '.join(
                     f'{_forward_label(k)} {g.mean():.3g}' for k, g in growth.items()
                     if k[2] and k[3] == after and k[1] not in ACTIVATION_NORMS) + '.')
    return {'checks': results, 'table': table, 'notes': notes, 'failing': failing,
            'range': ranges,
            'growth': {_forward_label(k): g.tolist() for k, g in growth.items()}}


def _by_network(records: list[dict]) -> dict[str, list[dict]]:
    out = {}
    for r in records:
        out.setdefault(r['network'], []).append(r)
    return out


def _width_ratio(r: dict) -> float:
    """C / group size at the last layer (1 for a single group)."""
    return 1.0 if r['group_size'] == ONE_GROUP else r['last_width'] / r['group_size']


def bound_fit(records: list[dict]) -> dict:
    """Per network, the bound's constant and the log-log slope of the seed-mean stable and
    numerical ranks (reported; the numerical rank's per-seed slope is judged).

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
                     'bound_slope': BOUND_EXPONENT,
                     'c_least_squares': float(np.sum(np.sqrt(ratio) * rank_m) / np.sum(ratio))}
        if all('numerical_rank' in r for r in recs):
            numerical = np.mean([r['numerical_rank'] for r in recs], axis=1)
            fits[net]['numerical_c'] = float(np.min(numerical / np.sqrt(ratio)))
            fits[net]['numerical_loglog_slope'] = float(
                np.polyfit(np.log(ratio), np.log(np.maximum(numerical, 1e-12)), 1)[0])
    return fits


def rank_slopes(rank: np.ndarray, ratio: np.ndarray, batch: int) -> np.ndarray:
    """Per seed, the least-squares slope of log(rank) on log(ratio) over the entries of that
    seed with 0 < rank < ``batch`` (unsaturated; the rank is at most the batch); NaN with fewer
    than two such entries at distinct ratios.

    Args:
      rank: (seeds, group sizes) numerical ranks.
      ratio: (group sizes,) C / g.
      batch: the batch size B (the largest possible rank).
    """
    rank = np.asarray(rank, dtype=np.float64)
    ratio = np.asarray(ratio, dtype=np.float64)
    slopes = np.full(rank.shape[0], np.nan)
    for i, seed in enumerate(rank):
        keep = (seed > 0) & (seed < batch)
        if len(np.unique(ratio[keep])) >= 2:
            slopes[i] = np.polyfit(np.log(ratio[keep]), np.log(seed[keep]), 1)[0]
    return slopes


def _old_trend_rule(values: np.ndarray, sign: int) -> bool:
    """The old rule on (seeds, group sizes) ``values``: each step moves against ``sign`` by
    less than 2 SE of the mean difference (unpaired), and the ends differ by > 2 SE in the
    direction ``sign`` (+1 rising with the group size, -1 falling)."""
    mean, std, n = _stats(values)
    steps = all(sign * (mean[i + 1] - mean[i]) >= -2 * _se_diff(std[i], std[i + 1], n)
                for i in range(len(mean) - 1))
    return bool(steps and sign * (mean[-1] - mean[0]) > 2 * _se_diff(std[0], std[-1], n))


def informative_verdict(records: list[dict], declared: dict, batch: int | None = None) -> dict:
    """The informative checks; ``batch`` (the probe batch, the largest possible rank; default
    the largest numerical rank seen) marks saturated numerical ranks."""
    results, notes = [], []
    fits = bound_fit(records)
    table = ['| network | group size | stable rank | numerical rank | mean cosine | bound '
             'c*sqrt(C/g) |', '|---|---|---|---|---|---|']
    slopes = {}
    for net, recs in _by_network(records).items():
        rank = np.transpose([r['stable_rank'] for r in recs])   # (seeds, group sizes)
        cosine = np.transpose([r['cosine'] for r in recs])
        rank_m, rank_s, _ = _stats(rank)
        cos_m, cos_s, _ = _stats(cosine)
        ratio = np.array([_width_ratio(r) for r in recs])
        numerical = np.transpose([r['numerical_rank'] for r in recs]).astype(np.float64)
        cap = batch if batch is not None else int(numerical.max())
        slopes[net] = rank_slopes(numerical, ratio, cap)
        num_m, num_s, _ = _stats(numerical)
        results.append(declared[f'informative: {net}_numerical_rank_slope'].evaluate(
            slopes[net] - BOUND_EXPONENT))
        saturated = int((numerical >= cap).sum())
        notes.append(
            f'informative: {net}: numerical rank (tolerance s_max * max(B, D) * eps(float32)) '
            f'per group size {[round(float(v), 1) for v in num_m]}; {saturated} of '
            f'{numerical.size} (seed, group size) values saturated at B = {cap} and left out '
            'of the slope fits; per-seed slopes '
            f'{[None if not np.isfinite(v) else round(float(v), 3) for v in slopes[net]]} '
            f'(the bound: {BOUND_EXPONENT}).')
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
                         f'{rank_s[i]:.2f} | {num_m[i]:.1f} ± {num_s[i]:.1f} | '
                         f'{cos_m[i]:.3f} ± {cos_s[i]:.3f} | '
                         f"{fits[net]['c'] * np.sqrt(ratio[i]):.2f} |")
    notes.append('informative: the bound\'s constant c (largest with stable rank >= '
                 'c sqrt(C/g) at every g) and the log-log slope of the stable rank against C/g '
                 'are reported, not judged: the bound is on the rank, the stable rank only '
                 'bounds it from below. The bound is judged on the numerical rank\'s slope.')
    return {'checks': results, 'table': table, 'notes': notes, 'bound_fit': fits,
            'numerical_rank_slopes': {k: v.tolist() for k, v in slopes.items()}}


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


JUDGES = {'forward': forward_verdict, 'informative': informative_verdict,
          'backward': backward_verdict}


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


PLOTS = {'forward': plot_forward, 'informative': plot_informative, 'backward': plot_backward}
