"""Lottery ticket vs pruning & fine-tuning, and the θ₀/θ_T weight overlap (arXiv:2102.11068).

Claim (Liu et al., ICML 2021): a lottery ticket's advantage comes from the correlation
between initial and final weights when the learning rate is too small; the overlap of the
largest weights R_p(θ₀, θ_T) is well above p at small learning rates and falls to about p at
large ones, where the ticket (LT) is no better than a random re-initialization of its mask;
and pruning & fine-tuning (PF) from the trained dense θ_T beats LT at the same mask and the
same total epochs.

Setting (:func:`get_config`; quick and standard on MNIST-1D, 4,000 train / 1,000 test, 40-point
signals): the MNIST-1D authors' MLP (two hidden layers of 100, ReLU, no normalization; their
MLP reaches 68 % there, so the data has no ceiling effect, and a dense net's kernels are what
R_p is defined on), every kernel pruned (the output layer too, uniform per-layer rate). SGD
momentum 0.9, batch 100 (MNIST-1D's default), no weight decay, learning rate divided by 10 at
80/150 and 120/150 of each run (the paper's schedule, restarted for every run as in its PF),
initial learning rate 0.01 ("insufficient") or 0.1 (the paper's two values for SGD on
ResNet-20). Standard: 100 passes = 4,000 steps per run, where the pilot's training loss is
flat over the last 40 % of every run at both learning rates (``pretrain_curves.png`` shows
each run's curve; quick: 640 steps, levels 50 and 90 % only). IMP with rewinding to θ₀
through the sparsities 50, 70 and 90 % (one round per level,
:func:`prune.lottery.lottery_levels`); at each level, on its mask m: LT (m ⊙ θ₀),
random re-init (m ⊙ θ₀'), PF (m ⊙ θ_T), each trained as long as the pretraining. Every run is
one seed-batched engine run (``jaxnorm.train.fit``, the seeds as lanes, the mask held by the
``sparsity`` extension); θ₀ depends only on the seed, so the learning rates are paired.

Checks (declared before running by :func:`declare_checks`; seeds are the unit of replication,
every comparison a paired per-seed difference judged by the 90 % paired t-interval of
:mod:`jaxnorm.papers.checks`; "cells" are the sparsities, Holm-controlled, every cell must
hold); p = 0.2, small / large = the smallest / largest learning rate:
  * overlap falls with lr (claim, superiority): R_p(θ₀, θ_T) at small minus at large lr;
  * overlap well above p at small lr (claim, superiority over 0.1);
  * overlap near p at large lr (claim, equivalence within 0.05): the paper's Fig. 4 / Table 1
    have R_0.2 within about 0.005 of p against θ₀ at the large lr; 0.05 is a quarter of p;
  * PF keeps θ_T's large weights at large lr (claim, superiority, cells): R_p(θ_PF, θ_T) minus
    R_p(θ_PF, θ₀) over the kept weights (the paper's Table 1: 48-64 % against 20 %);
  * LT > re-init at small lr (claim, superiority, cells; powered for :data:`EFFECT` points);
  * LT ≈ re-init at large lr (claim, equivalence within :data:`EQUIV_MARGIN` points, cells);
  * PF > LT at large lr (claim, superiority, cells; powered for :data:`EFFECT` points: the
    paper's "consistently outperforms" at its recommended large lr);
  * equal budgets (sanity): per level, learning rate and seed, the optimizer steps the engine
    actually ran (read from each run's final state) summed over the shared mask search
    (pretraining + earlier LT runs) and the arm are equal for LT, re-init and PF.

    python scripts/experiments/lottery.py --quick --out results   # ~1 min, 2 cores
    python scripts/experiments/lottery.py --scale standard --seeds 20 --out results
    python scripts/experiments/lottery.py --scale paper --seeds 5 --out results  # CIFAR-10

The paper's GPU target (ResNet-20 on CIFAR-10, 150 epochs): dense 89.62 % at lr 0.01 and
91.7 % at lr 0.1; LT 90.04 % at 62 % sparsity (lr 0.01); Table 1 R_0.2 about 20 % against θ₀
and 48-64 % against θ_T. ``--scale paper`` (:data:`PAPER`, or a ``--config`` file's values)
runs the same arms in that setting with the stand-in MLP / CNN (no BatchNorm).
"""
from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import prune
from jaxnorm import config as config_lib, data, sparsity, train as engine
from jaxnorm.models import get_model
from jaxnorm.papers import checks, common
from jaxnorm.papers import lottery_report as report
from prune.lottery import ARMS, lottery_levels

