"""EMR vs quadratic regularizers (Lubana, Trivedi, Koutra, Dick, arXiv:2102.02805).

Claims (abstract): (1) quadratic regularizers (QR: EWC, MAS, SI, RWalk) interpolate the
current parameters with the previous task's end point at every step with a coefficient
2ηλΩ tied to the learning rate and λ, which makes them unstable across hyperparameters;
taking the optimizer step first and interpolating explicitly with the relative importance
α = √Ω_cur / (√Ω_cur + √Ω_prev) (EMR, no λ) gives higher average accuracy (+6.2 points) at
lower forgetting (-4.5 points); (2) QR gives the deeper layers lower importance, and
forgetting happens mostly there.

Protocol (the reference code's, at CPU scale): task-incremental with one head per task, an
MLP 64-128-128 (ReLU) + heads, SGD momentum 0.9 reset at every task, batch 10, online
importances (EMA 0.8) with the reference's three behaviours (MAS: summed feature norm; QR's
importance from the penalized gradient; RWalk's Fisher kept; :class:`jaxnorm.continual.Setup`).
LR grid {0.03, 0.01, 0.003, 0.001} (the reference's); QR's λ grid 1e-8..1e4 (the reference's
1e-5..1e4 plus three decades below, where SI/RWalk first become stable; at ``quick`` and
``standard`` every third decade of 1e-8..1e7). As in the reference, the first ``tune_tasks`` tasks are held out for
tuning: every configuration runs that short sequence, each method takes the LR (and λ) with
the best mean accuracy over seeds there, and is scored on a fresh sequence of the remaining
tasks. Every configuration of a seed shares the initialization and batch order (paired).

Checks (declared before the run, :mod:`jaxnorm.papers.checks`; one cell per importance, Holm
over the cells, paired over seeds, points = 100 x fraction):
  * tuned accuracy (claim): acc(EMR tuned) - acc(QR tuned) on the scored tasks, superiority
    over 0, powered for the paper's +6.2 points;
  * tuned forgetting (claim): forgetting(QR tuned) - forgetting(EMR tuned), powered for 4.5;
  * robust accuracy / robust forgetting (claims): spread (max - min over the LR grid) of one
    seed's accuracy (forgetting), QR at its one tuned λ (best on average over the LRs on the
    tuning tasks) minus EMR; superiority over 0, not powered (no number in the paper);
  * depth importance (claim, finding 2): QR's log10 mean importance per parameter in the
    first regularized layer minus the deepest one, at QR's tuned configuration, > 0;
  * depth drift (claim, finding 2): QR's relative drift ||θ_end - θ_1|| / ||θ_1|| of the
    deepest regularized layer minus the first (θ_1: after the first scored task), > 0.
With several benchmarks each repeats them, named with its name as a suffix.

    python -m jaxnorm.papers.emr --quick --out results     # split digits, ~190 s of CPU
    python -m jaxnorm.papers.emr --scale standard --seeds 5 --out results
    python -m jaxnorm.papers.emr --scale paper --out results   # CIFAR-100 superclasses
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

import optim
from jaxnorm import continual as cl, trees
from jaxnorm.commands import continual as continual_command
from jaxnorm.data import continual as dc
from jaxnorm.papers import checks, common, emr_report

NAME = 'emr'
TITLE = 'Lubana, Trivedi, Koutra, Dick, arXiv:2102.02805 (CoLLAs 2022)'
CLAIM = ('Explicitly interpolating towards the previous task after the optimizer step, with '
         'a relative importance and no λ (EMR), gives higher average accuracy, lower '
         'forgetting and more stability across learning rates than the quadratic '
         'regularizers EWC, MAS, SI and RWalk, which give the deeper layers lower importance.')
IMPORTANCES = ('ewc', 'mas', 'si', 'rwalk')
# The paper's LR grid (the reference code's protocol), used at every scale.
REFERENCE_LRS = LRS = (0.03, 0.01, 0.003, 0.001)
STRENGTHS = tuple(10.0 ** k for k in range(-8, 5))
# quick and standard (CPU budget): every third decade, 1e-8..1e7; above the reference's 1e4
# because EWC's online importance (squared minibatch gradients, ~1e-5 here) picked the top of
# 1e-8..1e4 in a pilot on split MNIST-5k.
STANDARD_STRENGTHS = tuple(10.0 ** k for k in range(-8, 8, 3))
ACCURACY_EFFECT, FORGETTING_EFFECT = 6.2, 4.5  # the abstract's averages, points

# The paper's run (research/optim.md 2.4): CIFAR-100 by its 20 superclasses, batch 128, SGD
# momentum 0.9, the reference LR grid; epochs per task are in the repo's missing config.py
# ([infer]); the reference's vanilla CNN without its CIFAR-10 pre-training. These are
# ``scripts/continual.py`` flags (``scripts/configs/emr.py``); method, importance and seeds are
# ignored here (every pair runs over ``--seeds``). Tasks 0-2 tune, as the reference.
PAPER = {
    'benchmark': 'cifar100_superclass',
    'method': 'emr',
    'importance': 'ewc',
    'model': 'cnn',
    'lr': [0.03, 0.01, 0.003, 0.001],
    'epochs': 5,
    'batch_size': 128,
    'momentum': 0.9,
    'seeds': 3,
}


def get_config(scale: str) -> dict:
    """What runs at ``scale``: ``{'benchmarks': [names], 'benchmark_kwargs': {name: kwargs},
    'schedule': Setup fields, 'lrs', 'strengths', 'tune_tasks'}``. ``quick``: split digits
    (5 tasks: 2 tune, 3 scored), 1 epoch per task. ``standard``: permuted MNIST-1D (10
    tasks, 2,000 training examples each) and split MNIST-5k (10 binary tasks), 3 tune and 7
    scored, 1 epoch per task. Both take every third λ decade of 1e-8..1e7
    (:data:`STANDARD_STRENGTHS`, 6 values, to fit the CPU budget); ``paper``: :data:`PAPER`
    with 1e-8..1e4 in decades."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return {'benchmarks': ['split_digits'], 'benchmark_kwargs': {}, 'tune_tasks': 2,
                'schedule': {'epochs': 1}, 'lrs': LRS, 'strengths': STANDARD_STRENGTHS}
    return {'benchmarks': ['permuted_mnist1d', 'split_mnist5k'],
            'benchmark_kwargs': {'permuted_mnist1d': {'num_tasks': 10, 'train_per_task': 2000},
                                 'split_mnist5k': {'num_tasks': 10}},
            'tune_tasks': 3, 'schedule': {'epochs': 1}, 'lrs': LRS,
            'strengths': STANDARD_STRENGTHS}


