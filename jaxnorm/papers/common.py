"""What every paper's experiment shares: its command line, its scales and its training helpers.

The contract with :mod:`jaxnorm.papers.reproduce`: ``--scale quick|standard|paper`` (``--quick``
is ``--scale quick``), ``--seeds N --out DIR --data-dir D`` on the command line;
``DIR/<name>/results.json`` written by :func:`jaxnorm.papers.checks.write_results` (the one
writer, schema-validated), its checks declared as :class:`jaxnorm.papers.checks.Check` before
the run.

Each experiment module holds its settings at every scale in one place: ``get_config(scale)``
for ``'quick'`` (the README's CPU demonstration), ``'standard'`` (longer CPU runs) and
``'paper'`` (the paper's data, model and schedule, from the module's ``PAPER`` values, which
``scripts/configs/<name>.py`` hands to the other command lines); and ``paper_setting(values,
source)``, which validates paper-scale values, the module's own or those of a user's
``--config FILE`` (a ``get_config()`` file that replaces them).

Example::

    args, setting = common.parse_with_setting(__doc__, argv, get_config, paper_setting)
    out_dir = common.output_dir(args, 'mimicnorm')
    accuracy = checks.Check('accuracy', 'MimicNorm is not worse than BN', 'claim',
                            'MimicNorm minus BN test accuracy (points)', 'non_inferiority',
                            seeds=args.seeds, margin=0.6)
    ...
    checks.write_results(out_dir, paper=PAPER, claim=CLAIM, ran=ran,
                         scale=args.scale, seeds=args.seeds, table=rows,
                         checks=[accuracy.evaluate(mimic_points, bn_points)],
                         figures=[png], started=started, runs=raw_numbers)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

# The experiments are command lines: keep TensorFlow's C++ logging (tensorflow-datasets may
# load TensorFlow while preparing data) off their output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
import numpy as np  # noqa: E402

from jaxnorm import config as config_lib, parallel  # noqa: E402
from jaxnorm.cli import (OneLineErrorParser, UsageError, check_input_dir,  # noqa: E402
                         check_output_dir, show_defaults)
from jaxnorm.papers.checks import SCALES  # noqa: E402


def build_parser(description: str, *, default_seeds: int = 3) -> argparse.ArgumentParser:
    """The shared flags; add the experiment's own to the returned parser."""
    parser = OneLineErrorParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scale', choices=SCALES,
                        help="quick: the README's CPU demonstration; standard: longer CPU runs "
                        "(the default); paper: the paper's data, model and schedule (GPU/TPU)")
    parser.add_argument('--quick', action='store_true', help='the same as --scale quick')
    parser.add_argument('--seeds', type=int, default=default_seeds,
                        help='seeds per configuration (>= 2: tables report a std)')
    parser.add_argument('--out', default='results', help='writes OUT/<name>/results.json')
    parser.add_argument('--data-dir', help='TFDS data dir (digits are embedded)')
    parser.add_argument('--config', help="a get_config() file whose values the experiment "
                        "runs instead of its own paper-scale ones (implies --scale paper; its "
                        "paper_setting says what fills the keys the file leaves out)")
    return parser


def resolve_scale(args: argparse.Namespace) -> str:
    """The scale ``args`` ask for: ``--scale``, ``--quick`` or ``--config`` (paper), else
    ``'standard'``; raises :class:`UsageError` when they disagree."""
    config = getattr(args, 'config', None)
    if args.quick and config:
        raise UsageError("--config sets the papers' scale; drop --quick")
    implied = 'quick' if args.quick else 'paper' if config else None
    if args.scale and implied and args.scale != implied:
        flag = '--quick' if args.quick else '--config'
        raise UsageError(f'{flag} means --scale {implied}, not --scale {args.scale}')
    return args.scale or implied or 'standard'


