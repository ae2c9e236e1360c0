"""OrthoReg's measurements after the dense phase: per-layer additivity and iterative pruning.

Split off :mod:`jaxnorm.papers.orthoreg` (which holds the setting, model and checks).

**Scores** of a channel :math:`k` (one per method, each on its own lane's current network):

* Fisher, ``scope='filter'`` (the reference's ``imp_estimator.py``): with :math:`\\bar g` the
  mean loss gradient over the scoring sample (BN in eval mode),
  :math:`I_k = (\\sum_{i \\in \\text{filter } k \\cup \\text{bias } k}
  \\theta_i \\bar g_i)^2`;
  ``orthoreg`` scores the OrthoReg-trained net, ``fisher`` the normally trained one;
* ``l1_norm`` (Li et al., arXiv:1608.08710): :math:`\\lVert W_k \\rVert_1`, the conv filter's
  entrywise L1 norm;
* ``bn_scale`` (Liu et al., arXiv:1708.06519): :math:`|\\gamma_k|`.

**Additivity** (claim a): for ``n_groups`` random groups :math:`S` of 25 % of one layer's
filters, the Spearman correlation, *per layer*, between :math:`\\sum_{k \\in S} I_k` and the
true training-loss increase :math:`L(\\theta \\odot m_S) - L(\\theta)` when the group's channels
(conv slice, bias, BN scale and bias, next layer's input slice) are masked.

**Iterative pruning** (claim b; research/optim.md 3.3, the reference's ``main.py``): ``rounds``
rounds; round :math:`r` of :math:`n` removes :math:`p / (r p + n (1 - p))` of the alive filters
(:func:`prune.round_fractions`) by one global ranking with the reference's per-layer minimum
(:func:`prune.select_survivors`), then retrains ``retrain_epochs`` (cosine from the LR, weight
decay, no regularizer); between rounds the OrthoReg lanes are trained ``reg_epochs`` more *with*
the regularizer (no weight decay, the last epoch at LR x0.1, the reference's [24, 1] schedule
shrunk) and every other lane the same epochs with weight decay and no regularizer, so every
method gets the same budget [infer: the reference gives its baselines no such phase]. The last
round retrains ``final_epochs``. With ``rounds = 1`` this is the reference's Early-Bird one-shot
protocol. Every phase is one seed-batched ``jaxnorm.train.fit`` over the lanes it trains.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

import prune
from jaxnorm import sparsity, train
from prune.group_importance import taylor_sums

SCORE_METHODS = ('orthoreg', 'fisher', 'l1_norm', 'bn_scale')
# The dense model each method prunes.
SOURCE = {'orthoreg': 'orthoreg', 'fisher': 'baseline', 'l1_norm': 'baseline',
          'bn_scale': 'baseline'}


def l1_norm_scores(params, groups) -> dict[str, jax.Array]:
    """:math:`\\lVert W_k \\rVert_1` of each group's producing filter slice (float32)."""
    flat = dict(zip(*prune.named_leaves(params)[:2]))
    out = {}
    for group in groups:
        path, axis = group.filter
        w = jnp.abs(jnp.asarray(flat[path], jnp.float32))
        axis = axis % w.ndim
        out[group.name] = jnp.sum(w, axis=tuple(a for a in range(w.ndim) if a != axis))
    return out


def spearman(a, b) -> float:
    """Spearman's rho of two vectors (nan when either is constant)."""
    return float(scipy.stats.spearmanr(np.asarray(a), np.asarray(b)).statistic)


def layer_additivity(scores, base, masked, members, groups) -> tuple[dict, float, tuple]:
    """Per-layer and pooled Spearman of :math:`\\sum_{k \\in S} I_k` against the true loss
    increase; also the pooled (estimate, truth) pair for the scatter plot."""
    per_layer, estimates, truths = {}, [], []
    for g in groups:
        estimate = np.asarray(prune.group_estimate(scores[g.name], members[g.name]))
        truth = np.asarray(masked[g.name]) - float(base)
        per_layer[g.name] = spearman(estimate, truth)
        estimates.append(estimate)
        truths.append(truth)
    estimate, truth = np.concatenate(estimates), np.concatenate(truths)
    return per_layer, spearman(estimate, truth), (estimate, truth)


def make_scorer(ce, groups, scope: str):
    """``(params, stats, x, y) -> {method kind: scores}`` for one network: Fisher
    (``scope``), L1 norm and BN scale (jitted by the caller)."""
    def score(params, stats, x, y):
        grads = jax.grad(lambda p: ce(p, stats, x, y, False)[0])(params)
        fisher = {n: jnp.square(s) for n, s in taylor_sums(params, grads, groups,
                                                            scope=scope).items()}
        return {'fisher': fisher, 'l1_norm': l1_norm_scores(params, groups),
                'bn_scale': prune.bn_scale_scores(params, groups)}
    return score


