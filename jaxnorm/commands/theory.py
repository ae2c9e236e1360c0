"""Probe any model and normalizer at initialization (Beyond BatchNorm's measurements).

Prints, per probed layer, the activation variance, the stable rank and the mean cosine
similarity of the samples, and per conv/Dense layer the norm of dL/d(output), then writes a
plot and the numbers to OUT/theory/<model>_<norm>.{png,json}. See ``jaxnorm.theory``.

Models: every name of ``jaxnorm.models.get_model`` plus ``uniform_resnet`` (options
num_blocks=27, width=32, skipinit, preact) and ``uniform_cnn`` (depth=20, width=64).

Examples:
  python scripts/theory.py --model resnet56_wide --norm bn --image-size 8
  python scripts/theory.py --model uniform_resnet --norm sws --model-option skipinit=True
  python scripts/theory.py --model uniform_cnn --norm gn --norm-option group_size=1 --layers convs
  python scripts/theory.py --model vgg_cfg10 --norm ln --inputs digits
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from jaxnorm.cli import (OneLineErrorParser, check_input_dir, check_output_dir, parse_option,
                         show_defaults)
from jaxnorm.layers import norm_names

PROBE_NETWORKS = ('uniform_resnet', 'uniform_cnn')


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='resnet20',
                   help='model name, e.g. resnet56_wide, vgg_cfg10, uniform_resnet, uniform_cnn')
    p.add_argument('--norm', default='bn', help=f"normalizer: {' '.join(norm_names())}")
    p.add_argument('--norm-option', action='append', type=parse_option, default=[],
                   metavar='KEY=VALUE', help='normalizer option, e.g. group_size=4 (repeatable)')
    p.add_argument('--model-option', action='append', type=parse_option, default=[],
                   metavar='KEY=VALUE', help='model option, e.g. skipinit=True or width=0.5')
    p.add_argument('--layers', default='blocks', choices=('blocks', 'activations', 'convs'),
                   help="outputs measured: the model's blocks (default), every activation, or "
                        'every conv')
    p.add_argument('--inputs', default='gaussian', choices=('gaussian', 'digits'),
                   help='N(0, 1) images with random labels, or standardized digits')
    p.add_argument('--batch-size', type=int, default=32, help='samples (>= 2)')
    p.add_argument('--image-size', type=int, default=32, help='side of the input images')
    p.add_argument('--channels', type=int, default=3, help='channels of Gaussian inputs')
    p.add_argument('--num-classes', type=int, default=10)
    p.add_argument('--eval-mode', action='store_true',
                   help='normalize with running statistics (default: batch statistics, as at '
                        'the first training step)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-dir', help='TFDS data dir for --inputs digits')
    p.add_argument('--out', default='results', help='writes OUT/theory/<model>_<norm>.png/.json')
    show_defaults(p)
    return p


def build_model(args):
    from jaxnorm import models
    norm_kwargs, options = dict(args.norm_option), dict(args.model_option)
    valid = (*models.model_names(), *PROBE_NETWORKS)
    if args.model not in valid:
        raise ValueError(f"unknown model {args.model!r}; valid names: {', '.join(valid)}")
    if args.model in PROBE_NETWORKS:
        factory = getattr(models, args.model)
        try:
            return factory(args.norm, num_classes=args.num_classes, norm_kwargs=norm_kwargs,
                           **options)
        except TypeError as err:
            raise TypeError(f'{args.model}: {err}') from None
    return models.get_model(args.model, norm=args.norm, num_classes=args.num_classes,
                            norm_kwargs=norm_kwargs, **options)


def make_batch(args):
    import jax
    import numpy as np
    if args.batch_size < 2:
        raise ValueError(f'--batch-size must be >= 2 (the probes compare samples), got '
                         f'{args.batch_size}')
    key = jax.random.key(args.seed)
    if args.inputs == 'gaussian':
        images = jax.random.normal(jax.random.fold_in(key, 1), (
            args.batch_size, args.image_size, args.image_size, args.channels))
        labels = jax.random.randint(jax.random.fold_in(key, 2), (args.batch_size,), 0,
                                    args.num_classes)
        return images, labels
    from jaxnorm import data
    splits = data.load_standardized('digits', data_dir=args.data_dir,
                                    image_size=args.image_size, resize='bilinear')
    chosen = np.random.default_rng(args.seed).permutation(len(splits.train))[:args.batch_size]
    return splits.train_images[chosen], splits.train_labels[chosen] % args.num_classes


def plot(out: dict, title: str, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    forward = range(1, len(out['layers']) + 1)
    for ax, key, label, scale in ((axes[0], 'variance', 'activation variance', 'log'),
                                  (axes[1], 'stable_rank', 'stable rank', 'linear'),
                                  (axes[2], 'cosine', 'mean cosine', 'linear')):
        ax.plot(forward, out[key], 'o-')
        ax.set(xlabel='probed layer', ylabel=label, yscale=scale, title=label)
    axes[3].plot(range(1, len(out['tapped']) + 1), out['grad_norm'], 'o-', color='C3')
    axes[3].set(xlabel='conv / Dense layer', ylabel='||dL/d output||', yscale='log',
                title='gradient norm')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import jax
    import numpy as np
    from jaxnorm import data, theory
    try:
        check_output_dir(args.out, '--out')
        check_input_dir(args.data_dir, '--data-dir')
        model = build_model(args)
        images, labels = make_batch(args)
        variables = model.init(jax.random.key(args.seed), images[:1])
        out = theory.probe(model, variables, (images, labels), layers=args.layers,
                           train=not args.eval_mode)
    except (ValueError, TypeError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    out = {k: v if isinstance(v, tuple) else np.asarray(v).tolist() for k, v in out.items()}
    print(f"{'layer':<28} {'variance':>11} {'stable rank':>12} {'mean cosine':>12}")
    for name, var, rank, cos in zip(out['layers'], out['variance'], out['stable_rank'],
                                    out['cosine']):
        print(f'{name:<28} {var:>11.4g} {rank:>12.3f} {cos:>12.3f}')
    print(f"\n{'tapped layer':<28} {'||dL/d out||':>12}")
    for name, norm in zip(out['tapped'], out['grad_norm']):
        print(f'{name:<28} {norm:>12.4g}')
    out_dir = os.path.join(args.out, 'theory')
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f'{args.model}_{args.norm}')
    with open(stem + '.json', 'w') as f:
        json.dump({'args': vars(args), **out}, f, indent=1)
    plot(out, f'{args.model}, norm {args.norm}, {args.inputs} inputs, batch {args.batch_size}, '
              f'loss {out["loss"]:.3f}', stem + '.png')
    print(f'\nloss {out["loss"]:.4f}; plot and numbers in {stem}.png / .json')
    return 0

