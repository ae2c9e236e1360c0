"""EMAN vs the standard EMA teacher in FixMatch (Cai et al., arXiv:2101.08482).

Claim (abstract): a teacher that averages the student's parameters *and* BN statistics with
the same momentum and runs in eval mode (EMAN) beats the standard EMA teacher, whose BN uses
the batch's statistics, in student-teacher semi-supervised learning (FixMatch: about +7 / +2
points with 1 % / 10 % ImageNet labels).

Setup (FixMatch-EMAN, scaled to 1,437 digits of 8x8x1): labeled fraction 10 % (and 1 %
without --quick), class-stratified per seed; vgg_cfg10 at width 0.25 with BN (flax momentum
0.9). Pseudo-label = argmax, mask = max prob >= 0.7; loss = CE_x + 10 * mean(mask *
CE(strong, pseudo-label)); μ = 5 (labeled batch 16, unlabeled 80, 2,000 steps; --quick: 8 / 40,
240 steps; scaled down from 64 / 320 for the small data set). SGD lr 0.03, Nesterov
momentum 0.9, weight decay 5e-4, cosine. Weak augmentation: random shift <= 1 px; strong:
shift <= 2 px, a 3x3 cutout, brightness/contrast jitter and Gaussian noise (digits are not
flip-invariant). Four arms, same seeds, same initialization, same batches:

* 'supervised': reference, λ_u = 0 (the student's batch is still concat(labeled, strong), so
  its BN sees the same images as the teacher arms', only the unlabeled loss is switched off);
* 'fixmatch': reference, stock FixMatch (the paper's baseline): no teacher, the student
  forwards concat(labeled, weak, strong) in train mode and labels the strong images with its
  own stop-gradient predictions on the weak ones;
* 'ema': the student forwards concat(labeled, strong); a teacher holding the EMA of the
  params only, BN in batch mode (the weak batch's statistics for pseudo-labels, the whole
  test set's for its test accuracy), labels the weak images;
* 'eman': the same with the EMAN teacher (EMA of params and BN statistics, eval mode).

The teacher momentum is 0.98 (a 50-step horizon) instead of 0.999, which would barely leave
the initialization in a few hundred steps. Supervised, EMA-BN and EMAN lanes (arm x seed) run
in one vmapped program, FixMatch's (a differently shaped batch) in a second.

Checks (declared before the run, :mod:`jaxnorm.papers.checks`; per-seed differences of the
final test accuracy in points, paired by seed, which fixes the split, initialization and
batches, at 10 % labels):
  * teacher (claim): EMAN teacher minus EMA-BN teacher, superiority over 0, powered for the
    paper's +2 points at 10 % labels;
  * student (claim): EMAN student minus EMA-BN student, superiority over 0, not powered;
  * semi_supervised_works (sanity): stock FixMatch minus supervised-only, superiority over 0;
    without it a comparison of FixMatch teachers means nothing.
"EMAN teacher >= its own student" is not a claim of the paper: the number stays in the table.

    python scripts/experiments/eman.py --quick --out results   # 10 % labels, 3 seeds
    python scripts/experiments/eman.py --out results           # 10 % and 1 %, longer
"""
from __future__ import annotations

import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from jaxnorm import data, eman, models  # noqa: E402
from jaxnorm.losses import cross_entropy  # noqa: E402
from jaxnorm.papers import checks, common  # noqa: E402

NAME = 'eman'
PAPER = ('Exponential Moving Average Normalization for Self-supervised and Semi-supervised '
         'Learning (Cai et al., arXiv:2101.08482)')
CLAIM = ('A FixMatch teacher that averages parameters and BN statistics with one momentum and '
         'runs in eval mode (EMAN) is more accurate than the standard EMA teacher whose BN uses '
         'batch statistics, and its pseudo-labels train a better student.')
COMMON = {'dataset': 'digits', 'model': 'vgg_cfg10', 'model_kwargs': {'width': 0.25},
          'threshold': 0.7, 'lambda_u': 10.0, 'mu': 5, 'lr': 0.03, 'weight_decay': 5e-4,
          'teacher_momentum': 0.98}
