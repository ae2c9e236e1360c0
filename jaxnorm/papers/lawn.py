"""LAWN (arXiv:2108.05839) on digits: SGD-momentum, Adam and LAMB, each with and without LAWN.

Claim (abstract): LAWN, stacked onto any optimizer, constrains the weight norms of the final
homogeneous sub-network and so attenuates the logits; it generalizes better, with the largest
gain for Adam, and improves every optimizer at large batch sizes.

Setup: digits (1,437 train / 360 test), models MLP with LayerNorm (LAWN constrains the head),
MLP without normalization (every kernel) and a reduced ResNet-20 with BatchNorm (the head), the
default masks of :func:`jaxnorm.homogeneous.final_homogeneous_mask`. No weight decay anywhere:
LAWN's premise is training without tuned decay. A small batch (32) and the full batch (1,437),
warmup + cosine schedule, all seeds in one compiled program (``jax.lax.map``). Optimizers are
built by ``jaxnorm.optimizers.make_optimizer``, the code path of ``scripts/train.py``. Plus a
free-phase sweep (Adam, MLP-LN, full batch).

Checks (``jaxnorm.papers.checks``, declared in :func:`lawn_report.declare_checks` before the
runs; seeds are the unit of replication, plain and LAWN share each seed's initialization and
batch order, so every comparison is paired by seed):
  * sanity (the mechanics LAWN builds in; a failure makes the section invalid), rules that
    must hold in every seed: norms constant (every constrained group's norm within 1e-4
    relative of its target at every logged point after the switch, in every LAWN run); logits
    attenuated / loss floor higher (final mean train-logit norm lower and final train loss
    higher with LAWN, in every (model, optimizer, batch) cell); free-phase monotone (final
    logit norm non-decreasing and train loss non-increasing in the free-phase length, plain
    training as length 100 %);
  * claims, on a seed's LAWN-minus-plain test accuracy (points) averaged over the models
    trained in an (optimizer, batch) cell, 90 % paired intervals, Holm over the cells:
    adam_improves (superiority, Adam at each batch), adam_gains_most (Adam's gain above SGD's
    and LAMB's at each batch), all_improve_at_large_batch (superiority, every optimizer at
    full batch), non_inferiority_1pt (no cell loses more than 1 point: margin 1, the old
    rule's tolerance). No effect sizes: the paper's tables were not retrieved.

    python scripts/experiments/lawn.py --quick --out results   # 2.5 minutes on 2 CPU cores
    python scripts/experiments/lawn.py --seeds 5 --out results  # full grid: meant for a GPU
    python scripts/experiments/lawn.py --config scripts/configs/lawn.py --out results  # paper

With ``--config`` (a ``scripts/train.py`` config with LAWN on: Adam-LAWN on VGG-13, CIFAR-10,
batch 2048 in ``scripts/configs/lawn.py``) the file's optimizer trains with and without LAWN
(``lawn.free_epochs = None``) through ``jaxnorm.train.fit`` (every device, checkpointed,
resumed), each seed shared by both arms. Checks from fit's per-epoch records (declared in
:func:`declare_paper_checks`): sanity rules in every seed: every constrained norm constant
(1e-4 relative) over the epochs after the switch, final mean logit norm lower and final train
loss higher with LAWN; the claim: LAWN's paired accuracy gain (points) is positive at the
file's batch size (superiority; the paper's large-batch claim).

The full grid adds the ResNet at every optimizer and at full batch, which costs about 0.2 s
per full-batch step per seed on a CPU core (hours in all); it was not run here.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import optim
from jaxnorm import config as config_lib, data, homogeneous, models, optimizers
from jaxnorm import lawn as lawn_training
from jaxnorm.losses import mean_cross_entropy, precise_cross_entropy
from jaxnorm.papers import checks, common
from jaxnorm.papers.lawn_report import (NORM_TOLERANCE, SWEEP_CELL, accuracy_table,
                                        declare_checks, diagnostics, evaluate_checks, mean, plot)

CLAIM = ('LAWN (weight norms of the final homogeneous sub-network frozen after a free phase) '
         'attenuates logits, keeps the training loss off zero and improves generalization, '
         'most for Adam and for every optimizer at large batch.')
LEARNING_RATES = {'sgd': 0.05, 'adam': 2e-3, 'lamb': 1e-2}
# The last LayerNorm's affine output also scales the logits: a variant constrains it too.
LAST_NORM_MASK = r'head/kernel|norm2/(scale|bias)'


def settings(quick: bool) -> dict:
    """Budgets: ``quick`` takes about 2.5 minutes on 2 CPU cores."""
    if quick:
        return {'models': {'mlp_ln': ('mlp', 'ln', {'width': 0.5}),
                           'mlp_none': ('mlp', 'none', {'width': 0.5}),
                           'resnet20_bn': ('resnet20', 'bn', {'width': 0.25})},
                'small_batch': 32, 'small_epochs': 12, 'full_steps': 300, 'log_points': 12,
                'free_fraction': 0.1, 'sweep': (0.03, 0.1, 0.3, 0.6),
                'resnet_grid': {'optimizers': ('adam',), 'batches': ('small',)}}
    return {'models': {'mlp_ln': ('mlp', 'ln', {}), 'mlp_none': ('mlp', 'none', {}),
                       'resnet20_bn': ('resnet20', 'bn', {'width': 0.5})},
            'small_batch': 32, 'small_epochs': 60, 'full_steps': 2000, 'log_points': 40,
            'free_fraction': 0.1, 'sweep': (0.02, 0.05, 0.1, 0.2, 0.4, 0.7),
            'resnet_grid': {'optimizers': tuple(LEARNING_RATES), 'batches': ('small', 'full')}}


def per_seed(fn):
    """``fn`` over a leading seed axis of every argument, one seed after the other.

    Sequential rather than ``jax.vmap``: vmapped convolutions with per-seed kernels become
    grouped convolutions, about 2x slower on CPU than running the seeds in turn.
    """
    return lambda *args: jax.lax.map(lambda seed_args: fn(*seed_args), args)


class Digits:
    """Digits arrays, standardized with the training set's statistics, on the device."""

    def __init__(self, data_dir: str | None):
        digits = data.load_standardized('digits', data_dir=data_dir)
        self.train_x = jnp.asarray(digits.train_images)
        self.train_y = jnp.asarray(digits.train_labels)
        self.test_x = jnp.asarray(digits.test_images)
        self.test_y = jnp.asarray(digits.test_labels)
        self.num_classes = digits.num_classes


