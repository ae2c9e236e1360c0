"""``bench.py cost``: what running each paper's ``paper`` config costs, planned on a CPU.

For every ``scripts/configs/<paper>.py`` the step that dominates its run is compiled on CPU
from abstract inputs (:func:`jaxnorm.cost.step_cost`, nothing runs), and its FLOPs are
multiplied by the number of such steps the whole ``--config`` run takes (every arm, seed,
round and phase; 3 seeds, ``reproduce.py``'s default). Step counts follow each experiment's
code; ``docs/paper_costs.md`` derives them. CIFAR train sets have 50,000 images and every
loop drops the last partial batch, so an epoch at batch B is ``50000 // B`` steps.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import optim
import prune
from jaxnorm import config as config_lib, cost, models, parallel, train
from jaxnorm.models import MultiHeadCNN
from jaxnorm.papers import orthoreg as orthoreg_paper, orthoreg_prune, unification
from jaxnorm.losses import mean_cross_entropy

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
CIFAR = (32, 32, 3)
CIFAR_TRAIN = 50_000
SEEDS = 3


@dataclasses.dataclass
class Part:
    """One kind of step in a paper's run: its label, cost builder and how many it takes."""

    label: str
    build: Callable[[], cost.StepCost]
    steps: int
    state_bytes: Callable[[], tuple[int, int]] = lambda: (0, 0)
    is_train_step: bool = True  # False: forward passes that ride along each train step


@dataclasses.dataclass
class Paper:
    name: str
    what: str
    parts: list[Part]
    note: str = ''


def _batch(batch: int) -> dict:
    return {'image': jax.ShapeDtypeStruct((batch, *CIFAR), jnp.float32),
            'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}


def _abstract_state(model, tx, extensions=()):
    mesh = parallel.data_mesh(jax.devices()[:1])
    return jax.eval_shape(lambda: train.create_train_state(model, tx, CIFAR, seed=0, mesh=mesh,
                                                           extensions=extensions))


# ----------------------------------------------------------------------------- engine steps


def engine_part(label: str, cfg, steps: int, *, batch: int | None = None) -> Part:
    """The engine's ``train_step`` of run config ``cfg`` (optimizer, LAWN, A-FAN included)."""
    classes = 100 if cfg.dataset == 'cifar100' else 10
    batch = batch or cfg.batch_size

    @functools.cache
    def built():
        model, extensions, tx = train.build(cfg, CIFAR, classes, CIFAR_TRAIN // cfg.batch_size)
        state = _abstract_state(model, tx, extensions)
        step = functools.partial(train.train_step, label_smoothing=cfg.label_smoothing,
                                 extensions=extensions)
        return state, step

    def build():
        state, step = built()
        return cost.step_cost(step, state, _batch(batch))

    def state_bytes():
        state, _ = built()
        return cost.tree_bytes(state.params), cost.tree_bytes(state.opt_state)
    return Part(label, build, steps, state_bytes)


def engine_config(name: str | None, **overrides):
    """``scripts/configs/<name>.py`` (or the defaults when ``name`` is None) with overrides."""
    cfg = (config_lib.default_config() if name is None else
           config_lib.load_config_file(os.path.join(CONFIGS, f'{name}.py')))
    return config_lib.apply_overrides(cfg, overrides) if overrides else cfg


def forward_part(label: str, cfg, steps: int, batch: int) -> Part:
    """An eval-mode forward pass of ``cfg``'s model (EMAN's teacher on the weak views)."""
    classes = 100 if cfg.dataset == 'cifar100' else 10
    model = models.get_model(cfg.model, norm=cfg.norm, num_classes=classes)

    def build():
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *CIFAR))))
        return cost.step_cost(lambda v, x: model.apply(v, x), variables,
                              _batch(batch)['image'])
    return Part(label, build, steps, is_train_step=False)


# ----------------------------------------------------------------------------- plain steps


