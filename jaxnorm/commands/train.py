"""Train any jaxnorm model with any normalizer on any dataset.

With no flags: ResNet-20 with BatchNorm on the embedded digits data, printing the final test
accuracy. Values come from the defaults, then ``--config FILE`` (a Python file with
``get_config()``), then the flags given here.

Examples:
  python scripts/train.py
  python scripts/train.py --model vgg_cfg10 --norm gn --norm-option num_groups=8 --epochs 10
  python scripts/train.py --config scripts/configs/digits_resnet20.py --workdir runs/a --resume
  python scripts/train.py --model mlp --optimizer adam --lr 1e-3 --lawn-free-epochs 3
  python scripts/train.py --afan stage1_block3 --afan-steps 5 --afan-step-size 0.002
  python scripts/train.py --model mlp --num-seeds 8   # 8 seeds in one vmapped step
  # multi-process (one command per process or per host):
  python scripts/train.py --coordinator-address HOST:1234 --num-processes 2 --process-id 0
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from jaxnorm.cli import (OneLineErrorParser, check_distributed, check_input_dir,
                         check_output_dir, parse_option, show_defaults)
from jaxnorm.layers import norm_names

FLAG_TO_KEY = {
    'model': 'model', 'norm': 'norm', 'dataset': 'dataset', 'data_dir': 'data_dir',
    'image_size': 'image_size', 'resize': 'resize', 'augment': 'augment', 'epochs': 'epochs',
    'passes_per_epoch': 'passes_per_epoch',
    'batch_size': 'batch_size', 'eval_batch_size': 'eval_batch_size', 'optimizer': 'optimizer',
    'lr': 'lr', 'momentum': 'momentum', 'schedule': 'schedule', 'warmup_epochs': 'warmup_epochs',
    'nesterov': 'nesterov',
    'lr_decay_epochs': 'lr_decay_epochs',
    'weight_decay': 'weight_decay', 'label_smoothing': 'label_smoothing', 'seed': 'seed',
    'num_seeds': 'num_seeds', 'workdir': 'workdir', 'keep_checkpoints': 'keep_checkpoints',
    'divergence_factor': 'divergence_factor',
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', help='Python file whose get_config() sets defaults for this run')
    run = p.add_argument_group('model and data')
    run.add_argument('--model', help='model name, e.g. resnet20, resnet56_wide, vgg_cfg10, mlp')
    run.add_argument('--norm', help=f"normalizer: {' '.join(norm_names())}")
    run.add_argument('--norm-option', action='append', type=parse_option, default=[],
                     metavar='KEY=VALUE', help='normalizer option, e.g. num_groups=8 (repeatable)')
    run.add_argument('--model-option', action='append', type=parse_option, default=[],
                     metavar='KEY=VALUE', help='model option, e.g. width=2 or skipinit=True')
    run.add_argument('--dataset', help="'digits' (embedded) or a prepared TFDS name, e.g. cifar10")
    run.add_argument('--data-dir', help='TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)')
    run.add_argument('--image-size', type=int, help='pad/resize images to this side length')
    run.add_argument('--resize', choices=('pad', 'bilinear'),
                     help='how images reach --image-size (default: zero padding)')
    run.add_argument('--augment', choices=('none', 'flip', 'crop_flip'))
    opt = p.add_argument_group('optimization')
    opt.add_argument('--epochs', type=int)
    opt.add_argument('--passes-per-epoch', type=int, metavar='P',
                     help='passes over the training set per epoch (one record, evaluation '
                          'and checkpoint each), e.g. for long full-batch runs')
    opt.add_argument('--batch-size', type=int, help='global batch size')
    opt.add_argument('--eval-batch-size', type=int)
    opt.add_argument('--optimizer', choices=('sgd', 'adam', 'adamw', 'lamb'))
    opt.add_argument('--lr', type=float, help='peak learning rate')
    opt.add_argument('--momentum', type=float, help='SGD momentum (0 for plain SGD)')
    opt.add_argument('--nesterov', action=argparse.BooleanOptionalAction, default=None,
                     help="SGD: Nesterov's momentum")
    opt.add_argument('--schedule', choices=('constant', 'cosine', 'step', 'linear'))
    opt.add_argument('--warmup-epochs', type=float)
    opt.add_argument('--lr-decay-epochs', type=float, nargs='+', metavar='EPOCH',
                     help="with --schedule step: epochs where the rate drops tenfold "
                          '(default: 50 %% and 75 %% of training)')
    opt.add_argument('--weight-decay', type=float)
    opt.add_argument('--no-decay-norm-and-bias', action='store_true', default=None,
                     help='decay only kernels, not norm parameters and biases')
    opt.add_argument('--label-smoothing', type=float)
    opt.add_argument('--seed', type=int)
    opt.add_argument('--num-seeds', type=int, metavar='S',
                     help='train seeds seed..seed+S-1 at once in one vmapped step')
    add_extension_flags(p)
    out = p.add_argument_group('run')
    out.add_argument('--workdir', help='folder for checkpoints, metrics.jsonl and plots')
    out.add_argument('--resume', action='store_true',
                     help='continue from the newest checkpoint, with the same settings')
    out.add_argument('--resume-from', type=int, metavar='EPOCH',
                     help="restart from this epoch's checkpoint (later ones are deleted) with "
                          'the settings given now, e.g. a lower --lr after a divergence')
    out.add_argument('--accept-changes', action='store_true',
                     help='with --resume: continue although trajectory settings changed')
    out.add_argument('--divergence-factor', type=float, metavar='F',
                     help='stop when a step loss exceeds F x the reference loss (default 1000)')
    out.add_argument('--keep-checkpoints', type=int)
    out.add_argument('--no-progress', action='store_true', help='no progress bar')
    dist = p.add_argument_group('multi-process (GPU nodes, TPU pods)')
    dist.add_argument('--distributed', action='store_true',
                      help='join a cluster that JAX detects itself (TPU pod, SLURM, MPI)')
    dist.add_argument('--coordinator-address', help='HOST:PORT of process 0')
    dist.add_argument('--num-processes', type=int)
    dist.add_argument('--process-id', type=int)
    from jaxnorm import config as config_lib
    defaults = config_lib.default_config()
    show_defaults(p, {**{flag: defaults[key] for flag, key in FLAG_TO_KEY.items()},
                      **{dest: defaults[key] for dest, key in extension_flags().items()}})
    return p


def extension_flags() -> dict[str, str]:
    """``{argparse dest: 'section.option'}`` for every registered extension's options."""
    from jaxnorm import extension
    return {f'{name}__{option}': f'{name}.{option}'
            for name, cls in extension.registered().items() for option in cls.options}


