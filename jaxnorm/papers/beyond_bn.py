"""Beyond BatchNorm (Lubana, Dick, Tanaka; arXiv:2106.05956): its three claims at initialization,
and GroupNorm's speed-stability trade-off in training.

Claims (abstract): (i) activations-based normalizers (BN, LN, IN, GN, FRN, VN, EvoNorms) keep the
activation variance of a ResNet from exploding with depth, while the parametric ones (WN, sWS)
and no normalization let it grow exponentially unless fixed, e.g. by SkipInit; (ii) GroupNorm
keeps the rank of the activations at least Omega(sqrt(width / group size)), so large groups
(LayerNorm) make samples look alike; (iii) small groups (InstanceNorm) give large gradient
norms in the early layers; together: a speed-stability trade-off in the group size.

Subcommands (each adds its section to OUT/beyond_bn/results.json and writes a PNG):
  forward      activation variance after every block of resnet56_wide and of a uniform
               27-block ResNet (27 x width 32, identity shortcuts; the uniform one alone with
               --quick), every normalizer, with and without SkipInit, in the default block
               (activation after the residual sum) and, for WN, sWS and none, also in the
               authors' block s * act(norm(conv(.))) + x (activation before the sum) (forward.png)
  informative  stable rank, numerical rank and mean cosine of the last layer vs GN group
               size, in a uniform CNN (20 layers of width 64; 10 with --quick) and vgg_cfg10,
               against the bound c * sqrt(C / group size) (informative.png)
  backward     ||dL/d conv output|| per layer vs group size, same networks and probes
               (backward.png)
  training     an LR sweep (no warmup) of vgg_cfg10 with BN, IN, GN (groups of 4) and LN
               at batch 16 and 64 on mnist5k, by jaxnorm.train.fit
               (beyond_bn_training; training.png)
  all          the four; informative and backward share one set of probes

Setup at init (norm.md 1.6's protocol): every seed draws its own weights, N(0, 1) inputs and
random labels (10 classes); norms in training mode (batch statistics); the repo's normalizer
variants (``BEYOND_BN_REPO_OPTIONS``: unbiased GN variance, 32 EvoNorm-S0 groups, WN with unit
gains, ...), GN with groups of 8 in the forward sweep. ResNets: 8x8 inputs, batch 16, probed
eagerly (all seeds and both SkipInit variants in one vmapped call per normalizer and block).
Rank networks: batch 32; uniform CNN 16x16 (8x8 with --quick); vgg_cfg10 32x32 at width 1
(0.5 with --quick) with group sizes 1, 4, 16, 64, C (64 dropped at width 0.5, whose 32-channel
layers it does not divide). SkipInit rows reuse the plain model's compiled program: a SkipInit
ResNet with its gains set to 1 computes exactly the plain ResNet. The numerical rank counts
the singular values of the B x D matrix of unit-norm sample rows above
s_max * max(B, D) * eps(float32), numpy.linalg.matrix_rank's default (jaxnorm.theory): the
smallest singular value float32 can tell from rounding error.
Training (``beyond_bn_training``; the setting is :func:`get_config`'s ``training``, its
reductions from the issue's targets stated there): vgg_cfg10 at width 0.125 on mnist5k 28x28
(first 500 training / 500 test images at standard, 256 / 256 with --quick), standardized, no
augmentation; SGD momentum 0.9, constant LR from the grid (0.05, 0.25; --quick 0.02, 0.1),
no warmup, weight decay 1e-4 [repo recipe, norm.md 1.4]; 15 epochs (4 with --quick);
batch 16 and 64 (16 with --quick); BN, IN (GN group size 1), GN (groups of 4), LN (one group)
(--quick: BN, IN, LN; paper scale adds no normalization). One seed-batched run per
(normalizer, batch, LR), stop_on_divergence off so a diverged seed goes on as NaN while the others train.

Checks (declared before the run in ``beyond_bn_report.declare_checks`` and
``beyond_bn_training.declare_checks``; seeds are the unit of replication):
  forward      growth = var(block 27) / var(block 1), judged in every seed: every
               activations-based normalizer grows < 50x; WN, sWS and none grow > 1e4x (both
               blocks); every normalizer with SkipInit grows < 50x, the parametric ones judged
               in the authors' act-before-sum block on resnet56_wide (on uniform_resnet27 that
               block with SkipInit is the identity: a sanity check, growth exactly 1).
  informative  per network: paired superiority of the stable rank at group size 1 over one
               group, the stable rank not increasing with the group size in any seed, the
               cosine the mirror image; and the bound on the numerical rank: per-seed log-log
               slope of the numerical rank against C/g (saturated values, rank = B, left
               out), non-inferior to 1/2 with margin 0.1.
  backward     per network: paired superiority of the first conv's gradient norm at group
               size 1 over one group, and Spearman(group size, first-conv gradient norm)
               <= -0.8 in every seed.
  training     sanity: BN trains at some LR at every batch size. Claims: LN has the highest
               loss at a fixed step budget (epoch 5 of 15; each normalizer at its best
               all-seeds-train LR), paired, Holm over (normalizer, batch) cells; IN's largest
               all-seeds-train LR at batch 16 is below GN g=4's and LN's (rule); IN has more
               loss spikes over the sweep than GN g=4 and LN (paired, Holm). "Trains": finite,
               no divergence flagged, last-epoch loss < 0.5 ln 10; a spike: an epoch loss
               > 1.5x and > 0.05 nats above the running minimum, or the first non-finite one.
The results' ``notes`` give each old rule and its outcome on the run where one was replaced.

    python -m jaxnorm.papers.beyond_bn --scale standard --seeds 5       # the report's run
    python scripts/experiments/beyond_bn.py all --quick --out results   # ~200 CPU s on 2 cores
    python scripts/experiments/beyond_bn.py forward --seeds 5
    python scripts/experiments/beyond_bn.py --scale paper   # ResNet-56 (32/64/128), CIFAR-100

At ``--scale paper`` (:data:`PAPER`: the repo's ResNet-56 (32/64/128) recipe on CIFAR-100; or
a ``scripts/train.py`` config given with ``--config``) the three init-time experiments run at
their standard sizes (they are the paper's networks) and the training experiment trains the
config's model, instead of the settings above, with GroupNorm at each group size, the same
way (the standard sweep's normalizers, batch sizes and LRs on the whole dataset). Every scale
declares the same checks.

A single subcommand keeps the other experiments' sections of an existing results.json that
ran at the same scale and seeds (and drops the others).
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxnorm import config as config_lib, models, theory
from jaxnorm.layers import BEYOND_BN_REPO_OPTIONS
from jaxnorm.papers import beyond_bn_report as report
from jaxnorm.papers import beyond_bn_training as training
from jaxnorm.papers import checks, common

TITLE = 'Beyond BatchNorm, arXiv:2106.05956'
CLAIMS = {
    'forward': 'Activations-based normalizers keep the activation variance of a ResNet growing '
               'about linearly with depth; WN, sWS and no normalization let it grow '
               'exponentially, and SkipInit flattens it.',
    'informative': 'GroupNorm keeps the rank of the activations at least '
                   'Omega(sqrt(width / group size)): larger groups give lower rank and more '
                   'similar samples.',
    'backward': 'Small group sizes (InstanceNorm) give large gradient norms in the early layers.',
    'training': 'LayerNorm (one group) trains slowest, InstanceNorm (group size 1) is least '
                'stable.',
}
ACTIVATION_NORMS = ('bn', 'ln', 'in', 'gn', 'frn', 'vn', 'evonorm_b0', 'evonorm_s0')
PARAMETRIC_NORMS = ('wn', 'sws', 'none')
ONE_GROUP = 'C'  # the group size label of GroupNorm with a single group (LayerNorm)
NUM_CLASSES = 10


# The paper's scale of the training experiment: ResNet-56 (32/64/128) on CIFAR-100 with the
# BeyondBatchNorm repo's training recipe (research/norm.md 1.4): SGD momentum 0.9, weight decay
# 1e-4 on every parameter, batch 256, 60 epochs with the base rate 0.1 for the first 45 and
# 0.01 for the last 15 (its per-iteration scheduler, not the config's [40, 20] split), flip-only
# augmentation, BN momentum 0.9 in flax's convention; FRN adds a 5-epoch warmup. The repo's
# normalizer numerics are ``BEYOND_BN_REPO_OPTIONS``. ``scripts/configs/beyond_bn.py`` hands
# these values to ``scripts/train.py`` (the normalizer picked with --norm).
PAPER = {
    'model': 'resnet56_wide', 'dataset': 'cifar100', 'augment': 'flip', 'epochs': 60,
    'batch_size': 256, 'optimizer': 'sgd', 'lr': 0.1, 'momentum': 0.9, 'weight_decay': 1e-4,
    'schedule': 'step', 'lr_decay_epochs': (45,), 'eval_batch_size': 1000,
}


def get_config(scale: str):
    """What the experiments run at ``scale``: at ``'quick'`` (the CPU budget) and
    ``'standard'``, the sizes of every experiment (the training one's engine config is
    :func:`training_config` of its ``'training'`` sizes; ``'quick'`` probes the forward
    experiment on uniform_resnet27 alone and costs ~200 CPU s on 2 cores, ~110 of them the
    four training runs); at ``'paper'``, the engine config
    the training experiment trains (:data:`PAPER`), the init-time experiments running at their
    ``'standard'`` sizes (they are the paper's networks)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    quick = scale == 'quick'
    return {
        # --quick probes the uniform ResNet only: resnet56_wide's 11 normalizers cost about
        # 55 CPU s more (its eager init and ops at three widths).
        # act_before_sum: the normalizers also probed in the authors' WN/SkipInit block,
        # s * act(norm(conv(.))) + x (the activation before the residual sum).
        'forward': {'networks': ('uniform_resnet27',) if quick
                    else ('resnet56_wide', 'uniform_resnet27'), 'batch': 16, 'image': 8,
                    'act_before_sum': PARAMETRIC_NORMS},
        'rank': {'batch': 32, 'networks': {
            'uniform_cnn': {'depth': 10 if quick else 20, 'width': 64, 'image': 8 if quick else 16,
                            'group_sizes': (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64)},
            # Group size 64 needs every layer >= 64 wide, so not at width 0.5 (32 channels).
            'vgg_cfg10': {'width': 0.5 if quick else 1.0, 'image': 32,
                          'group_sizes': (1, 4, 16, ONE_GROUP) if quick
                          else (1, 4, 16, 64, ONE_GROUP)}}},
        # The LR sweep of beyond_bn_training (its docstring defines trains / spikes / speed).
        # Reductions from the targets (mnist5k 4,000 / 1,000, >= 15 epochs, batch 16
        # and 64, >= 5 seeds), for the ~12-minute 2-core budget of the whole section: width
        # 0.125 of cfg_10 (8..64 channels), the first 500 training and 500 test images,
        # two LRs a factor 5 apart (0.05: BN trains in 15 epochs in a pilot; 0.25: where
        # instability should show without warmup [infer]; a third LR would cost 1/2 more),
        # and --quick: 256 / 256 images, batch 16 only, 4 epochs, BN / IN / LN and two LRs.
        # A pilot (2 cores under heavy contention) measured ~55 CPU s per batch-16 run of 5
        # seeds and 15 epochs (~65 CPU s per run on average over both batch sizes, so the 16
        # runs cost ~1,050 CPU s, with ~400 for forward + rank); at batch 64 the subset gives
        # 120 steps, too few for IN to train at LR 0.05 in that pilot (loss 2.2 at epoch 13):
        # the batch-64 cells mostly measure that, not stability. Every (normalizer, batch,
        # LR) is one seed-batched run.
        'training': {'dataset': 'mnist5k', 'width': 0.125,
                     'train_subset': 256 if quick else 500, 'test_subset': 256 if quick else 500,
                     'batches': (16,) if quick else (16, 64), 'epochs': 4 if quick else 15,
                     'speed_epoch': 2 if quick else 5,
                     'lrs': (0.02, 0.1) if quick else (0.05, 0.25),
                     # no normalization: only at paper scale (it is in none of the trade-off
                     # checks and would cost 1/5 of the standard sweep)
                     'norms': ('bn', 'in', 'ln') if quick else ('bn', 'in', 'gn4', 'ln'),
                     'momentum': 0.9, 'weight_decay': 1e-4, 'train_fraction': 0.5,
                     'spike_factor': 1.5, 'spike_floor': 0.05,
                     # effects the claims are powered for (None at quick: not powered): a
                     # pilot's paired SD of epoch-5 loss differences was 0.096 nats (IN - BN,
                     # batch 16, LR 0.05, 5 seeds), so 5 seeds detect 0.13 nats with 80 %
                     # power (stats.minimum_detectable_effect); no spike occurred in the
                     # pilot's IN runs, so the spike effect (1 per seed) is not sized.
                     'effect_loss': None if quick else 0.15,
                     'effect_spikes': None if quick else 1.0},
    }


def forward_norm_options(norm: str) -> dict:
    """The repo's variant of ``norm``; GN with groups of 8 (norm.md 1.6(b)), since the repo's
    default 32 groups would be InstanceNorm at width 32."""
    options = dict(BEYOND_BN_REPO_OPTIONS.get(norm, {}))
    return {**options, 'group_size': 8} if norm == 'gn' else options


def gn_options(group_size) -> dict:
    """Repo-faithful GroupNorm (unbiased variance) with ``group_size`` channels per group."""
    groups = {'num_groups': 1} if group_size == ONE_GROUP else {'group_size': group_size}
    return {**BEYOND_BN_REPO_OPTIONS['gn'], **groups}


def gaussian_batches(seeds: list[int], batch: int, image: int) -> tuple[jax.Array, jax.Array]:
    """Per-seed N(0, 1) images (seeds, B, H, W, 3) and uniform random labels (seeds, B)."""
    keys = [jax.random.fold_in(jax.random.key(seed), 1) for seed in seeds]
    images = jnp.stack([jax.random.normal(k, (batch, image, image, 3)) for k in keys])
    labels = jnp.stack([jax.random.randint(jax.random.fold_in(k, 1), (batch,), 0, NUM_CLASSES)
                        for k in keys])
    return images, labels


def init_seeds(model, seeds: list[int], example: jax.Array) -> list:
    """Variables of every seed. Initialized eagerly: the per-op kernels are shared by all
    configurations, whereas a jitted init compiles once per model."""
    return [model.init(jax.random.key(seed), example[:1]) for seed in seeds]


def probe_seeds(model, variables: list, images, labels, *, layers, keep: tuple[str, ...]):
    """``theory.probe_arrays`` for each ``(variables[i], images[i], labels[i])``, compiled once;
    only ``keep`` is returned (so XLA drops the statistics not asked for), stacked in numpy.

    Seeds run one after the other from Python: on CPU, ``jax.lax.map`` (a while loop) over the
    seeds compiled about 2x slower and ran slower than calling one compiled program per seed.

    Returns:
      The probed layer names (and, when ``grad_norm`` is kept, the tapped layer names), and
      ``{key: array (len(variables), ...)}``.
    """
    with_grads = 'grad_norm' in keep

    @jax.jit
    def run(seed_variables, x, y):
        out = theory.probe_arrays(model, seed_variables, x, y if with_grads else None,
                                  layers=layers, with_numerical_rank='numerical_rank' in keep)
        return {key: out[key] for key in keep}

    layer_names, tapped = theory.probe_layers(model, variables[0], images[0], layers=layers)
    outs = [run(v, images[i], labels[i] if with_grads else None)
            for i, v in enumerate(variables)]
    arrays = {key: np.stack([np.asarray(o[key]) for o in outs]) for key in keep}
    return ((layer_names, tapped) if with_grads else layer_names), arrays


def probe_rows_eagerly(model, variables: list, images) -> tuple[tuple[str, ...], dict]:
    """The block names of ``model`` and ``{'variance': (len(variables), blocks)}`` of
    ``theory.probe_arrays`` on ``(variables[i], images[i])``, all rows in one vmapped call,
    run eagerly: on 2 CPU cores jitting one ResNet per normalizer costs ~4 s of compile each,
    whereas eager ops compile once per shape and serve every normalizer (forward: ~60 % of
    the jitted CPU time)."""
    names = theory.probe_layers(model, variables[0], images[0], layers='blocks')[0]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *variables)
    variance = jax.vmap(lambda v, x: theory.probe_arrays(model, v, x, layers='blocks')[
        'variance'])(stacked, images)
    return names, {'variance': np.asarray(variance)}