class ModelRunner:
    """Trains one model for several seeds at once and measures it at log points."""

    def __init__(self, model, digits: Digits, seeds: list[int]):
        self.model, self.digits, self.seeds = model, digits, seeds
        self.mask = homogeneous.final_homogeneous_mask(model, digits.train_x[:1])
        self.evaluate = jax.jit(per_seed(self._evaluate))
        # Every run of this model starts from the same per-seed initialization.
        variables = jax.jit(jax.vmap(lambda seed: model.init(jax.random.key(seed),
                                                             digits.train_x[:1])))(
            jnp.asarray(seeds))
        self.init_params = variables['params']
        self.init_stats = variables.get('batch_stats', {})

    def _forward(self, params, stats, x, train_mode: bool):
        variables = {'params': params, **({'batch_stats': stats} if stats else {})}
        if not train_mode:
            return self.model.apply(variables, x, train=False), stats
        logits, new = self.model.apply(variables, x, train=True, mutable=['batch_stats'])
        return logits, new.get('batch_stats', stats)

    def _evaluate(self, params, stats):
        d = self.digits
        train_logits, _ = self._forward(params, stats, d.train_x, False)
        test_logits, _ = self._forward(params, stats, d.test_x, False)
        norms = optim.constrained_norms(params, lambda tree: jax.tree.map(lambda _: True, tree))
        constrained = constrained_paths(self.mask)
        return {'train_loss': precise_cross_entropy(train_logits, d.train_y).mean(),
                'logit_norm': jnp.linalg.norm(train_logits, axis=-1).mean(),
                'test_accuracy': jnp.mean(jnp.argmax(test_logits, -1) == d.test_y),
                'weight_norm': jnp.sqrt(sum(jnp.square(norms[p]) for p in constrained)),
                'group_norms': norms}

    def run(self, tx, *, batch_size: int, total_steps: int, log_points: int, progress) -> dict:
        """Train every seed for ``total_steps``; metrics at ``log_points + 1`` points."""
        d, n = self.digits, len(self.digits.train_y)

        def step(carry, indices):
            params, stats, opt_state = carry
            x, y = d.train_x[indices], d.train_y[indices]

            def loss_fn(p):
                logits, new_stats = self._forward(p, stats, x, True)
                return mean_cross_entropy(logits, y), new_stats

            grads, stats = jax.grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), stats, opt_state), None

        chunk = jax.jit(per_seed(lambda carry, idx: jax.lax.scan(step, carry, idx)[0]))
        carry = (self.init_params, self.init_stats, jax.vmap(tx.init)(self.init_params))
        order = np.stack([batch_order(seed, n, batch_size, total_steps) for seed in self.seeds])
        per_chunk = total_steps // log_points
        history = [jax.device_get(self.evaluate(carry[0], carry[1]))]
        for k in range(log_points):
            carry = chunk(carry, jnp.asarray(order[:, k * per_chunk:(k + 1) * per_chunk]))
            history.append(jax.device_get(self.evaluate(carry[0], carry[1])))
            progress.update()
        return {'steps': [k * per_chunk for k in range(log_points + 1)], 'history': history,
                'targets': lawn_targets(carry[2])}


