"""Micro-structured weight unification with ADMM (Lin et al., arXiv:2106.08301).

Claim (abstract): unifying the weights of selected micro-structured blocks (one shared
magnitude, signs kept; pruning when it is zero), trained with ADMM, compresses a network
highly with little loss of accuracy.

Setup at the standard scale (:func:`get_config`): digits (1,437 train / 360 test, 8x8), two
models without normalization: an MLP 64-256-256-10 (both hidden kernels constrained) and a
small CNN (3x3 convs 16, 32 / stride 2, 64 / stride 2, then the classifier; the second and
third convs constrained). The classifier, the first conv and all biases stay free. Block
shapes 1x4, 4x4 and 1x16 in the ``out x fan_in`` matrix; two ratio pairs (unified + pruned
fraction of the blocks of every layer). Adam (batch 64; lr 1e-3, 3e-3 in the ADMM phase)
throughout. The quick scale runs the MLP alone at the 1x4 block shape, both ratio pairs (two
cells, 10 engine runs): every engine run pays its compilations (about 5 CPU seconds each on
2 cores), and each further cell, shape or model adds 4 or more runs.

Every phase is one seed-batched run of the engine (:func:`jaxnorm.train.fit`, the seeds as
lanes): ADMM is the ``admm`` extension and the retraining the ``tied`` extension
(:mod:`jaxnorm.unification`); projections and block selection happen per lane between runs.

* dense: pre-train ``pretrain_epochs``;
* one-shot: exact projection of the pre-trained weights, then ``retrain_epochs`` of
  retraining with the unified and pruned blocks frozen;
* ADMM: from the same pre-trained weights, ``admm_epochs`` of ADMM (Z/U refreshed every epoch,
  rho = rho0 x factor every epoch), hard projection, the same retraining; and, as a variant,
  retraining that also trains each unified block's shared magnitude.

ADMM gets ``admm_epochs`` more training than one-shot: that is the method's cost.

Accuracy is measured right after the hard projection (before retraining: the number that
separates the methods on digits) and after retraining (of the re-projected weights, i.e. of
the stored model). Compression is measured from the stored format
(``prune.unify_storage.encode``), over the constrained kernels. Every method of a seed shares
the pre-trained weights.

Checks (declared before running by :func:`jaxnorm.papers.unification_report.declare_checks`).
The unit of replication is the pre-trained network, one per (model, seed): every (block shape,
ratio) cell of a network starts from the same pre-trained weights, so the cells are averaged
within each network first and the 90 % paired t-intervals run over networks:
  * ADMM gap decreases (sanity): ||W - Z|| / ||W|| at the end of ADMM is below its value after
    the first epoch in every ADMM run (it follows from rho growing ``rho_factor`` x per
    epoch);
  * ADMM beats one-shot before retraining (claim): ADMM minus one-shot accuracy after the hard
    projection (points), averaged over the network's cells; superiority over 0;
  * little loss after retraining (claim): ADMM after retraining minus dense accuracy
    (points) at the milder ratio, averaged over the network's block shapes; non-inferiority
    with a 2-point margin.

    python scripts/experiments/unification.py --quick --out results   # ~1 min, 2 CPU cores
    python scripts/experiments/unification.py --out results   # 60 / 20 / 20 epochs, rho x1.3
    python scripts/experiments/unification.py --scale paper --out results   # CNN, CIFAR-100

``--scale paper`` runs :data:`PAPER`; ``--config`` sets the Settings fields (dataset, models,
epochs, ratios, ADMM schedule) from a ``get_config()`` file instead. Each engine run lives in
``OUT/unification/runs/<model>/<cell>/<phase>`` and a rerun resumes it (or reads it back when
finished). A phase's lanes draw their batch orders from seeds offset per phase
(:data:`PHASE_SEEDS`), since every run counts its epochs from 0.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax

from jaxnorm import config as config_lib, data, models, parallel, train, unification
from jaxnorm.papers import checks, common, unification_report as report
from prune import unify, unify_storage

NAME = 'unification'
CLAIM = ('Unifying micro-structured weight blocks (shared magnitude, kept signs; zero = '
         'pruning) and training toward that structure with ADMM compresses a network with '
         'little accuracy loss, and ADMM loses less at the hard projection than projecting a '
         'trained network in one shot.')
SHAPES = ((1, 4), (4, 4), (1, 16))


@dataclasses.dataclass(frozen=True)
class Settings:
    """The experiment's settings; the defaults are the quick scale's schedule over both models
    and every block shape (:func:`get_config` narrows the quick scale to one model and shape;
    a paper-scale config keeps the defaults of the fields it omits)."""
    pretrain_epochs: int = 20
    admm_epochs: int = 10
    retrain_epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3  # pre-training and retraining
    admm_lr: float = 3e-3  # the ADMM phase (at 1e-3, W moved too slowly to reach Z)
    rho0: float = 0.1
    rho_factor: float = 1.6
    ratios: tuple = ((0.5, 0.25), (0.6, 0.35))  # (unify, prune)
    models: tuple = ('mlp', 'cnn')
    shapes: tuple = SHAPES  # block shapes (rows, cols)
    dataset: str = 'digits'


# The paper's scale (research/lawn_unify_papers.md 2.1-2.5). The paper's tables and
# hyperparameters could not be read; what is known [3rd]: CIFAR-100 among its datasets (with
# VGG-16), several block shapes and ratios, unification combined with pruning. The ADMM
# schedule follows the ADMM-pruning line of the same group (2.4): rho starting small and
# multiplied geometrically every epoch, then a hard projection and masked retraining. Every
# number below is therefore [infer]: epochs scaled up from the digits run, rho0 1e-3 and x1.3
# per epoch, the digits run's ratios. Deviation: the experiment's 3-conv CNN (no
# normalization, :data:`MODELS`) stands in for VGG-16, which the experiment does not build.
# ``scripts/configs/unification.py`` returns these values as a config file.
PAPER = {
    'dataset': 'cifar100', 'models': ('cnn',), 'pretrain_epochs': 100, 'admm_epochs': 30,
    'retrain_epochs': 30, 'batch_size': 128, 'lr': 1e-3, 'admm_lr': 3e-3, 'rho0': 1e-3,
    'rho_factor': 1.3, 'ratios': ((0.5, 0.25), (0.6, 0.35)),
}


# name -> (engine model, options): the MLP 256-256, and the CNN of three 3x3 convs (16,
# 32/2, 64/2) with ReLU, flatten and the classifier ``head``; neither normalized.
MODELS = {'mlp': ('mlp', {}), 'cnn': ('small_cnn', {'features': (16, 32, 64)})}
DESCRIPTIONS = {'mlp': 'MLP 256-256', 'cnn': '3-conv CNN'}
MODEL_PATTERNS = {'mlp': r'^dense[12]/kernel', 'cnn': r'^conv[23]/kernel'}
# The data order of lane k of a phase is BatchIterator seed PHASE_SEEDS[phase] + k, its epochs
# counted from 0 in every fit: the phases see different batch orders, as the old loop's epoch
# offsets 0 / 100 / 1000 gave them, and the one-shot and ADMM retraining of a seed share one
# (paired arms). Lanes of different phases never share a seed while seeds <= 100.
PHASE_SEEDS = {'pretrain': 0, 'admm': 100, 'retrain': 1000}


def positions(name: str, height: int, width: int) -> dict:
    """Output positions of each constrained kernel (multiplies per example): the CNN's second
    and third convs have stride 2 each ('SAME' padding)."""
    if name == 'mlp':
        return {}
    return {'conv2/kernel': -(-height // 2) * -(-width // 2),
            'conv3/kernel': -(-height // 4) * -(-width // 4)}


def build(name: str, num_classes: int):
    """The engine's network ``name`` (see :data:`MODELS`)."""
    model, kwargs = MODELS[name]
    return models.get_model(model, norm='none', num_classes=num_classes, **kwargs)


