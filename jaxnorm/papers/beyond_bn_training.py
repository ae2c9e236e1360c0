"""Beyond BatchNorm's speed-stability trade-off in training (arXiv:2106.05956): the LR sweep,
its declared checks, their evaluation and the plot; used by :mod:`jaxnorm.papers.beyond_bn`.

The paper (norm.md 1.1 (2)-(3); papers_numbers.md 3.2): LayerNorm (GroupNorm with one group)
optimizes slowly, since large groups make samples' activations alike; InstanceNorm (group size
1) trains unstably in non-residual networks, especially at small batch size, since small
groups give large early-layer gradients. Measured here, per normalizer and batch size, over an
LR sweep without warmup, every run by :func:`jaxnorm.train.fit` (``common.fit_arms``, one
seed-batched run per (normalizer, batch, LR), ``stop_on_divergence=False`` so a diverged seed
goes on as NaN while the others train):

* a seed **trains** at an LR when every epoch-mean training loss is finite, the engine's
  divergence guard never fired, and the last one is below ``train_fraction * ln 10`` (ln 10:
  the loss of a uniform guess over the 10 classes);
* **stability** = the largest LR of the grid at which every seed trains (0 when none), plus
  the number of **loss spikes** of each seed over the whole sweep: an epoch whose mean
  training loss ``l_e`` exceeds ``spike_factor * m_e`` and ``m_e + spike_floor`` where
  ``m_e`` is the smallest epoch-mean loss before it, or the first non-finite epoch (a
  divergence is one spike; nothing after it is counted). fit records one training loss per
  epoch, so spikes are resolved per epoch;
* **speed** = the epoch-mean training loss at a fixed step budget (epoch ``speed_epoch``,
  i.e. ``speed_epoch * n_train / batch`` steps), each normalizer at its own best LR (lowest
  seed-mean loss there among the LRs at which every seed trains: every arm gets the same
  tuning), paired by seed (a seed index fixes the data order across arms).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from jaxnorm import config as config_lib
from jaxnorm.layers import BEYOND_BN_REPO_OPTIONS
from jaxnorm.papers import checks, common

ONE_GROUP = 'C'
# Normalizer arms: the paper's group-size contrast (IN = GN with group size 1, GN with groups
# of 4, LN = GN with one group; the repo's GN: unbiased variance) and the references BN and
# no normalization.
NORM_LABELS = {'bn': 'BN', 'in': 'IN (GN g=1)', 'gn4': 'GN g=4', 'ln': 'LN (GN 1 group)',
               'none': 'no norm'}
GROUP_NORMS = ('in', 'gn4', 'ln')
PAPER_NORMS = ('bn', 'in', 'gn4', 'ln', 'none')  # the paper-scale sweep adds no normalization


def norm_arm(name: str) -> dict:
    """The engine overrides (``norm``, ``norm_kwargs``) of a normalizer arm name."""
    groups = {'in': {'group_size': 1}, 'gn4': {'group_size': 4}, 'ln': {'num_groups': 1}}
    if name in groups:
        return {'norm': 'gn', 'norm_kwargs': {**BEYOND_BN_REPO_OPTIONS['gn'], **groups[name]}}
    if name in ('bn', 'none'):
        return {'norm': name, 'norm_kwargs': dict(BEYOND_BN_REPO_OPTIONS.get(name, {}))}
    raise ValueError(f'unknown normalizer arm {name!r}; valid: {", ".join(NORM_LABELS)}')


def arm_name(norm: str, batch: int, lr: float) -> str:
    return f'{norm}_b{batch}_lr{lr:g}'


def training_config(t: dict):
    """The engine config of the quick and standard training sweeps (normalizer, batch size
    and LR are set per arm)."""
    return config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'vgg_cfg10', 'model_kwargs': {'width': t['width']}, 'dataset': t['dataset'],
        'augment': 'none', 'epochs': t['epochs'], 'batch_size': t['batches'][0],
        'optimizer': 'sgd', 'lr': t['lrs'][0], 'momentum': t['momentum'],
        'schedule': 'constant', 'warmup_epochs': 0.0, 'weight_decay': t['weight_decay'],
        'eval_batch_size': 500, 'stop_on_divergence': False, 'progress': False,
        'keep_checkpoints': 1}, source='beyond_bn training settings')


def subset_splits(splits, train: int | None, test: int | None):
    """``splits`` with the first ``train`` training and ``test`` test examples (None: all);
    the standardization statistics stay those of the full training split."""
    def head(dataset, n):
        if n is None:
            return dataset
        if n > len(dataset.images):
            raise ValueError(f'subset of {n} asked from a split of {len(dataset.images)}')
        return dataclasses.replace(dataset, images=dataset.images[:n],
                                   labels=dataset.labels[:n])
    return dataclasses.replace(splits, train=head(splits.train, train),
                               test=head(splits.test, test))


def run_sweep(t: dict, config, seeds: int, out_dir: str, data_dir: str | None) -> list[dict]:
    """Every (normalizer, batch size, LR) of ``t`` trained over ``seeds`` seeds; one record per
    arm with per-seed per-epoch ``loss`` and ``test_accuracy`` and the seeds the engine's
    divergence guard flagged."""
    arms = {arm_name(n, b, lr): {**norm_arm(n), 'batch_size': b, 'lr': lr}
            for n in t['norms'] for b in t['batches'] for lr in t['lrs']}
    extra = {'data_dir': data_dir} if data_dir else {}
    splits = subset_splits(common.standardized_splits(
        config_lib.apply_overrides(config, extra)), t.get('train_subset'), t.get('test_subset'))
    histories = common.fit_arms(config, arms, seeds, out_dir, data_dir, splits=splits)
    records = []
    for n in t['norms']:
        for b in t['batches']:
            for lr in t['lrs']:
                runs = histories[arm_name(n, b, lr)]
                records.append({
                    'norm': n, 'batch': b, 'lr': lr,
                    'loss': [[r['train_loss'] for r in seed] for seed in runs],
                    'test_accuracy': [[r['test_accuracy'] for r in seed] for seed in runs],
                    'guard_fired': [any(r.get('diverged_at_step') for r in seed)
                                    for seed in runs]})
    return records


# ----------------------------------------------------------------------------- measures


def trains(loss: np.ndarray, guard: Sequence[bool], threshold: float) -> np.ndarray:
    """Per seed: every epoch loss finite, no divergence flagged, last loss < ``threshold``."""
    loss = np.asarray(loss, dtype=np.float64)
    return (np.all(np.isfinite(loss), axis=1) & ~np.asarray(guard, dtype=bool)
            & (np.nan_to_num(loss[:, -1], nan=np.inf) < threshold))


def spikes(loss: np.ndarray, factor: float, floor: float) -> np.ndarray:
    """Per seed, the number of spikes of ``loss`` (seeds, epochs): epochs with
    ``l_e > factor * m_e`` and ``l_e > m_e + floor``, ``m_e`` the running minimum of the
    epochs before; the first non-finite epoch counts as one spike and ends the count."""
    out = np.zeros(len(loss), dtype=int)
    for i, seed in enumerate(np.asarray(loss, dtype=np.float64)):
        low = np.inf
        for value in seed:
            if not np.isfinite(value):
                out[i] += 1
                break
            if value > factor * low and value > low + floor:
                out[i] += 1
            low = min(low, value)
    return out


def largest_stable_lr(lrs: Sequence[float], all_train: Sequence[bool]) -> float:
    """The largest LR of ``lrs`` whose entry of ``all_train`` is True; 0 if none."""
    good = [lr for lr, ok in zip(lrs, all_train) if ok]
    return float(max(good)) if good else 0.0


# ----------------------------------------------------------------------------- checks


def declare_checks(seeds: int, t: dict, effect_loss: float | None,
                   effect_spikes: float | None) -> dict:
    """The training checks, declared before the run from the sweep ``t``'s settings."""
    threshold = t['train_fraction'] * math.log(10)
    trains_text = (f'a seed trains when every epoch loss is finite, the divergence guard never '
                   f'fired and the last epoch loss < {t["train_fraction"]:g} ln 10 = '
                   f'{threshold:.3f}')
    others = [n for n in t['norms'] if n not in ('ln', 'none')]
    smallest = min(t['batches'])
    spike = (f"an epoch loss > {t['spike_factor']:g} x and > {t['spike_floor']:g} nats above "
             'the running minimum of the earlier epochs, or the first non-finite epoch')
    return {
        'training: bn_trains': checks.Check(
            'training: bn_trains',
            'The setting is learnable: BN trains every seed at some LR of the grid, at every '
            f'batch size ({trains_text}).', 'sanity', 'BN trains, one seed', 'rule', seeds,
            rule='at every batch size some LR of the grid has every BN seed training'),
        'training: ln_slowest': checks.Check(
            'training: ln_slowest',
            'LayerNorm (GroupNorm with one group) trains slowest (paper: the speed side of '
            f'the trade-off): at a fixed step budget (epoch {t["speed_epoch"]} of '
            f'{t["epochs"]}) its training loss is higher than that of every other normalizer '
            f'({others}), each at its own best LR among those where every seed trains; one '
            'cell per (other normalizer, batch size), Holm over cells.', 'claim',
            f'epoch-{t["speed_epoch"]} mean training loss of LN minus that of the other '
            'normalizer, same seed, each at its best all-seeds-train LR (nats)',
            'superiority', seeds, margin=0.0, effect=effect_loss),
        'training: in_lowest_stable_lr': checks.Check(
            'training: in_lowest_stable_lr',
            'InstanceNorm (GN group size 1) is the least stable group size, especially at small '
            f'batch (paper): at batch {smallest}, the largest LR of the grid {t["lrs"]} at '
            'which every seed trains is lower for IN than for GN g=4 and for LN (no warmup; '
            f'{trains_text}).', 'claim',
            f'largest all-seeds-train LR of the grid, batch {smallest}', 'rule', seeds,
            rule=f'at batch {smallest}: largest stable LR of IN < that of GN g=4 and of LN'),
        'training: in_more_spikes': checks.Check(
            'training: in_more_spikes',
            'InstanceNorm trains less stably than the larger group sizes: more loss spikes '
            f'over the LR sweep ({spike}), one cell per (larger group size, batch size), Holm '
            'over cells.', 'claim',
            'spikes of IN minus spikes of the other group size, summed over the LR grid, '
            'same seed (count)', 'superiority', seeds, margin=0.0, effect=effect_spikes),
    }