def lawn_targets(opt_state) -> dict | None:
    """``{path: per-seed target norms}`` of a LAWN state (None for another optimizer)."""
    if not isinstance(opt_state, optim.LawnState):
        return None
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(opt_state.target_norms))[0]
    return {optim.path_name(path): np.asarray(value) for path, value in leaves}


def batch_order(seed: int, n: int, batch_size: int, steps: int) -> np.ndarray:
    """Indices ``(steps, batch_size)``: reshuffled epochs without remainder (whole set at full
    batch)."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    order = np.concatenate([rng.permutation(n)[:per_epoch * batch_size] for _ in range(epochs)])
    return order.reshape(-1, batch_size)[:steps]


def make_optimizer(optimizer: str, epochs: int, steps_per_epoch: int,
                   free_fraction: float | None, mask, mask_regex: str | None = None
                   ) -> optax.GradientTransformation:
    """The library's optimizer (5 % warmup, cosine, no decay), wrapped in LAWN when asked
    (constraining ``mask``, or the paths matching ``mask_regex``)."""
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'optimizer': optimizer, 'lr': LEARNING_RATES[optimizer], 'momentum': 0.9,
        'schedule': 'cosine', 'warmup_epochs': 0.05 * epochs, 'weight_decay': 0.0,
        'epochs': epochs,
        'lawn.free_epochs': None if free_fraction is None else free_fraction * epochs,
        'lawn.mask': mask_regex})
    if free_fraction is None:
        return optimizers.make_optimizer(cfg, steps_per_epoch)
    mask = optim.regex_mask(mask_regex) if mask_regex else mask
    return optimizers.make_optimizer(cfg, steps_per_epoch, wrap=lambda tx: lawn_training.constrain(
        tx, cfg.lawn, steps_per_epoch, mask))


def plan(s: dict) -> list[dict]:
    """Every run: the (model, batch, optimizer) grid with and without LAWN, then the sweep."""
    runs = []
    for model_key in s['models']:
        for batch in ('small', 'full'):
            for optimizer in LEARNING_RATES:
                grid = s['resnet_grid']
                if model_key.startswith('resnet') and (optimizer not in grid['optimizers']
                                                       or batch not in grid['batches']):
                    continue
                for fraction in (None, s['free_fraction']):
                    runs.append({'role': 'grid', 'model': model_key, 'batch': batch,
                                 'optimizer': optimizer, 'free_fraction': fraction,
                                 'mask': None})
    runs += [{'role': 'sweep', **SWEEP_CELL, 'free_fraction': f, 'mask': None}
             for f in s['sweep'] if f != s['free_fraction']]
    runs.append({'role': 'mask_variant', **SWEEP_CELL, 'free_fraction': s['free_fraction'],
                 'mask': LAST_NORM_MASK})
    return runs


def summarize(run: dict, result: dict) -> dict:
    """Final per-seed metrics, and the worst relative norm error after LAWN's switch."""
    final = result['history'][-1]
    out = {key: np.asarray(final[key]).tolist()
           for key in ('test_accuracy', 'train_loss', 'logit_norm', 'weight_norm')}
    if result['targets'] is not None:
        switch = run['free_steps']
        errors = [np.abs(np.asarray(point['group_norms'][path]) / target - 1)
                  for step, point in zip(result['steps'], result['history']) if step > switch
                  for path, target in result['targets'].items()]
        out['norm_error_per_seed'] = np.max(np.stack(errors), axis=0).tolist()
        out['max_norm_error'] = float(max(out['norm_error_per_seed']))
    return out


def constrained_paths(mask) -> list[str]:
    return [optim.path_name(path) for path, flag in jax.tree_util.tree_flatten_with_path(mask)[0]
            if flag]


def curve(result: dict) -> dict:
    """Seed-mean of each logged metric against the step."""
    keys = ('weight_norm', 'logit_norm', 'train_loss', 'test_accuracy')
    return {'steps': result['steps'],
            **{k: [mean(point[k]) for point in result['history']] for k in keys}}