class Phases:
    """The engine runs of one model, each a seed-batched :func:`jaxnorm.train.fit` (the seeds
    as lanes) in its own workdir, and the test accuracy of each lane's weights."""

    def __init__(self, name: str, s: Settings, seeds: int, out_dir: str, data_dir):
        if not 2 <= seeds <= PHASE_SEEDS['admm']:
            raise ValueError(f'need 2 to {PHASE_SEEDS["admm"]} seeds, got {seeds}')
        self.name, self.s, self.seeds = name, s, seeds
        self.splits = data.load_standardized(s.dataset, data_dir=data_dir)
        self.positions = positions(name, *self.splits.train_images.shape[1:3])
        model, kwargs = MODELS[name]
        self.base = config_lib.apply_overrides(config_lib.default_config(), {
            'model': model, 'model_kwargs': kwargs, 'norm': 'none', 'dataset': s.dataset,
            'data_dir': data_dir, 'augment': 'none', 'batch_size': s.batch_size,
            'optimizer': 'adam', 'schedule': 'constant', 'lr': s.lr, 'weight_decay': 0.0,
            'num_seeds': seeds, 'keep_checkpoints': 1, 'progress': False})
        self.runs = os.path.join(out_dir, 'runs', name)
        self._evaluate = jax.jit(jax.vmap(train.eval_step, in_axes=(0, None)))

    def spec(self, shape, ratio) -> unify.UnifySpec:
        return unify.UnifySpec(tuple(shape), ratio[0], ratio[1], pattern=MODEL_PATTERNS[self.name])

    def fit(self, phase: str, run: str, overrides: dict, initial_state=None) -> train.FitResult:
        """The phase's engine run ``run`` (resumed, or read back when finished)."""
        config = config_lib.apply_overrides(self.base, {
            **overrides, 'seed': PHASE_SEEDS[phase], 'workdir': os.path.join(self.runs, run)})
        return train.fit(config, resume=True, initial_state=initial_state)

    def accuracy(self, state: train.TrainState, params) -> list[float]:
        """Test accuracy of each lane of ``params`` (the engine's evaluation step)."""
        weights_only = state.replace(params=params, opt_state=(), extensions={})
        return train.evaluate_dataset(
            self._evaluate, weights_only, self.splits.test_images, self.splits.test_labels,
            batch_size=self.base.eval_batch_size, mesh=parallel.data_mesh(),
            place=jax.device_put)['accuracy']

    def admm(self, run: str, spec: unify.UnifySpec, pretrained) -> train.FitResult:
        """ADMM toward ``spec``'s unified set from the pre-trained weights."""
        s = self.s
        return self.fit('admm', run, {
            'epochs': s.admm_epochs, 'lr': s.admm_lr, 'admm.rho0': s.rho0,
            'admm.rho_factor': s.rho_factor, 'admm.block': spec.block_shape,
            'admm.unify_ratio': spec.unify_ratio, 'admm.prune_ratio': spec.prune_ratio,
            'admm.pattern': spec.pattern}, lambda state: unification.start_from(state, pretrained))

    def retrain(self, run: str, spec: unify.UnifySpec, projected, codes,
                train_magnitudes: bool = False) -> list[float]:
        """Retrain the projected weights with the blocks of ``codes`` tied; the accuracy of the
        stored model (the result re-projected with ``codes``, which only removes rounding)."""
        result = self.fit('retrain', run, {
            'epochs': self.s.retrain_epochs, 'tied.retrain': True,
            'tied.block': spec.block_shape, 'tied.pattern': spec.pattern,
            'tied.train_magnitudes': train_magnitudes},
            lambda state: unification.with_codes(state, projected, codes, spec))
        return self.accuracy(result.state, unification.project_lanes(result.state.params,
                                                                     codes, spec))

    def hard_projection(self, params, spec: unify.UnifySpec):
        """:func:`jaxnorm.unification.hard_projection`, and each lane's storage report (over
        the constrained kernels)."""
        projected, codes = unification.hard_projection(params, spec, self.seeds)
        lane = lambda tree, k: jax.tree.map(lambda leaf: leaf[k], tree)  # noqa: E731
        return projected, codes, [unify_storage.storage_report(
            lane(projected, k), lane(codes, k), spec, positions=self.positions)['total']
            for k in range(self.seeds)]