def parse_args(description: str, argv: Sequence[str] | None = None, *,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse ``argv`` with :func:`build_parser` (or ``parser``), check ``--seeds >= 2`` and
    set ``args.scale`` (:func:`resolve_scale`) and ``args.quick`` (``scale == 'quick'``)."""
    parser = parser or build_parser(description)
    show_defaults(parser)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error('--seeds must be >= 2 (the table reports a standard deviation)')
    try:
        args.scale = resolve_scale(args)
        check_output_dir(args.out, '--out')
        check_input_dir(args.data_dir, '--data-dir')
    except UsageError as error:
        parser.error(str(error))
    args.quick = args.scale == 'quick'
    return args


def check_scale(scale: str) -> None:
    """Raise ``ValueError`` naming :data:`SCALES` when ``scale`` is not one of them."""
    if scale not in SCALES:
        raise ValueError(f'unknown scale {scale!r}; choose from {SCALES}')


def load_setting(args: argparse.Namespace, get_config: Callable[[str], Any],
                 paper_setting: Callable[[Mapping[str, Any], str], Any]) -> Any:
    """The setting ``args`` select: ``paper_setting(values, path)`` of a ``--config`` file's
    values, else the experiment's ``get_config(args.scale)``."""
    if getattr(args, 'config', None):
        return paper_setting(config_lib.read_config_file(args.config), args.config)
    return get_config(args.scale)


def parse_with_setting(description: str, argv: Sequence[str] | None,
                       get_config: Callable[[str], Any],
                       paper_setting: Callable[[Mapping[str, Any], str], Any], *,
                       parser: argparse.ArgumentParser | None = None
                       ) -> tuple[argparse.Namespace, Any]:
    """:func:`parse_args`, then :func:`load_setting`; a missing or bad config file is a usage
    error naming it."""
    parser = parser or build_parser(description)
    args = parse_args(description, argv, parser=parser)
    try:
        return args, load_setting(args, get_config, paper_setting)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))


def override_setting(setting: dict, values: Mapping[str, Any], source: str) -> dict:
    """``setting`` with the keys of ``values`` (from ``source``) replaced, as a new dict.

    Raises ``ValueError`` naming the valid keys when ``values`` sets one ``setting`` lacks, so a
    typo in a paper config fails before hours of training.
    """
    unknown = sorted(set(values) - set(setting))
    if unknown:
        raise ValueError(f'{source}: unknown setting(s) {unknown}; valid: {sorted(setting)}')
    return {**setting, **values}


def spread_runs(tree: Any) -> Any:
    """Place ``tree``'s leading axis (the vmapped seeds or arms) across all devices.

    A jitted ``vmap`` over that axis then runs each device's share of the runs, with no
    communication between them. Leaves whose leading axis does not divide by the device count
    (and every leaf on a single device) are left where they are.
    """
    mesh = parallel.data_mesh()
    if mesh.size == 1:
        return tree

    def place(leaf):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] % mesh.size:
            return leaf
        return jax.device_put(leaf, parallel.batch_sharded(mesh))

    return jax.tree.map(place, tree)


def output_dir(args: argparse.Namespace, name: str) -> str:
    """``args.out/name``, created."""
    path = os.path.join(args.out, name)
    os.makedirs(path, exist_ok=True)
    return path


def declared_seeds(args: argparse.Namespace) -> int:
    """Seeds every check of this run is declared with (``--seeds``)."""
    return int(args.seeds)