NAME = 'lottery'
TITLE = ('Liu et al., Lottery Ticket Preserves Weight Correlation: Is It Desirable or Not? '
         'arXiv:2102.11068 (ICML 2021)')
CLAIM = ('The overlap of the largest initial and final weights is well above chance at small '
         'learning rates and near chance at large ones, where the lottery ticket loses its edge '
         'over random re-initialization; pruning & fine-tuning beats the lottery ticket at the '
         'same mask and total epochs.')
ARM_NAMES = report.ARM_NAMES
P = 0.2
LEVELS = (0.5, 0.7, 0.9)
EFFECT = 1.0  # points: the paper's dense lr gap is ~2 points (89.62 -> 91.7); half of it [infer]
EQUIV_MARGIN = 1.0  # points: "about equal" = within half that gap [infer]
NEAR_P_MARGIN = 0.05  # |R_0.2 - p|: a quarter of p; the paper's values are within 0.005
WELL_ABOVE = 0.1  # R_0.2 - p at the small lr (the earlier rule's "well above": R >= p + 0.1)
DECAY = (80 / 150, 120 / 150)  # the paper's LR steps at epochs 80 and 120 of 150

# The paper's training scale (research/papers_numbers.md 2.2; its Sec. 4.1 and appendix):
# CIFAR-10, SGD momentum 0.9, batch 128, T = 150 epochs for pretraining and every arm (PF's
# schedule restarted), LR / 10 at 80 and 120, initial LR 0.01 or 0.1, IMP with a uniform
# per-layer rate, first conv never pruned, 5 repeats (``--seeds 5``). Weight decay is not
# stated; none is used. Deviation: ResNet-20 / VGG-11 / MobileNet-V2 use BatchNorm, whose
# running statistics the masked params-only arms do not carry, so the stand-ins are the
# MLP 300-100 and the small CNN. ``scripts/configs/lottery.py`` returns these values.
PAPER = {'dataset': 'cifar10', 'models': ('cnn', 'mlp'), 'lrs': (0.01, 0.1), 'batch': 128,
         'epochs': 150, 'chunks': 10, 'levels': LEVELS}

# name -> (engine model, options, pattern of pruned kernels): the CNN's first conv is never
# pruned (paper). ``mlp1d``: the MNIST-1D authors' MLP; ``mlp``: LeNet-300-100 (Frankle &
# Carbin); ``cnn``: conv3x3 16 -> conv3x3/2 32 -> conv3x3/2 32, flatten, Dense head.
MODELS = {'mlp1d': ('mlp', {'hidden': (100, 100)}, '.*'),
          'mlp': ('mlp', {'hidden': (300, 100)}, '.*'),
          'cnn': ('small_cnn', {'features': (16, 32, 32)}, r'^(?!conv1/)')}
COMMON = {'dataset': 'mnist1d', 'models': ('mlp1d',), 'lrs': (0.01, 0.1), 'batch': 100,
          'levels': LEVELS}


