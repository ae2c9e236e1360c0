"""OrthoReg (Lubana et al., arXiv:2009.05014): orthonormal filters make group importance
additive and filter pruning better.

Setup at the quick and standard scales (:func:`get_config`): digits (1,437 train / 360 test,
8x8), a 3-conv CNN (16/32/64 filters, conv -> BN -> ReLU, strides 1/2/2, global pool, Dense),
batch 64, SGD momentum 0.9. A short dense phase (lr 0.05, the last epoch at 0.005) per seed,
two arms sharing initialization and data order:
  * baseline: weight decay 1e-4;
  * OrthoReg: ``optim.orthoreg(1e-2)`` on the conv kernels, no weight decay (the reference's
    kappa for VGG/ResNet), layer weights by the reference's VGG rule ``size='filters'`` (the
    CNN is a plain conv stack like VGG-13; ``optim.orthoreg.REFERENCE_RULES`` holds the
    reference's ResNet-34 and MobileNet-V1 rules).
Importance (:mod:`jaxnorm.papers.orthoreg_prune`): Fisher I_k = (sum over conv filter k and its
bias of theta * g)^2 (``scope='filter'``, the reference's), g the mean gradient over 1,024
training images (512 with --quick), BN in eval mode; baselines L1-norm and BN-scale |gamma| of
the normally trained net, and Fisher on it.

Measurements: (1) per layer, the Spearman correlation between the summed individual Fisher
scores of random groups of 25 % of the layer's filters and the true training-loss increase
when the group is masked; (2) test accuracy after iterative pruning to 25 / 50 / 75 % of the
filters in ``rounds`` rounds, the OrthoReg lanes trained with the regularizer between rounds
(the reference's iterative protocol; every other lane as long without it); (3) the epoch at
which an Early-Bird ticket appears (|gamma| masks at 50 %, FIFO of 5, distance <= 0.1; You et
al., arXiv:1909.11957) in each dense phase, reported only.

Checks (declared before running by ``declare_checks``; S seeds, paired per seed, 90 %
t-intervals of the mean per-seed difference, Holm over cells):
  * orthonormality (claim): OrthoReg minus baseline conv-mean ||diag G||_1 / ||G||_1 at the end
    of the dense phase; superiority with margin 0.1;
  * additivity (claim a): per layer, rho_OrthoReg - rho_baseline; superiority over 0 in every
    layer, Holm over the layers;
  * pruned accuracy (claim b): OrthoReg minus Fisher, L1-norm and BN-scale test accuracy
    (points) at each level; superiority in every (baseline, level) cell, Holm over the 9
    cells; powered for +2 points (the smallest VGG-13 gain over Fisher in the paper's table).
The Early-Bird ticket epoch is reported in the table but is not a check: that a ticket appears
is You et al.'s finding, not OrthoReg's.

Training: every phase is a seed-batched ``jaxnorm.train.fit`` run in ``OUT/orthoreg/runs``:
one per dense arm (seeds 0 .. S-1; OrthoReg through the ``orthoreg`` extension, the baseline
with kappa 0, which only records orthonormality), and per pruning round one retraining run over
the S x 12 lanes (4 methods x 3 levels per seed, each held pruned by the ``sparsity``
extension) plus, between rounds, one run of the OrthoReg lanes with the regularizer and one of
the other lanes without it.

    python scripts/experiments/orthoreg.py --quick --out results   # ~100 s of CPU
    python scripts/experiments/orthoreg.py --seeds 8 --out results  # standard
    python scripts/experiments/orthoreg.py --scale paper --out results   # CIFAR-10, GPU

At ``--scale paper`` (:data:`PAPER`, or the values of a ``get_config()`` file given with
``--config``, which replace the standard scale's) the same phases run that setting, with one
pruning round: the reference's Early-Bird one-shot protocol, whose CIFAR-100 table
(:data:`jaxnorm.papers.orthoreg_report.PAPER_TABLE`) is printed beside ours as the GPU target.
"""
from __future__ import annotations

import os
import sys
import time
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import prune
from jaxnorm import checkpoints, data, models, sparsity, train
from jaxnorm import config as config_lib
from jaxnorm.losses import mean_cross_entropy
from jaxnorm.papers import checks, common, orthoreg_report
from jaxnorm.papers.orthoreg_prune import (SCORE_METHODS, iterative_prune, layer_additivity,
                                           make_scorer)