def metrics(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average accuracy and forgetting for an array of accuracy matrices (..., T, T)."""
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    acc = np.array([cl.average_accuracy(m) for m in flat]).reshape(matrices.shape[:-2])
    forg = np.array([cl.average_forgetting(m) for m in flat]).reshape(matrices.shape[:-2])
    return acc, forg


def split_tasks(bench: dc.Benchmark, tune_tasks: int) -> tuple[dc.Benchmark, dc.Benchmark]:
    """The held-out tuning sequence (the first ``tune_tasks`` tasks) and the scored one."""
    if not 1 <= tune_tasks <= bench.num_tasks - 2:
        raise ValueError(f'{bench.name}: tune_tasks must leave >= 2 scored tasks of '
                         f'{bench.num_tasks}, got {tune_tasks}')
    return (dataclasses.replace(bench, tasks=bench.tasks[:tune_tasks]),
            dataclasses.replace(bench, tasks=bench.tasks[tune_tasks:]))


def choose(tune_acc: np.ndarray) -> tuple[int, int, int]:
    """From tuning accuracies (LR, λ, seed): the (LR, λ) of the best mean over seeds, and the
    one λ best on average over the LRs (a diverged configuration counts as -1)."""
    mean = np.nan_to_num(np.asarray(tune_acc, float).mean(-1), nan=-1.0)
    i, j = np.unravel_index(int(mean.argmax()), mean.shape)
    return int(i), int(j), int(mean.mean(0).argmax())


def _layer_order(name: str):
    digits = re.findall(r'\d+', name)
    return (int(digits[-1]) if digits else 0, name)


class LayerProbe:
    """Per-layer records of a grid's scored sequence (:func:`jaxnorm.continual.run_grid`'s
    ``probe``): each regularized top-level layer's (all but the heads) parameters after the
    first task and at the end, and its mean past importance Ω_prev per parameter at the end.
    """

    def __init__(self, lanes: int):
        self.lanes, self.first, self.last, self.omega = lanes, None, None, None

    def _per_layer(self, tree):
        tree = jax.device_get(tree)
        names = sorted((k for k in tree if k != 'head'), key=_layer_order)
        out = {}
        for name in names:
            leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree[name])]
            if self.lanes == 1:
                leaves = [x[None] for x in leaves]
            out[name] = np.concatenate([x.reshape(self.lanes, -1) for x in leaves], axis=1)
        return out

    def __call__(self, t: int, state) -> None:
        params = self._per_layer(state.params)
        if t == 0:
            self.first = params
        self.last = params
        self.omega = self._per_layer(
            trees.find_state(state.opt_state, optim.ContinualState).importance.omega_prev)

    def summary(self, lanes) -> dict:
        """``{'layers': names, 'importance': (layers, lanes) mean Ω_prev, 'drift': (layers,
        lanes) ||θ_end - θ_first|| / ||θ_first||}`` for the lane indices ``lanes``."""
        names = list(self.first)
        lanes = np.asarray(lanes)
        importance = np.stack([self.omega[n][lanes].mean(1) for n in names])
        drift = np.stack([np.linalg.norm(self.last[n][lanes] - self.first[n][lanes], axis=1)
                          / np.linalg.norm(self.first[n][lanes], axis=1) for n in names])
        return {'layers': names, 'importance': importance, 'drift': drift}


def run_benchmark(bench, setting: dict, seeds: list[int], runs_dir: str) -> dict:
    """Every method tuned on the held-out tasks and scored on the rest (module docstring).

    Per method (``finetune``, ``emr-<imp>``, ``qr-<imp>``): ``lr``/``strength`` tuned,
    ``tune_accuracy`` (LR, λ, seed), ``accuracy``/``forgetting`` (seed) on the scored tasks
    at the tuned configuration, ``lr_accuracy``/``lr_forgetting`` (LR, seed) over the LR grid
    (QR at ``fixed_strength``), ``matrices`` (seed, T, T) tuned, and for EMR/QR ``layers``
    (:meth:`LayerProbe.summary` at the tuned configuration). Runs live in
    ``runs_dir/<benchmark>/{tune,score}/<method>`` (a rerun resumes them).
    """
    lrs, schedule = list(setting['lrs']), setting['schedule']
    tune_bench, score_bench = split_tasks(bench, setting['tune_tasks'])
    out = {}

    def grid(stage, bench_part, method, importance, strengths, probe=None):
        setup = cl.Setup(method=method, importance=importance, **schedule)
        workdir = os.path.join(runs_dir, bench.name, stage, f'{method}-{importance}')
        return cl.run_grid(setup, bench_part, lrs, strengths, seeds, workdir=workdir,
                           probe=probe)

    plans = [('finetune', 'finetune', 'ewc', [0.0])]
    for imp in IMPORTANCES:
        plans += [(f'emr-{imp}', 'emr', imp, [0.0]),
                  (f'qr-{imp}', 'quadratic', imp, list(setting['strengths']))]
    for key, method, imp, strengths in plans:
        tune_acc, _ = metrics(grid('tune', tune_bench, method, imp, strengths))
        i, j, fixed = choose(tune_acc)
        scored = sorted({strengths[j], strengths[fixed]})
        probe = LayerProbe(len(lrs) * len(scored) * len(seeds)) if method != 'finetune' else None
        matrices = grid('score', score_bench, method, imp, scored, probe)  # (L, S', seeds)
        acc, forg = metrics(matrices)
        jt, jf = scored.index(strengths[j]), scored.index(strengths[fixed])
        entry = {'lr': lrs[i], 'strength': strengths[j], 'fixed_strength': strengths[fixed],
                 'tune_accuracy': tune_acc, 'accuracy': acc[i, jt], 'forgetting': forg[i, jt],
                 'matrices': matrices[i, jt], 'lr_accuracy': acc[:, jf],
                 'lr_forgetting': forg[:, jf]}
        if probe is not None:
            entry['layers'] = probe.summary(
                [(i * len(scored) + jt) * len(seeds) + k for k in range(len(seeds))])
        out[key] = entry
    return out


def declare_checks(seeds: int, suffix: str = '') -> dict[str, checks.Check]:
    """The six claim checks of one benchmark, declared before it runs."""
    tag = f' ({suffix})' if suffix else ''

    def check(name, claim, statistic, effect=None):
        return checks.Check(f'{name}{tag}', claim, 'claim', statistic, 'superiority', seeds,
                            margin=0.0, effect=effect, aggregate='all')
    tuned = 'each tuned (LR, and λ for QR) on the held-out first tasks, scored on the rest'
    return {
        'tuned_accuracy': check(
            'tuned accuracy', 'Tuned EMR is more accurate than every tuned QR (EWC, MAS, SI, '
            'RWalk) (paper: +6.2 points on average)',
            f'EMR minus QR average accuracy (points), {tuned}; per importance',
            ACCURACY_EFFECT),
        'tuned_forgetting': check(
            'tuned forgetting', 'Tuned EMR forgets less than every tuned QR (paper: -4.5 '
            'points on average)',
            f'QR minus EMR average forgetting (points), {tuned}; per importance',
            FORGETTING_EFFECT),
        'robust_accuracy': check(
            'robust accuracy', "EMR's accuracy varies less over the reference LR grid than "
            "QR's at one λ",
            'QR (at its one λ tuned on the held-out tasks) minus EMR spread (max - min over '
            "the LRs) of one seed's average accuracy (points); per importance"),
        'robust_forgetting': check(
            'robust forgetting', "EMR's forgetting varies less over the reference LR grid "
            "than QR's at one λ",
            "QR minus EMR spread over the LRs of one seed's average forgetting (points); per "
            'importance'),
        'depth_importance': check(
            'depth importance', 'QR gives the deeper layers lower importance (abstract, '
            'finding 2)',
            "QR's log10 mean importance per parameter, first minus deepest regularized layer, "
            'at its tuned configuration, at the end of the scored tasks; per importance'),
        'depth_drift': check(
            'depth drift', 'Under QR the deeper layers forget more: they move further from '
            'where the first scored task left them (abstract, finding 2)',
            "QR's relative drift ||θ_end - θ_1|| / ||θ_1||, deepest minus first regularized "
            'layer (x100), at its tuned configuration; per importance'),
    }


def evaluate_checks(declared: dict[str, checks.Check], results: dict
                    ) -> tuple[list[dict], dict]:
    """The declared checks on one benchmark's results, and a summary."""
    cells = {k: {} for k in declared}
    summary = {'tuned': {}, 'spread_points': {}}
    for imp in IMPORTANCES:
        emr, qr = results[f'emr-{imp}'], results[f'qr-{imp}']
        cells['tuned_accuracy'][imp] = (100 * emr['accuracy'], 100 * qr['accuracy'])
        cells['tuned_forgetting'][imp] = (100 * qr['forgetting'], 100 * emr['forgetting'])
        spreads = {}
        for key, name in (('lr_accuracy', 'robust_accuracy'),
                          ('lr_forgetting', 'robust_forgetting')):
            spread_qr = np.ptp(100 * np.asarray(qr[key]), axis=0)
            spread_emr = np.ptp(100 * np.asarray(emr[key]), axis=0)
            cells[name][imp] = (spread_qr, spread_emr)
            spreads[key] = {'qr': spread_qr.tolist(), 'emr': spread_emr.tolist()}
        layers = qr['layers']
        log_imp = np.log10(np.asarray(layers['importance']) + 1e-30)
        cells['depth_importance'][imp] = (log_imp[0], log_imp[-1])
        drift = 100 * np.asarray(layers['drift'])
        cells['depth_drift'][imp] = (drift[-1], drift[0])
        summary['tuned'][imp] = {m: {'lr': results[f'{m}-{imp}']['lr'],
                                     'strength': results[f'{m}-{imp}']['strength']}
                                 for m in ('emr', 'qr')}
        summary['spread_points'][imp] = spreads
    evaluated = [declared[k].evaluate_cells(cells[k]) for k in declared]
    summary['mean_accuracy_gain'] = float(np.mean(
        [np.mean(a - b) for a, b in cells['tuned_accuracy'].values()]))
    summary['mean_forgetting_reduction'] = float(np.mean(
        [np.mean(a - b) for a, b in cells['tuned_forgetting'].values()]))
    return evaluated, summary