def forward_network(name: str, norm: str, skipinit: bool, act_before_sum: bool = False):
    """The forward experiment's ``name`` network with ``norm``; ``act_before_sum`` puts each
    block's last activation before the residual sum (the authors' WN/SkipInit block)."""
    options = forward_norm_options(norm)
    if name == 'uniform_resnet27':
        return models.uniform_resnet(norm, num_blocks=27, width=32, num_classes=NUM_CLASSES,
                                     norm_kwargs=options, skipinit=skipinit,
                                     act_before_sum=act_before_sum)
    return models.get_model(name, norm=norm, num_classes=NUM_CLASSES, norm_kwargs=options,
                            skipinit=skipinit, act_before_sum=act_before_sum)


def with_skip_gain(variables, gain: float):
    """``variables`` with every SkipInit gain set to ``gain``. At gain 1 a SkipInit ResNet
    computes exactly the plain ResNet (``1.0 * branch`` is exact), so one compiled program
    serves both variants."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full_like(leaf, gain) if path[-1].key == 'skip_gain' else leaf,
        variables)


def run_forward(s: dict, seeds: list[int]) -> dict:
    """Block-output variance of every (network, normalizer, SkipInit) configuration."""
    f = s['forward']
    images, _ = gaussian_batches(seeds, f['batch'], f['image'])
    # Every normalizer in the default block (activation after the sum), and the parametric
    # ones also in the authors' block (activation before the sum).
    configs = [(net, norm, False) for net in f['networks']
               for norm in ACTIVATION_NORMS + PARAMETRIC_NORMS]
    configs += [(net, norm, True) for net in f['networks'] for norm in f['act_before_sum']]
    records = []
    for net, norm, before in tqdm(configs, desc='forward', unit='config'):
        model = forward_network(net, norm, skipinit=True, act_before_sum=before)
        variables = init_seeds(model, seeds, images[0])
        # Rows: the seeds with the plain residual branch (gain 1), then with SkipInit (gain 0).
        both = [with_skip_gain(v, 1.0) for v in variables] + variables
        names, out = probe_rows_eagerly(model, both, jnp.concatenate([images, images]))
        for skip, rows in ((False, slice(0, len(seeds))), (True, slice(len(seeds), None))):
            # The first probed layer is the stem; the claim is about the residual blocks.
            records.append({'network': net, 'norm': norm, 'skipinit': skip,
                            'block': 'act_before_sum' if before else 'act_after_sum',
                            'blocks': list(names[1:]),
                            'variance': out['variance'][rows, 1:].tolist()})
    return {'setup': {**f, 'inputs': 'N(0, 1)', 'gn_group_size': 8}, 'records': records}


def rank_network(name: str, spec: dict, group_size):
    options = gn_options(group_size)
    if name == 'uniform_cnn':
        return models.uniform_cnn('gn', depth=spec['depth'], width=spec['width'],
                                  num_classes=NUM_CLASSES, norm_kwargs=options)
    return models.get_model(name, norm='gn', num_classes=NUM_CLASSES, norm_kwargs=options,
                            width=spec['width'])


def run_rank(s: dict, seeds: list[int]) -> dict:
    """Last-layer stable rank and cosine, and every conv's gradient norm, per group size."""
    r, records = s['rank'], []
    configs = [(net, gs) for net, spec in r['networks'].items() for gs in spec['group_sizes']]
    for net, group_size in tqdm(configs, desc='informative+backward', unit='config'):
        spec = r['networks'][net]
        images, labels = gaussian_batches(seeds, r['batch'], spec['image'])
        model = rank_network(net, spec, group_size)
        example = jax.eval_shape(model.init, jax.random.key(0), images[0, :1])
        blocks, _ = theory.probe_layers(model, example, images[0])
        last = blocks[-1]
        # Statistics of the last conv-norm-act layer only: one Gram matrix instead of ten.
        (_, tapped), out = probe_seeds(
            model, init_seeds(model, seeds, images[0]), images, labels,
            layers=lambda path, module: path == last,
            keep=('stable_rank', 'numerical_rank', 'cosine', 'grad_norm'))
        width = example['params'][last]['conv']['kernel'].shape[-1]
        records.append({'network': net, 'group_size': group_size, 'last_layer': last,
                        'last_width': int(width), 'stable_rank': out['stable_rank'][:, 0].tolist(),
                        'numerical_rank': out['numerical_rank'][:, 0].tolist(),
                        'cosine': out['cosine'][:, 0].tolist(), 'tapped': list(tapped),
                        'grad_norm': out['grad_norm'].tolist()})
    return {'setup': {**r, 'inputs': 'N(0, 1)', 'labels': 'uniform random',
                      'gn': 'unbiased variance (repo)',
                      'numerical_rank_tolerance': 's_max * max(B, D) * eps(float32) (numpy '
                                                  'matrix_rank default)'}, 'records': records}


