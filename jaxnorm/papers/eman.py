"""EMAN vs the standard EMA teacher in FixMatch (Cai et al., arXiv:2101.08482).

Claim (abstract): a teacher that averages the student's parameters *and* BN statistics with
the same momentum and runs in eval mode (EMAN) beats the standard EMA teacher, whose BN uses
the batch's statistics, in student-teacher semi-supervised learning (FixMatch: about +7 / +2
points with 1 % / 10 % ImageNet labels).

Setup at the quick and standard scales (:func:`get_config`; FixMatch-EMAN scaled to 1,437
digits of 8x8x1): labeled fraction 10 % (and 1 % at the standard scale), class-stratified per
seed; vgg_cfg10 at width 0.25 with BN (flax momentum 0.9). Pseudo-label = argmax, mask = max
prob >= 0.7; loss = CE_x + 10 * mean(mask * CE(strong, pseudo-label)); μ = 5 (labeled batch 16,
unlabeled 80, 2,000 steps; --quick: 8 / 40, 240 steps; scaled down from 64 / 320 for the small
data set). SGD lr 0.03, Nesterov momentum 0.9, weight decay 5e-4, cosine. Weak augmentation:
random shift <= 1 px; strong: shift <= 2 px, a 3x3 cutout, brightness/contrast jitter and
Gaussian noise (digits are not flip-invariant). Four arms, same seeds, same initialization,
same batches:

* 'supervised': reference, λ_u = 0 (the student's batch is still concat(labeled, strong), so
  its BN sees the same images as the teacher arms', only the unlabeled loss is switched off;
  an EMAN teacher labels the weak images, with weight 0);
* 'fixmatch': reference, stock FixMatch (the paper's baseline): no teacher, the student
  forwards concat(labeled, weak, strong) in train mode and labels the strong images with its
  own stop-gradient predictions on the weak ones;
* 'ema': the student forwards concat(labeled, strong); a teacher holding the EMA of the
  params only, BN in batch mode (the weak batch's statistics for pseudo-labels, the whole
  test set's for its test accuracy), labels the weak images;
* 'eman': the same with the EMAN teacher (EMA of params and BN statistics, eval mode).

The teacher momentum is 0.98 (a 50-step horizon) instead of 0.999, which would barely leave
the initialization in a few hundred steps.

Each arm at each labeled fraction is one seed-batched run of the engine (:func:`jaxnorm.train.
fit`, the seeds as lanes) with the ``fixmatch`` extension (:mod:`jaxnorm.fixmatch`: the loss,
its augmentations and the per-step mask rate and pseudo-label accuracy) and, for the teacher
arms, the ``eman`` extension (:mod:`jaxnorm.eman`, ``eman.kind`` 'ema' or 'eman'). A lane's
batches (:class:`jaxnorm.fixmatch.SemiSupervisedBatches`) sample its seed's split with
replacement; an engine epoch is ``eval_every`` steps, so every record is an evaluation (the
first after ``eval_every`` steps; at step 0 only the teacher's identity with its student is
checked). Runs live in OUT/eman/runs/labels<fraction>-<arm> and a rerun resumes them.

Checks (declared before the run, :mod:`jaxnorm.papers.checks`; per-seed differences of the
final test accuracy in points, paired by seed, which fixes the split, initialization and
batches, at 10 % labels):
  * teacher (claim): EMAN teacher minus EMA-BN teacher, superiority over 0, powered for the
    paper's +2 points at 10 % labels;
  * student (claim): EMAN student minus EMA-BN student, superiority over 0, not powered;
  * semi_supervised_works (sanity): stock FixMatch minus supervised-only, superiority over 0;
    without it a comparison of FixMatch teachers means nothing.
"EMAN teacher >= its own student" is not a claim of the paper: the number stays in the table.

    python scripts/experiments/eman.py --quick --out results        # 10 % labels, 3 seeds
    python scripts/experiments/eman.py --out results                # 10 % and 1 %, longer
    python scripts/experiments/eman.py --scale paper --out results  # ResNet-18, CIFAR-10

At ``--scale paper`` (:data:`PAPER`, or the values of a ``get_config()`` file given with
``--config``, which replace the standard scale's) the same four arms run that setting.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from jaxnorm import config as config_lib, data, fixmatch, train as engine  # noqa: E402
from jaxnorm.papers import checks, common  # noqa: E402

NAME = 'eman'
TITLE = ('Exponential Moving Average Normalization for Self-supervised and Semi-supervised '
         'Learning (Cai et al., arXiv:2101.08482)')
CLAIM = ('A FixMatch teacher that averages parameters and BN statistics with one momentum and '
         'runs in eval mode (EMAN) is more accurate than the standard EMA teacher whose BN uses '
         'batch statistics, and its pseudo-labels train a better student.')
COMMON = {'dataset': 'digits', 'model': 'vgg_cfg10', 'model_kwargs': {'width': 0.25},
          'threshold': 0.7, 'lambda_u': 10.0, 'mu': 5, 'lr': 0.03, 'weight_decay': 5e-4,
          'teacher_momentum': 0.98}
CHECK_FRACTION = 0.1  # the labeled fraction every check is evaluated at (the paper's 10 %)

# The paper's scale (research/norm.md 4.2, the FixMatch-EMAN code: models/fixmatch.py and
# main_fixmatch.py): pseudo-label threshold 0.7, lambda_u 10, mu 5 (unlabeled to labeled), EMA
# momentum 0.999 for parameters and BN statistics alike, labeled batch 64, LR 0.03 (SGD
# Nesterov momentum 0.9), 1 % and 10 % of the labels. Weight decay 5e-4 is FixMatch's CIFAR
# value [infer: the EMAN code's ImageNet value was not retrieved]. Deviations: the paper's
# FixMatch-EMAN runs ResNet-50 on ImageNet (63.0 / 74.0 % top-1 with 1 % / 10 % labels); no
# WRN-28-2 (FixMatch's CIFAR network) is in the library, so this is ResNet-18 (BN) on CIFAR-10.
# The step count (100k) and cosine schedule are [infer], and the experiment's weak/strong
# augmentations (shifts, cutout, brightness/contrast, noise) stand in for flip-and-crop and
# RandAugment. ``scripts/configs/eman.py`` returns these values as a config file.
PAPER = {
    'dataset': 'cifar10', 'model': 'resnet18', 'model_kwargs': {}, 'threshold': 0.7,
    'lambda_u': 10.0, 'mu': 5, 'lr': 0.03, 'weight_decay': 5e-4, 'teacher_momentum': 0.999,
    'steps': 100_000, 'eval_every': 5000, 'labeled_batch': 64, 'fractions': (0.1, 0.01),
}
ARMS = {'supervised': 'supervised only (λ_u = 0)', 'fixmatch': 'FixMatch (no teacher)',
        'ema': 'EMA-BN teacher', 'eman': 'EMAN teacher'}
COLORS = {'supervised': 'tab:gray', 'fixmatch': 'tab:green', 'ema': 'tab:orange',
          'eman': 'tab:blue'}
ARM_OPTIONS = {  # each arm's extension settings on top of the shared ones
    'supervised': {'fixmatch.labeler': 'teacher', 'fixmatch.lambda_u': 0.0, 'eman.kind': 'eman'},
    'fixmatch': {'fixmatch.labeler': 'self'},
    'ema': {'fixmatch.labeler': 'teacher', 'eman.kind': 'ema'},
    'eman': {'fixmatch.labeler': 'teacher', 'eman.kind': 'eman'},
}


def get_config(scale: str) -> dict:
    """The experiment's setting at ``scale``: ``'quick'`` 240 steps (evaluated every 40) with
    labeled batch 8 at 10 % labels and ``'standard'`` 2,000 steps (every 100) with labeled
    batch 16 at 10 % and 1 %, both vgg_cfg10 width 0.25 on digits (module docstring);
    ``'paper'`` ResNet-18 on CIFAR-10 for 100k steps (:data:`PAPER`). The unlabeled batch is
    ``mu`` times the labeled one."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return {**COMMON, 'steps': 240, 'eval_every': 40, 'labeled_batch': 8,
                'fractions': (0.1,)}
    return {**COMMON, 'steps': 2000, 'eval_every': 100, 'labeled_batch': 16,
            'fractions': (0.1, 0.01)}


