"""The OrthoReg experiment's measurements against hand computations (no training)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prune
from jaxnorm.papers import orthoreg, orthoreg_prune

RNG = np.random.default_rng(3)


@functools.lru_cache(maxsize=1)
def tiny_net():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(24, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=24))
    variables = jax.jit(orthoreg.CONV_MODEL.init)(jax.random.key(1), x[:1])
    # Perturbed BN affine parameters and conv biases, so that every slot matters.
    params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                          variables['params'])
    return params, variables['batch_stats'], x, y


def test_paper_runs_score_with_the_reference_filter_scope():
    for scale in ('quick', 'standard', 'paper'):
        assert orthoreg.get_config(scale)['scope'] == 'filter'


def test_filter_scope_fisher_and_masked_losses_by_hand():
    """I_k = (sum over conv filter k and its bias of theta * g)^2, g = dL/dtheta; the masked
    loss zeroes the channel's conv slice, bias, BN scale / bias and the next layer's input."""
    params, stats, x, y = tiny_net()
    members = {g.name: prune.random_groups(g.width, 0.25, 3, RNG) for g in orthoreg.GROUPS}
    keeps = {n: 1.0 - jnp.asarray(m, jnp.float32) for n, m in members.items()}
    scores, base, masked = orthoreg.fisher_and_group_losses(params, stats, x, y, keeps)
    loss = jax.jit(lambda p: orthoreg.ce(p, stats, x, y, False)[0])
    grads = jax.device_get(jax.jit(jax.grad(loss))(params))
    theta = jax.device_get(params)
    for i in (1, 2, 3):
        w = np.asarray(theta[f'conv{i}']['kernel'], np.float64)
        gw = np.asarray(grads[f'conv{i}']['kernel'], np.float64)
        b = np.asarray(theta[f'conv{i}']['bias'], np.float64)
        gb = np.asarray(grads[f'conv{i}']['bias'], np.float64)
        expected = [(np.sum(w[..., k] * gw[..., k]) + b[k] * gb[k]) ** 2
                    for k in range(w.shape[-1])]
        np.testing.assert_allclose(scores[f'conv{i}'], expected, rtol=2e-3, atol=1e-12)
    # The second group of conv2, masked by hand.
    dead = np.flatnonzero(members['conv2'][1])
    hand = jax.tree.map(np.array, theta)
    hand['conv2']['kernel'][..., dead] = 0
    hand['conv2']['bias'][dead] = 0
    hand['norm2']['scale'][dead] = 0
    hand['norm2']['bias'][dead] = 0
    hand['conv3']['kernel'][:, :, dead, :] = 0
    np.testing.assert_allclose(masked['conv2'][1], loss(hand), rtol=1e-5)
    # And every group of every layer against masking every slot of the params.
    for g in orthoreg.GROUPS:
        for j in range(3):
            zeroed = orthoreg.zero_channels(params, g, keeps[g.name][j])
            np.testing.assert_allclose(masked[g.name][j], loss(zeroed), rtol=1e-5)
    np.testing.assert_allclose(base, loss(params), rtol=1e-6)
    # The fast scorer of the pruning rounds gives the same Fisher scores.
    fast = jax.jit(orthoreg_prune.make_scorer(orthoreg.ce_conv, orthoreg.GROUPS, 'filter'))(
        params, stats, x, y)
    for name in scores:
        np.testing.assert_allclose(fast['fisher'][name], scores[name], rtol=2e-3, atol=1e-12)


def test_l1_norm_scores_and_per_layer_spearman_by_hand():
    params, _, _, _ = tiny_net()
    l1 = orthoreg_prune.l1_norm_scores(params, orthoreg.GROUPS)
    w = np.asarray(params['conv2']['kernel'])
    np.testing.assert_allclose(l1['conv2'], [np.abs(w[..., k]).sum() for k in range(32)],
                               rtol=1e-6)
    groups = orthoreg.GROUPS
    scores = {g.name: RNG.random(g.width) for g in groups}
    members = {g.name: prune.random_groups(g.width, 0.25, 12, RNG) for g in groups}
    masked = {g.name: RNG.random(12) + 1.0 for g in groups}
    per_layer, pooled, (estimate, truth) = orthoreg_prune.layer_additivity(
        scores, 1.0, masked, members, groups)

    def rho(a, b):  # Pearson of ranks (no ties here)
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return np.corrcoef(ra, rb)[0, 1]
    for g in groups:
        est = members[g.name].astype(float) @ scores[g.name]
        assert per_layer[g.name] == pytest.approx(rho(est, masked[g.name] - 1.0))
    assert pooled == pytest.approx(rho(estimate, truth))
    assert estimate.shape == truth.shape == (36,)


def test_iterative_protocol_rounds_budget_and_regularizer(monkeypatch):
    """Round r of n removes p / (r p + n (1 - p)) of the alive filters; between rounds only
    the OrthoReg lanes get kappa > 0, every lane the same epochs; masks are nested."""
    params, stats, x, y = tiny_net()
    seeds, levels = 2, (0.25, 0.75)
    dense = {arm: (jax.tree.map(lambda p: jnp.stack([p] * seeds), params),
                   jax.tree.map(lambda p: jnp.stack([p] * seeds), stats))
             for arm in ('baseline', 'orthoreg')}
    calls = []

    def fake_train(run_config, setting, p, st, masks, workdir, *, epochs, kappa, seed,
                   data_dir, mask):
        kept = [float(np.mean(np.asarray(jax.tree.leaves(orthoreg_prune.lane(masks, k)
                                                          ['norm1'])[0])))
                for k in range(len(jax.tree.leaves(masks)[0]))]
        calls.append((workdir.rsplit('/', 1)[-1], epochs, kappa, len(kept)))
        return jax.tree.map(lambda a, m: a * m, p, masks), st, kept
    monkeypatch.setattr(orthoreg_prune, 'train_lanes', fake_train)
    setting = {**orthoreg.get_config('quick'), 'rounds': 3, 'retrain_epochs': 2,
               'reg_epochs': 1, 'final_epochs': 4}
    scorer = orthoreg_prune.make_scorer(orthoreg.ce_conv, orthoreg.GROUPS, 'filter')
    acc, kept = orthoreg_prune.iterative_prune(
        setting, dense, orthoreg.GROUPS, scorer, x, y, None, '/tmp/x', None, levels, seeds,
        1000, orthoreg.CONV_KERNELS)
    lanes = seeds * len(orthoreg_prune.SCORE_METHODS) * len(levels)
    assert calls == [('round1_retrain', 2, None, lanes), ('round1_ortho', 1, 0.01, 4),
                     ('round1_plain', 1, 0.0, lanes - 4), ('round2_retrain', 2, None, lanes),
                     ('round2_ortho', 1, 0.01, 4), ('round2_plain', 1, 0.0, lanes - 4),
                     ('round3_retrain', 4, None, lanes)]
    total = sum(g.width for g in orthoreg.GROUPS)
    for level in levels:
        alive = total
        for f in [level / (r * level + 3 * (1 - level)) for r in (1, 2, 3)]:
            alive -= int(np.floor(f * alive))
        for method in orthoreg_prune.SCORE_METHODS:
            assert kept[(method, level)] == pytest.approx(alive / total)
            assert len(acc[(method, level)]) == seeds