def paper_setting(path: str):
    """The train config ``--config path`` runs (ValueError on bad keys, or without LAWN)."""
    config = common.paper_config(path)
    if config.lawn.free_epochs is None:
        raise ValueError(f'{path} sets no lawn.free_epochs: the LAWN arm would equal the '
                         'plain one')
    return config


def declare_paper_checks(seeds: int, config) -> dict[str, checks.Check]:
    """The ``--config`` checks, declared before the runs (``seeds`` per arm)."""
    declared = (
        checks.Check('norms constant', "LAWN holds every constrained group's norm at its value "
                     'at the switch (what its retraction does by construction)', 'sanity',
                     'largest relative drift of a constrained norm from its final value over '
                     'the epochs after the switch, one seed', 'rule', seeds,
                     rule=f'every constrained norm within {NORM_TOLERANCE:g} relative of its '
                          'final value at every epoch after the switch'),
        checks.Check('logits attenuated', "LAWN's frozen norms keep the train logits smaller "
                     "than plain training's (the method's mechanism)", 'sanity',
                     'final mean train-logit norm of LAWN and plain, one seed', 'rule', seeds,
                     rule='final mean train-logit norm lower with LAWN'),
        checks.Check('loss floor higher', "LAWN keeps the training loss off zero: its final "
                     "train loss lies above plain training's (the method's mechanism)",
                     'sanity', 'final train loss (nats) of LAWN and plain, one seed', 'rule',
                     seeds, rule='final train loss higher with LAWN'),
        checks.Check('better at large batch', 'LAWN improves the optimizer at large batch '
                     '(abstract: "it greatly improves all optimizers when used with large '
                     f'batch sizes"): {config.optimizer}, batch {config.batch_size}', 'claim',
                     'LAWN minus plain final test accuracy (points) of one seed; the arms share '
                     'the seed', 'superiority', seeds))
    return {check.name: check for check in declared}


def paper_scale(args, out_dir: str, started: float) -> int:
    config = paper_setting(args.config)
    declared = declare_paper_checks(common.declared_seeds(args), config)
    labels = {'plain': config.optimizer, 'lawn': f'{config.optimizer}-LAWN'}
    plain = {'lawn.free_epochs': None, 'lawn.mask': None, 'lawn.per_unit': False}
    histories = common.fit_arms(args.config, {'plain': plain, 'lawn': {}}, args.seeds, out_dir,
                                args.data_dir)
    final = {key: common.final_values(histories, key)
             for key in ('test_accuracy', 'train_loss', 'mean_logit_norm')}
    drifts = np.array([max(abs(n / runs[-1]['lawn_weight_norms'][path] - 1)
                           for r in runs if r['epoch'] > config.lawn.free_epochs
                           for path, n in r['lawn_weight_norms'].items())
                       for runs in histories['lawn']])
    drift = float(drifts.max())
    accuracy = {arm: 100 * final['test_accuracy'][arm] for arm in ('lawn', 'plain')}
    gain = final['test_accuracy']['lawn'] - final['test_accuracy']['plain']
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    rows = common.arms_table(histories, labels) + [
        '', f"final mean logit norm: plain {common.mean_std(final['mean_logit_norm']['plain'])}"
        f", LAWN {common.mean_std(final['mean_logit_norm']['lawn'])}; final train loss: plain "
        f"{common.mean_std(final['train_loss']['plain'], digits=4)}, LAWN "
        f"{common.mean_std(final['train_loss']['lawn'], digits=4)}; largest relative norm "
        f'drift after the switch {drift:.1e}']
    results = [
        declared['norms constant'].evaluate_rule(drifts <= NORM_TOLERANCE, value=drift),
        declared['logits attenuated'].evaluate_rule(
            final['mean_logit_norm']['lawn'] < final['mean_logit_norm']['plain']),
        declared['loss floor higher'].evaluate_rule(
            final['train_loss']['lawn'] > final['train_loss']['plain']),
        declared['better at large batch'].evaluate(accuracy['lawn'], accuracy['plain'])]
    old = {'gain': gain.mean() > 2 * se,
           'logits': final['mean_logit_norm']['lawn'].mean()
           < final['mean_logit_norm']['plain'].mean(),
           'loss': final['train_loss']['lawn'].mean() > final['train_loss']['plain'].mean()}
    word = {True: 'holds', False: 'fails'}
    notes = [f'better at large batch: old rule "paired accuracy gain > 2 SE at batch '
             f'{config.batch_size}" (mean of the per-seed gains above twice their standard '
             f"error), old outcome on this run: {word[bool(old['gain'])]}; new rule: paired "
             'superiority (90 % t-interval of the mean gain above 0): '
             f"{results[-1]['outcome']}.",
             'logits attenuated, loss floor higher: sanity now (the mechanics LAWN builds in), '
             'judged in every seed; old rule: on seed means, old outcomes on this run: '
             f"{word[bool(old['logits'])]}, {word[bool(old['loss'])]}; new: "
             f"{results[1]['outcome']}, {results[2]['outcome']}."]
    if results[-1]['dropped']:
        notes.append(f"{results[-1]['dropped']} seed(s) diverged (NaN accuracy) in an arm and "
                     'are left out of the accuracy check.')
    ran = (f'{config.dataset}, {config.model}/{config.norm}, {config.optimizer} LR {config.lr} '
           f'({config.schedule}, {config.warmup_epochs} warmup epochs), batch '
           f'{config.batch_size}, {config.epochs} epochs, wd {config.weight_decay}; LAWN free '
           f'for {config.lawn.free_epochs} epochs on {config.lawn.mask or "the default mask"}; '
           f'{args.seeds} seeds, paired; from {args.config}')
    figure = common.plot_arms(histories, labels, os.path.join(out_dir, 'lawn_accuracy.png'),
                              f'LAWN: {config.dataset}, {config.model}, batch {config.batch_size}')
    checks.write_results(out_dir, paper='LAWN, arXiv:2108.05839', claim=CLAIM, ran=ran,
                         scale=common.scale(args), seeds=args.seeds, table=rows,
                         checks=results, figures=[figure], started=started, notes=notes,
                         config=config.to_dict(), runs={**final, 'norm_drift': drifts})
    return 0


