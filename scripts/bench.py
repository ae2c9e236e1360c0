#!/usr/bin/env python
"""Benchmarks, measured side by side in one run.

Subcommands:
  norms   forward+backward time of a jitted ResNet-20 train step with every registered
          normalizer, and for bn/ln/gn/in the flax built-in equivalents in the same model.
  torch   the same ResNet-20 step for each of the 11 normalizers against an equivalent
          PyTorch model (scripts/bench_torch.py; needs the optional torch), at 32x32 and 8x8.
  hvp     Hessian-vector product (jvp of grad) vs gradient time on ResNet-56 (goal <= 2.5x).
  optim   train-step time with each optax transform of the library around SGD vs the bare
          SGD step, in the same model.
  prune   inference time of a 50 %-filter-pruned ResNet-20 and VGG-13: the dense model with
          masked weights against the compacted (physically narrower) model, same outputs.
  memory  compiled train-step memory (XLA memory analysis) of MimicNorm vs BN vs none.
  peak    ResNet-20 train-step FLOP/s as a fraction of the measured fp32 matmul peak, beside
          single convs and the step without normalization (scripts/bench_peak.py).
  seeds   S = 8 seeds trained by one vmapped engine step vs the same 8 one after another,
          for the MLP, a small CNN and ResNet-20 on digits (jaxnorm.seed_bench).
  cost    for each paper's ``paper`` config: FLOPs per step, parameter, optimizer-state and
          activation memory, steps in the whole run and hours on an H100 at 40 % of its
          dense TF32 peak, from the compiled step on CPU (scripts/bench_cost.py).

Every subcommand prints a markdown table headed by the machine description; ``--json PATH``
also writes the raw numbers. Variants are timed round-robin (jaxnorm.timing), so
background load slows them alike and the ratios hold.

Examples:
  python scripts/bench.py norms --quick
  python scripts/bench.py norms --norms bn gn --repeats 50
  python scripts/bench.py torch --norms bn gn --image-sizes 32
  python scripts/bench.py hvp --quick
  python scripts/bench.py optim --json optim.json
  python scripts/bench.py prune --models resnet20 --fractions 0.75 --batch-size 256
  python scripts/bench.py peak --xla-flags
  python scripts/bench.py cost --papers LAWN EMR
  python scripts/bench.py seeds --num-seeds 8
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optim  # noqa: E402
import prune  # noqa: E402
from jaxnorm import layers, mimicnorm  # noqa: E402
from jaxnorm.cli import OneLineErrorParser  # noqa: E402
from jaxnorm.losses import mean_cross_entropy  # noqa: E402
from jaxnorm.models import channels, get_model  # noqa: E402
from jaxnorm.timing import median_times, threaded  # noqa: E402
# The benchmark's sibling modules: importable because Python puts this file's folder first.
from bench_flax import FLAX_BUILTINS, OUR_OPTIONS, flax_spec  # noqa: E402
from bench_timing import Result, machine, make_train_step  # noqa: E402

def setup_line(args, what: str) -> str:
    return (f'{what}, batch {args.batch_size}, {args.image_size}x{args.image_size}x3; '
            f'{args.warmup} warm-up + median of {args.repeats}, round-robin')


def bench_norms(args) -> Result:
    variants: dict[str, tuple[str, object]] = {}
    for name in args.norms:
        variants[name] = (name, layers.get_norm(name, **OUR_OPTIONS.get(name, {})))
        if name in FLAX_BUILTINS:
            variants[f'{name}:flax'] = (name, flax_spec(name, use_fast_variance=False))
            variants[f'{name}:flax_fast'] = (name, flax_spec(name, use_fast_variance=True))

    steps = {}
    for key, (_, spec) in variants.items():
        model = get_model(args.model, norm=spec, num_classes=10)
        steps[key] = threaded(*make_train_step(model, args.batch_size, args.image_size))
    median_ms = median_times(steps, args.repeats, args.warmup)

    rows = []
    bn_ms = median_ms.get('bn')
    for name in args.norms:
        ours = median_ms[name]
        row = [name, f'{ours:.1f}']
        if name in FLAX_BUILTINS:
            two_pass, fast = median_ms[f'{name}:flax'], median_ms[f'{name}:flax_fast']
            row += [f'{two_pass:.1f}', f'{ours / two_pass:.3f}x', f'{fast:.1f}',
                    f'{ours / fast:.3f}x']
        else:
            row += ['-'] * 4
        rows.append(row + [f'{ours / bn_ms:.2f}x' if bn_ms else '-'])
    return Result(
        'norms: train-step time per normalizer vs the flax built-ins',
        setup_line(args, f'{args.model} SGD step'),
        ['norm', 'jaxnorm ms', 'flax ms', 'ratio', 'flax fast ms', 'ratio', 'vs bn'], rows,
        ["flax = built-in with use_fast_variance=False (jaxnorm's two-pass numerics); flax "
         'fast = its default one-pass variance. ratio = jaxnorm / flax (goal <= 1.05x).'],
        median_ms)


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


def bench_prune(args) -> Result:
    rows, data = [], {}
    for name in args.models:
        for fraction in args.fractions:
            calls, totals = pruned_pair(name, fraction, args.batch_size, args.image_size)
            outputs = {key: jax.block_until_ready(call()) for key, call in calls.items()}
            ms = median_times(calls, args.repeats, args.warmup - 1)
            dense_ms, compact_ms = ms['dense'], ms['compact']
            diff = float(np.max(np.abs(np.asarray(outputs['dense'])
                                       - np.asarray(outputs['compact']))))
            rows.append([name, f'{fraction:.0%}', f'{dense_ms:.1f}', f'{compact_ms:.1f}',
                         f'{dense_ms / compact_ms:.2f}x', f'{totals["speedup"]:.2f}x',
                         f'{totals["kept"] / totals["params"]:.1%}', f'{diff:.1e}'])
            data[f'{name}@{fraction}'] = {'dense_ms': dense_ms, 'compact_ms': compact_ms,
                                          'flop_ratio': totals['speedup'],
                                          'max_abs_diff': diff}
    return Result(
        'prune: compacted vs dense inference after removing a fraction of the filters',
        setup_line(args, 'inference, BN eval mode, every prunable layer (ResNets: '
                   'block-internal conv1 only)'),
        ['model', 'filters removed', 'dense ms', 'compact ms', 'speed-up', 'FLOP ratio',
         'params kept', 'max abs diff'], rows,
        ['speed-up = dense / compact wall time (goal >= 2x at 50 %); FLOP ratio = dense / '
         'remaining multiply-adds (ShrinkBench); the dense model runs the masked weights.'],
        data)


def classifier_setup(model_name: str, batch_size: int, image_size: int):
    """(model, variables, batch, loss(params) with BN in train mode) on random inputs."""
    model = get_model(model_name, norm='bn', num_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch_size, image_size, image_size, 3))
    labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, 10)
    variables = model.init(jax.random.key(2), x)

    def loss(params):
        logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                                mutable=['batch_stats'])
        return mean_cross_entropy(logits, labels)
    return model, variables, loss


def bench_hvp(args) -> Result:
    _, variables, loss = classifier_setup(args.model, args.batch_size, args.image_size)
    params = variables['params']
    vector = jax.tree.map(jnp.ones_like, params)
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])
    ms = median_times({'grad': lambda: grad(params), 'hvp': lambda: hvp(params, vector)},
                      args.repeats, args.warmup)
    return Result('hvp: Hessian-vector product vs gradient',
                  setup_line(args, f'{args.model}, BN in train mode'),
                  ['gradient ms', 'HVP ms', 'ratio'],
                  [[f'{ms["grad"]:.1f}', f'{ms["hvp"]:.1f}', f'{ms["hvp"] / ms["grad"]:.2f}x']],
                  ['HVP = jax.jvp of jax.grad (forward-over-reverse); goal <= 2.5x.'], ms)


def optimizer_variants() -> dict[str, optax.GradientTransformation]:
    """Bare SGD and each library transform wrapped around the same SGD."""
    sgd = optax.sgd(0.01, momentum=0.9)
    spec = prune.UnifySpec(block_shape=(1, 4), unify_ratio=0.5, prune_ratio=0.25, pad=True)
    return {'sgd': sgd,
            'lawn': optim.lawn(sgd, free_steps=0, mask=optim.regex_mask('head/kernel')),
            'emr': optim.emr(sgd, 'ewc', mask=optim.regex_mask('^(?!head)')),
            'ewc': optim.ewc(sgd, strength=1.0, mask=optim.regex_mask('^(?!head)')),
            'admm': prune.admm(sgd, spec, rho=1e-3, update_every=10),
            'orthoreg': optax.chain(optim.orthoreg(1e-2, mask=optim.regex_mask('^(?!head)')),
                                    sgd)}


def bench_optim(args) -> Result:
    _, variables, loss = classifier_setup(args.model, args.batch_size, args.image_size)
    steps = {}
    for name, tx in optimizer_variants().items():
        def step(params, opt_state, tx=tx):
            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        steps[name] = threaded(jax.jit(step), (variables['params'], tx.init(variables['params'])))
    ms = median_times(steps, args.repeats, args.warmup)
    rows = [[name, f'{value:.1f}', f'{100 * (value / ms["sgd"] - 1):+.1f} %']
            for name, value in ms.items()]
    return Result('optim: step overhead of the optax transforms vs bare SGD',
                  setup_line(args, f'{args.model} (BN) train step'),
                  ['optimizer', 'step ms', 'overhead'], rows,
                  ['Goals: LAWN and EMR <= 3 %, ADMM <= 5 %, OrthoReg <= 10 %.'], ms)


def bench_torch(args) -> Result:
    try:
        import bench_torch as twins
    except ImportError as error:
        raise ValueError(f'the torch benchmark needs PyTorch ({error}); it is optional and not '
                         'in requirements.txt: pip install torch==2.13.0 (CPU build)') from None
    data = twins.compare(args.norms, args.image_sizes, args.batch_size, args.repeats,
                         args.warmup)
    rows = [[r['norm'], f"{r['image_size']}x{r['image_size']}", f"{r['jaxnorm_ms']:.1f}",
             f"{r['torch_ms']:.1f}", f"{r['speed_vs_torch']:.2f}x",
             'yes' if r['same_parameter_count'] else 'NO'] for r in data]
    return Result('torch: ResNet-20 train step, jaxnorm vs an equivalent PyTorch model',
                  f'resnet20 SGD step, batch {args.batch_size}, inputs '
                  f"{', '.join(f'{n}x{n}x3' for n in args.image_sizes)}; {args.warmup} warm-up "
                  f'+ median of {args.repeats}, round-robin',
                  ['norm', 'input', 'jaxnorm ms', 'torch ms', 'speed vs torch', 'same params'],
                  rows, ['speed vs torch = torch ms / jaxnorm ms (goal >= 1.2x); both on every '
                         'core of this machine, NCHW in torch, NHWC in XLA.'], data)


def step_memory(model_name: str, norm: str, batch_size: int, image_size: int) -> dict:
    """XLA's memory analysis of a compiled SGD-momentum train step (compiled, not run); the
    MimicNorm step chains its weight-mean projection."""
    model = get_model(model_name, norm=norm, num_classes=10)
    tx = optax.sgd(0.01, momentum=0.9)
    if norm == 'mimic':
        tx = optax.chain(tx, mimicnorm.weight_mean_projection())
    x = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    opt_state = jax.eval_shape(tx.init, variables['params'])

    def step(variables, opt_state, x, labels):
        def loss_fn(params):
            logits, updates = model.apply({**variables, 'params': params}, x, train=True,
                                          mutable=['batch_stats'])
            loss = mean_cross_entropy(logits, labels)
            return loss, updates
        grads, updates = jax.grad(loss_fn, has_aux=True)(variables['params'])
        param_updates, opt_state = tx.update(grads, opt_state, variables['params'])
        return {**variables, **updates,
                'params': optax.apply_updates(variables['params'], param_updates)}, opt_state
    stats = jax.jit(step).lower(variables, opt_state, x, labels).compile().memory_analysis()
    return {'temp': stats.temp_size_in_bytes, 'argument': stats.argument_size_in_bytes,
            'output': stats.output_size_in_bytes}


def bench_memory(args) -> Result:
    rows, data = [], {}
    for name in args.models:
        base = None
        for norm in args.norms:
            m = step_memory(name, norm, args.batch_size, args.image_size)
            total = m['temp'] + m['argument'] + m['output']
            base = base or total
            data[f'{name}/{norm}'] = m
            rows.append([name, norm, f"{m['temp'] / 2**20:.1f}", f'{total / 2**20:.1f}',
                         f'{total / base:.2f}x'])
    return Result('memory: compiled train-step memory by normalizer (XLA memory analysis)',
                  f'SGD-momentum step, batch {args.batch_size}, '
                  f'{args.image_size}x{args.image_size}x3; compiled, not run',
                  ['model', 'norm', 'temp MiB', 'temp+arg+out MiB', f'vs {args.norms[0]}'],
                  rows, ['temp+arg+out bounds the peak from above (buffers may alias); the '
                         'paper reports about 20 % less GPU memory for MimicNorm than BN.'],
                  data)


def bench_peak(args) -> Result:
    import bench_peak as peak
    data = peak.measure(args.batch_size, args.image_size, args.matmul_size, args.repeats,
                        args.warmup)
    rows = [[name, f"{r['ms']:.1f}", f"{r['gflop']:.2f}", f"{r['gflops_per_s']:.1f}",
             f"{100 * r['fraction_of_peak']:.0f} %"] for name, r in data['rows'].items()]
    notes = [f"ResNet-20 BN step at {100 * data['step_fraction_of_peak']:.0f} % of the matmul "
             f"peak by XLA's FLOP count ({100 * data['step_fraction_of_peak_nominal_flops']:.0f}"
             ' % by the nominal 245 MFLOP/image); goal >= 60 %.']
    if args.xla_flags:
        data['xla_flags'] = peak.sweep_flags(args)
        notes += ['', 'Fresh process per XLA_FLAGS value (sequential, not round-robin):', '',
                  '| XLA_FLAGS | bn step ms | fraction of peak | matmul GFLOP/s |', '|---|---|---|---|']
        for r in data['xla_flags']:
            if 'error' in r:
                notes.append(f"| `{r['flags']}` | failed: {r['error'][-80:]} | | |")
            else:
                step = r['rows']['resnet20 bn step']
                notes.append(f"| `{r['flags']}` | {step['ms']:.1f} | "
                             f"{100 * r['step_fraction_of_peak']:.0f} % | "
                             f"{r['peak_gflops_per_s']:.0f} |")
    return Result('peak: ResNet-20 train step FLOP/s as a fraction of the fp32 matmul peak',
                  setup_line(args, 'programs'),
                  ['program', 'ms', 'GFLOP (XLA)', 'GFLOP/s', 'of matmul peak'], rows, notes,
                  data)


def bench_cost(args) -> Result:
    import bench_cost as costs
    from jaxnorm import cost
    rows = costs.measure(args.papers, utilization=args.utilization)
    return Result(
        f"cost: each paper's `paper` config, planned from the compiled step (XLA cost and memory "
        'analysis on CPU)',
        f'{costs.SEEDS} seeds per arm; FLOPs counted by XLA (multiply-add = 2); time = FLOPs / '
        f'({args.utilization:.0%} x {cost.H100_SXM.peak["tf32"] / 1e12:.1f} TFLOP/s, '
        f'{cost.H100_SXM.name} dense TF32)',
        ['paper', 'run', 'GFLOP per step (part)', 'params / opt. state MiB', 'activations MiB',
         'train steps', 'PFLOP', f'h on one H100 at {args.utilization:.0%} (lower bound)'],
        [costs.cells(row) for row in rows],
        [f'Peak: {cost.H100_SXM.source}.',
         'activations = temporary buffers of one compiled step at the config batch (CPU '
         'buffer assignment; per lane when a loop vmaps several networks).',
         'Training steps only; evaluation and scoring passes are listed in the notes and in '
         'docs/paper_costs.md.'], rows)


def bench_seeds(args) -> Result:
    from jaxnorm import seed_bench
    timings = [seed_bench.time_seeds(model, num_seeds=args.num_seeds, batch_size=args.batch_size,
                                     repeats=args.repeats) for model in args.models]
    rows = [[t.model, f'{t.batched_ms:.1f}', f'{t.sequential_ms:.1f}', f'{t.speedup:.2f}x']
            for t in timings]
    return Result(
        f'seeds: {args.num_seeds} seeds in one vmapped engine step vs the same steps one seed '
        'after another',
        f'digits 8x8, batch {args.batch_size} per seed, one device; ms per round (every seed '
        f'one step), median of {args.repeats} round-robin rounds after 2 warm-up rounds',
        ['model', 'batched ms', 'in turn ms', 'speed-up'], rows,
        ['Compile, data loading and evaluation excluded (jaxnorm.seed_bench).'],
        [t._asdict() | {'speedup': t.speedup} for t in timings])


BENCHES = {'cost': bench_cost, 'seeds': bench_seeds, 'norms': bench_norms, 'torch': bench_torch, 'hvp': bench_hvp, 'optim': bench_optim,
           'prune': bench_prune, 'memory': bench_memory, 'peak': bench_peak}


def timing_flags(command, *, batch_size: int, image_size: int = 32, repeats: int = 10,
                 quick_batch: int | None = 32) -> None:
    command.add_argument('--batch-size', type=int, default=batch_size)
    command.add_argument('--image-size', type=int, default=image_size)
    command.add_argument('--repeats', type=int, default=repeats, help='timed calls per variant')
    command.add_argument('--warmup', type=int, default=2, help='untimed calls (first compiles)')
    command.add_argument('--quick', action='store_true',
                         help='3 repeats, 1 warm-up' + (f', batch {quick_batch}'
                                                        if quick_batch else ''))
    command.set_defaults(quick_batch=quick_batch)
    command.add_argument('--json', metavar='PATH',
                         help='also write the machine, the arguments and the raw numbers here')


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True, parser_class=OneLineErrorParser)
    norms = commands.add_parser('norms', help='train-step time of every normalizer vs flax')
    norms.add_argument('--model', default='resnet20', help='model name (default resnet20)')
    norms.add_argument('--norms', nargs='+', default=list(layers.norm_names()),
                       choices=layers.norm_names(), metavar='NORM',
                       help=f'subset of: {" ".join(layers.norm_names())}')
    timing_flags(norms, batch_size=128, repeats=20, quick_batch=None)
    torch = commands.add_parser('torch', help='ResNet-20 train step vs an equivalent PyTorch '
                                'model, every normalizer (needs torch)')
    torch.add_argument('--norms', nargs='+', metavar='NORM',
                       default=['bn', 'ln', 'in', 'gn', 'frn', 'vn', 'evonorm_b0', 'evonorm_s0',
                                'wn', 'sws', 'none'])
    torch.add_argument('--image-sizes', nargs='+', type=int, default=[32, 8])
    timing_flags(torch, batch_size=128, repeats=5)
    pruned = commands.add_parser('prune', help='compacted vs dense inference time after '
                                 'filter pruning')
    pruned.add_argument('--models', nargs='+', default=['resnet20', 'vgg13'],
                        help='VGG / ResNet models (default resnet20 vgg13)')
    pruned.add_argument('--fractions', nargs='+', type=float, default=[0.25, 0.5, 0.75],
                        help='fractions of the filters of every prunable layer removed')
    timing_flags(pruned, batch_size=128)
    for name, model, batch_size, helptext in (
            ('hvp', 'resnet56', 128, 'Hessian-vector product vs gradient time'),
            ('optim', 'resnet20', 128, 'step overhead of the optax transforms vs bare SGD')):
        command = commands.add_parser(name, help=helptext)
        command.add_argument('--model', default=model, help=f'model name (default {model})')
        timing_flags(command, batch_size=batch_size)
    memory = commands.add_parser('memory', help='compiled train-step memory, MimicNorm vs BN')
    memory.add_argument('--models', nargs='+', default=['resnet20', 'vgg13'])
    memory.add_argument('--norms', nargs='+', default=['bn', 'mimic', 'none'],
                        choices=layers.norm_names(), metavar='NORM')
    timing_flags(memory, batch_size=128)
    peak = commands.add_parser('peak', help='ResNet-20 step FLOP/s vs the fp32 matmul peak')
    peak.add_argument('--matmul-size', type=int, default=2048, help='side of the square matmul')
    peak.add_argument('--xla-flags', action='store_true',
                      help='also measure the step under candidate XLA_FLAGS (one process each)')
    peak.add_argument('--json-stdout', action='store_true', help=argparse.SUPPRESS)
    timing_flags(peak, batch_size=128)
    costs = commands.add_parser('cost', help="each paper's paper-config run: FLOPs, memory, "
                                'steps and H100 hours, from the compiled step on CPU')
    costs.add_argument('--papers', nargs='+', metavar='PAPER',
                       help='only these rows (names as in the table, e.g. LAWN EMR)')
    costs.add_argument('--utilization', type=float, default=0.4,
                       help='fraction of the H100 peak assumed (default 0.4)')
    timing_flags(costs, batch_size=128)
    seeds = commands.add_parser('seeds', help='S seeds batched in one engine step vs one after '
                                'another (MLP, small CNN, ResNet-20 on digits)')
    seeds.add_argument('--models', nargs='+', default=['mlp', 'cnn_small', 'resnet20'])
    seeds.add_argument('--num-seeds', type=int, default=8)
    timing_flags(seeds, batch_size=64, quick_batch=None)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
        args.batch_size = args.quick_batch or args.batch_size
    if min(args.batch_size, args.image_size, args.repeats) < 1 or args.warmup < 1:
        parser.error('--batch-size, --image-size, --repeats and --warmup must be >= 1')
    try:
        result = BENCHES[args.command](args)
    except (ValueError, TypeError) as error:
        print(f'bench.py: error: {error}', file=sys.stderr)
        return 1
    if getattr(args, 'json_stdout', False):  # bench_peak's per-XLA_FLAGS subprocesses
        print(json.dumps(result.data))
        return 0
    host = machine()
    print(f"_{host['cpu']}, {host['cores']} cores, {host['device']}, jax {host['jax']}_\n")
    print(result.markdown())
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': host, 'command': args.command,
                       'arguments': {k: v for k, v in vars(args).items() if k != 'json'},
                       'result': dataclasses.asdict(result)}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
