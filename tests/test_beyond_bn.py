"""Beyond BatchNorm's training experiment: runs of the library's engine, judged per epoch."""
import argparse

import numpy as np
import pytest

from jaxnorm import config as config_lib, train
from jaxnorm.papers import beyond_bn, beyond_bn_report as report


def test_quick_training_config_is_the_declared_recipe():
    config = beyond_bn.training_config(beyond_bn.get_config('quick')['training'])
    # The recipe of the module's docstring, written out.
    expected = {'model': 'vgg_cfg10', 'dataset': 'digits', 'image_size': 18, 'augment': 'none',
                'epochs': 2, 'batch_size': 64, 'optimizer': 'sgd', 'lr': 0.1, 'momentum': 0.9,
                'schedule': 'constant', 'warmup_epochs': 0.0, 'weight_decay': 1e-4}
    assert {key: config[key] for key in expected} == expected
    assert dict(config.model_kwargs) == {'width': 0.25}


def test_quick_training_records_are_fit_histories(tmp_path):
    # A small MLP in place of vgg_cfg10 (whose compiles take minutes on CPU): what is tested
    # is that the quick path's records are the engine's per-epoch values, arm by arm.
    tiny = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'mlp', 'model_kwargs': {'hidden': (32,)}, 'epochs': 2, 'batch_size': 128,
        'schedule': 'constant', 'progress': False})
    s = beyond_bn.get_config('quick')
    s['training'] = {**s['training'], 'group_sizes': (4, 'C')}
    args = argparse.Namespace(config=None, data_dir=None, scale='quick')
    measured = beyond_bn.run_training(s, tiny, [0, 1], args, str(tmp_path / 'out'))
    records = {r['group_size']: r for r in measured['records']}
    # Independent reference: seed 1 with one group, trained directly by jaxnorm.train.fit.
    direct = train.fit(config_lib.apply_overrides(tiny, {
        'norm': 'gn', 'norm_kwargs': {'num_groups': 1, 'unbiased': True}, 'seed': 1,
        'workdir': str(tmp_path / 'direct')})).history
    assert records['C']['loss'][1] == pytest.approx([r['train_loss'] for r in direct], rel=1e-5)
    assert records['C']['test_accuracy'][1] == pytest.approx(
        [r['test_accuracy'] for r in direct], abs=1e-6)
    assert np.shape(records[4]['loss']) == (2, 2)
    assert records[4]['loss'] != records['C']['loss']


def test_gn_options_are_the_repo_group_norm():
    assert beyond_bn.gn_options('C') == {'num_groups': 1, 'unbiased': True}
    assert beyond_bn.gn_options(4) == {'group_size': 4, 'unbiased': True}


def per_epoch(group_size, loss, accuracy=0.5):
    loss = np.asarray(loss, dtype=float)
    return {'group_size': group_size, 'loss': loss.tolist(),
            'test_accuracy': np.full(loss.shape, accuracy).tolist()}


def test_training_verdict_on_per_epoch_losses():
    declared = report.declare_checks(3, ('uniform_cnn',), (1, 4, 'C'))['training']
    # Group size 1 oscillates (jitter 0.75, 0.70, 0.85); one group ends highest.
    records = [per_epoch(1, [[2.0, 1.0, 1.5], [2.0, 1.1, 1.6], [2.0, 0.9, 1.5]]),
               per_epoch(4, [[2.0, 1.8, 1.6], [2.0, 1.9, 1.7], [2.0, 1.7, 1.6]]),
               per_epoch('C', [[2.2, 2.1, 2.0], [2.3, 2.2, 2.1], [2.2, 2.0, 1.9]])]
    judged = report.training_verdict(records, declared)
    assert judged['summary']['1']['jitter'] == pytest.approx(np.mean([0.75, 0.7, 0.85]))
    assert judged['summary']['C (LN)']['final_loss'] == pytest.approx(2.0)
    assert judged['summary']['4']['mean_loss'] == pytest.approx(np.mean(records[1]['loss']))
    outcomes = {c['name']: c['outcome'] for c in judged['checks']}
    # C - 1 is 0.5, 0.5, 0.4 and C - 4 is 0.4, 0.4, 0.3; 1's jitter exceeds 4's (0.2, 0.15,
    # 0.2) by 0.55, 0.55, 0.65 and C's (0.1, 0.1, 0.15) by 0.65, 0.6, 0.7.
    assert outcomes == {'training: ln_slowest': 'supported',
                        'training: in_least_stable': 'supported'}
    assert judged['old_rules'] == {'slowest': 'C (LN)', 'least_stable': '1'}


def test_training_verdict_counts_a_diverged_seed_and_drops_it_from_the_tests():
    declared = report.declare_checks(3, ('uniform_cnn',), (1, 'C'))['training']
    nan = float('nan')
    records = [per_epoch(1, [[2.0, 1.0], [2.0, nan], [2.0, 1.2]]),
               per_epoch('C', [[2.0, 1.5], [2.0, 1.6], [2.0, 1.6]])]
    judged = report.training_verdict(records, declared)
    assert judged['summary']['1']['diverged_seeds'] == 1
    assert judged['summary']['1']['final_loss'] == pytest.approx(1.1)  # the finite seeds
    ln, jitter = judged['checks']
    assert ln['dropped'] == 1 and jitter['dropped'] == 1
