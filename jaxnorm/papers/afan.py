"""A-FAN: adversarial feature augmentation and normalization (Chen et al., arXiv:2103.12171).

Claim (abstract): training on intermediate features perturbed by a feature-space PGD attack at
several interpolated strengths, with the adversarial statistics re-injected into the clean
features ("adversarial feature normalization"), improves the clean test accuracy of image
classifiers, and is "an effective and efficient alternative" to pixel-level adversarial
augmentation.

Arms, all runs of the library's engine ``jaxnorm.train.fit`` (through ``common.fit_arms``: the
seeds of an arm trained together by one vmapped step, checkpointed under
``OUT/afan/runs/<arm>`` and resumed or skipped by the next invocation; a seed gives every arm
the same initialization and batch order, so arms are paired):

* ``baseline``: cross-entropy only (``afan.layer = None``);
* ``feature_pgd``: the classification code's method, feature PGD at one strength (1) with no
  normalization (the section's only arm before issue 21);
* ``afan``: the full method: points at strengths 0.5 and 1 between h and h + delta_T, the
  strongest one adversarially normalized (``mix_feature``: positional statistics, unbiased
  variance + 1e-5), loss (L_clean + L_0.5 + L_1,N) / 3 (:data:`STRENGTHS`, :data:`NORMALIZE`
  and where they come from);
* ``advprop``: pixel-level PGD, the adversarial images normalized with their own batch
  statistics (``jaxnorm.advprop``, AdvProp-style), loss (L_clean + L_adv) / 2.

The attack is at the output of stage 1 (``stage1_block3``): the classification code's default
(``perturb_idx = 13``) and its released 94.82 % checkpoint's ("layer1"); the paper's ablation
over positions was not retrieved (research/norm.md 3.2). Recipe (the repo's, scaled down): ResNet-20
with BatchNorm, SGD momentum 0.9, LR 0.05 cosine, weight decay 5e-4 (coupled), batch 64, no
augmentation; BN updates of the attack passes discarded.

Scales (:func:`get_config`):
  * ``quick``: digits 8x8, width 0.25, 3 epochs, arms baseline and A-FAN, the repo's attack
    (5 sign steps of 0.5/255, no random start, no clip): the README's demonstration, not
    powered;
  * ``standard``: mnist5k (4,000 train / 1,000 test), all four arms, with these declared
    reductions from the issue's target (full width, 28x28, 5-step attacks), forced by the
    ~12-minute budget on 2 CPU cores (measured costs at :data:`STANDARD_WIDTH`): width 0.25
    (4/8/16 channels), images resized to 14x14, one attack step of the repo's total size
    (feature 2.5/255; pixel 4/255 from a random start), :data:`STANDARD_EPOCHS` epochs;
  * ``paper``: ResNet-56 on CIFAR-10 (:data:`PAPER`), arms baseline and A-FAN.

Checks (declared before running, in :func:`declare_checks`; each claim one pair of arms):
  * accuracy (claim): paired superiority of A-FAN's final clean test accuracy over the
    baseline's (points), powered for +0.5 point (the paper's CIFAR gains were not retrieved;
    0.5 is the declared effect);
  * normalization (claim, standard): A-FAN over feature PGD only, superiority, effect 0.5;
  * efficiency (claim, standard): A-FAN non-inferior to the pixel arm within 0.5 point; the
    table adds the gain per unit of extra training time;
  * cost (sanity: any extra pass costs more): 1 < A-FAN / baseline epoch time <= T + K + 1;
  * pixel_cost (sanity, standard): the pixel arm's epoch costs more than A-FAN's.

    python scripts/experiments/afan.py --quick --out results        # about a minute, 2 CPU cores
    python scripts/experiments/afan.py --scale standard --seeds 10 --out results
    python scripts/experiments/afan.py --scale paper --out results  # ResNet-56, CIFAR-10

At ``--scale paper`` (:data:`PAPER`, or a ``scripts/train.py`` config given with ``--config``)
the baseline and A-FAN arms train that config instead (A-FAN as it sets it), on every device.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from jaxnorm import advprop  # noqa: E402,F401  (registers the 'advprop' extension)
from jaxnorm import afan as afan_lib  # noqa: E402
from jaxnorm import config as config_lib  # noqa: E402
from jaxnorm.papers import checks, common  # noqa: E402

NAME = 'afan'
TITLE = ('Chen, Cheng, Gan, Liu, Wang: A-FAN: Adversarial Feature Augmentation and '
         'Normalization for Visual Recognition (arXiv:2103.12171)')
CLAIM = ('Training on intermediate features perturbed by a feature-space PGD attack at '
         'several interpolated strengths, with the adversarial feature statistics re-injected '
         'into the clean features (adversarial feature normalization), raises clean test '
         'accuracy, more cheaply than pixel-level adversarial augmentation.')
# The attack: the classification repo's "norandclip" run (research/norm.md 3.2): the stage-1
# output, 5 sign steps of 0.5/255, no random start, no clip.
LAYER, STEPS, STEP_SIZE = 'stage1_block3', 5, 0.5 / 255
# The "N" (research/norm.md 3.3, the detection/segmentation code; the classification code has
# no normalization): points lerp(h, h_adv, k/(n-1)) with n = 3 as in the segmentation code,
# i.e. strengths 0.5 and 1 besides the clean point (whose loss is the clean loss), and
# mix_feature (positional statistics, unbiased variance + 1e-5) on the strongest point, the
# n = 3 analogue of the detection README's MASK=0011 (normalize the two strongest of four)
# [infer]; uniform loss weights 1/3, one of the segmentation code's settings.
STRENGTHS, NORMALIZE = (0.5, 1.0), (False, True)
# Pixel-level PGD of A-FAN's own segmentation code ("advt" variants, research/norm.md 3.3):
# 5 steps of 1/255 in an l_inf ball of 4/255 (pixel range 0-255: steps of 1 and radius 4),
# random start, clipped to the valid pixel range.
PIXEL_STEPS, PIXEL_STEP, PIXEL_EPSILON = 5, 1.0, 4.0
BATCH, LR, MOMENTUM, WEIGHT_DECAY = 64, 0.05, 0.9, 5e-4
ARMS = {'baseline': {'afan.layer': None},
        'feature_pgd': {'afan.strengths': (1.0,), 'afan.normalize_points': None},
        'afan': {'afan.strengths': STRENGTHS, 'afan.normalize_points': NORMALIZE},
        'advprop': {'afan.layer': None}}  # + the pixel attack, from the data (arm_overrides)
LABELS = {'baseline': 'baseline', 'feature_pgd': 'feature PGD only (strength 1, no N)',
          'afan': 'A-FAN (strengths 0.5, 1; N on 1)', 'advprop': 'pixel PGD + aux. BN stats'}
# Arms per scale: the quick demonstration keeps two arms (its compile time is its cost).
SCALE_ARMS = {'quick': ('baseline', 'afan'),
              'standard': ('baseline', 'feature_pgd', 'afan', 'advprop'),
              'paper': ('baseline', 'afan')}
# Standard scale: the reductions from the target (ResNet-20 at full width 16/32/64 on
# mnist5k 28x28, the repo's 5-step attacks) that the 2-core budget of about 12 minutes for
# four arms imposes (measured: one 28x28 width-0.25 baseline epoch costs ~8.6 CPU seconds per
# seed, a 6-pass feature attack 4.2x that; the four arms with 5-step attacks would cost ~18
# baseline epochs per seed-epoch): width 0.25 (4/8/16), images resized to 14x14 (bilinear,
# antialiased), and ONE attack step per arm at the same total size as the repo's (feature:
# 1 x 2.5/255 = 5 x 0.5/255; pixel: 1 step of 4/255 from a random start in the 4/255 ball,
# i.e. FGSM with random start), so that the attack arms cost 2-3 baseline epochs each.
# Pilot of this setting (3 seeds x 3 epochs, 2 shared cores, 326 CPU-s in all): about 28
# CPU-s per seed-epoch for the four arms (epoch cost ratios about 1.6, 1.9, 2.7 over the
# baseline) plus ~70 CPU-s of compiling, so 10 seeds x 5 epochs ~ 1,470 CPU-s ~ 12 min on 2
# idle cores. Paired sds (3 seeds): A-FAN - baseline 0.50 point (jaxnorm.papers.sizing: 8
# seeds for +0.5 at 80 % power; 10 seeds detect 0.43), A-FAN - feature PGD 0.98 and A-FAN -
# pixel PGD 1.04 (26 and 29 seeds; 10 seeds detect about 0.85 point): the budget powers the
# primary claim only.
STANDARD_WIDTH, STANDARD_EPOCHS, STANDARD_SIZE = 0.25, 5, 14
STANDARD_STEPS, STANDARD_STEP_SIZE = 1, 2.5 / 255
STANDARD_PIXEL_STEPS, STANDARD_PIXEL_STEP = 1, 4.0


# The paper's run (research/norm.md 3.2, the classification code): ResNet-56 (16/32/64, option-A
# shortcuts, BN) on CIFAR-10, PGD on the stage-1 output with 5 sign steps of 0.5/255, no
# projection, no random start; SGD LR 0.1, momentum 0.9, weight decay 5e-4, batch 128, 200
# epochs with the rate x0.1 at epochs 50 and 150, a 1-epoch linear warmup, crop + flip. The
# released checkpoint reaches 94.82 %. With the "N" turned on: points at strengths 0.5 and 1,
# the strongest one adversarially normalized, loss weights 1/3 (STRENGTHS, NORMALIZE).
# Deviation: the repo lets the attack passes update BN's running statistics; jaxnorm discards
# them (``afan.keep_attack_stats`` keeps them). ``scripts/configs/afan.py`` hands these values
# to ``scripts/train.py``.
PAPER = {
    'model': 'resnet56', 'dataset': 'cifar10', 'augment': 'crop_flip', 'epochs': 200,
    'batch_size': 128, 'optimizer': 'sgd', 'lr': 0.1, 'momentum': 0.9, 'weight_decay': 5e-4,
    'schedule': 'step', 'warmup_epochs': 1.0, 'lr_decay_epochs': (50, 150),
    'afan.layer': 'stage1_block9', 'afan.steps': 5, 'afan.step_size': 0.5 / 255,
    'afan.strengths': STRENGTHS, 'afan.normalize_points': NORMALIZE,
    'eval_batch_size': 1000,
}


def get_config(scale: str):
    """The engine config of the A-FAN arm at ``scale`` (the other arms are
    :func:`arm_overrides` on top): ``'quick'`` digits, width 0.25 for 3 epochs (the README's
    CPU demonstration, baseline and A-FAN only); ``'standard'`` mnist5k (4,000 train / 1,000
    test, 28x28) at width :data:`STANDARD_WIDTH` for :data:`STANDARD_EPOCHS` epochs, four
    arms; both with the repo's recipe scaled down (module docstring); ``'paper'`` the paper's
    ResNet-56 on CIFAR-10 (:data:`PAPER`)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    values = {'dataset': 'digits', 'model_kwargs': {'width': 0.25}, 'epochs': 3}
    if scale == 'standard':
        values = {'dataset': 'mnist5k', 'model_kwargs': {'width': STANDARD_WIDTH},
                  'epochs': STANDARD_EPOCHS, 'image_size': STANDARD_SIZE,
                  'resize': 'bilinear', 'afan.steps': STANDARD_STEPS,
                  'afan.step_size': STANDARD_STEP_SIZE}
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'resnet20', 'norm': 'bn', 'augment': 'none', 'batch_size': BATCH,
        'optimizer': 'sgd', 'lr': LR, 'momentum': MOMENTUM, 'schedule': 'cosine',
        'weight_decay': WEIGHT_DECAY, 'progress': False, 'afan.layer': LAYER,
        'afan.steps': STEPS, 'afan.step_size': STEP_SIZE, 'afan.strengths': STRENGTHS,
        'afan.normalize_points': NORMALIZE, **values}, source=f'afan {scale} config')