def training_config(t: dict):
    """The engine config of the training sweep at the quick and standard scales
    (:func:`jaxnorm.papers.beyond_bn_training.training_config`)."""
    return training.training_config(t)


def paper_setting(values, source: str):
    """The engine config the training experiment runs at paper-scale ``values``
    (ValueError naming ``source`` on bad keys or values)."""
    return common.train_config(values, source)


def run_training(s: dict, config, seeds: list[int], args, out_dir: str) -> dict:
    """The LR sweep (:func:`beyond_bn_training.run_sweep`) of every normalizer and batch size
    of ``s['training']`` with ``config``'s model and recipe (the paper's, else
    :func:`training_config`), one seed-batched ``jaxnorm.train.fit`` run per arm under
    ``out_dir/runs``."""
    t = s['training']
    records = training.run_sweep(t, config, len(seeds), out_dir, args.data_dir)
    source = args.config or f"jaxnorm.papers.beyond_bn.get_config('{args.scale}')"
    return {'setup': {'config': source, 'model': config.model,
                      'model_kwargs': dict(config.model_kwargs), 'data': config.dataset,
                      **{k: t[k] for k in ('train_subset', 'test_subset', 'batches', 'lrs',
                                           'norms', 'epochs', 'speed_epoch', 'train_fraction',
                                           'spike_factor', 'spike_floor') if k in t},
                      'momentum': config.momentum, 'weight_decay': config.weight_decay,
                      'schedule': 'constant, no warmup', 'engine': 'jaxnorm.train.fit',
                      'loss': 'per-epoch mean training loss'}, 'records': records}