def lane(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


def stacked(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def train_lanes(run_config, setting, params, stats, masks, workdir, *, epochs, kappa,
                seed, data_dir, mask: str = r'^conv\d+/kernel$'):
    """One seed-batched ``fit`` of every lane of ``params`` held at ``masks``: ``kappa`` None
    retrains (cosine, weight decay); a float trains with the OrthoReg extension (weight decay
    0 if ``kappa > 0``, else weight decay and the extension only measuring), LR x0.1 for the
    last epoch; ``mask`` is the regularized kernels' path regex. Returns the final params,
    stats and each lane's test accuracy."""
    lanes = len(jax.tree.leaves(masks)[0])
    if kappa is None:
        overrides = {'schedule': 'cosine', 'weight_decay': setting['weight_decay']}
    else:
        # The reference's [24, 1] epochs at [0.1, 0.01]: the last epoch at LR x0.1.
        decay = {'schedule': 'step', 'lr_decay_epochs': (epochs - 1,)} if epochs > 1 else {
            'schedule': 'constant'}
        overrides = {**decay,
                     'weight_decay': 0.0 if kappa > 0 else setting['weight_decay'],
                     'orthoreg.kappa': kappa, 'orthoreg.mask': mask,
                     'orthoreg.size': setting['size'],
                     'orthoreg.gram_side': setting['gram_side']}
    cfg = run_config(setting, data_dir, workdir, {
        'epochs': epochs, 'sparsity.masked': True, 'seed': seed, 'num_seeds': lanes,
        **overrides})

    def pruned(state):
        return sparsity.with_mask(state.replace(params=params, batch_stats=stats), masks)
    result = train.fit(cfg, resume=True, initial_state=pruned)
    final = {r['seed'] - seed: r['test_accuracy'] for r in result.history
             if r['epoch'] == epochs}
    return result.state.params, result.state.batch_stats, [final[k] for k in range(lanes)]


def iterative_prune(setting, dense, groups, scorer, sx, sy, run_config, runs_dir, data_dir,
                    levels, seeds: int, first_seed: int, mask: str):
    """Claim (b)'s protocol (module docstring) for every (seed, method, level) lane.

    Args:
      dense: ``{'baseline' | 'orthoreg': (params, stats)}`` with a leading seed axis.
      mask: path regex of the kernels OrthoReg regularizes.
      first_seed: lane k of phase j reads the data in seed ``first_seed + 100 j + k``'s order.

    Returns:
      ``{(method, level): [accuracy per seed]}`` after the last round, and the lanes'
      surviving channel fraction.
    """
    rounds = setting['rounds']
    lanes = [(s, m, lv) for s in range(seeds) for m in SCORE_METHODS for lv in levels]
    params = [lane(dense[SOURCE[m]][0], s) for s, m, _ in lanes]
    stats = [lane(dense[SOURCE[m]][1], s) for s, m, _ in lanes]
    alive = [{g.name: np.ones(g.width, bool) for g in groups} for _ in lanes]
    fractions = {lv: prune.round_fractions(lv, rounds) for lv in levels}
    score = jax.jit(scorer)
    phase = 0
    for r in range(rounds):
        masks = []
        for k, (s, method, level) in enumerate(lanes):
            kind = 'fisher' if method == 'orthoreg' else method
            scores = jax.device_get(score(params[k], stats[k], sx, sy)[kind])
            alive[k] = prune.select_survivors(scores, alive[k], float(fractions[level][r]))
            masks.append(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32),
                                      prune.structured_masks(params[k], groups, alive[k])))
        last = r == rounds - 1
        p, st, acc = train_lanes(
            run_config, setting, stacked(params), stacked(stats), stacked(masks),
            os.path.join(runs_dir, f'round{r + 1}_retrain'),
            epochs=setting['final_epochs' if last else 'retrain_epochs'], kappa=None,
            seed=first_seed + 100 * phase, data_dir=data_dir, mask=mask)
        phase += 1
        params, stats = [lane(p, k) for k in range(len(lanes))], [lane(st, k)
                                                                   for k in range(len(lanes))]
        if last or setting['reg_epochs'] == 0:
            continue
        for arm, kappa in (('ortho', setting['kappa']), ('plain', 0.0)):
            idx = [k for k, (_, m, _) in enumerate(lanes) if (m == 'orthoreg') == (arm == 'ortho')]
            p, st, _ = train_lanes(
                run_config, setting, stacked([params[k] for k in idx]),
                stacked([stats[k] for k in idx]), stacked([masks[k] for k in idx]),
                os.path.join(runs_dir, f'round{r + 1}_{arm}'), epochs=setting['reg_epochs'],
                kappa=kappa, seed=first_seed + 100 * phase, data_dir=data_dir, mask=mask)
            phase += 1
            for j, k in enumerate(idx):
                params[k], stats[k] = lane(p, j), lane(st, j)
    out = {}
    for (s, method, level), a in zip(lanes, acc):
        out.setdefault((method, level), []).append(float(a))
    kept = {(m, lv): float(np.mean([np.mean(np.concatenate(list(alive[k].values())))
                                    for k, (_, m2, lv2) in enumerate(lanes)
                                    if (m2, lv2) == (m, lv)]))
            for m in SCORE_METHODS for lv in levels}
    return out, kept


__all__ = ['iterative_prune', 'l1_norm_scores', 'layer_additivity', 'make_scorer']