def run_cell(phases: Phases, pretrained: train.FitResult, spec: unify.UnifySpec,
             cell: str) -> dict[str, list]:
    """One (block shape, ratio) cell from the pre-trained lanes: one-shot projection and
    retraining, ADMM, hard projection and the two retrainings; every number a list over
    lanes."""
    projected, codes, reports = phases.hard_projection(pretrained.state.params, spec)
    admm = phases.admm(f'{cell}/admm', spec, pretrained.state.params)
    hard, hard_codes, hard_reports = phases.hard_projection(admm.state.params, spec)
    retrain = lambda run, *args, **kwargs: phases.retrain(  # noqa: E731
        f'{cell}/{run}', spec, *args, **kwargs)
    return {
        'compression': [r['constrained_compression'] for r in reports],
        'model_compression': [r['model_compression'] for r in reports],
        'multiply_reduction': [r['multiply_reduction'] for r in reports],
        'oneshot_before': phases.accuracy(pretrained.state, projected),
        'oneshot_after': retrain('oneshot-retrain', projected, codes),
        'gaps': [[r['admm_gap'] for r in admm.history if r['seed'] == PHASE_SEEDS['admm'] + k]
                 for k in range(phases.seeds)],
        'admm_trained': phases.accuracy(admm.state, admm.state.params),
        'admm_before': phases.accuracy(admm.state, hard),
        'admm_after': retrain('admm-retrain', hard, hard_codes),
        'admm_after_magnitudes': retrain('admm-retrain-magnitudes', hard, hard_codes,
                                         train_magnitudes=True),
        'admm_compression': [r['constrained_compression'] for r in hard_reports]}