NAME = 'orthoreg'
TITLE = 'OrthoReg: Robust Network Pruning Using Orthonormality Regularization (arXiv:2009.05014)'
CLAIM = ('Regularizing filters toward orthonormality makes the sum of individual filter '
         'importances a reliable estimate of a group\'s importance and gives more accurate '
         'nets after pruning than Fisher, L1-norm or BN-scale pruning of a normally trained '
         'net.')
WIDTHS = (16, 32, 64)
LEVELS = (0.25, 0.5, 0.75)
METHODS = SCORE_METHODS
BASELINES = ('fisher', 'l1_norm', 'bn_scale')
LAYERS = tuple(f'conv{i}' for i in range(1, len(WIDTHS) + 1))
# scope 'filter': the reference's Fisher (conv filter + bias) [code: imp_estimator.py];
# size 'filters': the reference's VGG layer weights (the CNN is a plain conv stack);
# rounds / retrain / reg / final epochs: the reference's iterative protocol shrunk [infer].
COMMON = {'dataset': 'digits', 'kappa': 1e-2, 'weight_decay': 1e-4, 'lr': 0.05, 'batch': 64,
          'scope': 'filter', 'size': 'filters', 'gram_side': 'smaller'}
# Smallest VGG-13 gain of OrthoReg over Fisher in the paper's table (+2.2 points at 75 %).
ACCURACY_EFFECT = 2.0

# The paper's scale: the Early-Bird setting of the reference code (research/optim.md 3.2-3.4,
# the reference repo's main.py / config.py): kappa 1e-2 (the code's value for VGG-13, ResNet-34
# and ResNet-56); OrthoReg runs without weight decay, the baseline with 1e-4; SGD momentum 0.9,
# batch 128, LR 0.1; the Early-Bird dense phase is 24 epochs at 0.1 and one at 0.01 (the
# experiment drops the rate x0.1 for the last dense epoch); Fisher importance from the mean
# gradient over about 10,000 training images (``imp_samples``) with the filter + bias scope;
# the pruned networks are retrained for 60 + 40 + 40 = 140 epochs with weight decay 1e-4, in
# one round (the Early-Bird one-shot protocol of the paper's printed table, the GPU target).
# Layer weights: the VGG rule ``size='filters'``; for the paper's ResNet-34 / MobileNet-V1 use
# ``optim.orthoreg.REFERENCE_RULES`` ('resnet' / 'mobilenet' with gram_side 'columns').
# Deviations: the experiment's 3-conv CNN (16/32/64, BN, 10-class head) replaces VGG-13 /
# ResNet-34 on CIFAR-100, so the dataset is CIFAR-10; fine-tuning uses a cosine schedule over
# the 140 epochs instead of the code's steps; 100 random groups per layer for the additivity
# correlation is this project's choice [infer]. ``scripts/configs/orthoreg.py`` returns these
# values as a config file.
PAPER = {
    'dataset': 'cifar10', 'kappa': 1e-2, 'weight_decay': 1e-4, 'lr': 0.1, 'batch': 128,
    'dense_epochs': 25, 'rounds': 1, 'retrain_epochs': 0, 'reg_epochs': 0,
    'final_epochs': 140, 'n_groups': 100, 'n_sample': 10000, 'scope': 'filter',
    'size': 'filters', 'gram_side': 'smaller',
}
CONV_KERNELS = r'^conv\d+/kernel$'  # what OrthoReg regularizes and orthonormality averages


def cell_name(baseline: str, level: float) -> str:
    """The name of a (baseline, pruning level) cell of the pruned-accuracy check."""
    return f'vs {baseline} @ {100 * level:.0f} %'