SETTINGS = {  # steps, evaluation interval, labeled batch (unlabeled: mu times it), fractions
    'quick': {**COMMON, 'steps': 240, 'eval_every': 40, 'labeled_batch': 8,
              'fractions': (0.1,)},
    'full': {**COMMON, 'steps': 2000, 'eval_every': 100, 'labeled_batch': 16,
             'fractions': (0.1, 0.01)},
}
ARMS = {'supervised': 'supervised only (λ_u = 0)', 'fixmatch': 'FixMatch (no teacher)',
        'ema': 'EMA-BN teacher', 'eman': 'EMAN teacher'}
TEACHER_ARMS = ('supervised', 'ema', 'eman')  # one vmapped program (same batch shapes)
COLORS = {'supervised': 'tab:gray', 'fixmatch': 'tab:green', 'ema': 'tab:orange',
          'eman': 'tab:blue'}


def shift(key, x, max_shift):
    """Translate one HxWxC image by a random integer offset in [-max_shift, max_shift]^2."""
    h, w, _ = x.shape
    padded = jnp.pad(x, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy, dx = jax.random.randint(key, (2,), 0, 2 * max_shift + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, x.shape[2]))


def weak_augment(key, x):
    return shift(key, x, 1)


def strong_augment(key, x):
    """Shift <= 2 px, a 3x3 cutout, brightness/contrast jitter and Gaussian noise."""
    k_shift, k_cut, k_bc, k_noise = jax.random.split(key, 4)
    x = shift(k_shift, x, 2)
    cy, cx = jax.random.randint(k_cut, (2,), 0, x.shape[0] - 2)
    rows, cols = jnp.arange(x.shape[0])[:, None], jnp.arange(x.shape[1])[None, :]
    hole = (rows >= cy) & (rows < cy + 3) & (cols >= cx) & (cols < cx + 3)
    x = jnp.where(hole[..., None], x.min(), x)
    contrast, brightness = jax.random.uniform(k_bc, (2,), minval=-0.3, maxval=0.3)
    x = (x - x.mean()) * (1.0 + contrast) + x.mean() + brightness
    return x + 0.1 * jax.random.normal(k_noise, x.shape)


def augment_batch(fn, key, images):
    return jax.vmap(fn)(jax.random.split(key, images.shape[0]), images)


