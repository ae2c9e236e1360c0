"""Beyond BatchNorm's training sweep and verdicts: the engine's runs, the declared measures
(trains, spikes, largest stable LR, speed) against hand-computed values."""
import argparse
import math

import numpy as np
import pytest

from jaxnorm import config as config_lib, train
from jaxnorm.papers import beyond_bn, beyond_bn_report as report, beyond_bn_training as training


def test_quick_training_config_is_the_declared_recipe():
    t = beyond_bn.get_config('quick')['training']
    config = beyond_bn.training_config(t)
    # The recipe of the module's docstring, written out.
    expected = {'model': 'vgg_cfg10', 'dataset': 'mnist5k', 'augment': 'none', 'epochs': 4,
                'optimizer': 'sgd', 'momentum': 0.9, 'schedule': 'constant',
                'warmup_epochs': 0.0, 'weight_decay': 1e-4, 'stop_on_divergence': False}
    assert {key: config[key] for key in expected} == expected
    assert dict(config.model_kwargs) == {'width': 0.125}
    standard = beyond_bn.get_config('standard')['training']
    assert standard['batches'] == (16, 64) and standard['epochs'] >= 15
    assert {'bn', 'in', 'gn4', 'ln'} <= set(standard['norms'])
    assert 'none' in training.PAPER_NORMS


def test_norm_arms_are_the_repo_group_norm():
    assert training.norm_arm('ln') == {'norm': 'gn', 'norm_kwargs': {'num_groups': 1,
                                                                     'unbiased': True}}
    assert training.norm_arm('in')['norm_kwargs'] == {'group_size': 1, 'unbiased': True}
    assert training.norm_arm('gn4')['norm_kwargs'] == {'group_size': 4, 'unbiased': True}
    with pytest.raises(ValueError, match='unknown normalizer arm'):
        training.norm_arm('gn3')


def test_sweep_records_are_fit_histories(tmp_path):
    # A small MLP in place of vgg_cfg10 (whose compiles take minutes on CPU): what is tested
    # is that the sweep's records are the engine's per-epoch values on the declared subset.
    tiny = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'mlp', 'model_kwargs': {'hidden': (32,)}, 'epochs': 2, 'batch_size': 32,
        'schedule': 'constant', 'progress': False, 'stop_on_divergence': False})
    t = {'norms': ('ln', 'in'), 'batches': (32,), 'lrs': (0.05,), 'train_subset': 300,
         'test_subset': 200}
    records = {r['norm']: r for r in training.run_sweep(t, tiny, 2, str(tmp_path / 'out'), None)}
    # Independent reference: seed 1 with one group, trained directly by jaxnorm.train.fit on
    # the first 300 / 200 images.
    direct_config = config_lib.apply_overrides(tiny, {
        'norm': 'gn', 'norm_kwargs': {'num_groups': 1, 'unbiased': True}, 'seed': 1,
        'lr': 0.05, 'workdir': str(tmp_path / 'direct')})
    splits = train.load_splits(direct_config)
    direct = train.fit(direct_config, splits=training.subset_splits(splits, 300, 200)).history
    assert records['ln']['loss'][1] == pytest.approx([r['train_loss'] for r in direct], rel=1e-5)
    assert records['ln']['test_accuracy'][1] == pytest.approx(
        [r['test_accuracy'] for r in direct], abs=1e-6)
    # 200 test images: every accuracy is a multiple of 1/200.
    assert np.allclose(np.asarray(records['ln']['test_accuracy']) * 200,
                       np.round(np.asarray(records['ln']['test_accuracy']) * 200), atol=1e-3)
    assert np.shape(records['in']['loss']) == (2, 2)
    assert records['in']['guard_fired'] == [False, False]


def test_spikes_trains_and_largest_stable_lr_by_hand():
    nan = float('nan')
    loss = np.array([[2.0, 1.0, 1.6, 0.8, 0.9],     # 1.6 > 1.5 x 1.0 and > 1.0 + 0.05: 1
                     [2.0, 0.02, 0.04, 0.01, 0.01],  # 0.04 = 2 x 0.02 but only +0.02: 0
                     [2.0, 1.0, nan, 5.0, 9.0]])     # first NaN: 1, then stop
    assert training.spikes(loss, 1.5, 0.05).tolist() == [1, 0, 1]
    threshold = 0.5 * math.log(10)
    assert training.trains(loss, [False, False, False], threshold).tolist() == [True, True, False]
    assert training.trains(loss, [False, True, False], threshold).tolist() == [True, False, False]
    assert training.largest_stable_lr([0.02, 0.1, 0.5], [True, True, False]) == 0.1
    assert training.largest_stable_lr([0.02, 0.1, 0.5], [False, False, False]) == 0.0


def _record(norm, batch, lr, loss):
    loss = np.asarray(loss, dtype=float)
    return {'norm': norm, 'batch': batch, 'lr': lr, 'loss': loss.tolist(),
            'test_accuracy': np.full(loss.shape, 0.9).tolist(),
            'guard_fired': [False] * len(loss)}


