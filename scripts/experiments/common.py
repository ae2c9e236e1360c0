"""What every paper experiment shares: its command line and the ``results.json`` it writes.

The contract with ``scripts/reproduce.py``: ``--quick --seeds N --out DIR --data-dir D`` on the
command line; ``DIR/<name>/results.json`` holding ``paper, claim, ran, table`` (markdown lines),
``checks`` (``{name, rule, holds}``), ``figures`` (PNG basenames in the same folder) and
``seconds``, plus anything else the experiment wants to keep.

Example::

    args = common.parse_args(__doc__, argv)
    out_dir = common.output_dir(args, 'mimicnorm')
    ...
    common.write_results(out_dir, paper=PAPER, claim=CLAIM, ran=ran, table=rows,
                         checks=[common.check('accuracy', 'MimicNorm within 1 point of BN', ok)],
                         figures=[png], started=started, runs=raw_numbers)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Iterable, Sequence

import numpy as np

from jaxnorm.cli import OneLineErrorParser


def build_parser(description: str, *, default_seeds: int = 3) -> argparse.ArgumentParser:
    """The shared flags; add the experiment's own to the returned parser."""
    parser = OneLineErrorParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='the CPU budget of reproduce.py')
    parser.add_argument('--seeds', type=int, default=default_seeds,
                        help='seeds per configuration (>= 2: tables report a std)')
    parser.add_argument('--out', default='results', help='writes OUT/<name>/results.json')
    parser.add_argument('--data-dir', help='TFDS data dir (digits are embedded)')
    return parser


def parse_args(description: str, argv: Sequence[str] | None = None, *,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse ``argv`` with :func:`build_parser` (or ``parser``) and check ``--seeds >= 2``."""
    parser = parser or build_parser(description)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error('--seeds must be >= 2 (the table reports a standard deviation)')
    return args


def output_dir(args: argparse.Namespace, name: str) -> str:
    """``args.out/name``, created."""
    path = os.path.join(args.out, name)
    os.makedirs(path, exist_ok=True)
    return path


def check(name: str, rule: str, holds: Any) -> dict:
    """One sub-claim: what was tested, the rule applied to this run's numbers, the outcome."""
    return {'name': name, 'rule': rule, 'holds': bool(holds)}


def mean_std(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> str:
    """``'m ± s'`` of ``scale * values`` with the sample std (0 for a single value)."""
    v = scale * np.asarray(list(values), dtype=np.float64)
    std = v.std(ddof=1) if v.size > 1 else 0.0
    return f'{v.mean():.{digits}f} ± {std:.{digits}f}'


def to_json(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python numbers."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_results(out_dir: str, *, paper: str, claim: str, ran: str, table: list[str],
                  checks: list[dict], figures: list[str], started: float, **extra) -> str:
    """Write ``out_dir/results.json`` (the report contract), print a summary, return the path.

    ``started`` is the ``time.perf_counter()`` of the experiment's start; ``figures`` may be
    full paths (their basenames are stored); ``extra`` keys (raw runs, setup) are kept as is.
    """
    seconds = time.perf_counter() - started
    results = {'paper': paper, 'claim': claim, 'ran': ran, 'table': list(table),
               'checks': list(checks), 'figures': [os.path.basename(f) for f in figures],
               'seconds': seconds, **to_json(extra)}
    path = os.path.join(out_dir, 'results.json')
    with open(path, 'w') as f:
        json.dump(results, f, indent=1)
    print('\n'.join(table))
    for c in checks:
        print(f"{c['name']}: {'holds' if c['holds'] else 'does not hold'} ({c['rule']})")
    print(f'{seconds:.0f} s; results in {out_dir}')
    return path
