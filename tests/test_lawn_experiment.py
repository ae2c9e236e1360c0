"""The LAWN experiment (jaxnorm.papers.lawn): its runs' budgets and tuning, its splits, its
measurements against the engine's records and a numpy reference, and its checks."""
import jax
import numpy as np
import pytest

from jaxnorm import config as config_lib, data, metrics
from jaxnorm.papers import checks, lawn, lawn_report

TRAIN_SIZE = 1437


def all_runs(s):
    chosen = lawn.choose(s, [])
    return lawn.tuning_plan(s) + lawn.final_plan(s, chosen)


@pytest.mark.parametrize('scale', ['quick', 'standard'])
def test_run_configs_keep_the_declared_budgets(scale):
    s = lawn.get_config(scale)
    for run in all_runs(s):
        overrides = lawn.run_overrides(run, s, TRAIN_SIZE)
        config = config_lib.apply_overrides(config_lib.default_config(),
                                            {**lawn.BASE, **overrides})
        batch, epochs, passes = s['batches'][run['batch']]
        steps_per_epoch = TRAIN_SIZE // config.batch_size * config.passes_per_epoch
        # Small batch: reshuffled epochs without remainder; full batch: epochs x passes steps.
        total = epochs * passes * (TRAIN_SIZE // batch if batch else 1)
        assert config.epochs * steps_per_epoch == total
        assert round(config.warmup_epochs * steps_per_epoch) == round(0.05 * total)
        assert config.lr == lawn.LEARNING_RATES[run['optimizer']] * s['lr_scale'][run['batch']]
        if run['free_fraction'] is None:
            # The plain arm: Adam's is AdamW, with the run's (tuned) decay.
            assert config.lawn.free_epochs is None
            assert config.optimizer == {'sgd': 'sgd', 'adam': 'adamw',
                                        'lamb': 'lamb'}[run['optimizer']]
            assert config.weight_decay == run['weight_decay']
        else:
            assert (config.optimizer, config.weight_decay) == (run['optimizer'], 0.0)
            assert (round(config.lawn.free_epochs * steps_per_epoch)
                    == round(run['free_fraction'] * total))
            assert config.lawn.last_norm_affine == (run['mask'] == 'default')
    names = [lawn.run_name(run) for run in all_runs(s)]
    assert len(set(names)) == len(names)


def test_standard_tunes_both_arms_with_the_same_budget_in_every_cell():
    s = lawn.get_config('standard')
    assert s['tune_seeds'] >= 2 and set(s['datasets']) == {'mnist1d_large', 'mnist5k'}
    plan = lawn.tuning_plan(s)
    for cell in lawn.cells(s):
        runs = [r for r in plan if (r['dataset'], r['batch'], r['optimizer']) == cell]
        plain = [r for r in runs if r['free_fraction'] is None]
        assert len(plain) == len(runs) - len(plain) == 3
        assert all(r['stage'] == 'tune' and r['mask'] == 'default' for r in runs)
    # Batches from small to the full training set.
    assert s['batches']['small'][0] <= 64 and s['batches']['full'][0] is None
    # The quick scale has nothing to tune: one value per grid.
    assert lawn.tuning_plan(lawn.get_config('quick')) == []


def test_choose_takes_the_best_mean_validation_accuracy_first_on_ties():
    s = {**lawn.get_config('standard'), 'datasets': ('d',)}
    grid = s['wd_grid']['adam']
    scores = dict(zip(grid, ([0.5, 0.7], [0.7, 0.7], [0.8, 0.6])))   # means .6, .7, .7
    records = [{'dataset': 'd', 'batch': 'small', 'optimizer': 'adam', 'free_fraction': None,
                'weight_decay': w, 'final': {'test_accuracy': a}} for w, a in scores.items()]
    records += [{'dataset': 'd', 'batch': 'small', 'optimizer': 'adam', 'free_fraction': f,
                 'weight_decay': 0.0, 'final': {'test_accuracy': a}}
                for f, a in zip(s['free_fractions'], ([0.1, 0.1], [0.3, 0.2], [0.2, 0.2]))]
    chosen = lawn.choose(s, records)['d', 'small', 'adam']
    assert chosen == {'weight_decay': grid[1], 'free_fraction': s['free_fractions'][1]}


def test_tuning_splits_hold_out_part_of_the_training_split():
    full = data.load_standardized('digits')
    tune = lawn.load_splits('digits', 'tune', None)
    n = len(tune.train_labels)
    assert n + len(tune.test_labels) == len(full.train_labels) and n == round(0.8 * TRAIN_SIZE)
    # Validation = the training split's last 20 %, never the test split.
    np.testing.assert_array_equal(tune.test.images, full.train.images[n:])
    np.testing.assert_array_equal(tune.train.images, full.train.images[:n])
    final = lawn.load_splits('digits', 'final', None)
    np.testing.assert_array_equal(final.test.images, full.test.images)
    with pytest.raises(ValueError, match='unknown dataset'):
        lawn.load_splits('cifar', 'tune', None)


def numpy_logits(params, x):
    """A numpy forward pass of the LayerNorm MLP (flax LayerNorm: biased variance, eps 1e-6)."""
    h = x.reshape(len(x), -1)
    for k in (1, 2):
        h = h @ params[f'dense{k}']['kernel']
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        norm = params[f'norm{k}']
        h = (h - mu) / np.sqrt(var + 1e-6) * norm['scale'] + norm['bias']
        h = np.maximum(h, 0)
    return h @ params['head']['kernel'] + params['head']['bias']


def test_a_lawn_run_keeps_the_affine_norms_and_bounds_its_logits(tmp_path):
    s = {**lawn.get_config('quick'), 'model': ('mlp', 'ln', {'hidden': (16, 16)}),
         'batches': {'small': (32, 2, 1)}}
    run = {'stage': 'final', 'role': 'grid', 'dataset': 'digits', 'batch': 'small',
           'optimizer': 'lamb', 'free_fraction': 0.5, 'weight_decay': 0.0, 'mask': 'default'}
    (record,) = lawn.train_runs([run], s, 2, str(tmp_path), None)
    workdir = tmp_path / 'runs' / lawn.run_name(run)
    saved = metrics.read_jsonl(str(workdir / 'metrics.jsonl'))
    history = [[r for r in saved if r['seed'] == seed] for seed in range(2)]
    steps = TRAIN_SIZE // 32
    assert record['free_steps'] == steps and record['total_steps'] == 2 * steps
    # The constrained set includes the last LayerNorm's scale and offset, held constant.
    for h in history:
        assert sorted(h[-1]['lawn_weight_norms']) == ['head/kernel', 'norm2/bias', 'norm2/scale']
        for path, target in h[-1]['lawn_target_norms'].items():
            np.testing.assert_allclose(h[-1]['lawn_weight_norms'][path], target, rtol=1e-5)
    assert max(record['final']['norm_error_per_seed']) <= 1e-5
    # The eval-mode measurement agrees with the engine's test evaluation.
    np.testing.assert_allclose(record['final']['test_accuracy'],
                               [h[-1]['test_accuracy'] for h in history], atol=1e-6)
    # Against numpy: the final parameters' logits, their largest norm and the bound.
    from jaxnorm import checkpoints
    params = jax.device_get(checkpoints.load_arrays(str(workdir))['params'])
    x = lawn.load_splits('digits', 'final', None).train_images
    for seed in range(2):
        p = jax.tree.map(lambda a: np.asarray(a[seed], np.float64), params)
        norms = np.linalg.norm(numpy_logits(p, x), axis=-1)
        bound = (np.linalg.norm(p['head']['kernel'])
                 * (np.sqrt(16) * np.linalg.norm(p['norm2']['scale'])
                    + np.linalg.norm(p['norm2']['bias'])) + np.linalg.norm(p['head']['bias']))
        np.testing.assert_allclose(record['final']['max_logit_norm'][seed], norms.max(),
                                   rtol=1e-4)
        np.testing.assert_allclose(record['final']['logit_bound'][seed], bound, rtol=1e-5)
        assert norms.max() <= bound
        # The constrained norm is the numpy norm of the three frozen leaves.
        np.testing.assert_allclose(record['final']['weight_norm'][seed], np.sqrt(
            np.sum(p['head']['kernel'] ** 2) + np.sum(p['norm2']['scale'] ** 2)
            + np.sum(p['norm2']['bias'] ** 2)), rtol=1e-5)


def synthetic_records(gain_points, seeds=4):
    """Tested arms whose per-seed LAWN-minus-plain gain is ``gain_points[(d, b, o)]``."""
    rng, records = np.random.default_rng(0), []
    for (d, b, o), gain in gain_points.items():
        plain = rng.uniform(0.6, 0.7, seeds)
        for fraction, acc in ((None, plain), (0.1, plain + np.asarray(gain) / 100)):
            records.append({'stage': 'final', 'role': 'grid', 'dataset': d, 'batch': b,
                            'optimizer': o, 'free_fraction': fraction, 'weight_decay': 0.0,
                            'mask': 'default', 'final': {
                                'test_accuracy': acc.tolist(),
                                'logit_norm': [5.0 if fraction else 9.0] * seeds,
                                'max_logit_norm': [6.0] * seeds, 'logit_bound': [7.0] * seeds,
                                'train_loss': [0.2 if fraction else 0.1] * seeds,
                                'norm_error_per_seed': [1e-7] * seeds}})
    return records


def test_checks_judge_paired_gains_per_cell_with_holm():
    gains = {('d', b, o): [2.0, 2.5, 3.0, 2.2] if o == 'adam' else [0.1, -0.2, 0.3, 0.0]
             for b in ('small', 'full') for o in ('sgd', 'adam', 'lamb')}
    records = synthetic_records(gains)
    s = {**lawn.get_config('standard'), 'tune_seeds': 0}
    results, _ = lawn_report.evaluate_checks(records, s, lawn_report.declare_checks(4, s))
    out = {r['name']: r for r in results}
    assert all(out[n]['outcome'] == 'supported' for n in (
        'norms_constant_after_switch', 'logits_bounded', 'logits_attenuated',
        'loss_floor_higher', 'adam_improves', 'adam_gains_most', 'non_inferiority_1pt'))
    # SGD and LAMB gain nothing at full batch: the 90 % interval lies below the declared
    # 1 point, so the claim is refuted there.
    assert out['all_improve_at_large_batch']['outcome'] == 'refuted'
    cells = {c['cell']: c for c in out['adam_improves']['cells']}
    assert set(cells) == {'d/adam/small', 'd/adam/full'}
    np.testing.assert_allclose(cells['d/adam/full']['estimate'], np.mean([2.0, 2.5, 3.0, 2.2]),
                               rtol=1e-5)
    # Holm over two cells: the smaller p doubled, the larger kept (as stats.holm).
    from jaxnorm.papers import stats
    check = lawn_report.declare_checks(4, s)['adam_improves']
    assert isinstance(check, checks.Check) and check.effect == 1.0
    raw = [stats.p_greater(np.asarray(gains['d', b, 'adam']), null=0.0) for b in ('small', 'full')]
    np.testing.assert_allclose(sorted(c['p_holm'] for c in cells.values()),
                               sorted(stats.holm(raw)), rtol=1e-5)


def test_a_logit_above_its_bound_or_a_lower_loss_makes_the_sanity_checks_fail():
    records = synthetic_records({('d', 'full', o): [0.0, 0.1, -0.1, 0.0]
                                 for o in ('sgd', 'adam', 'lamb')})
    lawn_run = next(r for r in records if r['free_fraction'] and r['optimizer'] == 'sgd')
    lawn_run['final']['max_logit_norm'][2] = 7.1
    lawn_run['final']['train_loss'][1] = 0.05
    # Within the declared tolerance of plain's loss (0.1 nats here): not a failure.
    lawn_run['final']['train_loss'][0] = 0.1 - lawn_report.LOSS_TOLERANCE / 2
    s = {**lawn.get_config('quick')}
    results, notes = lawn_report.evaluate_checks(records, s, lawn_report.declare_checks(4, s))
    out = {r['name']: r['outcome'] for r in results}
    assert out['logits_bounded'] == 'refuted' and out['loss_floor_higher'] == 'refuted'
    assert out['logits_attenuated'] == 'supported'
    assert any('loss_floor_higher fails in d/full/sgd free fraction 0.1 seed 1' in note
               for note in notes)
    assert not any('seed 0' in note for note in notes)
    assert checks.verdict(results) == 'invalid'


def test_paper_scale_is_the_paper_values_and_refuses_a_config_without_lawn():
    config = lawn.get_config('paper')
    assert (config.model, config.optimizer, config.batch_size, config.lawn.free_epochs) == (
        'vgg13', 'adam', 2048, 10.0)
    # The paper scale's LAWN arm uses the default mask (kernel and last BN's affine).
    assert config.lawn.mask is None and config.lawn.last_norm_affine
    with pytest.raises(ValueError, match=r'^mine\.py sets no lawn\.free_epochs'):
        lawn.paper_setting({**lawn.PAPER, 'lawn.free_epochs': None}, 'mine.py')