def declare_checks(seeds: int) -> dict[str, checks.Check]:
    """The section's checks, declared before the run for ``seeds`` seeds per arm."""
    return {
        'orthonormality': checks.Check(
            'orthonormality',
            'OrthoReg makes the conv filters closer to orthonormal than normal training: the '
            'conv-mean diagonal share ||diag G||_1 / ||G||_1 of the filter Gram matrix at the '
            'end of the dense phase exceeds the baseline\'s by more than 0.1.',
            'claim',
            'OrthoReg minus baseline conv-mean ||diag G||_1 / ||G||_1 at the end of the dense '
            'phase (share, 0 to 1)',
            'superiority', seeds, margin=0.1),
        'additivity': checks.Check(
            'additivity',
            'With OrthoReg the sum of individual Fisher importances ranks random 25 % filter '
            'groups of each layer by their true loss increase better than without it (higher '
            'Spearman correlation in every layer). The paper gives no effect size to carry '
            'over: not powered for a paper number.',
            'claim',
            'rho_OrthoReg minus rho_baseline per layer, rho the Spearman correlation of summed '
            'Fisher scores vs true training-loss increase of random 25 % groups of the layer',
            'superiority', seeds),
        'pruned accuracy': checks.Check(
            'pruned accuracy',
            'Fisher pruning of an OrthoReg-trained net, iteratively with the regularizer '
            'between rounds, gives higher test accuracy than Fisher, L1-norm or BN-scale '
            'pruning of a normally trained net, at every pruning level (25 / 50 / 75 %). The '
            'paper\'s table (CIFAR-100, Early-Bird, pruned 25 / 50 / 75 %): VGG-13 OrthoReg '
            '71.4 / 71.2 / 67.5 vs Fisher 65.4 / 67.1 / 65.3; ResNet-34 77.4 / 76.7 / 74.8 vs '
            '72.7 / 72.3 / 71.3; MobileNet-V1 67.8 / 67.4 / 65.8 vs 67.9 / 67.6 / 65.9 (no '
            f'gain); powered for +{ACCURACY_EFFECT:g} points, the smallest VGG-13 gain.',
            'claim',
            'OrthoReg minus baseline (Fisher, L1-norm or BN-scale) test accuracy after the '
            'last round (points), per (baseline, pruning level) cell',
            'superiority', seeds, effect=ACCURACY_EFFECT),
    }


def channel_groups() -> tuple[prune.ChannelGroup, ...]:
    consumers = [f'conv{i}/kernel' for i in range(2, len(WIDTHS) + 1)] + ['head/kernel']
    groups = []
    for i, (width, consumer) in enumerate(zip(WIDTHS, consumers), start=1):
        kernel = prune.Slot(f'conv{i}/kernel', -1)
        slots = (kernel, prune.Slot(f'conv{i}/bias', 0), prune.Slot(f'norm{i}/scale', 0),
                 prune.Slot(f'norm{i}/bias', 0), prune.Slot(consumer, -2))
        groups.append(prune.ChannelGroup(f'conv{i}', width, kernel, slots))
    return tuple(groups)


# conv -> the library's BN (momentum 0.9) -> ReLU per width, global average pool, Dense. The
# measurements vmap over masked copies of one network, so MODEL computes the convs as patch
# matmuls; the seed-batched fits step one vmapped batch per call, where XLA's CPU convs are
# about 3x faster than the patch matmuls. Both have the same parameters and function.
FIT_MODEL_KWARGS = {'features': WIDTHS, 'global_pool': True, 'patch_convs': False}
MODEL = models.get_model('small_cnn', norm='bn', num_classes=10,
                         **{**FIT_MODEL_KWARGS, 'patch_convs': True})
GROUPS = channel_groups()
# Fine-tuning lane k (one per (seed, method, level) network) has seed TUNE_SEED + k.
TUNE_SEED = 1000


def ce(params, stats, x, y, train: bool):
    variables = {'params': params, 'batch_stats': stats}
    if train:
        logits, new = MODEL.apply(variables, x, train=True, mutable=['batch_stats'])
        stats = new['batch_stats']
    else:
        logits = MODEL.apply(variables, x)
    return mean_cross_entropy(logits, y), (stats, logits)


# The same network with XLA convs: about 6x faster for one network's gradient on CPU (the
# iterative rounds score every lane with it).
CONV_MODEL = models.get_model('small_cnn', norm='bn', num_classes=10, **FIT_MODEL_KWARGS)


def ce_conv(params, stats, x, y, train: bool = False):
    """Mean cross-entropy of :data:`CONV_MODEL` in eval mode (``train`` must be False)."""
    if train:
        raise ValueError('ce_conv scores networks in eval mode only')
    logits = CONV_MODEL.apply({'params': params, 'batch_stats': stats}, x)
    return mean_cross_entropy(logits, y), (stats, logits)


def zero_channels(params, group: prune.ChannelGroup, keep):
    """``params`` with the channels of ``group`` where ``keep`` is 0 masked (every slot)."""
    flat = dict(zip(*prune.named_leaves(params)[:2]))
    for path, axis in group.params:
        shape = [1] * flat[path].ndim
        shape[axis] = -1
        flat[path] = flat[path] * keep.reshape(shape)
    paths, _, treedef = prune.named_leaves(params)
    return jax.tree_util.tree_unflatten(treedef, [flat[p] for p in paths])