def get_config(scale: str) -> dict:
    """The setting at ``scale``: ``'quick'`` 16 passes (640 steps) per run in 1 chunk, IMP
    levels 50/90 %; ``'standard'`` 100 passes (4,000 steps) in 10 chunks, levels 50/70/90 %;
    both MNIST-1D with the MLP 100-100 at lr 0.01 and 0.1; ``'paper'`` :data:`PAPER`
    (CIFAR-10).
    ``epochs`` is the passes over the training set per run, ``chunks`` the engine epochs
    (evaluations and checkpoints) they are split into."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return {**COMMON, 'epochs': 16, 'chunks': 1, 'levels': (0.5, 0.9)}
    return {**COMMON, 'epochs': 100, 'chunks': 10}


def paper_setting(values, source: str) -> dict:
    """The standard setting with ``values`` (from ``source``) in place; ValueError on unknown
    keys or models, levels that do not increase, or chunks that do not divide the epochs."""
    setting = common.override_setting(get_config('standard'), values, source)
    bad = [m for m in setting['models'] if m not in MODELS]
    if bad:
        raise ValueError(f'{source}: models {bad} are not built here; choose from '
                         f'{sorted(MODELS)}')
    if setting['epochs'] % setting['chunks']:
        raise ValueError(f"{source}: chunks {setting['chunks']} must divide epochs "
                         f"{setting['epochs']}")
    levels = list(setting['levels'])
    if not levels or any(b <= a for a, b in zip(levels, levels[1:])) or not (
            0 < levels[0] and levels[-1] < 1):
        raise ValueError(f'{source}: levels must increase inside (0, 1), got {levels}')
    return setting


def build(name: str, num_classes: int):
    """(model, pattern of the pruned kernels) of ``name`` (a key of :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f'model must be one of {sorted(MODELS)}, got {name!r}')
    model, kwargs, pattern = MODELS[name]
    return get_model(model, norm='none', num_classes=num_classes, **kwargs), pattern


def load_data(dataset: str, data_dir):
    """``([(x_train, y_train), (x_test, y_test)], num_classes)``, standardized per channel."""
    splits = data.load_standardized(dataset, data_dir=data_dir)
    return [(splits.train_images, splits.train_labels.astype(np.int32)),
            (splits.test_images, splits.test_labels.astype(np.int32))], splits.num_classes


def make_train(name: str, setting: dict, seeds: int, out_dir: str, data_dir: str | None):
    """``train(params, masks, epochs, key)`` over params batched as (lr, seed, ...): for each
    learning rate one seed-batched run of :func:`jaxnorm.train.fit` from that lr's networks,
    their masks held by the ``sparsity`` extension; ``epochs`` passes in ``chunks`` engine
    epochs, the rate divided by 10 at 80/150 and 120/150 of the run.

    Every call gets its own data orders (lane seeds ``100 * call + k``); runs live in
    ``out_dir/runs/<model>-call<c>-lr<i>`` and a rerun resumes them. ``train.log`` collects per
    call the optimizer steps each (lr, seed) network ran (its final ``state.step``) and the
    per-chunk records, so budgets are checked against what the engine did.
    """
    model, kwargs, _ = MODELS[name]
    chunks = setting['chunks']
    base = config_lib.apply_overrides(config_lib.default_config(), {
        'model': model, 'model_kwargs': kwargs, 'norm': 'none', 'dataset': setting['dataset'],
        'data_dir': data_dir, 'augment': 'none', 'batch_size': setting['batch'],
        'optimizer': 'sgd', 'momentum': 0.9, 'weight_decay': 0.0, 'schedule': 'step',
        'epochs': chunks, 'lr_decay_epochs': tuple(chunks * d for d in DECAY),
        'num_seeds': seeds, 'sparsity.masked': True, 'keep_checkpoints': 1, 'progress': False})
    log = []

    def train(params, masks, epochs, key):
        del key  # the lane seeds give each call its own data order
        call, finals, steps, histories = len(log), [], [], []
        if epochs % chunks:
            raise ValueError(f'epochs {epochs} must be a multiple of chunks {chunks}')
        for i, lr in enumerate(setting['lrs']):
            lane = functools.partial(jax.tree.map, lambda x, i=i: x[i])
            config = config_lib.apply_overrides(base, {
                'lr': lr, 'passes_per_epoch': epochs // chunks, 'seed': 100 * call,
                'workdir': os.path.join(out_dir, 'runs', f'{name}-call{call}-lr{i}')})
            result = engine.fit(config, resume=True, splits=common.standardized_splits(config),
                                initial_state=lambda state, i=i: sparsity.with_mask(
                                    state.replace(params=lane(params)), lane(masks)))
            finals.append(result.state.params)
            steps.append(np.broadcast_to(np.asarray(jax.device_get(result.state.step)),
                                         (seeds,)).astype(int))
            histories.append(result.history)
        log.append({'steps': np.stack(steps), 'histories': histories})
        return jax.tree.map(lambda *xs: jnp.stack(xs), *finals)

    train.log = log
    return train