def plain_part(label: str, model: nn.Module, tx: optax.GradientTransformation, steps: int, *,
               batch: int = 128, classes: int = 10, takes_train: bool = True) -> Part:
    """A cross-entropy step of a model outside the registry (the private loops' models)."""
    def forward(variables, x):
        kwargs = {'train': True} if takes_train else {}
        logits, updates = model.apply(variables, x, mutable=['batch_stats'], **kwargs)
        return logits, updates

    @functools.cache
    def built():
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *CIFAR))))
        params = variables['params']
        return params, variables.get('batch_stats', {}), jax.eval_shape(tx.init, params)

    def step(params, stats, opt_state, batch):
        def loss(p):
            logits, updates = forward({'params': p, 'batch_stats': stats}, batch['image'])
            return mean_cross_entropy(logits, batch['label']), updates
        (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(params)
        changes, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), updates, opt_state, value

    def state_bytes():
        params, _, opt_state = built()
        return cost.tree_bytes(params), cost.tree_bytes(opt_state)
    return Part(label, lambda: cost.step_cost(step, *built(), _batch(batch)), steps,
                state_bytes)


def _sgd(lr=0.1, wd=0.0):
    base = optax.sgd(lr, momentum=0.9)
    return optax.chain(optax.add_decayed_weights(wd), base) if wd else base


# ----------------------------------------------------------------------------- the ten papers


def epoch_steps(batch: int, examples: int = CIFAR_TRAIN) -> int:
    return examples // batch


def settings(name: str) -> dict:
    return config_lib.read_config_file(os.path.join(CONFIGS, f'{name}.py'))


