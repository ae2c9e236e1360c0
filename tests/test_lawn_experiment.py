"""The digits LAWN experiment (jaxnorm.papers.lawn): its runs are the engine's, with the old
loop's step counts, and its measurements agree with the engine's records."""
import numpy as np
import pytest

from jaxnorm import config as config_lib, metrics
from jaxnorm.papers import lawn, lawn_report

DIGITS_TRAIN = 1437


@pytest.mark.parametrize('scale', ['quick', 'standard'])
def test_engine_runs_keep_the_old_loops_step_counts(scale):
    s = lawn.get_config(scale)
    for run in lawn.plan(s):
        overrides = lawn.run_overrides(run, s, DIGITS_TRAIN)
        config = config_lib.apply_overrides(config_lib.default_config(),
                                            {**lawn.BASE, **overrides})
        steps_per_epoch = DIGITS_TRAIN // config.batch_size * config.passes_per_epoch
        # The old loop: full batch for full_steps, else small_epochs reshuffled epochs
        # without remainder; 5 % warmup; LAWN free for free_fraction of the steps.
        total = (s['full_steps'] if run['batch'] == 'full'
                 else s['small_epochs'] * (DIGITS_TRAIN // s['small_batch']))
        assert config.epochs * steps_per_epoch == total
        assert round(config.warmup_epochs * steps_per_epoch) == round(0.05 * total)
        if run['free_fraction'] is None:
            assert config.lawn.free_epochs is None
        else:
            assert (round(config.lawn.free_epochs * steps_per_epoch)
                    == round(run['free_fraction'] * total))
        assert (config.weight_decay, config.schedule) == (0.0, 'cosine')
        assert config.lr == lawn.LEARNING_RATES[run['optimizer']]
    assert len({lawn.run_name(run) for run in lawn.plan(s)}) == len(lawn.plan(s))


def test_quick_plan_keeps_every_checked_cell():
    # The claims are judged per (optimizer, batch) cell and the sweep's monotonicity over at
    # least two free fractions and plain training, so the quick plan keeps all of them.
    plan = lawn.plan(lawn.get_config('quick'))
    grid = {(r['batch'], r['optimizer'], r['free_fraction'] is None)
            for r in plan if r['role'] == 'grid'}
    assert grid == {(batch, optimizer, plain) for batch in ('small', 'full')
                    for optimizer in lawn.LEARNING_RATES for plain in (False, True)}
    sweep = {r['free_fraction'] for r in plan if lawn_report.in_sweep(r)}
    assert None in sweep and len(sweep) >= 3
    assert [r['role'] for r in plan].count('mask_variant') == 1


def test_a_run_trains_with_fit_and_its_measurement_matches_the_records(tmp_path):
    # Small batch (32): the tests' 8 simulated devices split it evenly.
    s = {**lawn.get_config('quick'), 'models': {'mlp_ln': ('mlp', 'ln', {'width': 0.25})},
         'small_epochs': 2}
    run = {'role': 'grid', 'model': 'mlp_ln', 'batch': 'small', 'optimizer': 'adam',
           'free_fraction': 0.5, 'mask': None}
    records, measures = lawn.train_runs([run], s, 2, str(tmp_path), lawn.Digits(None), None)
    (record,) = records
    saved = metrics.read_jsonl(str(tmp_path / 'runs' / lawn.run_name(run) / 'metrics.jsonl'))
    history = [[r for r in saved if r['seed'] == seed] for seed in range(2)]
    steps = DIGITS_TRAIN // 32
    assert record['free_steps'] == steps and record['total_steps'] == 2 * steps
    assert record['curve']['steps'] == [steps, 2 * steps]
    # The eval-mode measurement of the last checkpoint and the engine's own test evaluation.
    np.testing.assert_allclose(record['final']['test_accuracy'],
                               [h[-1]['test_accuracy'] for h in history], atol=1e-6)
    np.testing.assert_allclose(record['final']['weight_norm'],
                               [h[-1]['lawn_weight_norms']['head/kernel'] for h in history],
                               rtol=1e-5)
    assert record['final']['max_norm_error'] <= 1e-5
    assert all(loss > 0 for loss in record['final']['train_loss'])
    assert lawn.constrained_paths(measures['mlp_ln'].mask) == ['head/kernel']



def test_paper_scale_is_the_paper_values_and_refuses_a_config_without_lawn():
    config = lawn.get_config('paper')
    assert (config.model, config.optimizer, config.batch_size, config.lawn.free_epochs) == (
        'vgg13', 'adam', 2048, 10.0)
    with pytest.raises(ValueError, match=r'^mine\.py sets no lawn\.free_epochs'):
        lawn.paper_setting({**lawn.PAPER, 'lawn.free_epochs': None, 'lawn.mask': None},
                           'mine.py')