def accuracy(model, params, images, labels, chunk: int = 1000):
    """Test accuracy of every network of the (lr, seed) grid, evaluated in chunks."""
    predict = jax.jit(jax.vmap(jax.vmap(
        lambda p, x: model.apply({'params': p}, x).argmax(-1), (0, None)), (0, None)))
    correct = sum(np.asarray(predict(params, jnp.asarray(images[i:i + chunk]))
                             == labels[i:i + chunk]).sum(-1)
                  for i in range(0, len(images), chunk))
    return correct / len(images)


def measured_budgets(ledger, log) -> dict:
    """``{arm: (lr, seed) steps}``: the engine's steps over the shared mask search (the
    ledger's pretraining and LT calls before this level's arms) plus the arm's own run,
    matching the ledger's calls to the per-call ``log`` of :func:`make_train` by position."""
    calls = ledger.calls
    search = sum(log[i]['steps'] for i, (label, _) in enumerate(calls[:-len(ARMS)])
                 if label in ('pretrain', 'retrain', 'lottery'))
    return {label: search + log[len(calls) - len(ARMS) + j]['steps']
            for j, (label, _) in enumerate(calls[-len(ARMS):])}


def run_model(name: str, setting: dict, seeds: int, datasets, num_classes: int,
              out_dir: str, data_dir: str | None) -> dict:
    """Every arm at every level, learning rate and seed; the per-seed numbers the checks and
    the report read (arrays are (lr, seed), or (level, lr, seed))."""
    (x_train, _), (x_test, y_test) = datasets
    model, pattern = build(name, num_classes)
    lrs = setting['lrs']

    def init(seed_key):
        return model.init(seed_key, jnp.asarray(x_train[:1]))['params']

    def grid_init(offset):  # θ₀ depends on the seed only: the same for every lr
        per_seed = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(offset), seeds))
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(lrs),) + x.shape), per_seed)

    theta0, theta0_fresh = grid_init(0), grid_init(1)
    one = jax.tree.map(lambda x: x[0, 0], theta0)
    pruned = prune.select_leaves(one, pattern)
    train = make_train(name, setting, seeds, out_dir, data_dir)
    levels = lottery_levels(train, theta0, theta0_fresh, jax.random.PRNGKey(2),
                            levels=setting['levels'], epochs=setting['epochs'],
                            select=pruned, batch_dims=2)
    grid = lambda fn: jax.vmap(jax.vmap(fn))  # noqa: E731
    kernels = prune.select_leaves(one)
    theta_t = levels[0].pretrained
    overlap_by_p = {q: np.asarray(grid(lambda a, b, q=q: prune.weight_overlap(
        a, b, q, select=kernels))(theta0, theta_t)) for q in (0.1, P, 0.3, 0.5)}
    spearman = np.asarray(grid(lambda a, b: jnp.stack(list(prune.magnitude_correlation(
        a, b, method='spearman', select=pruned).values())).mean())(theta0, theta_t))

    def sparse_overlap(a, b, m):
        return prune.weight_overlap(a, b, P, select=pruned, masks=m)

    acc = {arm: [] for arm in ARMS}
    pf_overlap = {'theta0': [], 'theta_T': []}
    budgets = {arm: [] for arm in ARMS}
    density = []
    for result in levels:
        for arm in ARMS:
            acc[arm].append(accuracy(model, result.arms[arm], x_test, y_test))
        pf = result.arms['finetune']
        pf_overlap['theta0'].append(np.asarray(grid(sparse_overlap)(pf, theta0, result.masks)))
        pf_overlap['theta_T'].append(np.asarray(grid(sparse_overlap)(pf, theta_t,
                                                                     result.masks)))
        for arm, steps in measured_budgets(result.ledger, train.log).items():
            budgets[arm].append(steps)
        density.append(float(np.mean([np.asarray(m).mean() for m, s in zip(
            jax.tree.leaves(result.masks), jax.tree.leaves(pruned)) if s])))
    pretrain_curve = [[[r['train_loss'] for r in history if r['seed'] == seed]
                       for seed in range(seeds)] for history in train.log[0]['histories']]
    return {'overlap': overlap_by_p[P], 'overlap_by_p': {q: v.mean(-1).tolist()
                                                         for q, v in overlap_by_p.items()},
            'spearman': spearman, 'pf_overlap': {k: np.stack(v) for k, v in pf_overlap.items()},
            'accuracy': {arm: np.stack(v) for arm, v in acc.items()},
            'dense': accuracy(model, theta_t, x_test, y_test),
            'steps': {arm: np.stack(v) for arm, v in budgets.items()},
            'ledger': [{'mask_search': r.ledger.mask_search, 'arms': r.ledger.arms,
                        'totals': r.ledger.totals()} for r in levels],
            'mean_layer_density': density, 'pretrain_train_loss': pretrain_curve,
            'steps_per_chunk': int(train.log[0]['histories'][0][0]['step'])}