def paper_setting(values: Mapping[str, Any], source: str) -> dict:
    """The :func:`get_config` dict of paper-scale ``values``: ``scripts/continual.py`` config
    values (``source`` names them in errors) over that command's defaults (its benchmark,
    model, epochs, batch size, momentum and LR grid; the method, importance and seeds keys are
    ignored, the experiment runs every pair over ``--seeds``). Tasks 0-2 tune (the
    reference's). ValueError on keys that are not the command's flags, or bad values."""
    parser = continual_command.build_parser()
    defaults = vars(parser.parse_args([]))  # the command's defaults: no flags given
    flags = set(defaults) - {'config'}
    unknown = sorted(set(values) - flags)
    if unknown:
        raise ValueError(f'{source}: unknown setting(s) {", ".join(unknown)}; valid: '
                         f'{", ".join(sorted(flags))}')
    values = {**defaults, **values}
    model = values['model'] or ('cnn' if values['benchmark'] == 'cifar100_superclass'
                                else 'mlp')
    schedule = {'epochs': values['epochs'], 'batch_size': values['batch_size'],
                'momentum': values['momentum'], 'model': model}
    cl.Setup(**schedule)  # validates
    return {'benchmarks': [values['benchmark']], 'benchmark_kwargs': {}, 'tune_tasks': 3,
            'schedule': schedule, 'lrs': tuple(values['lr']), 'strengths': STRENGTHS}