def paper_setting(values, source: str):
    """The engine config of paper-scale ``values`` (ValueError on bad keys, or without
    A-FAN)."""
    config = common.train_config(values, source)
    if not config.afan.layer:
        raise ValueError(f'{source} sets no afan.layer: the A-FAN arm would equal the baseline')
    return config


def pixel_attack(mean: float, std: float, steps: int = PIXEL_STEPS,
                 step: float = PIXEL_STEP, top: float = 255.0) -> dict:
    """The ``advprop.*`` overrides of the pixel arm for inputs standardized as (x - mean)/std
    from pixels in [0, top] (255 for uint8 images, 1 for float ones, e.g. after a resize):
    ``steps`` steps of ``step``/255, radius :data:`PIXEL_EPSILON`/255 (of the pixel range)
    and the range [0, top], all in input units."""
    if not (std > 0 and top > 0):
        raise ValueError(f'pixel std and range must be positive, got {std}, {top}')
    unit = top / 255 / std  # one pixel level in input units
    return {'advprop.epsilon': PIXEL_EPSILON * unit, 'advprop.step_size': step * unit,
            'advprop.steps': steps, 'advprop.random_start': True,
            'advprop.input_min': (0.0 - mean) / std, 'advprop.input_max': (top - mean) / std}


def arm_overrides(config, names) -> dict[str, dict]:
    """The overrides of the arms ``names`` on top of ``config`` (the A-FAN arm's); the pixel
    arm's attack is set from the training set's pixel statistics (one channel)."""
    unknown = set(names) - set(ARMS)
    if unknown:
        raise ValueError(f'unknown A-FAN arm(s) {sorted(unknown)}; choose from {tuple(ARMS)}')
    arms = {name: dict(ARMS[name]) for name in names}
    if 'advprop' in arms:
        splits = common.standardized_splits(config)
        mean, std = float(np.mean(splits.mean)), float(np.mean(splits.std))
        one_step = config.afan.steps == STANDARD_STEPS and config.dataset == 'mnist5k'
        top = 255.0 if np.issubdtype(splits.train.images.dtype, np.integer) else 1.0
        steps, step = ((STANDARD_PIXEL_STEPS, STANDARD_PIXEL_STEP) if one_step else
                       (PIXEL_STEPS, PIXEL_STEP))
        arms['advprop'].update(pixel_attack(mean, std, steps, step, top))
    return arms