def _by(records: list[dict]) -> dict:
    return {(r['norm'], r['batch'], r['lr']): r for r in records}


def training_verdict(records: list[dict], declared: dict, t: dict) -> dict:
    """The declared training checks on :func:`run_sweep`'s records."""
    table_of, threshold = _by(records), t['train_fraction'] * math.log(10)
    norms = list(dict.fromkeys(r['norm'] for r in records))
    batches = sorted({r['batch'] for r in records})
    lrs = sorted({r['lr'] for r in records})
    summary, speed, spike_total = {}, {}, {}
    for n in norms:
        for b in batches:
            cells = [table_of[(n, b, lr)] for lr in lrs]
            ok = [trains(c['loss'], c['guard_fired'], threshold) for c in cells]
            if not 1 <= t['speed_epoch'] <= np.shape(cells[0]['loss'])[1]:
                raise ValueError(f"speed_epoch {t['speed_epoch']} outside the "
                                 f"{np.shape(cells[0]['loss'])[1]} epochs recorded")
            early = [np.asarray(c['loss'], dtype=np.float64)[:, t['speed_epoch'] - 1]
                     for c in cells]
            candidates = [i for i, o in enumerate(ok) if o.all()]
            best = min(candidates, key=lambda i: early[i].mean()) if candidates else None
            speed[(n, b)] = early[best] if best is not None else np.full(len(ok[0]), np.nan)
            spike_total[(n, b)] = np.sum([spikes(c['loss'], t['spike_factor'],
                                                 t['spike_floor']) for c in cells], axis=0)
            with np.errstate(all='ignore'):
                spread = float(np.std(speed[(n, b)], ddof=1))
            summary[f'{n}/b{b}'] = {
                'trains_per_lr': {f'{lr:g}': int(o.sum()) for lr, o in zip(lrs, ok)},
                'largest_stable_lr': largest_stable_lr(lrs, [o.all() for o in ok]),
                'best_lr': None if best is None else lrs[best],
                'speed_loss': float(np.mean(speed[(n, b)])),
                'speed_loss_std': spread,
                'spikes_mean': float(spike_total[(n, b)].mean()),
                'final_test_accuracy': None if best is None else float(np.nanmean(
                    np.asarray(cells[best]['test_accuracy'])[:, -1]))}
    results = []
    bn_ok = ['bn' in norms and summary[f'bn/b{b}']['largest_stable_lr'] > 0 for b in batches]
    results.append(declared['training: bn_trains'].evaluate_rule(bn_ok))
    # A sweep without the arms a check compares (e.g. one normalizer) leaves it out.
    ln_cells = {f'LN - {n} @ b{b}': (speed[('ln', b)], speed[(n, b)])
                for b in batches for n in norms if n not in ('ln', 'none') and 'ln' in norms}
    if ln_cells:
        results.append(declared['training: ln_slowest'].evaluate_cells(ln_cells))
    small = batches[0]
    stable = {n: summary[f'{n}/b{small}']['largest_stable_lr'] for n in norms}
    others = [n for n in GROUP_NORMS if n in norms and n != 'in']
    if 'in' in norms and others:
        results.append(declared['training: in_lowest_stable_lr'].evaluate_rule(
            all(stable['in'] < stable[n] for n in others), value=stable['in']))
        results.append(declared['training: in_more_spikes'].evaluate_cells(
            {f'IN - {n} @ b{b}': (spike_total[('in', b)], spike_total[(n, b)])
             for b in batches for n in others}))
    table = ['| normalizer | batch | seeds training per LR ' + str(lrs) + ' | largest stable '
             f'LR | best LR | epoch-{t["speed_epoch"]} loss at best LR | spikes per seed '
             '(sweep) | final test acc % |', '|---|---|---|---|---|---|---|---|']
    for n in norms:
        for b in batches:
            v = summary[f'{n}/b{b}']
            untrained = v['best_lr'] is None
            acc = '-' if untrained else f"{100 * v['final_test_accuracy']:.1f}"
            speed_text = '-' if untrained else (f"{v['speed_loss']:.3f} ± "
                                                f"{v['speed_loss_std']:.3f}")
            trained = ' / '.join(map(str, v['trains_per_lr'].values()))
            table.append(
                f"| {NORM_LABELS.get(n, n)} | {b} | {trained} | {v['largest_stable_lr']:g} | "
                f"{'-' if untrained else v['best_lr']} | {speed_text} | "
                f"{v['spikes_mean']:.1f} | {acc} |")
    notes = [
        f'training: largest all-seeds-train LR at batch {small}: ' + ', '.join(
            f'{NORM_LABELS.get(n, n)} {stable[n]:g}' for n in norms) + '; at batch '
        + ', '.join(f'{b}: ' + ', '.join(f"{n} {summary[f'{n}/b{b}']['largest_stable_lr']:g}"
                                        for n in norms) for b in batches[1:]) + '.',
        'training: the old stability score (mean |epoch-to-epoch loss change|, which rewards a '
        'run that does not learn) is gone; stability is the LR range that trains and the '
        'spike count, speed the loss at a fixed step budget among runs that train.']
    return {'checks': results, 'table': table, 'notes': notes, 'summary': summary}


