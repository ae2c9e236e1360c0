"""Published baselines of the offline benchmarks, reproduced through :func:`jaxnorm.train.fit`.

MNIST-1D (Greydanus, arXiv:2011.14439) publishes test accuracies for its logistic regression,
MLP and CNN; the rows below train our versions of those models (``logistic``, ``mnist1d_mlp``,
``mnist1d_cnn``, :mod:`jaxnorm.models`) with the authors' setup. For MNIST-5k, which has no
published numbers, the rows measure an MLP, a small CNN and ResNet-20 with BatchNorm under the
library's default SGD setting. Every row is several seeds of the one engine; the table gives
mean and sample standard deviation of the final test accuracy over seeds.

Where each MNIST-1D value comes from (the authors' repository, ``notebooks/train.py``
``get_model_args`` and ``notebooks/mnist1d-classification.ipynb``): Adam with learning rate
1e-2, batch 100, weight decay 0, a constant rate, 6,000 steps (the notebook sets
``total_steps = 6000``; 150 epochs of the 4,000 training examples), no augmentation. Our
differences, kept on purpose: batches are reshuffled every epoch (the authors cycle through
the training set in order), inputs are standardized by the training set's mean and standard
deviation (MNIST-1D already has mean 0.000 and standard deviation 0.998, so this is nearly the
identity), and hidden layers use the library's Kaiming-normal init with zero biases (PyTorch's
default is uniform with bound 1/sqrt(fan_in), biases included).

Run: ``python scripts/baselines.py`` (``--only mnist1d`` or ``--only mnist5k``; resumable: each
run's workdir under ``--root`` is continued, and finished runs are read back).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxnorm import config as config_lib
from jaxnorm import metrics
from jaxnorm import train

_MNIST1D_SETUP = dict(optimizer='adam', lr=1e-2, schedule='constant', weight_decay=0.0,
                      batch_size=100, epochs=150, augment='none')
# The library's default SGD setting (README "Measured"), without augmentation for digits.
_MNIST5K_SETUP = dict(optimizer='sgd', lr=0.05, momentum=0.9, schedule='cosine',
                      weight_decay=5e-4, batch_size=64, augment='none')

SEEDS = (0, 1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One row: a model trained on a dataset with a fixed setup, over :data:`SEEDS`.

    Attributes:
        dataset: a :data:`jaxnorm.data.LOCAL_DATASETS` name.
        model: a :func:`jaxnorm.models.get_model` name.
        norm: the normalizer.
        setup: config overrides (optimizer, rate, batch, epochs, ...).
        published: the published test accuracy in percent, or None.
        authors_run: the authors' own notebook run (one seed), percent, or None.
        source: where ``published`` and the setup come from.
    """

    dataset: str
    model: str
    norm: str
    setup: dict[str, Any]
    published: float | None = None
    authors_run: float | None = None
    source: str = ''

    @property
    def name(self) -> str:
        return f'{self.dataset}-{self.model}-{self.norm}'


_MNIST1D_SOURCE = ('authors\' README table; their notebook run (mnist1d-classification.ipynb, '
                   '6,000 steps, one seed)')
BASELINES: tuple[Baseline, ...] = (
    Baseline('mnist1d', 'logistic', 'none', _MNIST1D_SETUP, 32.0, 31.5, _MNIST1D_SOURCE),
    Baseline('mnist1d', 'mnist1d_mlp', 'none', _MNIST1D_SETUP, 68.0, 65.1, _MNIST1D_SOURCE),
    Baseline('mnist1d', 'mnist1d_cnn', 'none', _MNIST1D_SETUP, 94.0, 92.3, _MNIST1D_SOURCE),
    Baseline('mnist5k', 'mlp', 'bn', {**_MNIST5K_SETUP, 'epochs': 20}),
    Baseline('mnist5k', 'cnn_small', 'bn', {**_MNIST5K_SETUP, 'epochs': 20}),
    Baseline('mnist5k', 'resnet20', 'bn', {**_MNIST5K_SETUP, 'epochs': 10}),
)


