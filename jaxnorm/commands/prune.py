"""Prune any jaxnorm model early in training: train -> score -> prune (rounds) -> fine-tune.

Gradient-flow pruning (Lubana & Dick, arXiv:2009.11839): every round trains a few epochs,
scores the alive filters with each measure and removes a fraction of them by one global
ranking (per-layer minimum kept); the rounds' fractions reach --target after --rounds rounds.
Writes <workdir>/results.json (settings, per-epoch history, per-round diagnostics, kept
filters, ShrinkBench compression and speed-up) and two PNGs (loss/accuracy curves per
measure with surviving width per layer; per-round diagnostics).

Measures: magnitude, loss_preservation, biased_loss_preservation, grasp,
grad_norm_preservation, random, and dense (no pruning, same schedule).

Examples:
  python scripts/prune_model.py
  python scripts/prune_model.py --measures magnitude grasp grad_norm_preservation --seeds 3
  python scripts/prune_model.py --model resnet20 --target 0.5 --rounds 1 --finetune-epochs 20
  python scripts/prune_model.py --model vgg13 --dataset cifar10 --model-option width=1 --rounds 25
  python scripts/prune_model.py --config scripts/configs/flow_pruning.py   # the paper's scale (GPU)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
from jaxnorm import pruning, pruning_report
from jaxnorm.cli import (OneLineErrorParser, check_input_dir, check_output_dir,
                         config_file_defaults, parse_option, show_defaults)
from jaxnorm.pruning import PruneSettings

MEASURE_CHOICES = ('magnitude', 'loss_preservation', 'biased_loss_preservation', 'grasp',
                   'grad_norm_preservation', 'random', 'dense')
# Flags named like the PruneSettings fields they set (dashes for underscores).
SETTING_FLAGS = {'model': str, 'norm': str, 'dataset': str, 'data_dir': str, 'target': float,
                 'rounds': int, 'round_epochs': int, 'finetune_epochs': int,
                 'batch_size': int, 'prune_lr': float, 'lr': float, 'momentum': float,
                 'weight_decay': float, 'gradient_batches': int, 'hvp_per_class': int,
                 'gradient_temperature': float, 'grasp_temperature': float,
                 'grad_norm_temperature': float, 'min_keep_fraction': float}


def build_parser() -> OneLineErrorParser:
    defaults = PruneSettings()
    p = OneLineErrorParser(description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kind in SETTING_FLAGS.items():
        p.add_argument(f'--{name.replace("_", "-")}', type=kind, default=None,
                       help=f'default {getattr(defaults, name)}')
    p.add_argument('--model-option', action='append', type=parse_option, default=[],
                   metavar='KEY=VALUE', help=f'model option (default {defaults.model_kwargs} '
                   'for the default model, none otherwise), e.g. width=0.5')
    p.add_argument('--measures', nargs='+', default=['magnitude', 'loss_preservation'],
                   choices=MEASURE_CHOICES, metavar='MEASURE',
                   help=f'one or more of: {" ".join(MEASURE_CHOICES)}')
    p.add_argument('--seeds', type=int, default=1, help='seeds 0..N-1 per measure')
    p.add_argument('--score-bn-train', action='store_true',
                   help='score with BatchNorm in train mode (default: running statistics, '
                        'as the reference code)')
    p.add_argument('--protect', choices=('highest_index', 'highest_score'), default=None,
                   help="which filters satisfy a layer's minimum (default highest_index)")
    p.add_argument('--workdir', help='output folder (default runs/prune-<model>-<time>)')
    p.add_argument('--config', help='Python file whose get_config() sets defaults: flag names '
                   '(underscores) and model_kwargs, e.g. scripts/configs/flow_pruning.py')
    show_defaults(p)
    return p


def settings_from_args(args: argparse.Namespace, file_values: dict | None = None
                       ) -> PruneSettings:
    file_values = file_values or {}
    values = {name: getattr(args, name) for name in SETTING_FLAGS
              if getattr(args, name) is not None}
    if ('model_kwargs' in file_values or args.model_option
            or (args.model and args.model != PruneSettings.model)):
        values['model_kwargs'] = {**file_values.get('model_kwargs', {}), **dict(args.model_option)}
    if args.score_bn_train:
        values['score_bn_train'] = True
    if args.protect:
        values['protect'] = args.protect
    return PruneSettings(**values)


def main(argv=None) -> int:
    parser = build_parser()
    file_values = config_file_defaults(parser, argv, extra_keys=('model_kwargs',))
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error('--seeds must be >= 1')
    try:
        check_output_dir(args.workdir, '--workdir')
        check_input_dir(args.data_dir, '--data-dir')
        settings = settings_from_args(args, file_values)
        settings.check()
        started = time.perf_counter()
        workdir = args.workdir or os.path.join(
            'runs', f'prune-{settings.model}-{time.strftime("%Y%m%d-%H%M%S")}')
        # The engine runs live in workdir/runs, so a rerun with --workdir resumes them.
        runner, records = pruning.run_all(settings, args.measures, list(range(args.seeds)),
                                          out_dir=workdir)
    except (ValueError, TypeError, OSError) as error:
        print(f'{parser.prog}: error: {error}', file=sys.stderr)
        return 1
    results = {'paper': 'Lubana & Dick, arXiv:2009.11839', 'settings':
               dataclasses.asdict(settings), 'groups': [g.name for g in runner.groups],
               'seconds': time.perf_counter() - started, 'runs': records}
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    plots = pruning_report.write_plots(records, workdir, 'pruning',
                                       f'{settings.model} / {settings.norm} on '
                                       f'{settings.dataset}, {100 * settings.target:.0f} % '
                                       f'of filters in {settings.rounds} rounds')
    print('\n'.join(pruning_report.summary_table(records)))
    print(f'results.json and {len(plots)} plots in {workdir}')
    return 0