def masked_loss(params, stats, x, y, layer: str, keep):
    """The eval-mode loss with the channels of ``layer`` where ``keep`` is 0 masked, computed by
    zeroing the normalizer's output ``norm{i}`` of :data:`CONV_MODEL`. Equal to masking every
    slot (:func:`zero_channels`): a zero conv slice and bias give a zero conv output, BN with
    zero scale and bias outputs 0 whatever its input, ReLU(0) = 0, and the next layer's input
    slice then meets zeros. Under ``vmap`` over ``keep`` only the layers after the mask run
    once per group (the batch grows), about 5x faster on CPU than vmapping masked params."""
    norm = layer.replace('conv', 'norm')

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.module.name == norm and context.method_name == '__call__':
            out = out * keep.astype(out.dtype)
        return out
    with nn.intercept_methods(interceptor):
        logits = CONV_MODEL.apply({'params': params, 'batch_stats': stats}, x)
    return mean_cross_entropy(logits, y)


@partial(jax.jit, static_argnames='scope')
def fisher_and_group_losses(params, stats, x, y, keeps, scope: str = 'filter'):
    """Fisher scores (``scope``: ``'filter'``, the reference's conv filter + bias, or
    ``'group'``, every slot of the channel), the loss, and the loss with each group of
    ``keeps[layer]`` masked (every slot of its channels, :func:`masked_loss`)."""
    loss = lambda p: ce_conv(p, stats, x, y)[0]  # noqa: E731
    base, grads = jax.value_and_grad(loss)(params)
    scores = prune.fisher_scores(params, grads, GROUPS, scope=scope)
    masked = {g.name: jax.vmap(lambda k, g=g: masked_loss(params, stats, x, y, g.name, k))(
        keeps[g.name]) for g in GROUPS}
    return scores, base, masked