def paper_setting(values, source: str) -> dict:
    """The standard setting with paper-scale ``values`` (from ``source``) in place; ValueError
    on unknown keys, or when the fractions lack :data:`CHECK_FRACTION`, the one the checks are
    declared at."""
    setting = common.override_setting(get_config('standard'), values, source)
    if not any(np.isclose(f, CHECK_FRACTION) for f in setting['fractions']):
        raise ValueError(f"{source}: fractions {setting['fractions']} lack "
                         f'{CHECK_FRACTION:g}, the labeled fraction the checks are declared at')
    return setting


def arm_config(arm: str, hp: dict, seeds: int, workdir: str, data_dir: str | None):
    """The engine config of one arm: ``seeds`` lanes, an engine epoch of ``eval_every``
    steps (one evaluation and checkpoint), ``steps // eval_every`` epochs, so the cosine
    schedule spans ``steps``. The images are standardized and augmented by the fixmatch loss
    (``augment='none'``). No divergence factor: the experiment's earlier loop had no guard on
    loss spikes (a non-finite loss still stops the run)."""
    if hp['steps'] % hp['eval_every']:
        raise ValueError(f"steps {hp['steps']} is not a multiple of eval_every "
                         f"{hp['eval_every']}")
    overrides = {
        'model': hp['model'], 'model_kwargs': hp['model_kwargs'], 'norm': 'bn',
        'dataset': hp['dataset'], 'data_dir': data_dir, 'augment': 'none',
        'batch_size': hp['labeled_batch'], 'epochs': hp['steps'] // hp['eval_every'],
        'optimizer': 'sgd', 'lr': hp['lr'], 'momentum': 0.9, 'nesterov': True,
        'weight_decay': hp['weight_decay'], 'schedule': 'cosine', 'warmup_epochs': 0.0,
        'seed': 0, 'num_seeds': seeds, 'divergence_factor': None, 'workdir': workdir,
        'progress': False, 'keep_checkpoints': 1,
        'fixmatch.threshold': hp['threshold'], 'fixmatch.lambda_u': hp['lambda_u'],
        **ARM_OPTIONS[arm]}
    if overrides['fixmatch.labeler'] == 'teacher':
        overrides['eman.momentum'] = hp['teacher_momentum']
    return config_lib.apply_overrides(config_lib.default_config(), overrides,
                                      source=f'eman arm {arm!r}')