def run_config(baseline: Baseline, seed: int, root: str, data_dir: str | None = None):
    """The engine config of one seed of ``baseline``, with its workdir under ``root``."""
    return config_lib.apply_overrides(config_lib.default_config(), {
        'dataset': baseline.dataset, 'model': baseline.model, 'norm': baseline.norm,
        **baseline.setup, 'seed': seed, 'data_dir': data_dir, 'progress': False,
        'workdir': os.path.join(root, f'{baseline.name}-seed{seed}'),
    })


def final_accuracy(config) -> float | None:
    """Test accuracy (0-1) after the last epoch of a finished run in ``config.workdir``."""
    records = metrics.read_jsonl(os.path.join(config.workdir, 'metrics.jsonl'))
    if records and records[-1]['epoch'] == config.epochs:
        return records[-1]['test_accuracy']
    return None


def run(baseline: Baseline, root: str, *, seeds: Sequence[int] = SEEDS,
        data_dir: str | None = None) -> list[float]:
    """Final test accuracies (0-1) of every seed, training or resuming the unfinished ones."""
    accuracies = []
    for seed in seeds:
        config = run_config(baseline, seed, root, data_dir)
        accuracy = final_accuracy(config)
        if accuracy is None:
            resume = os.path.isdir(config.workdir)
            accuracy = train.fit(config, resume=resume).history[-1]['test_accuracy']
        accuracies.append(accuracy)
    return accuracies


def summarize(baseline: Baseline, accuracies: Sequence[float]) -> dict:
    """One table row: mean and sample standard deviation over seeds, in percent."""
    percent = 100 * np.asarray(accuracies, dtype=np.float64)
    return {
        'dataset': baseline.dataset, 'model': baseline.model, 'norm': baseline.norm,
        'setup': baseline.setup, 'seeds': len(percent), 'accuracies': percent.tolist(),
        'mean': float(percent.mean()),
        'std': float(percent.std(ddof=1)) if len(percent) > 1 else 0.0,
        'published': baseline.published, 'authors_run': baseline.authors_run,
        'source': baseline.source,
    }


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table, with the gap to the published number where there is one."""
    lines = ['| dataset | model | norm | epochs | seeds | test accuracy (mean ± std) | published '
             '| authors\' run | gap to published |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        published = '–' if row['published'] is None else f"{row['published']:.0f} %"
        authors = '–' if row['authors_run'] is None else f"{row['authors_run']:.1f} %"
        gap = ('–' if row['published'] is None else
               f"{row['mean'] - row['published']:+.1f} points")
        lines.append(f"| {row['dataset']} | `{row['model']}` | {row['norm']} | "
                     f"{row['setup']['epochs']} | {row['seeds']} | {row['mean']:.1f} ± "
                     f"{row['std']:.1f} % | {published} | {authors} | {gap} |")
    return '\n'.join(lines)


def plot(rows: Sequence[dict], path: str) -> None:
    """Bar chart of the mean accuracy per row with seed-std error bars and published marks."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    labels = [f"{row['dataset']}\n{row['model']}" for row in rows]
    positions = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 1, 3.5))
    ax.bar(positions, [row['mean'] for row in rows], yerr=[row['std'] for row in rows],
           color='tab:blue', alpha=0.7, capsize=4, label='jaxnorm (mean ± std over seeds)')
    published = [(i, row['published']) for i, row in enumerate(rows) if row['published']]
    if published:
        ax.scatter(*zip(*published), color='black', marker='_', s=600, linewidths=2,
                   label='published', zorder=3)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(0, 100)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: Sequence[dict], out_dir: str) -> None:
    """Writes ``baselines.json``, ``baselines.md`` and ``baselines.png`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'baselines.json'), 'w') as f:
        json.dump(list(rows), f, indent=2)
    with open(os.path.join(out_dir, 'baselines.md'), 'w') as f:
        f.write(markdown_table(rows) + '\n')
    plot(rows, os.path.join(out_dir, 'baselines.png'))