def add_extension_flags(parser: argparse.ArgumentParser) -> None:
    """One flag group per extension, from its schema: ``--<name>-<option>`` (and
    ``--<name>`` for the option that switches it on), typed and with its choices."""
    from jaxnorm import extension
    for name, cls in extension.registered().items():
        group = parser.add_argument_group(name, cls.summary)
        for option, spec in cls.options.items():
            prefix = '--' + name.replace('_', '-')
            flags = [f"{prefix}-{option.replace('_', '-')}"]
            if option == cls.switch:
                flags.insert(0, prefix)
            kwargs = {'dest': f'{name}__{option}', 'help': spec.help.replace('%', '%%'),
                      'default': None}
            if spec.value_type is bool:
                kwargs['action'] = argparse.BooleanOptionalAction
            elif spec.value_type is tuple:
                item = type(spec.default[0]) if spec.default else float
                kwargs.update(type=item, nargs='+', metavar=option.upper())
            else:
                kwargs.update(type=spec.value_type, choices=spec.choices,
                              metavar=None if spec.choices else option.upper())
            group.add_argument(*flags, **kwargs)


def config_from_args(args):
    from jaxnorm import config as config_lib
    cfg = (config_lib.load_config_file(args.config) if args.config
           else config_lib.default_config())
    overrides = {key: getattr(args, flag) for flag, key in FLAG_TO_KEY.items()
                 if getattr(args, flag) is not None}
    if args.no_decay_norm_and_bias:
        overrides['no_decay_norm_and_bias'] = True
    overrides.update({key: getattr(args, dest) for dest, key in extension_flags().items()
                      if getattr(args, dest) is not None})
    if args.no_progress:
        overrides['progress'] = False
    if args.norm_option:
        overrides['norm_kwargs'] = {**cfg.norm_kwargs, **dict(args.norm_option)}
    if args.model_option:
        overrides['model_kwargs'] = {**cfg.model_kwargs, **dict(args.model_option)}
    return config_lib.apply_overrides(cfg, overrides, source='command line')


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from jaxnorm import checkpoints, data, parallel, train
    try:  # every input is checked before anything is written or any process joins
        if not args.distributed:
            check_distributed(args.coordinator_address, args.num_processes, args.process_id)
        cfg = config_from_args(args)
        check_output_dir(cfg.workdir, '--workdir')
        check_input_dir(cfg.data_dir, '--data-dir')
        if args.resume and cfg.workdir and not checkpoints.RunCheckpointer(cfg.workdir).epochs():
            raise FileNotFoundError(f'--resume: no checkpoint to resume in workdir '
                                    f'{cfg.workdir!r}; drop --resume to start a new run')
        if args.distributed or args.coordinator_address:
            parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                            args.process_id)
        result = train.fit(cfg, resume=args.resume, resume_from=args.resume_from,
                           accept_changes=args.accept_changes)
    except (ValueError, TypeError, OSError, data.DatasetNotPreparedError,
            checkpoints.IncompatibleCheckpointError, train.DivergenceError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    last = result.history[-1]
    print(f"final test accuracy: {100 * last['test_accuracy']:.2f}% after epoch {last['epoch']} "
          f"({sum(r['seconds'] for r in result.history):.0f} s of training); "
          f'metrics and plots in {result.workdir}')
    return 0