def check_initial_teacher(state):
    """At step 0 every lane's teacher is its student, params and statistics bit for bit
    (``fit``'s ``initial_state``: the state is returned unchanged). RuntimeError otherwise."""
    teacher = state.extensions.get('eman')
    if teacher is not None:
        pairs = zip(jax.tree.leaves((teacher.params, teacher.batch_stats)),
                    jax.tree.leaves((state.params, state.batch_stats)))
        if not all(np.array_equal(a, b) for a, b in pairs):
            raise RuntimeError('the teacher differs from its student at step 0: a teacher bug')
    return state


def run_fraction(fraction: float, seeds: int, hp: dict, splits, out_dir: str,
                 data_dir: str | None) -> tuple[dict, list[int], int]:
    """All four arms at one labeled fraction, each one seed-batched engine run in
    ``out_dir/runs/labels<fraction>-<arm>`` (resumed, or read back when finished).

    Returns:
      ``(res, the evaluation steps, labeled images per seed)``. ``res[arm]`` holds curves
      (seeds, evaluations): ``student`` test accuracy; ``teacher`` test accuracy (EMA-BN,
      EMAN); ``mask_rate`` and ``pseudo_label_accuracy`` (means over the steps since the
      previous evaluation; not for the supervised arm, whose pseudo-labels weigh nothing).
    """
    def batches(seed):
        return fixmatch.SemiSupervisedBatches(
            splits.train_images, splits.train_labels, fraction=fraction, seed=seed,
            num_classes=splits.num_classes, labeled_batch=hp['labeled_batch'],
            unlabeled_batch=hp['mu'] * hp['labeled_batch'], steps_per_pass=hp['eval_every'])
    res = {}
    for arm in ARMS:
        workdir = os.path.join(out_dir, 'runs', f'labels{fraction:g}-{arm}')
        history = engine.fit(arm_config(arm, hp, seeds, workdir, data_dir), resume=True,
                             batches=batches, initial_state=check_initial_teacher).history
        lanes = [[r for r in history if r['seed'] == seed] for seed in range(seeds)]
        keys = {'student': 'test_accuracy'}
        if arm in ('ema', 'eman'):
            keys['teacher'] = 'teacher_test_accuracy'
        if arm != 'supervised':
            keys.update(mask_rate='mask_rate', pseudo_label_accuracy='pseudo_label_accuracy')
        res[arm] = {part: np.array([[r[key] for r in lane] for lane in lanes])
                    for part, key in keys.items()}
    return res, [r['step'] for r in lanes[0]], len(batches(0).labeled)


