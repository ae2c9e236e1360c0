"""Run records: ``<workdir>/metrics.jsonl`` (one JSON object per epoch) and PNG curves."""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Iterable, Mapping

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


class MetricsFileError(ValueError):
    """A metrics file has a line that is not JSON (other than a truncated last one)."""


def _strict(record: Mapping) -> dict:
    """``record`` with NaN/infinite numbers as None, their keys listed under ``nonfinite``
    (strict JSON: parsers outside Python reject NaN and Infinity)."""
    bad = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
    if not bad:
        return dict(record)
    return {**{k: None if k in bad else v for k, v in record.items()}, 'nonfinite': bad}


def _dumps(record: Mapping) -> str:
    return json.dumps(_strict(record), allow_nan=False)


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSON-lines file (an empty list when it does not exist).

    A truncated last line (a process killed while appending) is dropped with a warning;
    any other line that is not JSON raises :class:`MetricsFileError` naming file and line.
    Values written as None because they were not finite come back as NaN.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if index == len(lines) - 1 and not line.endswith('\n'):
                warnings.warn(f'{path}: dropped a truncated last line {number} ({error})')
                break
            raise MetricsFileError(f'{path}, line {number}: not a JSON record ({error}); '
                                   'fix or delete that line') from None
        records.append({**record, **dict.fromkeys(record.get('nonfinite', ()), math.nan)})
    return records


def write_jsonl(path: str, records: Iterable[Mapping]) -> None:
    """Replace ``path`` atomically with ``records``, one strict-JSON object per line."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        for record in records:
            f.write(_dumps(record) + '\n')
    os.replace(tmp, path)


def append_jsonl(path: str, record: Mapping) -> None:
    """Append one strict-JSON record and flush it to disk."""
    with open(path, 'a') as f:
        f.write(_dumps(record) + '\n')
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