def declare_checks(models, lrs, levels, seeds: int, *, powered: bool = True
                   ) -> dict[str, checks.Check]:
    """Every model's checks, declared before training (see the module docstring); with
    ``powered`` False (the quick scale) no effect is declared."""
    small, large = min(lrs), max(lrs)
    effect = EFFECT if powered else None
    cells = 'one cell per sparsity (' + ', '.join(f'{s:.0%}' for s in levels) + ')'
    out = []
    for name in models:
        out += [
            checks.Check(
                f'{name}: overlap falls with lr',
                f'The overlap R_{P}(θ₀, θ_T) of the largest initial and final weights is larger '
                f'at the small learning rate ({small}) than at the large one ({large}).',
                'claim', f'R_{P}(θ₀, θ_T) at lr {small} minus at lr {large} (fraction; paired '
                'by seed: same θ₀)', 'superiority', seeds),
            checks.Check(
                f'{name}: overlap well above p at small lr',
                f'At the small learning rate ({small}) R_{P}(θ₀, θ_T) is well above p = {P}, '
                'its value for independent weights.',
                'claim', f'R_{P}(θ₀, θ_T) at lr {small} minus p = {P} (fraction)',
                'superiority', seeds, margin=WELL_ABOVE),
            checks.Check(
                f'{name}: overlap near p at large lr',
                f'At the large learning rate ({large}) R_{P}(θ₀, θ_T) is near p = {P} (margin '
                f'{NEAR_P_MARGIN}; the paper\'s Fig. 4 and Table 1 are within 0.005 of p).',
                'claim', f'R_{P}(θ₀, θ_T) at lr {large} minus p = {P} (fraction)',
                'equivalence', seeds, margin=NEAR_P_MARGIN),
            checks.Check(
                f'{name}: PF keeps θ_T weights at large lr',
                f'At the large learning rate ({large}) the fine-tuned PF network\'s largest '
                'kept weights overlap those of θ_T more than those of θ₀ (the paper\'s '
                'Table 1: 48-64 % against about 20 %).',
                'claim', f'R_{P}(θ_PF, θ_T) minus R_{P}(θ_PF, θ₀) over the kept weights at lr '
                f'{large} (fraction), {cells}', 'superiority', seeds),
            checks.Check(
                f'{name}: LT > re-init at small lr',
                f'At the small learning rate ({small}) the lottery ticket beats a random '
                're-initialization of its mask (the winning property).',
                'claim', f'LT minus re-init test accuracy at lr {small} (points), {cells}',
                'superiority', seeds, effect=effect),
            checks.Check(
                f'{name}: LT ≈ re-init at large lr',
                f'At the large learning rate ({large}) the lottery ticket is about as accurate '
                f'as a random re-initialization of its mask (within {EQUIV_MARGIN:g} point: '
                'half the paper\'s dense accuracy gap between its two learning rates).',
                'claim', f'LT minus re-init test accuracy at lr {large} (points), {cells}',
                'equivalence', seeds, margin=EQUIV_MARGIN),
            checks.Check(
                f'{name}: PF > LT at large lr',
                f'At the large learning rate ({large}) pruning & fine-tuning from θ_T beats the '
                'lottery ticket at the same mask and total epochs.',
                'claim', f'PF minus LT test accuracy at lr {large} (points), {cells}',
                'superiority', seeds, effect=effect),
            checks.Check(
                f'{name}: equal budgets',
                'LT, re-init and PF ran the same optimizer steps in total (shared mask search '
                '+ own run) at every sparsity, learning rate and seed.',
                'sanity', 'engine steps per arm, from each run\'s final state', 'rule', seeds,
                rule='the measured steps of LT, re-init and PF are equal in every (sparsity, '
                     'lr, seed)'),
        ]
    return {check.name: check for check in out}