def table_row(fraction, n_l, arm, r):
    def cell(values):
        return '—' if values is None else common.mean_std(values[:, -1], 100)
    teacher = r.get('teacher')
    cells = [f'{fraction:.0%} ({n_l})', ARMS[arm], cell(r['student']), cell(teacher),
             cell(None if teacher is None else teacher - r['student']),
             cell(r.get('mask_rate')), cell(r.get('pseudo_label_accuracy'))]
    return '| ' + ' | '.join(cells) + ' |'


def plot_fraction(axes, fraction, res, steps, n_seeds):
    """Mean over seeds of the test accuracies (top) and pseudo-label statistics (bottom)
    against the step of each evaluation."""
    for arm, r in res.items():
        color = COLORS[arm]
        axes[0].plot(steps, 100 * r['student'].mean(0), '--', color=color,
                     label=f'{arm} student')
        if 'teacher' in r:
            axes[0].plot(steps, 100 * r['teacher'].mean(0), '-', color=color,
                         label=f'{arm} teacher')
        if 'mask_rate' in r:
            axes[1].plot(steps, 100 * r['mask_rate'].mean(0), ':', color=color,
                         label=f'{arm} mask rate')
            axes[1].plot(steps, 100 * r['pseudo_label_accuracy'].mean(0), '-', color=color,
                         label=f'{arm} confident pseudo-label acc')
    axes[0].set(title=f'FixMatch, {fraction:.0%} labels ({n_seeds} seeds)',
                xlabel='step', ylabel='test accuracy (%)')
    axes[1].set(title='pseudo-labels (means since the previous evaluation)', xlabel='step',
                ylabel='%')
    for ax in axes:
        ax.legend(fontsize=7)


def declare_checks(seeds: int) -> dict[str, checks.Check]:
    """The section's checks, declared before any training."""
    where = 'final test accuracy (points), last evaluation, 10 % labels'
    return {
        'teacher': checks.Check(
            'teacher',
            'The EMAN teacher is more accurate than the standard EMA teacher with batch-mode BN '
            '(paper: about +2 points with 10 % of the ImageNet labels)',
            'claim', f'EMAN teacher minus EMA-BN teacher {where}', 'superiority', seeds,
            margin=0.0, effect=2.0),
        'student': checks.Check(
            'student',
            "The EMAN teacher's pseudo-labels train a more accurate student than the EMA-BN "
            "teacher's",
            'claim', f'EMAN student minus EMA-BN student {where}', 'superiority', seeds,
            margin=0.0, effect=None),
        'semi_supervised_works': checks.Check(
            'semi_supervised_works',
            'Semi-supervised learning works in this setting: stock FixMatch beats the same '
            'pipeline trained on the labeled images only',
            'sanity', f'stock FixMatch minus supervised-only student {where}', 'superiority',
            seeds, margin=0.0, effect=None),
    }