# ----------------------------------------------------------------------------- plot


def plot_training(records: list[dict], out_dir: str, t: dict | None = None) -> str:
    """Per batch size, the epoch-mean training loss of every normalizer at every LR (seed
    mean; line style by LR)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    batches = sorted({r['batch'] for r in records})
    norms = list(dict.fromkeys(r['norm'] for r in records))
    lrs = sorted({r['lr'] for r in records})
    styles = ['-', '--', ':', '-.']
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        for r in records:
            if r['batch'] != b:
                continue
            loss = np.asarray(r['loss'], dtype=np.float64)
            with np.errstate(all='ignore'):
                mean = np.nanmean(np.where(np.isfinite(loss), loss, np.nan), axis=0)
            ax.plot(np.arange(1, loss.shape[1] + 1), mean,
                    styles[lrs.index(r['lr']) % len(styles)],
                    color=f'C{norms.index(r["norm"])}',
                    label=f"{NORM_LABELS.get(r['norm'], r['norm'])} lr {r['lr']:g}")
        ax.set(yscale='log', xlabel='epoch', ylabel='epoch-mean training loss',
               title=f'batch {b}')
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle('LR sweep without warmup (seed mean of finite losses)')
    fig.tight_layout()
    path = os.path.join(out_dir, 'training.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