def main(argv=None) -> int:
    args = common.parse_args(__doc__, argv)
    if args.config:
        return paper_scale(args, common.output_dir(args, 'lawn'), time.perf_counter())
    s, seeds = settings(args.quick), list(range(args.seeds))
    declared = declare_checks(common.declared_seeds(args))
    started = time.perf_counter()
    digits = Digits(args.data_dir)
    runs, runners, records = plan(s), {}, []
    progress = tqdm(total=len(runs) * s['log_points'], desc='lawn', unit='chunk')
    for run in runs:
        if run['model'] not in runners:
            name, norm, options = s['models'][run['model']]
            runners[run['model']] = ModelRunner(models.get_model(
                name, norm=norm, num_classes=digits.num_classes, **options), digits, seeds)
        runner, n = runners[run['model']], len(digits.train_y)
        batch_size = n if run['batch'] == 'full' else s['small_batch']
        steps_per_epoch = n // batch_size
        epochs = s['full_steps'] if run['batch'] == 'full' else s['small_epochs']
        fraction = run['free_fraction']
        tx = make_optimizer(run['optimizer'], epochs, steps_per_epoch, fraction, runner.mask,
                            run['mask'])
        # The rounding of jaxnorm.lawn.constrain.
        run['free_steps'] = None if fraction is None else round(fraction * epochs
                                                                 * steps_per_epoch)
        result = runner.run(tx, batch_size=batch_size, total_steps=epochs * steps_per_epoch,
                            log_points=s['log_points'], progress=progress)
        records.append({**run, 'batch_size': batch_size, 'total_steps': epochs * steps_per_epoch,
                        'final': summarize(run, result), 'curve': curve(result)})
    progress.close()
    out_dir = common.output_dir(args, 'lawn')
    results, notes, old = evaluate_checks(records, s, declared)
    table = accuracy_table(records, old['cells'])
    setup = {'quick': args.quick, 'seeds': seeds, 'learning_rates': LEARNING_RATES,
             'weight_decay': 0.0, 'schedule': '5 % linear warmup, then cosine',
             **{k: v for k, v in s.items() if k != 'models'},
             'models': {key: {'name': name, 'norm': norm, 'options': options,
                              'constrained': constrained_paths(runners[key].mask)}
                        for key, (name, norm, options) in s['models'].items()}}
    ran = (f"SGD-momentum, Adam and LAMB with and without LAWN on digits: {', '.join(s['models'])}"
           f", batch {s['small_batch']} for {s['small_epochs']} epochs and full batch for "
           f"{s['full_steps']} steps, {len(seeds)} seeds, no weight decay; plus a free-phase "
           "sweep (Adam, LayerNorm MLP, full batch).")
    plots = plot(records, out_dir)
    checks.write_results(out_dir, paper='LAWN, arXiv:2108.05839', claim=CLAIM, ran=ran,
                         scale=common.scale(args), seeds=args.seeds, table=table,
                         checks=results, figures=plots, started=started, notes=notes,
                         setup=setup, old_rules=old, diagnostics=diagnostics(records, s),
                         runs=records)
    return 0


if __name__ == '__main__':
    sys.exit(main())