def get_config(scale: str) -> dict:
    """The experiment's setting at ``scale``: epochs of the dense phase, pruning ``rounds``
    with ``retrain_epochs`` after each, ``reg_epochs`` between rounds and ``final_epochs``
    after the last, random groups per layer, scoring images. ``'quick'``: 5 dense epochs, 2
    rounds of 1 + 1 epochs and 1 final, 20 groups, 512 images (a demonstration, not powered);
    ``'standard'``: 20 dense epochs, 3 rounds of 3 + 2 epochs and 8 final, 100 groups,
    1,024 images; both on digits with batch 64 and LR 0.05 (module docstring); ``'paper'``
    the reference code's Early-Bird schedule on CIFAR-10 (:data:`PAPER`)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return {**COMMON, 'dense_epochs': 5, 'rounds': 2, 'retrain_epochs': 1,
                'reg_epochs': 1, 'final_epochs': 1, 'n_groups': 20, 'n_sample': 512}
    return {**COMMON, 'dense_epochs': 20, 'rounds': 3, 'retrain_epochs': 3, 'reg_epochs': 2,
            'final_epochs': 8, 'n_groups': 100, 'n_sample': 1024}


def paper_setting(values, source: str) -> dict:
    """The standard setting with paper-scale ``values`` (from ``source``) in place (ValueError
    on unknown keys)."""
    return common.override_setting(get_config('standard'), values, source)


def run_config(setting: dict, data_dir: str | None, workdir: str, overrides: dict):
    """The ``fit`` config of the experiment's CNN on ``setting``'s data with its batch and LR
    (SGD momentum 0.9, no augmentation), with ``overrides`` on top."""
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'small_cnn', 'model_kwargs': FIT_MODEL_KWARGS, 'norm': 'bn',
        'dataset': setting['dataset'], 'data_dir': data_dir, 'augment': 'none',
        'batch_size': setting['batch'], 'optimizer': 'sgd', 'lr': setting['lr'],
        'momentum': 0.9, 'progress': False, 'workdir': workdir, **overrides})


def bn_scales(params) -> np.ndarray:
    """Every BN scale gamma, concatenated over the layers (the last axis)."""
    return np.concatenate([np.asarray(params[f'norm{i}']['scale'])
                           for i in range(1, len(WIDTHS) + 1)], axis=-1)


def dense_phase(setting: dict, arm: str, seeds: int, data_dir: str | None, runs_dir: str,
                return_accuracy: bool = False):
    """The dense phase of ``arm`` (``'baseline'``: weight decay; ``'orthoreg'``: the OrthoReg
    extension, no weight decay) for seeds ``0 .. seeds - 1``, one seed-batched ``fit``: LR
    ``setting['lr']``, x0.1 for the last epoch. Both arms share initialization and data
    order; the baseline runs the extension with kappa 0, which only measures.

    Returns:
      The final params and batch stats (leading seed axis) and, per seed and epoch, the BN
      scales (from each epoch's checkpoint) and the conv-mean orthonormality; with
      ``return_accuracy`` also each seed's final test accuracy.
    """
    epochs = setting['dense_epochs']
    workdir = os.path.join(runs_dir, arm)
    baseline = arm == 'baseline'
    cfg = run_config(setting, data_dir, workdir, {
        'epochs': epochs, 'schedule': 'step', 'lr_decay_epochs': (epochs - 1,),
        'weight_decay': setting['weight_decay'] if baseline else 0.0,
        'orthoreg.kappa': 0.0 if baseline else setting['kappa'],
        'orthoreg.mask': CONV_KERNELS, 'orthoreg.size': setting['size'],
        'orthoreg.gram_side': setting['gram_side'], 'seed': 0, 'num_seeds': seeds,
        'keep_checkpoints': epochs})
    result = train.fit(cfg, resume=True)
    ortho = np.array([[r['orthonormality'] for r in result.history if r['seed'] == s]
                      for s in range(seeds)])
    gammas = np.stack([bn_scales(checkpoints.load_arrays(workdir, e)['params'])
                       for e in range(1, epochs + 1)], axis=1)
    if return_accuracy:
        final = {r['seed']: r['test_accuracy'] for r in result.history if r['epoch'] == epochs}
        return (result.state.params, result.state.batch_stats, (gammas, ortho),
                [final[s] for s in range(seeds)])
    return result.state.params, result.state.batch_stats, (gammas, ortho)


def fine_tune(setting: dict, params, stats, masks, data_dir: str | None,
              runs_dir: str) -> list[float]:
    """Fine-tune every network of ``params`` / ``stats`` / ``masks`` (stacked: one lane per
    network) in one seed-batched ``fit`` with the sparsity extension (cosine LR, weight
    decay); each lane's test accuracy after the last epoch. Lane k's data order is seed
    ``TUNE_SEED + k``'s."""
    epochs = setting.get('tune_epochs', setting['final_epochs'])
    lanes = len(jax.tree.leaves(masks)[0])
    cfg = run_config(setting, data_dir, os.path.join(runs_dir, 'tune'), {
        'epochs': epochs, 'schedule': 'cosine', 'weight_decay': setting['weight_decay'],
        'sparsity.masked': True, 'seed': TUNE_SEED, 'num_seeds': lanes})

    def pruned(state):
        return sparsity.with_mask(state.replace(params=params, batch_stats=stats), masks)
    history = train.fit(cfg, resume=True, initial_state=pruned).history
    final = {r['seed'] - TUNE_SEED: r['test_accuracy'] for r in history if r['epoch'] == epochs}
    return [final[k] for k in range(lanes)]


def main(argv=None) -> int:
    parser = common.build_parser(__doc__)
    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting,
                                              parser=parser)
    started = time.perf_counter()
    out_dir = common.output_dir(args, NAME)
    runs_dir = os.path.join(out_dir, 'runs')
    declared = declare_checks(common.declared_seeds(args))
    dense_epochs = setting['dense_epochs']
    dataset = data.load_standardized(setting['dataset'], data_dir=args.data_dir)
    if dataset.num_classes != MODEL.num_classes:
        parser.error(f"{setting['dataset']} has {dataset.num_classes} classes; the "
                     f"experiment's CNN has a {MODEL.num_classes}-class head")
    images = jnp.asarray(dataset.train_images)
    labels = jnp.asarray(dataset.train_labels)
    seeds = list(range(args.seeds))
    prune.check_groups(jax.eval_shape(MODEL.init, jax.random.key(0), images[:1])['params'],
                       GROUPS)
    print(f'setup {time.perf_counter() - started:.1f} s', flush=True)
    dense, dense_acc = {}, {}
    for arm in ('baseline', 'orthoreg'):
        *dense[arm], dense_acc[arm] = dense_phase(setting, arm, len(seeds), args.data_dir,
                                                  runs_dir, return_accuracy=True)
    print(f'dense {time.perf_counter() - started:.1f} s', flush=True)
    # (3) Early-Bird tickets from the per-epoch |gamma| masks (reported, not checked).
    tickets = {name: [] for name in dense}
    for name, (_, _, (gammas, _)) in dense.items():
        for s in seeds:
            masks = [prune.global_channel_mask({'all': np.abs(g)}, 0.5) for g in gammas[s]]
            tickets[name].append(prune.find_ticket(masks, window=5, threshold=0.1))
    ortho_final = {name: trace[1][:, -1] for name, (_, _, trace) in dense.items()}

    # (1) Additivity of group importance, per layer.
    rng = np.random.default_rng(2009)
    sample = rng.permutation(len(labels))[:setting['n_sample']]
    sx, sy = images[sample], labels[sample]
    rho_layer = {name: {g.name: [] for g in GROUPS} for name in dense}
    rho_pooled = {name: [] for name in dense}
    scatter = {}
    for s in seeds:
        members = {g.name: prune.random_groups(g.width, 0.25, setting['n_groups'], rng)
                   for g in GROUPS}
        keeps = {n: 1.0 - jnp.asarray(m, jnp.float32) for n, m in members.items()}
        for name, (params, stats, _) in dense.items():
            p, st = jax.tree.map(lambda x: x[s], params), jax.tree.map(lambda x: x[s], stats)
            fisher, base, masked = fisher_and_group_losses(p, st, sx, sy, keeps,
                                                           scope=setting['scope'])
            per_layer, pooled, pair = layer_additivity(fisher, base, masked, members, GROUPS)
            for layer, value in per_layer.items():
                rho_layer[name][layer].append(value)
            rho_pooled[name].append(pooled)
            scatter.setdefault(name, pair)
    print(f'additivity {time.perf_counter() - started:.1f} s', flush=True)

    # (2) Iterative pruning: OrthoReg (Fisher on the OrthoReg net), Fisher, L1, BN-scale.
    scorer = make_scorer(ce_conv, GROUPS, setting['scope'])
    acc, kept = iterative_prune(
        setting, {n: (p, st) for n, (p, st, _) in dense.items()}, GROUPS, scorer, sx, sy,
        run_config, runs_dir, args.data_dir, LEVELS, len(seeds), TUNE_SEED, CONV_KERNELS)
    print(f'pruning {time.perf_counter() - started:.1f} s', flush=True)

    evaluated = [
        declared['orthonormality'].evaluate(ortho_final['orthoreg'], ortho_final['baseline']),
        declared['additivity'].evaluate_cells({
            layer: (rho_layer['orthoreg'][layer], rho_layer['baseline'][layer])
            for layer in LAYERS}),
        declared['pruned accuracy'].evaluate_cells({
            cell_name(b, lv): (100 * np.asarray(acc[('orthoreg', lv)]),
                               100 * np.asarray(acc[(b, lv)]))
            for b in BASELINES for lv in LEVELS}),
    ]
    table = orthoreg_report.table(ortho_final, rho_layer, rho_pooled, tickets, acc, kept,
                                  dense_acc, LAYERS, LEVELS, METHODS, dense_epochs)
    notes = orthoreg_report.notes(setting, rho_pooled, tickets, dense_epochs)
    png = orthoreg_report.plot(out_dir, {n: t[1] for n, (_, _, t) in dense.items()}, acc,
                               scatter, LEVELS, METHODS)
    ran = (f"{len(seeds)} seeds; 3-conv CNN {WIDTHS} on {setting['dataset']}; dense phase "
           f"{dense_epochs} epochs (baseline wd {setting['weight_decay']} / OrthoReg kappa "
           f"{setting['kappa']}, layer weights '{setting['size']}'), batch {setting['batch']}, "
           f"LR {setting['lr']}; pruning to {LEVELS} by {METHODS} in {setting['rounds']} "
           f"round(s) (retrain {setting['retrain_epochs']} + between rounds "
           f"{setting['reg_epochs']} epochs, {setting['final_epochs']} after the last); Fisher "
           f"scope '{setting['scope']}'; {setting['n_groups']} random groups per layer for the "
           'per-layer correlations; every phase a seed-batched jaxnorm.train.fit run '
           '(OrthoReg and sparsity extensions)')
    checks.write_results(out_dir, paper=TITLE, claim=CLAIM, ran=ran,
                         scale=args.scale, seeds=args.seeds, table=table,
                         checks=evaluated, figures=[png], started=started, notes=notes,
                         setting=setting, spearman=rho_layer, spearman_pooled=rho_pooled,
                         tickets=tickets, orthonormality=ortho_final, dense_accuracy=dense_acc,
                         kept={f'{m}@{lv}': v for (m, lv), v in kept.items()},
                         accuracy={f'{m}@{lv}': v for (m, lv), v in acc.items()})
    return 0


if __name__ == '__main__':
    sys.exit(main())