def papers() -> list[Paper]:
    """The ten rows; every count comes from the shipped config (docs/paper_costs.md)."""
    lawn, afan_cfg, mimic, bbn = (engine_config(n) for n in ('lawn', 'afan', 'mimicnorm',
                                                             'beyond_bn'))
    flow, emr, lottery, eman, unify = (settings(n) for n in (
        'flow_pruning', 'emr', 'lottery', 'eman', 'unification'))
    # The config file's values over the standard setting, as the experiment reads them.
    ortho = orthoreg_paper.paper_setting(settings('orthoreg'), 'scripts/configs/orthoreg.py')

    def engine_runs(cfg, arms: int = 1) -> int:
        return arms * SEEDS * cfg.epochs * epoch_steps(cfg.batch_size)

    flow_runs = 7 * SEEDS  # 6 measures and the dense reference
    flow_epochs = flow['rounds'] * flow['round_epochs'] + flow['finetune_epochs']
    # finetune + 4 importances x (EMR + 13 QR strengths), at each LR of the grid.
    emr_sequences = (1 + 4 * (1 + 13)) * len(emr['lr']) * SEEDS
    emr_steps = emr_sequences * 20 * emr['epochs'] * epoch_steps(emr['batch_size'], 2500)
    lottery_runs = 1 + 3 * len(lottery['levels'])  # dense, then LT, re-init, PF per level
    lottery_steps = (lottery_runs * len(lottery['lrs']) * SEEDS * lottery['epochs']
                     * epoch_steps(lottery['batch']))
    ortho_batch = epoch_steps(ortho['batch'])
    # Every (method, level) lane retrains after each round (the last: final_epochs) and, between
    # rounds, trains reg_epochs with or without the regularizer (jaxnorm.papers.orthoreg_prune).
    ortho_lanes = len(orthoreg_prune.SCORE_METHODS) * len(orthoreg_paper.LEVELS)
    ortho_lane_epochs = ((ortho['rounds'] - 1) * (ortho['retrain_epochs'] + ortho['reg_epochs'])
                         + ortho['final_epochs'])
    eman_student = engine_config(None, model='resnet18', dataset=eman['dataset'],
                                 optimizer='sgd', lr=eman['lr'], momentum=0.9,
                                 weight_decay=eman['weight_decay'])
    unlabeled = eman['mu'] * eman['labeled_batch']
    lanes_a = 3 * SEEDS * eman['steps'] * len(eman['fractions'])  # supervised, EMA, EMAN
    lanes_b = SEEDS * eman['steps'] * len(eman['fractions'])  # stock FixMatch
    # Per (block shape, ratio) cell four arms of admm + retrain epochs each: ADMM, one-shot
    # (ADMM's epochs as extra retraining), block- and unstructured-pruning baselines.
    unify_cells = len(unify.get('shapes', unification.SHAPES)) * len(unify['ratios'])
    unify_epochs = unify['pretrain_epochs'] + 4 * unify_cells * (unify['admm_epochs']
                                                                 + unify['retrain_epochs'])
    # OrthoReg's CNN with its convs as convolutions: the experiment computes them as patch
    # matmuls (for vmapped weights on CPU), whose patch extraction XLA would count as a conv.
    orthoreg_cnn = models.SmallCNN(10, norm='bn', global_pool=True)
    plain_lawn = engine_config('lawn', **{'lawn.free_epochs': None, 'lawn.mask': None})
    return [
        Paper('LAWN', f'{lawn.model}, batch {lawn.batch_size}, {lawn.optimizer}; plain and '
              'LAWN arms', [engine_part('plain', plain_lawn, engine_runs(lawn)),
                            engine_part('LAWN', lawn, engine_runs(lawn))]),
        Paper('Beyond BatchNorm', f'{bbn.model} GN at 4 group sizes, batch {bbn.batch_size}', [
            engine_part('GN', engine_config('beyond_bn', norm='gn', norm_kwargs={
                'group_size': 16, 'unbiased': True}), engine_runs(bbn, arms=4))],
              'GN at group size 16 stands for all four (same convs)'),
        Paper('A-FAN', f'{afan_cfg.model}, batch {afan_cfg.batch_size}; baseline and A-FAN '
              f'({afan_cfg.afan.steps} PGD steps)', [
                  engine_part('baseline', engine_config('afan', **{'afan.layer': None}),
                              engine_runs(afan_cfg)),
                  engine_part('A-FAN', afan_cfg, engine_runs(afan_cfg))]),
        Paper('MimicNorm', f'{mimic.model} on {mimic.dataset}, batch {mimic.batch_size}; BN '
              'and MimicNorm arms', [
                  engine_part('BN', engine_config('mimicnorm', norm='bn'), engine_runs(mimic)),
                  engine_part('mimic', mimic, engine_runs(mimic))]),
        Paper('gradient-flow pruning', f"{flow['model']} (masked), batch {flow['batch_size']}; "
              '6 measures + dense', [
                  plain_part('train', models.get_model(flow['model'], norm='bn', num_classes=10),
                             prune.masked_optimizer(_sgd(flow['lr'], flow['weight_decay'])),
                             flow_runs * flow_epochs * epoch_steps(flow['batch_size']))],
              f"+ {6 * SEEDS * flow['rounds']} scoring rounds, each with 2 train-set passes "
              '(about 9 % more)'),
        Paper('EMR', f"20-task CIFAR-100, multi-head CNN, batch {emr['batch_size']}; "
              f'{emr_sequences} task sequences', [
                  plain_part('EMR/QR', MultiHeadCNN(5, num_tasks=20),
                             optim.emr(_sgd(0.03), 'ewc'), emr_steps,
                             batch=emr['batch_size'], classes=5)],
              'vmapped over up to 156 lanes, one engine run per task (evaluated in '
              'batches)'),
        Paper('lottery tickets', f"small CNN and MLP (no norm), batch {lottery['batch']}; "
              f"{lottery_runs} runs each", [
                  plain_part('CNN', models.SmallCNN(10, features=(16, 32, 32)),
                             prune.masked_optimizer(_sgd()),
                             lottery_steps, batch=lottery['batch']),
                  plain_part('MLP', models.get_model('mlp', norm='none', num_classes=10,
                                                     hidden=(300, 100)),
                             prune.masked_optimizer(_sgd()), lottery_steps,
                             batch=lottery['batch'])],
              'tiny networks: latency, not FLOPs, bounds the time'),
        Paper('OrthoReg', f"3-conv CNN with BN, batch {ortho['batch']}; dense, score, "
              f"{ortho_lanes} pruned lanes over {ortho['rounds']} round(s)", [
                  plain_part('dense', orthoreg_cnn, optax.chain(
                      optim.orthoreg(ortho['kappa']), _sgd(ortho['lr'], ortho['weight_decay'])),
                      2 * SEEDS * ortho['dense_epochs'] * ortho_batch, batch=ortho['batch']),
                  plain_part('fine-tune', orthoreg_cnn, prune.masked_optimizer(
                      _sgd(ortho['lr'], ortho['weight_decay'])),
                      SEEDS * ortho_lanes * ortho_lane_epochs * ortho_batch,
                      batch=ortho['batch'])],
              f"scoring runs {ortho['n_sample']:,} images in one batch (~200 GiB CPU estimate)"),
        Paper('EMAN', f"FixMatch {eman['model']}, {eman['labeled_batch']} labeled + "
              f"{unlabeled} unlabeled, {eman['steps']:,} steps", [
                  engine_part('student (A)', eman_student, lanes_a,
                              batch=eman['labeled_batch'] + unlabeled),
                  forward_part('2 teachers (A)', eman_student, 2 * lanes_a, batch=unlabeled),
                  engine_part('FixMatch (B)', eman_student, lanes_b,
                              batch=eman['labeled_batch'] + 2 * unlabeled)],
              'evaluation of 10k images in one batch per lane (~230 GiB CPU estimate)'),
        Paper('weight unification', f"small CNN on CIFAR-100, Adam, batch {unify['batch_size']}; "
              f'{unify_epochs} epochs per seed', [
                  plain_part('train', models.SmallCNN(100), optax.adam(unify['lr']),
                             SEEDS * unify_epochs * epoch_steps(unify['batch_size']),
                             batch=unify['batch_size'], classes=100)]),
    ]


