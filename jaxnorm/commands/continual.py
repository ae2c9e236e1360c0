"""Task-incremental continual learning: any method x importance x benchmark x LR grid.

Every (lr, strength, seed) of one call runs in a single ``jax.vmap``; seeds share the
initialization and batch order across calls, so runs are paired. Prints one line per
configuration (average accuracy and forgetting, mean ± std over seeds) and, with ``--out``,
writes the accuracy matrices as JSON.

Examples:
  python scripts/continual.py                                   # EMR-EWC on split digits
  python scripts/continual.py --method quadratic --importance si --lr 0.1 0.01 \\
      --strength 1e-6 1e-4 1e-2 --seeds 3
  python scripts/continual.py --benchmark permuted_digits --method emr --importance mas
  python scripts/continual.py --benchmark cifar100_superclass --model cnn --epochs 1 \\
      --data-dir ~/tensorflow_datasets                          # GPU/TPU; prepare cifar100
  python scripts/continual.py --config scripts/configs/emr.py   # the paper's grid (GPU/TPU)
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from jaxnorm.cli import (OneLineErrorParser, check_input_dir, check_output_file,
                         config_file_defaults, show_defaults)


def build_parser() -> OneLineErrorParser:
    from jaxnorm.continual import METHODS
    from jaxnorm.data.continual import BENCHMARKS
    from optim.importance import IMPORTANCES
    parser = OneLineErrorParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--benchmark', default='split_digits', choices=BENCHMARKS)
    parser.add_argument('--method', default='emr', choices=METHODS)
    parser.add_argument('--importance', default='ewc', choices=IMPORTANCES)
    parser.add_argument('--lr', type=float, nargs='+', default=[0.03])
    parser.add_argument('--strength', type=float, nargs='+', default=[1.0],
                        help='λ values (quadratic only)')
    parser.add_argument('--seeds', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=1, help='epochs per task')
    parser.add_argument('--batch-size', type=int, default=10)
    parser.add_argument('--momentum', type=float, default=0.9)
    parser.add_argument('--model', default=None, choices=('mlp', 'cnn'),
                        help='default: mlp for digits, cnn for cifar100_superclass')
    parser.add_argument('--data-dir', help='TFDS data dir')
    parser.add_argument('--out', help='write the matrices and metrics to this JSON file')
    parser.add_argument('--config', help='Python file whose get_config() sets flag defaults '
                        '(underscores for dashes), e.g. scripts/configs/emr.py')
    show_defaults(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    config_file_defaults(parser, argv)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print('error: --seeds must be >= 1', file=sys.stderr)
        return 2
    import numpy as np

    from jaxnorm import continual as cl
    from jaxnorm.data import DatasetNotPreparedError
    from jaxnorm.data import continual as dc
    try:
        check_output_file(args.out, '--out')
        check_input_dir(args.data_dir, '--data-dir')
        model = args.model or ('cnn' if args.benchmark == 'cifar100_superclass' else 'mlp')
        setup = cl.Setup(method=args.method, importance=args.importance, epochs=args.epochs,
                         batch_size=args.batch_size, momentum=args.momentum, model=model)
        bench = dc.load_benchmark(args.benchmark, data_dir=args.data_dir)
        strengths = args.strength if args.method == 'quadratic' else [0.0]
        matrices = cl.run_grid(setup, bench, args.lr, strengths, range(args.seeds))
    except (ValueError, OSError, DatasetNotPreparedError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    rows = []
    for i, lr in enumerate(args.lr):
        for j, lam in enumerate(strengths):
            acc = np.array([cl.average_accuracy(m) for m in matrices[i, j]])
            forg = np.array([cl.average_forgetting(m) for m in matrices[i, j]])
            rows.append({'lr': lr, 'strength': lam, 'accuracy': acc.tolist(),
                         'forgetting': forg.tolist(), 'matrices': matrices[i, j].tolist()})
            lam_text = f' λ={lam:g}' if args.method == 'quadratic' else ''
            print(f'{args.method}-{args.importance} lr={lr:g}{lam_text}: accuracy '
                  f'{100 * acc.mean():.1f} ± {100 * acc.std():.1f} %, forgetting '
                  f'{100 * forg.mean():.1f} ± {100 * forg.std():.1f} %')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'args': vars(args), 'runs': rows}, f, indent=1)
    return 0