def main(argv=None) -> int:
    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    started = time.perf_counter()
    out_dir = common.output_dir(args, NAME)
    seeds = list(range(args.seeds))
    benches, schedule, lrs = setting['benchmarks'], setting['schedule'], setting['lrs']
    setup = cl.Setup(**schedule)
    network = ('MLP 128-128' if args.scale != 'paper'
               else f'{setup.model} (hidden {setup.hidden})')
    seeds_declared = common.declared_seeds(args)
    declared = {b: declare_checks(seeds_declared, '' if len(benches) == 1 else b)
                for b in benches}
    all_results, rows, figures, check_list, summaries, sizes = {}, [], [], [], {}, []
    notes = emr_report.notes(setting)
    for bench_name in benches:
        bench = dc.load_benchmark(bench_name, data_dir=args.data_dir,
                                  **setting['benchmark_kwargs'].get(bench_name, {}))
        sizes.append(f'{bench_name} ({bench.num_tasks} tasks: {setting["tune_tasks"]} tune, '
                     f'{bench.num_tasks - setting["tune_tasks"]} scored)')
        with common.shared_compilations():
            results = run_benchmark(bench, setting, seeds, os.path.join(out_dir, 'runs'))
        all_results[bench_name] = results
        rows += emr_report.tables(results, bench_name, lrs, IMPORTANCES) + ['']
        found, summaries[bench_name] = evaluate_checks(declared[bench_name], results)
        check_list += found
        notes += emr_report.headroom_notes(results, bench_name, IMPORTANCES)
        tag = '' if bench_name == 'split_digits' else f'_{bench_name}'
        title = (f'{bench_name}: {network}, SGD-m {setup.momentum}, batch {setup.batch_size}, '
                 f"{schedule['epochs']} epoch(s)/task, {args.seeds} seeds")
        figures.append(emr_report.plot_lr(results, os.path.join(out_dir, f'emr_lr{tag}.png'),
                                          title, lrs, IMPORTANCES))
        figures.append(emr_report.plot_layers(
            results, os.path.join(out_dir, f'emr_layers{tag}.png'), title, IMPORTANCES))
    ran = (f"{' and '.join(sizes)}, task-incremental with per-task heads, {network}, SGD "
           f'momentum {setup.momentum}, batch {setup.batch_size}, {schedule["epochs"]} '
           f'epoch(s) per task; {{EWC, MAS, SI, RWalk}} x {{QR (λ of '
           f"{min(setting['strengths']):g}..{max(setting['strengths']):g}, "
           f"{len(setting['strengths'])} values), EMR}} and fine-tuning, LR grid {list(lrs)}, "
           f'tuned on the held-out tasks, {args.seeds} seeds.')
    print(json.dumps(checks.to_json(summaries), indent=1))
    checks.write_results(
        out_dir, paper=TITLE, claim=CLAIM, ran=ran, scale=args.scale,
        seeds=args.seeds, table=rows, checks=check_list, figures=figures, started=started,
        notes=notes, summary=summaries,
        setup={'quick': args.quick, 'seeds': args.seeds, 'lrs': list(lrs),
               'reference_lrs': list(REFERENCE_LRS), 'schedule': schedule,
               'strengths': list(setting['strengths']), 'tune_tasks': setting['tune_tasks'],
               'benchmarks': benches, 'benchmark_kwargs': setting['benchmark_kwargs'],
               'reference_behaviours': {k: getattr(setup, k) for k in (
                   'mas_objective', 'penalized_importance', 'keep_fisher')}},
        runs=all_results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