def test_training_verdict_on_a_hand_made_sweep():
    t = {'norms': ('bn', 'in', 'ln'), 'batches': (16,), 'lrs': (0.1, 0.5), 'epochs': 3,
         'speed_epoch': 2, 'train_fraction': 0.5, 'spike_factor': 1.5, 'spike_floor': 0.05}
    declared = training.declare_checks(3, t, None, None)
    nan = float('nan')
    good = [[2.0, 0.5, 0.2], [2.0, 0.6, 0.2], [2.0, 0.55, 0.25]]
    slow = [[2.2, 1.0, 0.6], [2.2, 1.1, 0.7], [2.2, 0.9, 0.5]]
    records = [
        _record('bn', 16, 0.1, good), _record('bn', 16, 0.5, [[2.0, 0.3, 0.1]] * 3),
        # IN trains at 0.1 with a spike in every seed, diverges at 0.5 in one seed.
        _record('in', 16, 0.1, [[2.0, 0.4, 0.9], [2.0, 0.5, 1.0], [2.0, 0.45, 0.8]]),
        _record('in', 16, 0.5, [[2.0, nan, nan], [2.0, 0.5, 0.3], [2.0, 0.5, 0.3]]),
        _record('ln', 16, 0.1, slow), _record('ln', 16, 0.5, [[2.2, 1.2, 0.9]] * 3)]
    judged = training.training_verdict(records, declared, t)
    summary = judged['summary']
    assert summary['in/b16']['largest_stable_lr'] == 0.1
    assert summary['ln/b16']['largest_stable_lr'] == 0.5 == summary['bn/b16']['largest_stable_lr']
    # Best LR = lowest epoch-2 loss among all-seeds-train LRs: BN 0.5 (0.3), LN 0.1 (1.0).
    assert summary['bn/b16']['best_lr'] == 0.5 and summary['ln/b16']['best_lr'] == 0.1
    assert summary['ln/b16']['speed_loss'] == pytest.approx(1.0)
    # IN spikes: 1 per seed at LR 0.1, plus the NaN of seed 0 at 0.5.
    assert summary['in/b16']['spikes_mean'] == pytest.approx(4 / 3)
    outcomes = {c['name']: c['outcome'] for c in judged['checks']}
    assert outcomes['training: bn_trains'] == 'supported'
    assert outcomes['training: in_lowest_stable_lr'] == 'supported'
    # Epoch-2 losses at the best LRs: LN (0.1) 1.0, 1.1, 0.9; BN (0.5) 0.3 x 3; IN (0.1, the
    # only LR at which every seed trains) 0.4, 0.5, 0.45.
    ln = next(c for c in judged['checks'] if c['name'] == 'training: ln_slowest')
    cells = {row['cell']: row for row in ln['cells']}
    assert cells['LN - in @ b16']['estimate'] == pytest.approx(np.mean([0.6, 0.6, 0.45]))
    assert cells['LN - bn @ b16']['estimate'] == pytest.approx(0.7)
    assert ln['outcome'] == 'supported' and cells['LN - bn @ b16']['n'] == 3


def test_rank_slopes_drop_saturated_entries():
    ratio = np.array([64.0, 16.0, 4.0, 1.0])
    rank = np.array([[32, 16, 8, 4],      # saturated at 64: fit over 16, 4, 1 -> slope 0.5
                     [32, 32, 32, 2],     # one unsaturated point: no slope
                     [20, 10, 5, 2.5]])   # all kept
    slopes = report.rank_slopes(rank, ratio, 32)
    assert slopes[0] == pytest.approx(0.5)
    assert np.isnan(slopes[1])
    assert slopes[2] == pytest.approx(np.polyfit(np.log(ratio), np.log(rank[2]), 1)[0])


def _forward_record(net, norm, skip, block, growth):
    return {'network': net, 'norm': norm, 'skipinit': skip, 'block': block,
            'blocks': [f'b{i}' for i in range(27)],
            'variance': [[1.0] * 26 + [g] for g in growth]}


def test_forward_verdict_judges_parametric_skipinit_on_the_act_before_sum_block():
    declared = report.declare_checks(2, ('uniform_cnn',))['forward']
    records = []
    for net in ('resnet56_wide', 'uniform_resnet27'):
        records += [_forward_record(net, 'bn', False, 'act_after_sum', [10, 12]),
                    _forward_record(net, 'bn', True, 'act_after_sum', [1.5, 1.4]),
                    _forward_record(net, 'wn', False, 'act_after_sum', [1e12, 1e11]),
                    # default block with SkipInit grows (the activation after the sum) ...
                    _forward_record(net, 'wn', True, 'act_after_sum', [5e11, 4e11]),
                    _forward_record(net, 'wn', False, 'act_before_sum', [1e8, 1e9]),
                    # ... the authors' block does not
                    _forward_record(net, 'wn', True, 'act_before_sum',
                                    [3.0, 2.0] if net == 'resnet56_wide' else [1.0, 1.0])]
    judged = report.forward_verdict(records, declared)
    outcomes = {c['name']: c['outcome'] for c in judged['checks']}
    assert outcomes == {'forward: activation_norms_linear': 'supported',
                        'forward: parametric_exponential': 'supported',
                        'forward: skipinit_flattens': 'supported',
                        'forward: skipinit_identity': 'supported'}
    flat = next(c for c in judged['checks'] if c['name'] == 'forward: skipinit_flattens')
    assert flat['estimate'] == pytest.approx(3.0)  # the largest judged growth
    records[-1] = _forward_record('uniform_resnet27', 'wn', True, 'act_before_sum', [1.0, 1.01])
    judged = report.forward_verdict(records, declared)
    outcomes = {c['name']: c['outcome'] for c in judged['checks']}
    assert outcomes['forward: skipinit_identity'] == 'refuted'