def ran(name: str, s: dict, seeds: list[int], config=None, source: str | None = None) -> str:
    """One sentence saying what an experiment ran (the training one: ``config`` from
    ``source`` at paper scale)."""
    if name == 'forward':
        f = s['forward']
        return (f"{len(seeds)} seeds at init, N(0, 1) {f['image']}x{f['image']} inputs, batch "
                f"{f['batch']}: {len(ACTIVATION_NORMS + PARAMETRIC_NORMS)} normalizers with and "
                f"without SkipInit in {' and '.join(f['networks'])} (27 blocks"
                f"{' each' if len(f['networks']) > 1 else ''}).")
    if name in ('informative', 'backward'):
        nets = s['rank']['networks']
        cnn, vgg = nets['uniform_cnn'], nets['vgg_cfg10']
        return (f"{len(seeds)} seeds at init, batch {s['rank']['batch']}, GN (unbiased): a "
                f"{cnn['depth']}-layer width-{cnn['width']} CNN on {cnn['image']}x{cnn['image']} "
                f"inputs, group sizes {cnn['group_sizes']}, and vgg_cfg10 at width "
                f"{vgg['width']} on {vgg['image']}x{vgg['image']}, group sizes "
                f"{vgg['group_sizes']}.")
    t = s['training']
    sweep = (f"normalizers {t['norms']} x batch {t['batches']} x LR {t['lrs']} (constant, no "
             f"warmup, SGD momentum {t['momentum']}), {len(seeds)} seeds")
    if config is not None:
        return (f'{config.model} trained on {config.dataset} for {config.epochs} epochs with '
                f'{source}: {sweep}.')
    return (f"vgg_cfg10 (width {t['width']}) trained by jaxnorm.train.fit on {t['dataset']} "
            f"28x28 (first {t['train_subset']} training / {t['test_subset']} test images) for "
            f"{t['epochs']} epochs: {sweep}.")


