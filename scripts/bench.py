#!/usr/bin/env python
"""Benchmarks, measured side by side in one run.

Subcommands:
  norms   forward+backward time of a jitted ResNet-20 train step with every registered
          normalizer, and for bn/ln/gn/in the flax built-in equivalents in the same model.
  prune   inference time of a filter-pruned model compacted to fewer channels vs dense.
  hvp     Hessian-vector product (jvp of grad) vs gradient time on ResNet-56 (goal <= 2.5x).
  optim   train-step time with LAWN, EMR, a quadratic regularizer (EWC) and ADMM around SGD
          vs the bare SGD step, in the same model (goals: LAWN/EMR <= 3 %, ADMM <= 5 %).
  prune   inference time of a 50 %-filter-pruned ResNet-20 and VGG-13: the dense model with
          masked weights against the compacted (physically narrower) model, same outputs.

Examples:
  python scripts/bench.py norms
  python scripts/bench.py norms --quick
  python scripts/bench.py norms --norms bn gn --repeats 50
  python scripts/bench.py hvp --quick
  python scripts/bench.py optim --quick
  python scripts/bench.py prune
  python scripts/bench.py prune --models resnet20 --fraction 0.75 --batch-size 256
"""
from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optim  # noqa: E402
import prune  # noqa: E402
from jaxnorm import layers  # noqa: E402
from jaxnorm.cli import OneLineErrorParser  # noqa: E402
from jaxnorm.models import channels, get_model  # noqa: E402

BN_MOMENTUM, EPSILON = 0.9, 1e-5
# The default GroupNorm grouping, min(32, C), has no single flax equivalent on ResNet-20's
# 16/32/64 channels, so both sides use 8 groups.
BENCH_GROUPS = 8


# ------------------------------------------------------------ flax built-ins as NormSpecs


class FlaxBatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` behind the registry's ``(x, *, train)`` signature."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                            epsilon=EPSILON, use_fast_variance=self.use_fast_variance)(x)


class FlaxLayerNorm(nn.Module):
    """``flax.linen.LayerNorm`` over (H, W, C) with a per-channel affine."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.LayerNorm(epsilon=EPSILON, reduction_axes=(1, 2, 3), feature_axes=-1,
                            use_fast_variance=self.use_fast_variance)(x)


class FlaxGroupNorm(nn.Module):
    """``flax.linen.GroupNorm`` with :data:`BENCH_GROUPS` groups."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.GroupNorm(num_groups=BENCH_GROUPS, epsilon=EPSILON,
                            use_fast_variance=self.use_fast_variance)(x)


class FlaxInstanceNorm(nn.Module):
    """``flax.linen.InstanceNorm``."""

    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        return nn.InstanceNorm(epsilon=EPSILON, use_fast_variance=self.use_fast_variance)(x)


FLAX_BUILTINS = {'bn': FlaxBatchNorm, 'ln': FlaxLayerNorm, 'gn': FlaxGroupNorm,
                 'in': FlaxInstanceNorm}
OUR_OPTIONS = {'bn': {'momentum': BN_MOMENTUM}, 'gn': {'num_groups': BENCH_GROUPS}}


def flax_spec(name: str, use_fast_variance: bool) -> layers.NormSpec:
    """The registry entry ``name`` with its norm slot replaced by the flax built-in."""
    factory = functools.partial(FLAX_BUILTINS[name], use_fast_variance=use_fast_variance)
    return dataclasses.replace(layers.get_norm(name), name=f'flax_{name}', norm=factory)


# ------------------------------------------------------------------------------ timing


def make_train_step(model: nn.Module, batch_size: int, image_size: int):
    """A jitted SGD step (loss, gradients, parameter and batch_stats update) and its inputs."""
    x = jax.random.normal(jax.random.key(0), (batch_size, image_size, image_size, 3))
    labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, 10)
    variables = model.init(jax.random.key(2), x)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})

    def loss_fn(params, batch_stats):
        logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                      train=True, mutable=['batch_stats'])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates.get('batch_stats', {})

    @jax.jit
    def step(params, batch_stats):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats)
        params = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
        return params, batch_stats, loss

    return step, (params, batch_stats)


def threaded(step, state) -> Callable[[], Any]:
    """A zero-argument call of ``step(*state)`` that feeds the step's first outputs (the new
    state) into the next call; it returns every output, so timing blocks on all of them."""
    state = list(state)

    def call():
        outputs = step(*state)
        state[:] = outputs[:len(state)]
        return outputs
    return call


def median_times(calls: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each zero-argument call, timed round-robin after warm-up."""
    for _ in range(warmup):  # the first call compiles
        jax.block_until_ready([call() for call in calls.values()])
    times = {key: [] for key in calls}
    for _ in range(repeats):  # round-robin: background load hits every variant alike
        for key, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * statistics.median(t) for key, t in times.items()}


def bench_norms(args) -> int:
    variants: dict[str, tuple[str, object]] = {}
    for name in args.norms:
        variants[name] = (name, layers.get_norm(name, **OUR_OPTIONS.get(name, {})))
        if name in FLAX_BUILTINS:
            variants[f'{name}:flax'] = (name, flax_spec(name, use_fast_variance=False))
            variants[f'{name}:flax_fast'] = (name, flax_spec(name, use_fast_variance=True))

    print(f'{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}x3, '
          f'device {jax.devices()[0].device_kind} x{jax.device_count()}; '
          f'{args.warmup} warm-up + median of {args.repeats}', flush=True)
    steps = {}
    for key, (_, spec) in variants.items():
        model = get_model(args.model, norm=spec, num_classes=10)
        steps[key] = threaded(*make_train_step(model, args.batch_size, args.image_size))
    median_ms = median_times(steps, args.repeats, args.warmup)

    header = (f'{"norm":<12}{"jaxnorm ms":>12}{"flax ms":>10}{"ratio":>8}'
              f'{"flax fast ms":>14}{"ratio":>8}{"vs bn":>8}')
    print(header)
    print('-' * len(header))
    bn_ms = median_ms.get('bn')
    for name in args.norms:
        ours = median_ms[name]
        row = f'{name:<12}{ours:>12.1f}'
        if name in FLAX_BUILTINS:
            two_pass, fast = median_ms[f'{name}:flax'], median_ms[f'{name}:flax_fast']
            row += f'{two_pass:>10.1f}{ours / two_pass:>7.3f}x{fast:>14.1f}{ours / fast:>7.3f}x'
        else:
            row += f'{"-":>10}{"-":>8}{"-":>14}{"-":>8}'
        row += f'{ours / bn_ms:>7.2f}x' if bn_ms else f'{"-":>8}'
        print(row)
    print("flax = built-in with use_fast_variance=False (jaxnorm's two-pass numerics); "
          'flax fast = its default one-pass variance. ratio = jaxnorm / flax.')
    return 0


def pruned_pair(name: str, fraction: float, batch_size: int, image_size: int):
    """Dense model with masked weights and its compacted twin, as jitted inference calls.

    Every prunable layer loses ``fraction`` of its filters (the lowest L2 norms at a random
    initialization: which ones is irrelevant to the timing).
    """
    model = get_model(name, norm='bn', num_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch_size, image_size, image_size, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x[:1])
    groups = channels.channel_groups(model, variables)
    scores = jax.device_get(prune.filter_scores('magnitude', variables['params'], groups))
    alive = prune.select_survivors(scores, {g.name: np.ones(g.width, bool) for g in groups},
                                   fraction, scope='layer')
    masks = prune.structured_masks(variables['params'], groups, alive)
    masked = {**variables, 'params': prune.apply_masks(variables['params'], masks)}
    small_vars, widths = prune.compact(masked, groups, alive)
    small = channels.compact_model(model, widths)
    report = prune.layer_report(masked['params'], masks,
                                positions=channels.kernel_positions(model, masked, x[:1]))
    infer = jax.jit(lambda module, v: module.apply(v, x, train=False), static_argnums=0)
    return ({'dense': lambda: infer(model, masked), 'compact': lambda: infer(small, small_vars)},
            report['total'])


def bench_prune(args) -> int:
    print(f'inference, batch {args.batch_size}, {args.image_size}x{args.image_size}x3, BN eval '
          f'mode, {100 * args.fraction:.0f} % of the filters of every prunable layer removed '
          f'(ResNets: block-internal conv1 only); device {jax.devices()[0].device_kind} '
          f'x{jax.device_count()}; {args.warmup} warm-up + median of {args.repeats}', flush=True)
    header = (f'{"model":<10}{"dense ms":>10}{"compact ms":>12}{"speed-up":>10}'
              f'{"FLOP ratio":>12}{"params kept":>13}{"max |diff|":>12}')
    rows = []
    for name in args.models:
        calls, totals = pruned_pair(name, args.fraction, args.batch_size, args.image_size)
        outputs = {key: jax.block_until_ready(call()) for key, call in calls.items()}
        ms = median_times(calls, args.repeats, args.warmup - 1)
        dense_ms, compact_ms = ms['dense'], ms['compact']
        diff = float(np.max(np.abs(np.asarray(outputs['dense']) - np.asarray(outputs['compact']))))
        rows.append(f'{name:<10}{dense_ms:>10.1f}{compact_ms:>12.1f}{dense_ms / compact_ms:>9.2f}x'
                    f'{totals["speedup"]:>11.2f}x{totals["kept"] / totals["params"]:>12.1%}'
                    f'{diff:>12.1e}')
    print(header)
    print('-' * len(header))
    print('\n'.join(rows))
    print('speed-up = dense / compact wall time; FLOP ratio = dense / remaining multiply-adds '
          '(ShrinkBench); the dense model runs the masked weights.')
    return 0


def classifier_setup(model_name: str, batch_size: int, image_size: int):
    """(model, variables, batch, loss(params) with BN in train mode) on random inputs."""
    model = get_model(model_name, norm='bn', num_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch_size, image_size, image_size, 3))
    labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, 10)
    variables = model.init(jax.random.key(2), x)

    def loss(params):
        logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                                mutable=['batch_stats'])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return model, variables, loss


def bench_hvp(args) -> int:
    _, variables, loss = classifier_setup(args.model, args.batch_size, args.image_size)
    params = variables['params']
    vector = jax.tree.map(jnp.ones_like, params)
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])
    ms = median_times({'grad': lambda: grad(params), 'hvp': lambda: hvp(params, vector)},
                      args.repeats, args.warmup)
    print(f'{args.model} (BN train mode), batch {args.batch_size}, '
          f'{args.image_size}x{args.image_size}x3, device {jax.devices()[0].device_kind}; '
          f'median of {args.repeats}')
    print(f'gradient {ms["grad"]:.1f} ms, Hessian-vector product {ms["hvp"]:.1f} ms: '
          f'{ms["hvp"] / ms["grad"]:.2f}x (goal <= 2.5x)')
    return 0


def optimizer_variants() -> dict[str, optax.GradientTransformation]:
    """Bare SGD and each library transform wrapped around the same SGD."""
    sgd = optax.sgd(0.01, momentum=0.9)
    spec = prune.UnifySpec(block_shape=(1, 4), unify_ratio=0.5, prune_ratio=0.25, pad=True)
    return {'sgd': sgd,
            'lawn': optim.lawn(sgd, free_steps=0, mask=optim.regex_mask('head/kernel')),
            'emr': optim.emr(sgd, 'ewc', mask=optim.regex_mask('^(?!head)')),
            'ewc': optim.ewc(sgd, strength=1.0, mask=optim.regex_mask('^(?!head)')),
            'admm': prune.admm(sgd, spec, rho=1e-3, update_every=10)}


def bench_optim(args) -> int:
    _, variables, loss = classifier_setup(args.model, args.batch_size, args.image_size)
    steps = {}
    for name, tx in optimizer_variants().items():
        def step(params, opt_state, tx=tx):
            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        steps[name] = threaded(jax.jit(step), (variables['params'], tx.init(variables['params'])))
    ms = median_times(steps, args.repeats, args.warmup)
    print(f'{args.model} (BN) train step, batch {args.batch_size}, '
          f'{args.image_size}x{args.image_size}x3, device {jax.devices()[0].device_kind}; '
          f'median of {args.repeats}, round-robin')
    print(f'{"optimizer":<10}{"step ms":>10}{"overhead":>10}')
    for name, value in ms.items():
        print(f'{name:<10}{value:>10.1f}{100 * (value / ms["sgd"] - 1):>9.1f}%')
    return 0


def main(argv=None) -> int:
    parser = OneLineErrorParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True, parser_class=OneLineErrorParser)
    norms = commands.add_parser('norms', help='train-step time of every normalizer vs flax')
    norms.add_argument('--model', default='resnet20', help='model name (default resnet20)')
    norms.add_argument('--norms', nargs='+', default=list(layers.norm_names()),
                       choices=layers.norm_names(), metavar='NORM',
                       help=f'subset of: {" ".join(layers.norm_names())}')
    norms.add_argument('--batch-size', type=int, default=128)
    norms.add_argument('--image-size', type=int, default=32)
    norms.add_argument('--repeats', type=int, default=20, help='timed steps per norm')
    norms.add_argument('--warmup', type=int, default=2, help='untimed steps (first compiles)')
    norms.add_argument('--quick', action='store_true', help='3 repeats, 1 warm-up')
    pruned = commands.add_parser('prune', help='compacted vs dense inference time after '
                                 'filter pruning')
    pruned.add_argument('--models', nargs='+', default=['resnet20', 'vgg13'],
                        help='VGG / ResNet models (default resnet20 vgg13)')
    pruned.add_argument('--fraction', type=float, default=0.5,
                        help='fraction of the filters of every prunable layer removed')
    pruned.add_argument('--batch-size', type=int, default=128)
    pruned.add_argument('--image-size', type=int, default=32)
    pruned.add_argument('--repeats', type=int, default=10, help='timed calls per model')
    pruned.add_argument('--warmup', type=int, default=2, help='untimed calls (first compiles)')
    pruned.add_argument('--quick', action='store_true', help='3 repeats, 1 warm-up, batch 32')
    for name, model, batch_size, helptext in (
            ('hvp', 'resnet56', 128, 'Hessian-vector product vs gradient time'),
            ('optim', 'resnet20', 128, 'step overhead of the optax transforms vs bare SGD')):
        command = commands.add_parser(name, help=helptext)
        command.add_argument('--model', default=model, help=f'model name (default {model})')
        command.add_argument('--batch-size', type=int, default=batch_size)
        command.add_argument('--image-size', type=int, default=32)
        command.add_argument('--repeats', type=int, default=10, help='timed calls per variant')
        command.add_argument('--warmup', type=int, default=2, help='untimed calls (first compiles)')
        command.add_argument('--quick', action='store_true', help='3 repeats, 1 warm-up, batch 32')
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
        if args.command != 'norms':
            args.batch_size = 32
    if min(args.batch_size, args.image_size, args.repeats) < 1 or args.warmup < 1:
        parser.error('--batch-size, --image-size, --repeats and --warmup must be >= 1')
    try:
        return {'norms': bench_norms, 'prune': bench_prune, 'hvp': bench_hvp,
                'optim': bench_optim}[args.command](args)
    except (ValueError, TypeError) as error:
        print(f'bench.py: error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
