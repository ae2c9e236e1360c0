"""Run records: ``<workdir>/metrics.jsonl`` (one JSON object per epoch) and PNG curves."""
from __future__ import annotations

import json
import os
from typing import Iterable, Mapping

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSON-lines file (an empty list when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, records: Iterable[Mapping]) -> None:
    """Replace ``path`` atomically with ``records``, one JSON object per line."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    os.replace(tmp, path)


def append_jsonl(path: str, record: Mapping) -> None:
    """Append one record and flush it to disk."""
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())


def plot_curves(records: list[Mapping], path: str, title: str = '') -> None:
    """Loss (train and test) and test accuracy against epoch, side by side, as a PNG."""
    epochs = [r['epoch'] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r['train_loss'] for r in records], label='train')
    ax_loss.plot(epochs, [r['test_loss'] for r in records], label='test')
    ax_loss.set(xlabel='epoch', ylabel='cross-entropy', yscale='log', title='loss')
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * r['test_accuracy'] for r in records], color='C2')
    ax_acc.set(xlabel='epoch', ylabel='test accuracy (%)', title='test accuracy')
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