def evaluate_checks(declared: dict[str, checks.Check], runs: dict, lrs, levels) -> list[dict]:
    """The declared checks on the per-seed numbers of :func:`run_model`."""
    out = []
    small, large = int(np.argmin(lrs)), int(np.argmax(lrs))
    for name, run in runs.items():
        r = np.asarray(run['overlap'], np.float64)
        acc = {arm: 100 * np.asarray(v, np.float64) for arm, v in run['accuracy'].items()}
        pf = {k: np.asarray(v, np.float64) for k, v in run['pf_overlap'].items()}
        c = lambda suffix: declared[f'{name}: {suffix}']  # noqa: E731

        def cells(a, b, lr):
            return {f'{s:.0%}': (a[k, lr], b[k, lr]) for k, s in enumerate(levels)}

        steps = {arm: np.asarray(v) for arm, v in run['steps'].items()}
        equal = (steps['lottery'] == steps['reinit']) & (steps['lottery'] == steps['finetune'])
        out += [
            c('overlap falls with lr').evaluate(r[small], r[large]),
            c('overlap well above p at small lr').evaluate(r[small] - P),
            c('overlap near p at large lr').evaluate(r[large] - P),
            c('PF keeps θ_T weights at large lr').evaluate_cells(
                cells(pf['theta_T'], pf['theta0'], large)),
            c('LT > re-init at small lr').evaluate_cells(
                cells(acc['lottery'], acc['reinit'], small)),
            report.equivalence_cells(c('LT ≈ re-init at large lr'),
                                     cells(acc['lottery'], acc['reinit'], large)),
            c('PF > LT at large lr').evaluate_cells(cells(acc['finetune'], acc['lottery'],
                                                          large)),
            c('equal budgets').evaluate_rule(equal.ravel().tolist(),
                                             value=int(steps['lottery'].max())),
        ]
    return out


def main(argv=None) -> int:
    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    started = time.perf_counter()
    lrs, levels = tuple(setting['lrs']), tuple(setting['levels'])
    declared = declare_checks(setting['models'], lrs, levels, common.declared_seeds(args),
                              powered=args.scale != 'quick')
    out_dir = common.output_dir(args, NAME)
    datasets, num_classes = load_data(setting['dataset'], args.data_dir)
    with common.shared_compilations():
        runs = {name: run_model(name, setting, args.seeds, datasets, num_classes, out_dir,
                                args.data_dir)
                for name in setting['models']}
    steps = next(iter(runs.values()))['steps_per_chunk'] * setting['chunks']
    ran = (f"{setting['dataset']}, models {', '.join(setting['models'])}; lr {lrs} x "
           f"{args.seeds} seeds (seed-batched engine runs); IMP with rewinding through "
           f"{', '.join(f'{s:.0%}' for s in levels)} per-layer sparsity, one round per level; "
           f"{setting['epochs']} passes ({steps} steps) per run (pretrain, each arm); SGD "
           f"momentum 0.9, batch {setting['batch']}, lr / 10 at 53% and 80% of each run; "
           f'R_{P} over all kernels')
    checks.write_results(out_dir, paper=TITLE, claim=CLAIM, ran=ran, scale=args.scale,
                         seeds=args.seeds, table=report.make_table(runs, lrs, levels, P),
                         checks=evaluate_checks(declared, runs, lrs, levels),
                         figures=report.plot(runs, out_dir, lrs, levels, P), started=started,
                         notes=report.notes(P, EQUIV_MARGIN, NEAR_P_MARGIN, WELL_ABOVE,
                                            EFFECT), setting=setting, runs=runs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