def declare_checks(seeds: int, steps: int, arms=SCALE_ARMS['standard'],
                   points: int = len(STRENGTHS)) -> dict[str, checks.Check]:
    """The section's checks for the ``arms`` that run, declared before any training:
    ``seeds`` paired seeds, ``steps`` PGD steps T, ``points`` interpolated points K."""
    declared = {
        'accuracy': checks.Check(
            'accuracy',
            'A-FAN raises the clean test accuracy of the same network trained without it '
            '(arXiv:2103.12171: "consistent generalization improvement" on CIFAR-10/100; '
            'per-dataset gains not retrieved, +0.5 point is the declared effect).', 'claim',
            'A-FAN minus baseline final test accuracy, same seed (same init and batch order) '
            '(points)', 'superiority', seeds, margin=0.0, effect=0.5),
        'cost': checks.Check(
            'cost',
            'A-FAN costs more per training step than the baseline, each extra pass at most one '
            'clean step (mechanics: true of any extra pass, not a claim).', 'sanity',
            'median epoch time of A-FAN / of the baseline, all seeds at once (ratio)', 'rule',
            seeds, rule=f'1 < cost ratio <= T + K + 1 = {steps + points + 1} (T attack and K '
                        'point passes, each at most one clean step)'),
    }
    if 'feature_pgd' in arms:
        declared['normalization'] = checks.Check(
            'normalization',
            'The "N" and the interpolated strengths add accuracy to feature-level PGD alone '
            '(the paper\'s ablation of the normalization [infer: its table was not '
            'retrieved]).', 'claim',
            'A-FAN minus feature-PGD-only final test accuracy, same seed (points)',
            'superiority', seeds, margin=0.0, effect=0.5)
    if 'advprop' in arms:
        declared['efficiency'] = checks.Check(
            'efficiency',
            'Feature-level A-FAN is as accurate as pixel-level adversarial augmentation with '
            'auxiliary BN statistics (AdvProp-style), within 0.5 point (the paper\'s "effective '
            'and efficient alternative" to pixel-level perturbations).', 'claim',
            'A-FAN minus pixel-PGD final test accuracy, same seed (points)',
            'non_inferiority', seeds, margin=0.5, effect=0.0)
        declared['pixel_cost'] = checks.Check(
            'pixel_cost',
            'The pixel attack costs more than the feature attack (mechanics: it back-propagates '
            'through the whole network; the premise of the efficiency claim, not evidence).',
            'sanity', 'median epoch time of the pixel arm / of A-FAN (ratio)', 'rule', seeds,
            rule='pixel / A-FAN cost ratio > 1')
    return declared