def pseudo_labels(logits, true_labels, threshold):
    """Argmax pseudo-labels, the confidence mask, the mask rate and the confident ones' accuracy."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits))
    pseudo, confident = probs.argmax(-1), (probs.max(-1) >= threshold).astype(jnp.float32)
    precision = (jnp.sum(confident * (pseudo == true_labels))
                 / jnp.maximum(confident.sum(), 1.0))
    return pseudo, confident, jnp.stack([confident.mean(), precision])


class FixMatch:
    """One labeled split trained by FixMatch variants, one lane (arm x seed) per call of run.

    ``self_labeled=True`` is stock FixMatch (the student labels its own weak images, no
    teacher); otherwise a teacher labels them and the lane's ``is_eman`` picks EMAN (eval
    mode, averaged statistics) or EMA-BN (batch mode, params-only average), and its
    ``lambda_u`` weighs the unlabeled loss (0: the supervised reference).
    """

    def __init__(self, self_labeled, model, train_x, train_y, test_x, test_y, steps,
                 eval_every, labeled_batch, hp):
        self.self_labeled, self.model, self.steps, self.hp = self_labeled, model, steps, hp
        self.eval_every, self.labeled_batch = eval_every, labeled_batch
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.tx = optax.chain(optax.add_decayed_weights(hp['weight_decay']),
                              optax.sgd(optax.cosine_decay_schedule(hp['lr'], steps), 0.9,
                                        nesterov=True))

    def student(self, params, stats, x):
        logits, updates = self.model.apply({'params': params, 'batch_stats': stats}, x,
                                           train=True, mutable=['batch_stats'])
        return logits, updates['batch_stats']

    def loss(self, params, stats, teacher, lane, xl, yl, xw, xs, yu):
        n = len(yl)
        if self.self_labeled:
            logits, stats = self.student(params, stats, jnp.concatenate([xl, xw, xs]))
            logits_w, logits_s = logits[n:n + len(xw)], logits[n + len(xw):]
            lambda_u = self.hp['lambda_u']
        else:
            logits_w = jnp.where(lane['is_eman'],
                                 eman.apply_teacher(self.model.apply, teacher, xw, kind='eman'),
                                 eman.apply_teacher(self.model.apply, teacher, xw, kind='ema'))
            logits, stats = self.student(params, stats, jnp.concatenate([xl, xs]))
            logits_s, lambda_u = logits[n:], lane['lambda_u']
        pseudo, confident, pl_stats = pseudo_labels(logits_w, yu, self.hp['threshold'])
        loss_u = jnp.mean(confident * cross_entropy(logits_s, pseudo))
        return cross_entropy(logits[:n], yl).mean() + lambda_u * loss_u, (stats, pl_stats)

    def accuracy(self, variables, batch_mode):
        """Test accuracy in eval mode, or with BN in batch mode over the whole test set."""
        logits = self.model.apply(variables, self.test_x, train=False)
        if batch_mode is not False:  # a lane's traced flag: compute both, select
            batch_logits, _ = self.model.apply(variables, self.test_x, train=True,
                                               mutable=['batch_stats'])
            logits = jnp.where(batch_mode, batch_logits, logits)
        return jnp.mean(logits.argmax(-1) == self.test_y)

    def evaluate(self, params, stats, teacher, lane):
        """(student accuracy in eval mode, teacher accuracy in its own BN mode)."""
        student = {'params': params, 'batch_stats': stats}
        if self.self_labeled:
            return jnp.stack([self.accuracy(student, False), jnp.nan])
        t_vars = {'params': teacher.params, 'batch_stats': teacher.batch_stats}
        return jnp.stack([self.accuracy(student, False),
                          self.accuracy(t_vars, ~lane['is_eman'])])

    def initial_gap(self, params, stats, teacher, lane):
        """Teacher minus student test accuracy, both in the teacher's BN mode (0 at init)."""
        if self.self_labeled:
            return jnp.zeros(())
        t_vars = {'params': teacher.params, 'batch_stats': teacher.batch_stats}
        return (self.accuracy(t_vars, ~lane['is_eman'])
                - self.accuracy({'params': params, 'batch_stats': stats}, ~lane['is_eman']))

    def run(self, lane, labeled_idx, unlabeled_idx):
        """Train one lane: evaluations (blocks + 1, 2), pseudo-label stats (blocks, 2) and the
        teacher's step-0 accuracy gap to its student (must be 0)."""
        key = jax.random.key(lane['seed'])
        init_key, key = jax.random.split(key)
        variables = self.model.init(init_key, self.train_x[:1], train=False)
        params, stats = variables['params'], variables['batch_stats']
        teacher = () if self.self_labeled else eman.init(params, stats)
        opt_state = self.tx.init(params)

        def step(carry, k):
            params, stats, teacher, opt_state = carry
            k_l, k_u, k_w, k_s, k_ls = jax.random.split(jax.random.fold_in(key, k), 5)
            li = labeled_idx[jax.random.randint(k_l, (self.labeled_batch,), 0,
                                                 labeled_idx.shape[0])]
            ui = unlabeled_idx[jax.random.randint(k_u, (self.hp['mu'] * self.labeled_batch,), 0,
                                                  unlabeled_idx.shape[0])]
            xl = augment_batch(weak_augment, k_ls, self.train_x[li])
            xw = augment_batch(weak_augment, k_w, self.train_x[ui])
            xs = augment_batch(strong_augment, k_s, self.train_x[ui])
            grads, (stats, pl_stats) = jax.grad(self.loss, has_aux=True)(
                params, stats, teacher, lane, xl, self.train_y[li], xw, xs, self.train_y[ui])
            updates, opt_state = self.tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if not self.self_labeled:
                update = partial(eman.update, teacher, params, stats,
                                 self.hp['teacher_momentum'])
                teacher = jax.tree.map(partial(jnp.where, lane['is_eman']),
                                       update(average_stats=True), update(average_stats=False))
            return (params, stats, teacher, opt_state), pl_stats

        def block(carry, k):
            carry, pl_stats = jax.lax.scan(step, carry, k * self.eval_every
                                           + jnp.arange(self.eval_every))
            return carry, (self.evaluate(*carry[:3], lane), pl_stats.mean(0))

        start = self.evaluate(params, stats, teacher, lane)
        gap = self.initial_gap(params, stats, teacher, lane)
        _, (evals, pl_stats) = jax.lax.scan(block, (params, stats, teacher, opt_state),
                                            jnp.arange(self.steps // self.eval_every))
        return jnp.concatenate([start[None], evals]), pl_stats, gap


def split_labels(labels, fraction, seed, num_classes):
    """Class-stratified labeled/unlabeled indices (at least one labeled image per class)."""
    rng = np.random.default_rng(seed)
    labeled = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        labeled.extend(idx[:max(1, round(fraction * len(idx)))])
    labeled = np.sort(np.asarray(labeled))
    return labeled, np.setdiff1d(np.arange(len(labels)), labeled)


def run_fraction(fraction, seeds, setup, train_ds):
    """All four arms at one labeled fraction of ``train_ds`` (the raw training split); per
    arm: curves (seeds, evaluations)."""
    splits = [split_labels(train_ds.labels, fraction, s, train_ds.num_classes) for s in seeds]
    n_l = min(len(s[0]) for s in splits)  # equal sizes so the seeds stack (vmap)
    n_u = min(len(s[1]) for s in splits)
    labeled = np.stack([s[0][:n_l] for s in splits])
    unlabeled = np.stack([s[1][:n_u] for s in splits])
    out = {}
    for arms in (TEACHER_ARMS, ('fixmatch',)):
        lanes = {'seed': np.tile(seeds, len(arms)),
                 'is_eman': np.repeat([arm == 'eman' for arm in arms], len(seeds)),
                 'lambda_u': np.repeat([0.0 if arm == 'supervised' else setup['hp']['lambda_u']
                                        for arm in arms], len(seeds)).astype(np.float32)}
        method = FixMatch(arms == ('fixmatch',), **setup)
        evals, pl_stats, gap = jax.jit(jax.vmap(method.run))(*common.spread_runs((
            lanes, np.tile(labeled, (len(arms), 1)), np.tile(unlabeled, (len(arms), 1)))))
        gap = np.asarray(gap).reshape(len(arms), len(seeds))
        evals = np.asarray(evals).reshape(len(arms), len(seeds), *evals.shape[1:])
        pl_stats = np.asarray(pl_stats).reshape(len(arms), len(seeds), *pl_stats.shape[1:])
        for i, arm in enumerate(arms):
            out[arm] = {'student': evals[i, :, :, 0]}
            if arm in ('ema', 'eman'):
                out[arm].update(teacher=evals[i, :, :, 1], initial_teacher_gap=gap[i])
            if arm != 'supervised':  # its lanes' teacher labels nothing that counts
                out[arm].update(mask_rate=pl_stats[i, :, :, 0],
                                pseudo_label_accuracy=pl_stats[i, :, :, 1])
    return out, n_l


def check_initial_teacher(res):
    """At step 0 the teacher is the student: equal test accuracy in the teacher's BN mode."""
    for arm in ('ema', 'eman'):
        if np.any(res[arm]['initial_teacher_gap'] != 0):
            raise RuntimeError(f'{arm} teacher differs from its student at step 0 (accuracy '
                               f"gaps {res[arm]['initial_teacher_gap']}): a teacher bug")


def table_row(fraction, n_l, arm, r):
    def cell(values):
        return '—' if values is None else common.mean_std(values[:, -1], 100)
    teacher = r.get('teacher')
    cells = [f'{fraction:.0%} ({n_l})', ARMS[arm], cell(r['student']), cell(teacher),
             cell(None if teacher is None else teacher - r['student']),
             cell(r.get('mask_rate')), cell(r.get('pseudo_label_accuracy'))]
    return '| ' + ' | '.join(cells) + ' |'


def plot_fraction(axes, fraction, res, steps, eval_every, n_seeds):
    x = eval_every * np.arange(steps // eval_every + 1)
    for arm, r in res.items():
        color = COLORS[arm]
        axes[0].plot(x, 100 * r['student'].mean(0), '--', color=color, label=f'{arm} student')
        if 'teacher' in r:
            axes[0].plot(x, 100 * r['teacher'].mean(0), '-', color=color,
                         label=f'{arm} teacher')
        if 'mask_rate' in r:
            axes[1].plot(x[1:], 100 * r['mask_rate'].mean(0), ':', color=color,
                         label=f'{arm} mask rate')
            axes[1].plot(x[1:], 100 * r['pseudo_label_accuracy'].mean(0), '-', color=color,
                         label=f'{arm} confident pseudo-label acc')
    axes[0].set(title=f'FixMatch, {fraction:.0%} labels ({n_seeds} seeds)',
                xlabel='step', ylabel='test accuracy (%)')
    axes[1].set(title='pseudo-labels (block means)', xlabel='step', ylabel='%')
    for ax in axes:
        ax.legend(fontsize=7)


CHECK_FRACTION = 0.1  # the labeled fraction every check is evaluated at (the paper's 10 %)


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


def paper_setting(path: str) -> dict:
    """The full setting with config file ``path``'s keys in place (ValueError on unknown
    keys)."""
    return common.override_setting(SETTINGS['full'], path)


def main(argv=None):
    parser, args, hp = common.parse_with_setting(
        __doc__, argv, lambda args: paper_setting(args.config) if args.config
        else SETTINGS['quick' if args.quick else 'full'])
    started = time.perf_counter()
    if not any(np.isclose(f, CHECK_FRACTION) for f in hp['fractions']):
        parser.error(f"fractions {hp['fractions']} lack {CHECK_FRACTION:g}, the labeled "
                     'fraction the checks are declared at')
    declared = declare_checks(common.declared_seeds(args))
    out_dir = common.output_dir(args, NAME)
    dataset = data.load_standardized(hp['dataset'], data_dir=args.data_dir)
    model = models.get_model(hp['model'], norm='bn', num_classes=dataset.num_classes,
                             **hp['model_kwargs'])
    steps, eval_every, labeled_batch = hp['steps'], hp['eval_every'], hp['labeled_batch']
    setup = dict(model=model, train_x=jnp.asarray(dataset.train_images),
                 train_y=jnp.asarray(dataset.train_labels),
                 test_x=jnp.asarray(dataset.test_images),
                 test_y=jnp.asarray(dataset.test_labels), steps=steps, eval_every=eval_every,
                 labeled_batch=labeled_batch, hp=hp)
    fractions = hp['fractions']
    seeds = np.arange(args.seeds)
    rows = ['| labels | arm | student acc (%) | teacher acc (%) | teacher − student | '
            'mask rate (%) | confident pseudo-label acc (%) |', '|---|---|---|---|---|---|---|']
    runs = {}
    fig, axes = plt.subplots(2, len(fractions), figsize=(6.5 * len(fractions), 8),
                             squeeze=False)
    for col, fraction in enumerate(fractions):
        res, n_l = run_fraction(fraction, seeds, setup, dataset.train)
        check_initial_teacher(res)
        runs[f'{fraction:g}'] = {**res, 'labeled_images': n_l}
        rows += [table_row(fraction, n_l, arm, res[arm]) for arm in ARMS]
        plot_fraction(axes[:, col], fraction, res, steps, eval_every, len(seeds))
    png = os.path.join(out_dir, 'eman_curves.png')
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    evaluated, notes = evaluate_checks(declared, runs[f'{CHECK_FRACTION:g}'])
    widths = ', '.join(f'{k} {v}' for k, v in hp['model_kwargs'].items())
    ran = (f"FixMatch, {hp['model']} {widths} + BN, {hp['dataset']}, "
           f"{', '.join(f'{f:.0%}' for f in fractions)} labels, {steps} steps (labeled batch "
           f"{labeled_batch}, μ={hp['mu']}, τ={hp['threshold']}, λ_u={hp['lambda_u']}, teacher "
           f"m={hp['teacher_momentum']}), {len(seeds)} seeds; arms: "
           'supervised only = the same pipeline with λ_u = 0 (reference); stock FixMatch = no '
           'teacher, student forwards concat(labeled, weak, strong) and labels the strong '
           'images from its own stop-gradient weak predictions (reference, the paper\'s '
           'baseline); EMA-BN = teacher with EMA params and batch-mode BN; EMAN = teacher with '
           'EMA params and BN statistics, eval mode. Accuracies are on the '
           f'{len(dataset.test_labels)} test images; '
           'mask rate and confident pseudo-label accuracy are means over the last '
           f'{eval_every} steps; every teacher matched its student at step 0 (verified).')
    checks.write_results(out_dir, paper=PAPER, claim=CLAIM, ran=ran, scale=common.scale(args),
                         seeds=args.seeds, table=rows, checks=evaluated, figures=[png],
                         started=started, notes=notes, runs=runs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
