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
               --quick), every normalizer, with and without SkipInit (forward.png)
  informative  stable rank and mean cosine of the last layer vs GN group size, in a uniform
               CNN (20 layers of width 64; 10 with --quick) and vgg_cfg10, against the bound
               c * sqrt(C / group size) with c fitted (informative.png)
  backward     ||dL/d conv output|| per layer vs group size, same networks and probes
               (backward.png)
  training     vgg_cfg10 (GN group sizes 1, 4, 16, C) trained on digits by
               jaxnorm.train.fit: loss and test accuracy curves (training.png)
  all          the four; informative and backward share one set of probes

Setup at init (norm.md 1.6's protocol): every seed draws its own weights, N(0, 1) inputs and
random labels (10 classes); norms in training mode (batch statistics); the repo's normalizer
variants (``BEYOND_BN_REPO_OPTIONS``: unbiased GN variance, 32 EvoNorm-S0 groups, WN with unit
gains, ...), GN with groups of 8 in the forward sweep. ResNets: 8x8 inputs, batch 16, probed
eagerly (all seeds and both SkipInit variants in one vmapped call per normalizer). Rank
networks: batch 32; uniform CNN 16x16 (8x8 with --quick); vgg_cfg10 32x32 at width 1 (0.5 with
--quick) with group sizes 1, 4, 16, 64, C (64 dropped at width 0.5, whose 32-channel layers it
does not divide). SkipInit rows reuse the plain model's compiled program: a SkipInit ResNet with
its gains set to 1 computes exactly the plain ResNet.
Training: one seed-batched ``jaxnorm.train.fit`` run per group size (``common.fit_arms``,
under OUT/beyond_bn/runs, resumed or skipped by the next invocation; a diverging seed stops
its group size's run, NaN from there on): digits zero-padded to 32x32, or 18x18 with --quick
(fit pads; any side >= 17 keeps cfg_10's four stride-2 convs off 1x1 maps, where group size 1
would normalize single values), standardized, no augmentation; vgg_cfg10 at width 0.5 (0.25
with --quick); SGD momentum 0.9, constant LR 0.1, weight decay 1e-4, batch 64,
no warmup; 15 epochs (2 with --quick). fit records per epoch the mean of its step losses and
the test accuracy.

Checks (declared before the run in ``beyond_bn_report.declare_checks``; seeds are the unit of
replication, every seed drawing its own weights and inputs; all are claims of the paper):
  forward      growth = var(block 27) / var(block 1), judged in every seed: every
               activations-based normalizer grows < 50x (linear growth of about +1 per block
               at most); WN, sWS and none grow > 1e4x (2x per block would give 2^26); every
               normalizer with SkipInit grows < 50x; on every network probed.
  informative  per network: paired superiority over seeds of the last-layer stable rank at
               group size 1 over one group (C), and a rule that the stable rank does not
               increase from one group size to the next in any seed; the mean cosine the
               mirror image. The bound's constant (largest c with rank >= c sqrt(C/g) at every
               g) and the log-log slope of rank against C/g (the bound's exponent is 1/2) are
               reported, not judged: the bound is on the rank, the stable rank only bounds it
               from below.
  backward     per network: paired superiority of the first conv's gradient norm at group
               size 1 over one group, and Spearman(group size, first-conv gradient norm)
               <= -0.8 in every seed.
  training     paired superiority over seeds, Holm-controlled over the other group sizes: one
               group (LN) has a higher last-epoch training loss than every other group size
               (slowest), and group size 1 (IN) a larger mean |epoch-to-epoch change of the
               epoch-mean loss| than every other (least stable; fit records one loss per
               epoch, the private loop before it the minibatch loss step to step). That
               measure is not independent of learning (it rewards a run that does not learn);
               the check declares it.
The results' ``notes`` give each old rule (means and unpaired 2 SE, or a ranking of means)
and its outcome on the run.

    python scripts/experiments/beyond_bn.py all --quick --out results   # ~200 CPU s on 2 cores
    python scripts/experiments/beyond_bn.py forward --seeds 5
    python scripts/experiments/beyond_bn.py --scale paper   # ResNet-56 (32/64/128), CIFAR-100

At ``--scale paper`` (:data:`PAPER`: the repo's ResNet-56 (32/64/128) recipe on CIFAR-100; or
a ``scripts/train.py`` config given with ``--config``) the three init-time experiments run at
their standard sizes (they are the paper's networks) and the training experiment trains the
config's model, instead of the settings above, with GroupNorm at each group size, the same
way. Every scale declares the same checks.

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
        'forward': {'networks': ('uniform_resnet27',) if quick
                    else ('resnet56_wide', 'uniform_resnet27'), 'batch': 16, 'image': 8},
        'rank': {'batch': 32, 'networks': {
            'uniform_cnn': {'depth': 10 if quick else 20, 'width': 64, 'image': 8 if quick else 16,
                            'group_sizes': (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64)},
            # Group size 64 needs every layer >= 64 wide, so not at width 0.5 (32 channels).
            'vgg_cfg10': {'width': 0.5 if quick else 1.0, 'image': 32,
                          'group_sizes': (1, 4, 16, ONE_GROUP) if quick
                          else (1, 4, 16, 64, ONE_GROUP)}}},
        'training': {'width': 0.25 if quick else 0.5, 'image': 18 if quick else 32,
                     'batch': 64, 'epochs': 2 if quick else 15, 'lr': 0.1, 'momentum': 0.9,
                     'weight_decay': 1e-4, 'group_sizes': (1, 4, 16, ONE_GROUP)},
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
                                  layers=layers)
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


def forward_network(name: str, norm: str, skipinit: bool):
    options = forward_norm_options(norm)
    if name == 'uniform_resnet27':
        return models.uniform_resnet(norm, num_blocks=27, width=32, num_classes=NUM_CLASSES,
                                     norm_kwargs=options, skipinit=skipinit)
    return models.get_model(name, norm=norm, num_classes=NUM_CLASSES, norm_kwargs=options,
                            skipinit=skipinit)


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
    configs = [(net, norm) for net in f['networks']
               for norm in ACTIVATION_NORMS + PARAMETRIC_NORMS]
    records = []
    for net, norm in tqdm(configs, desc='forward', unit='config'):
        model = forward_network(net, norm, skipinit=True)
        variables = init_seeds(model, seeds, images[0])
        # Rows: the seeds with the plain residual branch (gain 1), then with SkipInit (gain 0).
        both = [with_skip_gain(v, 1.0) for v in variables] + variables
        names, out = probe_rows_eagerly(model, both, jnp.concatenate([images, images]))
        for skip, rows in ((False, slice(0, len(seeds))), (True, slice(len(seeds), None))):
            # The first probed layer is the stem; the claim is about the residual blocks.
            records.append({'network': net, 'norm': norm, 'skipinit': skip,
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
            layers=lambda path, module: path == last, keep=('stable_rank', 'cosine', 'grad_norm'))
        width = example['params'][last]['conv']['kernel'].shape[-1]
        records.append({'network': net, 'group_size': group_size, 'last_layer': last,
                        'last_width': int(width), 'stable_rank': out['stable_rank'][:, 0].tolist(),
                        'cosine': out['cosine'][:, 0].tolist(), 'tapped': list(tapped),
                        'grad_norm': out['grad_norm'].tolist()})
    return {'setup': {**r, 'inputs': 'N(0, 1)', 'labels': 'uniform random',
                      'gn': 'unbiased variance (repo)'}, 'records': records}


def training_config(t: dict):
    """The run config of the training experiment at the quick and standard scales:
    :func:`get_config`'s ``training`` sizes for :func:`jaxnorm.train.fit` (GroupNorm is set
    per arm)."""
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'vgg_cfg10', 'model_kwargs': {'width': t['width']}, 'dataset': 'digits',
        'image_size': t['image'], 'resize': 'bilinear', 'augment': 'none', 'epochs': t['epochs'],
        'batch_size': t['batch'], 'optimizer': 'sgd', 'lr': t['lr'], 'momentum': t['momentum'],
        'schedule': 'constant', 'warmup_epochs': 0.0, 'weight_decay': t['weight_decay'],
        'progress': False, 'keep_checkpoints': 1}, source='beyond_bn training settings')


def paper_setting(values, source: str):
    """The engine config the training experiment runs at paper-scale ``values``
    (ValueError naming ``source`` on bad keys or values)."""
    return common.train_config(values, source)


def run_training(s: dict, config, seeds: list[int], args, out_dir: str) -> dict:
    """GroupNorm at every group size trained by :func:`jaxnorm.train.fit` with ``config``'s
    model and recipe (the paper's, else :func:`training_config`): one seed-batched run per
    group size under ``out_dir/runs``, its per-epoch mean training losses as the loss traces."""
    group_sizes = s['training']['group_sizes']
    arms = {f'gn{g}': {'norm': 'gn', 'norm_kwargs': gn_options(g)} for g in group_sizes}
    # One seed-batched run per group size: on 2 CPU cores the quick arm (3 seeds, 2 epochs)
    # took 279 s against 309 s for its seeds one after another, whose every run compiles
    # its own init and steps (most of the time), though a vmapped convolution is slower.
    histories = common.fit_arms(config, arms, len(seeds), out_dir, args.data_dir)
    records = [{'group_size': g,
                'loss': [[r['train_loss'] for r in runs] for runs in histories[f'gn{g}']],
                'test_accuracy': [[r['test_accuracy'] for r in runs]
                                  for runs in histories[f'gn{g}']]} for g in group_sizes]
    size = config.image_size
    data_note = f'{config.dataset}, zero-padded to {size}x{size}' if size else config.dataset
    source = args.config or f"jaxnorm.papers.beyond_bn.get_config('{args.scale}')"
    return {'setup': {'config': source, 'model': config.model,
                      'model_kwargs': dict(config.model_kwargs), 'data': data_note,
                      'epochs': config.epochs, 'batch': config.batch_size, 'lr': config.lr,
                      'momentum': config.momentum, 'weight_decay': config.weight_decay,
                      'group_sizes': group_sizes, 'engine': 'jaxnorm.train.fit',
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
    if config is not None:
        return (f"{config.model} with GN group sizes {t['group_sizes']} trained on "
                f'{config.dataset} for {config.epochs} epochs with {source} (SGD LR '
                f'{config.lr}, batch {config.batch_size}), {len(seeds)} seeds.')
    return (f"vgg_cfg10 (width {t['width']}, GN group sizes {t['group_sizes']}) trained by "
            f"jaxnorm.train.fit on digits zero-padded to {t['image']}x{t['image']} for "
            f"{t['epochs']} epochs, SGD lr {t['lr']} momentum {t['momentum']}, batch "
            f"{t['batch']}, {len(seeds)} seeds.")


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
    declared = report.declare_checks(common.declared_seeds(args), tuple(s['rank']['networks']),
                                     s['training']['group_sizes'])
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
        judged = report.JUDGES[name](measured['records'], declared[name])
        experiments[name] = {
            'claim': CLAIMS[name], 'ran': ran(name, s, seeds, setting if paper else None, source),
            'scale': scale, 'seeds': seeds, **judged,
            'setup': measured['setup'], 'records': measured['records'],
            'seconds': time.perf_counter() - begun}
        plot = report.PLOTS[name](measured['records'], out_dir)
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
