"""Beyond BatchNorm at ``--scale paper`` (``--config``): the training sweep trains the config's
model, each arm a jaxnorm.train.fit run (replaces the group-size test of
test_experiments_paper_scale.py, whose records predate the LR sweep)."""
import json

import pytest

from jaxnorm import config as config_lib, train
from jaxnorm.papers import beyond_bn, beyond_bn_training

VALUES = {'model': 'mlp', 'model_kwargs': {'hidden': (64,)}, 'dataset': 'digits', 'epochs': 2,
          'batch_size': 128, 'progress': False}


def test_paper_scale_sweep_records_are_fit_histories_of_the_config(tmp_path, monkeypatch):
    path = tmp_path / 'bbn.py'
    path.write_text(f'def get_config():\n    return {VALUES!r}\n')
    standard = beyond_bn.get_config('standard')
    small = {**standard, 'training': {**standard['training'], 'norms': ('ln',),
                                      'batches': (32,), 'lrs': (0.05,)}}
    real = beyond_bn.get_config
    monkeypatch.setattr(beyond_bn, 'get_config',
                        lambda scale: small if scale == 'standard' else real(scale))
    monkeypatch.setattr(beyond_bn_training, 'PAPER_NORMS', ('ln',))
    out = tmp_path / 'o'
    assert beyond_bn.main(['training', '--config', str(path), '--seeds', '2',
                           '--out', str(out)]) == 0
    results = json.loads((out / 'beyond_bn' / 'results.json').read_text())
    [record] = results['experiments']['training']['records']
    assert (record['norm'], record['batch'], record['lr']) == ('ln', 32, 0.05)
    # Independent reference: seed 1 trained directly by fit on the whole dataset (no subset at
    # paper scale), LN = GN with one group and the repo's unbiased variance.
    config = config_lib.apply_overrides(config_lib.default_config(), {
        **VALUES, 'norm': 'gn', 'norm_kwargs': {'num_groups': 1, 'unbiased': True},
        'batch_size': 32, 'lr': 0.05, 'seed': 1, 'workdir': str(tmp_path / 'direct')})
    history = train.fit(config).history
    assert record['loss'][1] == pytest.approx([r['train_loss'] for r in history], rel=1e-5)
    assert record['test_accuracy'][1] == pytest.approx([r['test_accuracy'] for r in history],
                                                       abs=1e-6)
    assert (out / 'beyond_bn' / 'training.png').exists()