def measure(only=None, accelerator: cost.Accelerator = cost.H100_SXM,
            utilization: float = 0.4) -> list[dict]:
    """One record per paper: each part's compiled cost and step count, and the totals."""
    rows = []
    for paper in papers():
        if only and paper.name not in only:
            continue
        parts = [(part, part.build()) for part in paper.parts]
        total = sum(c.flops * part.steps for part, c in parts)
        param_bytes, opt_bytes = max(part.state_bytes() for part in paper.parts)
        rows.append({
            'paper': paper.name, 'what': paper.what, 'note': paper.note,
            'parts': [{'label': part.label, 'steps': part.steps, **c._asdict()}
                      for part, c in parts],
            'steps': sum(part.steps for part in paper.parts if part.is_train_step),
            'total_flops': total,
            'param_bytes': param_bytes, 'opt_state_bytes': opt_bytes,
            'peak_temp_bytes': max(c.temp_bytes for _, c in parts),
            'hours': cost.run_seconds(total, accelerator, utilization=utilization) / 3600})
    return rows


def cells(row: dict) -> list[str]:
    """A record as table cells (GFLOP per step of each part, MiB, PFLOP, hours)."""
    mib = 2 ** 20
    per_step = ' + '.join(f"{p['flops'] / 1e9:.2f} ({p['label']})"
                          + (' [a while loop counted once]' if p['uncounted_loops'] else '')
                          for p in row['parts'])
    return [row['paper'], row['what'] + (f"; {row['note']}" if row['note'] else ''), per_step,
            f"{row['param_bytes'] / mib:.1f} / {row['opt_state_bytes'] / mib:.1f}",
            f"{row['peak_temp_bytes'] / mib:,.0f}", f"{row['steps']:,}",
            f"{row['total_flops'] / 1e15:,.1f}", f"{row['hours']:,.2g}"]