def run_model(phases: Phases, progress) -> list[dict]:
    """Pre-training, then every (block shape, ratio) cell; one record per (seed, cell), in the
    order seed, block shape, ratio."""
    pretrained = phases.fit('pretrain', 'pretrain', {'epochs': phases.s.pretrain_epochs})
    dense = phases.accuracy(pretrained.state, pretrained.state.params)
    cells = []
    for shape in phases.s.shapes:
        for ratio in phases.s.ratios:
            numbers = run_cell(phases, pretrained, phases.spec(shape, ratio),
                               f'{shape[0]}x{shape[1]}-unify{ratio[0]}-prune{ratio[1]}')
            cells.append([{'model': phases.name, 'seed': k, 'shape': list(shape),
                           'ratio': list(ratio), 'dense': dense[k],
                           **{key: values[k] for key, values in numbers.items()}}
                          for k in range(phases.seeds)])
            for row in cells[-1]:
                progress(row)
    return [rows[k] for k in range(phases.seeds) for rows in cells]


def get_config(scale: str) -> Settings:
    """The experiment's settings at ``scale``: ``'quick'`` 20 epochs of pre-training, 10 of
    ADMM (rho x1.6 per epoch) and 5 of retraining, the MLP alone at block shape 1x4 and both
    ratio pairs (about 1 minute, 80 CPU seconds, on 2 cores), and ``'standard'`` 60 / 20 / 20
    (rho x1.3), the MLP and the CNN at every block shape, on digits (:class:`Settings`, module
    docstring); ``'paper'`` the CNN on CIFAR-100 for 100 / 30 / 30 (:data:`PAPER`)."""
    common.check_scale(scale)
    if scale == 'paper':
        return paper_setting(PAPER, f'{__name__}.PAPER')
    if scale == 'quick':
        return Settings(models=('mlp',), shapes=((1, 4),))
    return Settings(pretrain_epochs=60, admm_epochs=20, retrain_epochs=20, rho_factor=1.3)


def paper_setting(values, source: str) -> Settings:
    """The settings of paper-scale ``values`` (from ``source``; Settings fields, those it
    omits keep :class:`Settings`' defaults); ValueError on unknown fields or models."""
    fields = [f.name for f in dataclasses.fields(Settings)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f'{source}: unknown setting(s) {unknown}; valid: {fields}')
    settings = Settings(**values)
    bad = [m for m in settings.models if m not in MODEL_PATTERNS]
    if bad:
        raise ValueError(f'{source}: models {bad} are not built here; choose from '
                         f'{sorted(MODEL_PATTERNS)}')
    return settings


def print_row(r: dict) -> None:
    print(f"{r['model']} seed {r['seed']} {r['shape']} {r['ratio']}: one-shot "
          f"{r['oneshot_before']:.3f}->{r['oneshot_after']:.3f}, ADMM {r['admm_before']:.3f}"
          f"->{r['admm_after']:.3f}, gap {r['gaps'][0]:.3f}->{r['gaps'][-1]:.4f}", flush=True)


def main(argv=None) -> int:
    args, s = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    started = time.perf_counter()
    out_dir = common.output_dir(args, NAME)
    declared = report.declare_checks(common.declared_seeds(args), s)
    records = []
    with common.shared_compilations():
        for name in s.models:
            records += run_model(Phases(name, s, args.seeds, out_dir, args.data_dir),
                                 print_row)
    figure = os.path.join(out_dir, f'{NAME}.png')
    report.plot(records, figure)
    ran = (f'{s.dataset}, {" and ".join(DESCRIPTIONS[m] for m in s.models)}, no '
           f'normalization; blocks '
           f"{', '.join(f'{a}x{b}' for a, b in s.shapes)}; unified + pruned "
           f"{', '.join(f'{u} + {p}' for u, p in s.ratios)} per layer; {s.pretrain_epochs} "
           f'epochs of Adam, then one-shot projection or {s.admm_epochs} ADMM epochs (rho '
           f'{s.rho0} x {s.rho_factor} per epoch, Adam {s.admm_lr}) + hard projection, then '
           f'{s.retrain_epochs} epochs of retraining with tied blocks (frozen, or shared '
           f'magnitudes trained); {args.seeds} seeds, each phase one seed-batched engine run.')
    evaluated, notes = report.evaluate_checks(declared, records, s)
    checks.write_results(out_dir, paper='Lin et al., arXiv:2106.08301', claim=CLAIM, ran=ran,
                         scale=args.scale, seeds=args.seeds, table=report.table(records),
                         checks=evaluated, figures=[figure], started=started, notes=notes,
                         setup={'quick': args.quick, 'seeds': args.seeds,
                                'settings': dataclasses.asdict(s)},
                         runs=records)
    return 0


if __name__ == '__main__':
    sys.exit(main())