def evaluate_checks(declared: dict, final: dict, seconds: dict, steps: int,
                    points: int = len(STRENGTHS)) -> tuple[list, list]:
    """The results of the ``declared`` checks on the final accuracies (fractions, per arm) and
    the median epoch seconds per arm; and the notes."""
    acc = {arm: 100 * np.asarray(v, float) for arm, v in final.items()}
    notes, results = [], []
    pairs = {'accuracy': 'baseline', 'normalization': 'feature_pgd', 'efficiency': 'advprop'}
    for name, other in pairs.items():
        if name not in declared:
            continue
        result = declared[name].evaluate(acc['afan'], acc[other])
        if result['dropped']:
            notes.append(f"{name}: {result['dropped']} seed(s) with a non-finite final accuracy "
                         '(a diverged run) left out of the paired test.')
        results.append(result)
    ratio = seconds['afan'] / seconds['baseline']
    results.append(declared['cost'].evaluate_rule(bool(1 < ratio <= steps + points + 1),
                                                  value=ratio))
    if 'pixel_cost' in declared:
        pixel = seconds['advprop'] / seconds['afan']
        results.append(declared['pixel_cost'].evaluate_rule(bool(pixel > 1), value=pixel))
    notes.append('Each claim check is one cell (one pair of arms) judged at its own level; the '
                 'three claims answer different questions, so no family-wise correction is '
                 'applied across them.')
    return results, notes