def previous_experiments(path: str, scale: str, seeds: list[int]) -> dict:
    """The experiments of an existing ``path`` that ran at ``scale`` with ``seeds`` and hold
    declared-check results (a single subcommand keeps them); the others are dropped."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        experiments = json.load(f).get('experiments', {})
    kept = {}
    for name, e in experiments.items():
        try:
            for result in e['checks']:
                checks.validate_check_result(result, name)
            same = e.get('scale') == scale and e.get('seeds') == seeds
        except (checks.ResultsSchemaError, KeyError, TypeError):
            same = False
        if same:
            kept[name] = e
        else:
            print(f'dropping the earlier {name!r} section of {path}: another scale, other '
                  'seeds or an older format')
    return kept


def main(argv=None) -> int:
    parser = common.build_parser(__doc__)
    parser.add_argument('experiment', nargs='?', default='all',
                        choices=('forward', 'informative', 'backward', 'training', 'all'),
                        help='which experiment (default: all, as the report runs it)')
    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting,
                                              parser=parser)
    # At paper scale the init-time experiments run at their standard sizes and the training
    # experiment trains the paper's config.
    paper = args.scale == 'paper'
    s = get_config('standard') if paper else setting
    train_config = setting if paper else training_config(s['training'])
    source = args.config or 'jaxnorm.papers.beyond_bn.PAPER'
    seeds = list(range(args.seeds))
    # Every check of every experiment, declared before anything runs.
    # The paper-scale sweep trains on the whole of the config's dataset.
    # (its epochs the config's, the speed budget a third of them as at standard).
    t = ({**s['training'], 'train_subset': None, 'test_subset': None,
          'epochs': setting.epochs, 'speed_epoch': max(1, setting.epochs // 3),
          'norms': training.PAPER_NORMS} if paper
         else s['training'])
    s = {**s, 'training': t}
    declared = report.declare_checks(common.declared_seeds(args), tuple(s['rank']['networks']))
    declared['training'] = training.declare_checks(common.declared_seeds(args), t,
                                                   t.get('effect_loss'), t.get('effect_spikes'))
    wanted = (('forward', 'informative', 'backward', 'training') if args.experiment == 'all'
              else (args.experiment,))
    out_dir = common.output_dir(args, 'beyond_bn')
    scale = args.scale
    experiments = previous_experiments(os.path.join(out_dir, 'results.json'), scale, seeds)
    started = time.perf_counter()
    rank_runs = None
    for name in wanted:
        begun = time.perf_counter()
        if name == 'forward':
            measured = run_forward(s, seeds)
        elif name == 'training':
            measured = run_training(s, train_config, seeds, args, out_dir)
        else:
            rank_runs = rank_runs or run_rank(s, seeds)
            measured = rank_runs
        if name == 'training':
            judged = training.training_verdict(measured['records'], declared[name], t)
        elif name == 'informative':
            judged = report.informative_verdict(measured['records'], declared[name],
                                                batch=s['rank']['batch'])
        else:
            judged = report.JUDGES[name](measured['records'], declared[name])
        experiments[name] = {
            'claim': CLAIMS[name], 'ran': ran(name, s, seeds, setting if paper else None, source),
            'scale': scale, 'seeds': seeds, **judged,
            'setup': measured['setup'], 'records': measured['records'],
            'seconds': time.perf_counter() - begun}
        plot = (training.plot_training if name == 'training' else report.PLOTS[name])(
            measured['records'], out_dir)
        print(f'\n## {name}: {checks.verdict(judged["checks"])}; plot: {plot}')
    # One results.json over every experiment present, written by the one writer.
    fields = report.contract(experiments)
    earlier = fields.pop('seconds') - (time.perf_counter() - started)
    checks.write_results(
        out_dir, paper=TITLE, scale=scale, seeds=args.seeds,
        figures=[os.path.join(out_dir, f) for f in fields.pop('figures')],
        started=started - max(earlier, 0.0), experiments=experiments, **fields)
    return 0


if __name__ == '__main__':
    sys.exit(main())