def mean_std(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> str:
    """``'m ± s'`` of ``scale * values`` with the sample std (0 for a single value)."""
    v = scale * np.asarray(list(values), dtype=np.float64)
    std = v.std(ddof=1) if v.size > 1 else 0.0
    return f'{v.mean():.{digits}f} ± {std:.{digits}f}'


DIVERGED_KEYS = ('train_loss', 'train_accuracy', 'mean_logit_norm', 'test_loss',
                 'test_accuracy', 'seconds')


@contextlib.contextmanager
def shared_compilations():
    """XLA's persistent compilation cache in a temporary folder while an experiment's runs
    train: each :func:`jaxnorm.train.fit` jits its own steps, and runs of one model and
    optimizer lower to the same initialisation, step and evaluation programs, which are then
    compiled once and loaded from the folder afterwards."""
    if jax.config.jax_compilation_cache_dir:  # already on (nested, or the user's own)
        yield
        return
    minimum = jax.config.jax_persistent_cache_min_compile_time_secs
    with tempfile.TemporaryDirectory() as folder:
        compilation_cache.reset_cache()
        jax.config.update('jax_compilation_cache_dir', folder)
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
        try:
            yield
        finally:
            jax.config.update('jax_compilation_cache_dir', None)
            jax.config.update('jax_persistent_cache_min_compile_time_secs', minimum)
            compilation_cache.reset_cache()


_LOADED_SPLITS: dict[tuple, Any] = {}


def standardized_splits(config: Any):
    """``jaxnorm.train.load_splits(config)``, loaded once per process for every arm and run
    that trains on the same data."""
    from jaxnorm import train  # the quick modes do not need it
    key = (config.dataset, config.data_dir, config.image_size, config.resize)
    if key not in _LOADED_SPLITS:
        _LOADED_SPLITS[key] = train.load_splits(config)
    return _LOADED_SPLITS[key]


def fit_arms(config: Any, arms: dict[str, dict], seeds: int, out_dir: str,
             data_dir: str | None = None, *, batch_seeds: bool = True, splits: Any = None
             ) -> dict[str, list[list[dict]]]:
    """Train every arm over seeds ``0 .. seeds - 1`` with :func:`jaxnorm.train.fit`; the
    per-epoch records, ``histories[arm][seed]``.

    ``config`` is a run config (``ConfigDict``); each arm is it with the arm's overrides on
    top. With ``batch_seeds`` an arm is one seed-batched run
    (``num_seeds = seeds``) in ``out_dir/runs/<arm>``; without, one run per seed in
    ``out_dir/runs/<arm>-seed<k>`` (faster for convolutional models on CPU, where a vmapped
    convolution becomes a slower grouped one). Runs are checkpointed each epoch and resumed
    (or skipped when finished) by the next invocation. A run that diverged keeps its finite
    epochs and NaN for the rest (for every seed of a batched run: it stops as a whole).
    ``splits`` (what :func:`jaxnorm.train.load_splits` returns) trains every arm on those
    arrays instead of the config's dataset.
    """
    from jaxnorm import metrics, train  # the quick modes do not need them
    extra = {'data_dir': data_dir} if data_dir else {}
    runs = ([(None, 0, seeds)] if batch_seeds else [(k, k, 1) for k in range(seeds)])

    def train_arm(arm: str, overrides: dict) -> list[list[dict]]:
        records = []
        for index, first_seed, num_seeds in runs:
            workdir = os.path.join(out_dir, 'runs', arm if index is None else f'{arm}-seed{index}')
            run_config = config_lib.apply_overrides(config, {
                **overrides, **extra, 'seed': first_seed, 'num_seeds': num_seeds,
                'workdir': workdir}, source=f'experiment config + arm {arm!r}')
            arm_splits = standardized_splits(run_config) if splits is None else splits
            try:
                records += train.fit(run_config, resume=True, splits=arm_splits).history
            except train.DivergenceError:  # a diverged run is a result: NaN from there on
                records += metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
        per_seed = []
        for seed in range(seeds):
            history = [r for r in records if r.get('seed', 0) == seed]
            history += [dict.fromkeys(DIVERGED_KEYS, float('nan')) | {'epoch': epoch}
                        for epoch in range(len(history) + 1, run_config.epochs + 1)]
            per_seed.append(history)
        return per_seed

    with shared_compilations():
        return {arm: train_arm(arm, overrides) for arm, overrides in arms.items()}


def train_config(values: Mapping[str, Any], source: str):
    """``scripts/train.py`` config values (``source`` names them in errors) merged over the
    engine's defaults (ValueError on bad keys)."""
    return config_lib.apply_overrides(config_lib.default_config(), values, source=source)


def final_values(histories: dict[str, list[list[dict]]],
                 key: str = 'test_accuracy') -> dict[str, np.ndarray]:
    """Per arm, the last epoch's ``key`` of every seed."""
    return {arm: np.array([runs[-1][key] for runs in per_seed])
            for arm, per_seed in histories.items()}


def epoch_seconds(histories: dict[str, list[list[dict]]]) -> dict[str, float]:
    """Per arm, the median epoch wall time over seeds and epochs after the first (compiling)."""
    return {arm: float(np.nanmedian([r['seconds'] for runs in per_seed for r in runs[1:]]
                                    or [r['seconds'] for runs in per_seed for r in runs]))
            for arm, per_seed in histories.items()}


def arms_table(histories: dict[str, list[list[dict]]], labels: dict[str, str]) -> list[str]:
    """Markdown rows: arm, final test accuracy % (mean ± std), epochs, seconds per epoch."""
    accuracy, seconds = final_values(histories), epoch_seconds(histories)
    rows = ['| arm | test accuracy % | epochs | s / epoch |', '|---|---|---|---|']
    for arm, per_seed in histories.items():
        rows.append(f'| {labels.get(arm, arm)} | {mean_std(accuracy[arm], 100)} | '
                    f'{len(per_seed[0])} | {seconds[arm]:.1f} |')
    return rows


def plot_arms(histories: dict[str, list[list[dict]]], labels: dict[str, str], path: str,
              title: str, key: str = 'test_accuracy') -> str:
    """Mean ± std over seeds of ``key`` per epoch, one line per arm; returns ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for arm, per_seed in histories.items():
        values = 100 * np.array([[r[key] for r in runs] for runs in per_seed])
        epochs = np.arange(1, values.shape[1] + 1)
        ax.plot(epochs, values.mean(0), label=labels.get(arm, arm))
        ax.fill_between(epochs, values.mean(0) - values.std(0), values.mean(0) + values.std(0),
                        alpha=0.2)
    ax.set_xlabel('epoch'), ax.set_ylabel(f"{key.replace('_', ' ')} %")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