def per_epoch(histories: dict, key: str) -> dict[str, np.ndarray]:
    """Per arm, ``key`` of every (seed, epoch) record as a (seeds, epochs) array."""
    return {arm: np.array([[r[key] for r in runs] for runs in per_seed])
            for arm, per_seed in histories.items()}


def efficiency_rows(final: dict, seconds: dict) -> list[str]:
    """Markdown rows: per arm, the paired gain over the baseline (points), the epoch cost
    ratio and the gain per unit of extra training time (points per extra baseline epoch)."""
    rows = ['| arm | paired gain over baseline (points) | cost ratio | gain per extra '
            'baseline-epoch of time (points) |', '|---|---|---|---|']
    for arm in final:
        if arm == 'baseline':
            continue
        gain = 100 * (np.asarray(final[arm]) - np.asarray(final['baseline']))
        ratio = seconds[arm] / seconds['baseline']
        per_time = np.nanmean(gain) / (ratio - 1) if ratio > 1 else float('nan')
        rows.append(f'| {LABELS.get(arm, arm)} | {common.mean_std(gain)} | {ratio:.2f} | '
                    f'{per_time:+.3f} |')
    return rows


def main(argv=None) -> int:
    started = time.perf_counter()
    args, config = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    out_dir = common.output_dir(args, NAME)
    steps, points = config.afan.steps, len(config.afan.strengths)
    names = SCALE_ARMS['paper' if args.config else args.scale]
    declared = declare_checks(common.declared_seeds(args), steps, names, points)
    arms = arm_overrides(config, names)
    if args.config or args.scale == 'paper':  # the config's own A-FAN is the A-FAN arm
        arms['afan'] = {}
    histories = common.fit_arms(config, arms, args.seeds, out_dir, args.data_dir)
    accuracy, train_loss = per_epoch(histories, 'test_accuracy'), per_epoch(histories,
                                                                            'train_loss')
    final = common.final_values(histories)
    seconds = common.epoch_seconds(histories)
    rows = [f'| arm | test accuracy % (mean ± std, {args.seeds} seeds) | final train loss | '
            'epoch time s (median, all seeds) |', '|---|---|---|---|']
    for arm in arms:
        rows.append(f'| {LABELS.get(arm, arm)} | {common.mean_std(final[arm], 100)} | '
                    f'{common.mean_std(train_loss[arm][:, -1], digits=3)} | '
                    f'{seconds[arm]:.2f} |')
    gain = final['afan'] - final['baseline']
    rows += ['', *efficiency_rows(final, seconds), '',
             f'per-seed A-FAN - baseline (points): {", ".join(f"{100 * g:+.2f}" for g in gain)}']
    results, notes = evaluate_checks(declared, final, seconds, steps, points)
    source = (f'from {args.config}' if args.config else 'no augmentation'
              if config.augment == 'none' else f'augmentation {config.augment}')
    pixel = (f'; pixel arm: {arms["advprop"]["advprop.steps"]} PGD step(s) of '
             f'{arms["advprop"]["advprop.step_size"] / arms["advprop"]["advprop.epsilon"]:g} '
             f'x the radius {PIXEL_EPSILON:g}/255, random start, clipped to the pixel range, '
             'adversarial batch normalized with its own BN statistics (shared affine), '
             'loss (L_clean + L_adv) / 2' if 'advprop' in arms else '')
    ran = (f'{config.dataset}, {config.model}/{config.norm} {dict(config.model_kwargs)}, '
           f'{config.epochs} epochs, {config.optimizer} momentum {config.momentum} LR '
           f'{config.lr} ({config.schedule}), batch {config.batch_size}, wd '
           f'{config.weight_decay} (coupled), {source}; A-FAN at {config.afan.layer}: PGD '
           f'{steps} x {config.afan.step_size * 255:g}/255, clip {config.afan.epsilon}, '
           f'random start {config.afan.random_start}, strengths {config.afan.strengths}, '
           f'normalized {afan_lib.from_run_config(config).normalize} '
           f'({config.afan.statistics} statistics), '
           f'attack BN updates kept {config.afan.keep_attack_stats}{pixel}; arms '
           f'{", ".join(arms)}, all train.fit runs, {args.seeds} seeds trained together per '
           'arm, paired (same init and batch order).')
    title = (f'A-FAN: {config.dataset}, {config.model} {dict(config.model_kwargs)}, '
             f'{config.epochs} epochs')
    figure = common.plot_arms(histories, LABELS, os.path.join(out_dir, 'afan_accuracy.png'),
                              title)
    checks.write_results(out_dir, paper=TITLE, claim=CLAIM, ran=ran, scale=args.scale,
                         seeds=args.seeds, table=rows, checks=results, figures=[figure],
                         started=started, notes=notes, config=config.to_dict(),
                         runs={'final_accuracy': final, 'gain': gain,
                               'accuracy_curves': accuracy, 'train_loss': train_loss,
                               'epoch_seconds': seconds, 'arms': arms})
    return 0


if __name__ == '__main__':
    sys.exit(main())