def evaluate_checks(declared: dict[str, checks.Check], res: dict) -> tuple[list[dict],
                                                                            list[str]]:
    """The declared checks on one fraction's results (arm -> curves (seeds, evaluations)),
    and the notes: the old mean-over-seeds rules with their outcome on ``res``, and why the
    teacher-vs-student rule is gone."""
    final = {arm: {part: 100 * np.asarray(res[arm][part])[:, -1]
                   for part in ('student', 'teacher') if part in res[arm]} for arm in ARMS}
    evaluated = [
        declared['teacher'].evaluate(final['eman']['teacher'], final['ema']['teacher']),
        declared['student'].evaluate(final['eman']['student'], final['ema']['student']),
        declared['semi_supervised_works'].evaluate(final['fixmatch']['student'],
                                                   final['supervised']['student'])]

    def old(a, b):
        held = bool(a.mean() >= b.mean())
        return (f"{'held' if held else 'did not hold'} ({a.mean():.2f} vs {b.mean():.2f} "
                '%)')
    gap = final['eman']['teacher'] - final['eman']['student']
    notes = [
        'Old rule (no noise model): teacher held when the mean over seeds of the EMAN teacher '
        'accuracy was >= the EMA-BN teacher\'s; on this run it '
        f"{old(final['eman']['teacher'], final['ema']['teacher'])}. New rule: paired "
        'superiority over seeds (margin 0, powered for the paper\'s +2 points).',
        'Old rule: student held when the mean EMAN student accuracy was >= the EMA-BN '
        f"student's; on this run it {old(final['eman']['student'], final['ema']['student'])}. "
        'New rule: paired superiority over seeds (margin 0, not powered).',
        'Dropped: the old check "EMAN teacher >= its own student" (mean over seeds) is not a '
        "claim of the paper (it compares EMAN's teacher with EMAN's student, not EMAN with "
        'the standard EMA teacher); on this run it '
        f"{old(final['eman']['teacher'], final['eman']['student'])}, mean teacher minus "
        f'student {gap.mean():+.2f} points; the number stays in the table.',
        'New sanity check semi_supervised_works: stock FixMatch must beat supervised-only '
        '(the table\'s references) for the teacher comparison to mean anything; the old rules '
        'had no such check.']
    return evaluated, notes


def main(argv=None):
    args, hp = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    started = time.perf_counter()
    declared = declare_checks(common.declared_seeds(args))
    out_dir = common.output_dir(args, NAME)
    splits = data.load_standardized(hp['dataset'], data_dir=args.data_dir)
    steps, eval_every, labeled_batch = hp['steps'], hp['eval_every'], hp['labeled_batch']
    fractions = hp['fractions']
    rows = ['| labels | arm | student acc (%) | teacher acc (%) | teacher − student | '
            'mask rate (%) | confident pseudo-label acc (%) |', '|---|---|---|---|---|---|---|']
    runs = {}
    fig, axes = plt.subplots(2, len(fractions), figsize=(6.5 * len(fractions), 8),
                             squeeze=False)
    with common.shared_compilations():
        for col, fraction in enumerate(fractions):
            res, evaluated_at, n_l = run_fraction(fraction, args.seeds, hp, splits, out_dir,
                                                  args.data_dir)
            runs[f'{fraction:g}'] = {**res, 'steps': evaluated_at, 'labeled_images': n_l}
            rows += [table_row(fraction, n_l, arm, res[arm]) for arm in ARMS]
            plot_fraction(axes[:, col], fraction, res, evaluated_at, args.seeds)
    png = os.path.join(out_dir, 'eman_curves.png')
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    evaluated, notes = evaluate_checks(declared, runs[f'{CHECK_FRACTION:g}'])
    widths = ', '.join(f'{k} {v}' for k, v in hp['model_kwargs'].items())
    ran = (f"FixMatch, {hp['model']} {widths} + BN, {hp['dataset']}, "
           f"{', '.join(f'{f:.0%}' for f in fractions)} labels, {steps} steps (labeled batch "
           f"{labeled_batch}, μ={hp['mu']}, τ={hp['threshold']}, λ_u={hp['lambda_u']}, teacher "
           f"m={hp['teacher_momentum']}), {args.seeds} seeds; arms: "
           'supervised only = the same pipeline with λ_u = 0 (reference); stock FixMatch = no '
           'teacher, student forwards concat(labeled, weak, strong) and labels the strong '
           'images from its own stop-gradient weak predictions (reference, the paper\'s '
           'baseline); EMA-BN = teacher with EMA params and batch-mode BN; EMAN = teacher with '
           'EMA params and BN statistics, eval mode. Accuracies are on the '
           f'{len(splits.test_labels)} test images; '
           'mask rate and confident pseudo-label accuracy are means over the last '
           f'{eval_every} steps. Each arm is one seed-batched run of the engine (fixmatch and '
           'eman extensions); every teacher equalled its student, params and statistics, at '
           'step 0 (verified).')
    checks.write_results(out_dir, paper=TITLE, claim=CLAIM, ran=ran, scale=args.scale,
                         seeds=args.seeds, table=rows, checks=evaluated, figures=[png],
                         started=started, notes=notes, runs=runs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
