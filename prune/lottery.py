"""Lottery tickets vs pruning & fine-tuning, and the weight-correlation measure between θ₀ and θ_T.

**Iterative magnitude pruning (IMP).** Each round trains, then prunes a fraction ``r`` of the
surviving weights of every selected layer by magnitude (uniform per-layer rate), so after
``k`` rounds each layer keeps a fraction :math:`(1-r)^k` and the per-round rate reaching a
target sparsity ``s`` in ``K`` rounds is :math:`r = 1 - (1-s)^{1/K}`. Between rounds the
survivors are rewound to θ₀ (Frankle & Carbin). The three arms share the final mask ``m``:

* lottery ticket (LT): train :math:`m \\odot \\theta_0`;
* random re-initialization: train :math:`m \\odot \\theta_0'` with a fresh :math:`\\theta_0'`;
* pruning & fine-tuning (PF): train :math:`m \\odot \\theta_T`, the *dense* network trained
  from θ₀ (the first training run), pruned by the final mask (the paper's PF; with ``rounds >
  1`` the mask comes from the last IMP retraining, but PF still inherits θ_T).

The mask search (pretraining and the IMP retrainings) is shared by every arm; the paper's "same
total epochs" is then the mask search plus each arm's own epochs. :func:`lottery_arms` and
:func:`lottery_levels` do not force the arms' epochs to be equal (``arm_epochs`` may differ per
arm): they record in an :class:`EpochLedger` every call they make to ``train`` and its epochs,
so a caller can check equal budgets against what its training loop actually ran.
:func:`lottery_levels` runs the arms at several increasing sparsities along one IMP path.
The training loop stays outside this package: ``train(params, masks, epochs, key) -> params``.

**Overlap of large weights.** For layer ``l`` with ``N_l`` weights let :math:`T_p(\\theta^l)`
be its :math:`k_l = \\max(1, \\mathrm{round}(p N_l))` largest-magnitude entries (round half
to even). Then

.. math::

    R_p(\\theta, \\theta') = \\frac{\\sum_l |T_p(\\theta^l) \\cap T_p(\\theta'^l)|}
                                  {\\sum_l k_l},

which is the paper's :math:`\\sum_l |\\cdot| / (p \\sum_l N_l)` whenever every :math:`p N_l`
is an integer. For independent weights each layer's overlap is hypergeometric with mean
:math:`k_l^2 / N_l`, so :math:`R_p \\approx p`; :math:`R_p > p` means the large weights of
θ_T are still those of θ₀. **Ties** in magnitude are broken by flat index (the lower index
ranks higher), so the selection is deterministic. With ``masks`` only the kept entries of a
layer count (``N_l`` is its number of kept weights), the paper's convention for sparse nets.

References:
  Liu et al., `Lottery Ticket Preserves Weight Correlation: Is It Desirable or Not?
  <https://arxiv.org/abs/2102.11068>`_, ICML 2021; Frankle & Carbin, `The Lottery Ticket
  Hypothesis <https://arxiv.org/abs/1803.03635>`_, ICLR 2019.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import aligned, check_like, named_leaves
from prune.masks import (apply_masks, check_masks, check_ratio, ones_masks, select_leaves,
                         unstructured_masks)

Train = Callable[[Any, Any, int, jax.Array], Any]
ARMS = ('lottery', 'reinit', 'finetune')


class EpochLedger(NamedTuple):
    """Epochs passed to ``train``: shared mask search, then each arm's own training.

    Attributes:
      mask_search: epochs of pretraining and IMP retraining (shared by every arm).
      arms: ``{arm: epochs}`` for ``'lottery'``, ``'reinit'``, ``'finetune'``.
      calls: ``((label, epochs), ...)``, every call of ``train`` in call order (``label`` is
        ``'pretrain'``, ``'retrain'`` or an arm), so a caller can pair its own per-call record
        (e.g. the optimizer steps its loop ran) with the arms.
    """

    mask_search: int
    arms: dict
    calls: tuple = ()

    def totals(self) -> dict:
        """``{arm: mask_search + arm epochs}``, the budget each arm's result cost."""
        return {arm: self.mask_search + epochs for arm, epochs in self.arms.items()}


class LotteryResult(NamedTuple):
    """Output of :func:`lottery_arms`.

    Attributes:
      masks: the final IMP mask tree (bool), shared by every arm.
      pretrained: θ_T, the dense network trained from θ₀; PF starts from ``m ⊙ θ_T``.
      mask_source: the trained weights the final mask was computed from (θ_T when
        ``rounds == 1``, else the last IMP retraining).
      arms: ``{arm: trained params}``.
      sparsities: selected-weight sparsity after each round.
      ledger: the :class:`EpochLedger`.
    """

    masks: Any
    pretrained: Any
    mask_source: Any
    arms: dict
    sparsities: np.ndarray
    ledger: EpochLedger


def _check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f'rounds must be a positive integer, got {rounds!r}')
    return int(rounds)


def imp_rate(target: float, rounds: int) -> float:
    """Per-round pruning rate ``r = 1 - (1 - target)**(1 / rounds)`` of the surviving weights.

    Example:
      >>> round(imp_rate(0.875, 3), 6)
      0.5
    """
    target = check_ratio(target, 'target sparsity')
    return 1.0 - (1.0 - target) ** (1.0 / _check_rounds(rounds))


def imp_sparsities(rate: float, rounds: int) -> np.ndarray:
    """Cumulative sparsity after rounds ``1..rounds``: ``1 - (1 - rate)**k``."""
    rate = check_ratio(rate, 'rate')
    return 1.0 - (1.0 - rate) ** np.arange(1, _check_rounds(rounds) + 1, dtype=np.float64)


def _selection(params, select):
    """``select`` (default: leaves with >= 2 axes; a prefix tree is expanded) as a tree of
    Python bools mirroring ``params``."""
    select = select_leaves(params) if select is None else select
    flags = [bool(f) for f in check_like(params, select, 'select tree', prefix=True)]
    if not any(flags):
        raise ValueError('select chooses no leaf; pass e.g. prune.select_leaves(params)')
    return jax.tree_util.tree_unflatten(named_leaves(params, placeholders=True)[2], flags)


def _ranks(scores: jax.Array) -> jax.Array:
    """0-based rank of each entry by descending score; ties: the lower flat index ranks higher."""
    order = jnp.argsort(-scores, stable=True)
    return jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size,
                                                                       dtype=jnp.int32))


def magnitude_round(params, masks, sparsity: float, select=None) -> Any:
    """One IMP pruning step: keep the largest ``|θ|`` among the survivors of each selected layer.

    Each selected layer keeps ``max(1, round(N_l * (1 - sparsity)))`` of its ``N_l`` entries,
    chosen only among the entries ``masks`` keeps, so masks are nested across rounds
    (``sparsity`` is cumulative). Unselected leaves keep their mask. jit/vmap-compatible.

    Args:
      params: the trained weights to rank.
      masks: the current bool mask tree (``prune.ones_masks(params)`` before round 1).
      sparsity: target cumulative sparsity of each selected layer, in [0, 1).
      select: bool tree of the leaves to prune (default: every leaf with >= 2 axes).

    Returns:
      The new bool mask tree.
    """
    check_masks(params, masks)
    select = _selection(params, select)
    alive = jax.tree.map(lambda m: jnp.asarray(m) != 0, masks)
    # Pruned entries score below every survivor, so survivors are re-chosen first.
    scores = jax.tree.map(lambda p, a: jnp.where(a, jnp.abs(p).astype(jnp.float32), -1.0),
                          params, alive)
    kept = unstructured_masks(scores, sparsity, select, scope='layer')
    return jax.tree.map(jnp.logical_and, kept, alive)


def rewind(init_params, masks) -> Any:
    """``init_params`` with pruned entries set to 0: the ticket ``m ⊙ θ₀`` (or ``m ⊙ θ₀'``)."""
    return apply_masks(init_params, masks)


def _batched(fn, batch_dims: int):
    for _ in range(batch_dims):
        fn = jax.vmap(fn)
    return fn


def _arm_epochs(arm_epochs, epochs: int) -> dict:
    """``{arm: epochs}`` from None (each arm ``epochs``), an int, or a mapping over :data:`ARMS`."""
    if arm_epochs is None:
        arm_epochs = epochs
    if not isinstance(arm_epochs, dict):
        arm_epochs = {arm: arm_epochs for arm in ARMS}
    if set(arm_epochs) != set(ARMS):
        raise ValueError(f'arm_epochs must name exactly the arms {ARMS}, got {sorted(arm_epochs)}')
    for arm, value in arm_epochs.items():
        _check_epochs(f'arm_epochs[{arm!r}]', value)
    return {arm: int(arm_epochs[arm]) for arm in ARMS}


def _check_epochs(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


class _Runner:
    """Calls ``train`` with a fresh key each time and logs ``(label, epochs)`` per call."""

    def __init__(self, train: Train, key: jax.Array, calls: int):
        self.train, self.keys, self.calls = train, iter(jax.random.split(key, calls)), []

    def __call__(self, label: str, params, masks, epochs: int):
        self.calls.append((label, int(epochs)))
        return self.train(params, masks, int(epochs), next(self.keys))

    def arms(self, starts: dict, masks, arm_epochs: dict, batch_dims: int) -> dict:
        """Trains each arm from its start rewound onto ``masks`` (m ⊙ start), in
        :data:`ARMS` order."""
        return {arm: self(arm, _batched(rewind, batch_dims)(starts[arm], masks), masks,
                          arm_epochs[arm]) for arm in ARMS}

    def ledger(self, arms_from: int | None = None) -> EpochLedger:
        """The ledger up to the arms starting at call ``arms_from`` (default: the last three
        calls): mask search = the pretraining, retraining and LT calls before them."""
        calls = self.calls if arms_from is None else self.calls[:arms_from + len(ARMS)]
        search = sum(n for label, n in calls[:len(calls) - len(ARMS)]
                     if label in ('pretrain', 'retrain', 'lottery'))
        return EpochLedger(search, dict(calls[len(calls) - len(ARMS):]), tuple(calls))


def _prepare(init_params, reinit_params, select, batch_dims):
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f'batch_dims must be an integer >= 0, got {batch_dims!r}')
    reinit_params = aligned(init_params, reinit_params, 'reinit_params tree',
                            against='init_params')
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[batch_dims:], x.dtype),
                       init_params)
    return reinit_params, _selection(one, select)


def lottery_arms(train: Train, init_params, reinit_params, key: jax.Array, *,
                 sparsity: float, rounds: int, epochs: int, arm_epochs=None,
                 select=None, batch_dims: int = 0) -> LotteryResult:
    """IMP with rewinding, then the LT, random re-init and PF arms on the shared mask.

    Protocol: θ_T = train(θ₀, 1, E); θ_src = θ_T; for k = 1..K: m_k = prune(θ_src, m_{k-1})
    at sparsity ``1 - (1 - r)^k``, and unless k = K, θ_src = train(m_k ⊙ θ₀, m_k, E). Then the
    arms train from m ⊙ θ₀ (LT), m ⊙ θ₀' (re-init) and m ⊙ θ_T (PF: the dense trained
    network, whatever ``rounds``), each for its ``arm_epochs``.

    Args:
      train: ``train(params, masks, epochs, key) -> params``; must keep masked entries at 0
        (e.g. with :func:`prune.masked_optimizer`). It may run a batch of networks (see
        ``batch_dims``).
      init_params: θ₀.
      reinit_params: θ₀', a fresh initialization of the same shapes (random re-init arm).
      key: PRNG key, split for every call of ``train``.
      sparsity: target sparsity of each selected layer, in [0, 1).
      rounds: IMP rounds K (the first prunes the pretrained network).
      epochs: E, epochs of pretraining and of each IMP retraining.
      arm_epochs: epochs of each arm: None (``epochs``, the paper's T' = T), an int, or
        ``{arm: epochs}`` over :data:`ARMS`. Nothing forces them equal: the ledger records
        them.
      select: bool tree of prunable leaves for *one* network (default: >= 2 axes).
      batch_dims: leading axes of every leaf that index independent networks (seeds, learning
        rates); the mask step is ``vmap``-ed over them.

    Returns:
      A :class:`LotteryResult`; ``ledger.totals()`` gives each arm's mask search + own epochs.

    Example:
      >>> result = lottery_arms(train, theta0, theta0_fresh, key, sparsity=0.8, rounds=2,
      ...                       epochs=5)
      >>> result.ledger.totals()
      {'lottery': 15, 'reinit': 15, 'finetune': 15}
    """
    rounds = _check_rounds(rounds)
    epochs = _check_epochs('epochs', epochs)
    arm_epochs = _arm_epochs(arm_epochs, epochs)
    reinit_params, select = _prepare(init_params, reinit_params, select, batch_dims)
    run = _Runner(train, key, rounds + 3)
    masks = ones_masks(init_params)
    pretrained = source = run('pretrain', init_params, masks, epochs)
    levels = imp_sparsities(imp_rate(sparsity, rounds), rounds)
    for k, level in enumerate(levels, start=1):
        masks = _batched(lambda p, m, s=float(level): magnitude_round(p, m, s, select),
                         batch_dims)(source, masks)
        if k < rounds:
            source = run('retrain', _batched(rewind, batch_dims)(init_params, masks),
                         masks, epochs)
    starts = {'lottery': init_params, 'reinit': reinit_params, 'finetune': pretrained}
    arms = run.arms(starts, masks, arm_epochs, batch_dims)
    return LotteryResult(masks, pretrained, source, arms, levels, run.ledger())


def lottery_levels(train: Train, init_params, reinit_params, key: jax.Array, *,
                   levels, epochs: int, arm_epochs=None, select=None,
                   batch_dims: int = 0) -> list[LotteryResult]:
    """The three arms at each of several increasing sparsities along one IMP path.

    Protocol (Frankle & Carbin's IMP, each level one round): θ_T = train(θ₀, 1, E); θ_src =
    θ_T, m_0 = 1; for each level s_k: m_k = prune(θ_src, m_{k-1}) at sparsity s_k; the arms
    train m_k ⊙ θ₀ (LT), m_k ⊙ θ₀' (re-init) and m_k ⊙ θ_T (PF); then θ_src = the trained
    LT, whose magnitudes give the next mask. The mask search of level k is pretraining plus
    the LT runs of levels < k, shared by the level's three arms.

    Args:
      train, init_params, reinit_params, key, epochs, arm_epochs, select, batch_dims: as in
        :func:`lottery_arms`.
      levels: strictly increasing sparsities in [0, 1) of each selected layer.

    Returns:
      One :class:`LotteryResult` per level (``sparsities``: the levels up to it; ``ledger``:
      that level's mask search and arms, ``calls`` every call up to its arms).
    """
    levels = np.asarray([check_ratio(s, 'sparsity level') for s in levels], np.float64)
    if levels.size == 0 or np.any(np.diff(levels) <= 0):
        raise ValueError(f'levels must be a non-empty increasing sequence, got '
                         f'{levels.tolist()}')
    epochs = _check_epochs('epochs', epochs)
    arm_epochs = _arm_epochs(arm_epochs, epochs)
    reinit_params, select = _prepare(init_params, reinit_params, select, batch_dims)
    run = _Runner(train, key, 1 + len(ARMS) * levels.size)
    masks = ones_masks(init_params)
    pretrained = source = run('pretrain', init_params, masks, epochs)
    starts = {'lottery': init_params, 'reinit': reinit_params, 'finetune': pretrained}
    results = []
    for k, level in enumerate(levels):
        masks = _batched(lambda p, m, s=float(level): magnitude_round(p, m, s, select),
                         batch_dims)(source, masks)
        first = len(run.calls)
        arms = run.arms(starts, masks, arm_epochs, batch_dims)
        results.append(LotteryResult(masks, pretrained, source, arms, levels[:k + 1],
                                     run.ledger(arms_from=first)))
        source = arms['lottery']
    return results


def _layer_items(theta, other, select, masks):
    check_masks(theta, ones_masks(other))
    select = _selection(theta, select)
    masks = ones_masks(theta) if masks is None else masks
    check_masks(theta, masks)
    paths, leaves, _ = named_leaves(theta)
    return [(path, a, b, m) for path, a, b, m, chosen in zip(
        paths, leaves, jax.tree.leaves(other), jax.tree.leaves(masks),
        jax.tree.leaves(select)) if chosen]


def _overlap_counts(a, b, m, p):
    keep = jnp.ravel(m) != 0
    k = jnp.maximum(1, jnp.round(p * jnp.sum(keep))).astype(jnp.int32)

    def top(x):
        return (_ranks(jnp.where(keep, jnp.abs(jnp.ravel(x)).astype(jnp.float32), -1.0)) < k
                ) & keep

    return jnp.sum(top(a) & top(b)), k


def layer_overlaps(theta, other, p: float, *, select=None, masks=None) -> dict:
    """``{path: |T_p(θ^l) ∩ T_p(θ'^l)| / k_l}`` for every selected layer (see module doc).

    Args:
      theta, other: two params trees of the same structure and shapes (e.g. θ₀ and θ_T).
      p: top fraction, in (0, 1].
      select: bool tree of layers to compare (default: leaves with >= 2 axes).
      masks: optional bool tree; only kept entries count (sparse networks).
    """
    p = _check_fraction(p)
    return {path: (lambda c: c[0] / c[1])(_overlap_counts(a, b, m, p))
            for path, a, b, m in _layer_items(theta, other, select, masks)}


def _check_fraction(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 < p <= 1:
        raise ValueError(f'p must be a number in (0, 1], got {p!r}')
    return float(p)


def weight_overlap(theta, other, p: float, *, select=None, masks=None) -> jax.Array:
    """The paper's correlation indicator :math:`R_p(\\theta, \\theta')` (Eq. 1; module doc).

    Pooled over the selected layers; ``≈ p`` for independent weights, 1 for ``other = c·θ``
    (c > 0). jit/vmap-compatible (``p`` static).

    Example:
      >>> theta0 = {'w': jnp.array([[4., 1.], [3., 2.]])}
      >>> float(weight_overlap(theta0, {'w': 2 * theta0['w']}, 0.5))
      1.0
    """
    p = _check_fraction(p)
    counts = [_overlap_counts(a, b, m, p) for _, a, b, m in
              _layer_items(theta, other, select, masks)]
    return (sum(c[0] for c in counts) / sum(c[1] for c in counts)).astype(jnp.float32)


def _average_ranks(x: jax.Array) -> jax.Array:
    """Ranks 0..n-1 of ``x`` ascending, tied values sharing their mean rank."""
    sorted_x = jnp.sort(x)
    low = jnp.searchsorted(sorted_x, x, side='left')
    high = jnp.searchsorted(sorted_x, x, side='right')
    return (low + high - 1).astype(jnp.float32) / 2.0


def _pearson(x: jax.Array, y: jax.Array) -> jax.Array:
    x, y = x - x.mean(), y - y.mean()
    return jnp.sum(x * y) / jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))


def magnitude_correlation(theta, other, *, method: str = 'pearson', select=None) -> dict:
    """``{path: corr(|θ^l|, |θ'^l|)}`` per selected layer, Pearson or Spearman (tie-averaged).

    Args:
      theta, other: two params trees of the same structure and shapes.
      method: ``'pearson'`` or ``'spearman'`` (Pearson of the ranks, ties sharing their mean).
      select: bool tree of layers (default: leaves with >= 2 axes).

    Returns:
      float32 scalars (NaN for a constant layer).
    """
    if method not in ('pearson', 'spearman'):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    out = {}
    for path, a, b, _ in _layer_items(theta, other, select, None):
        x, y = (jnp.abs(jnp.ravel(v)).astype(jnp.float32) for v in (a, b))
        if method == 'spearman':
            x, y = _average_ranks(x), _average_ranks(y)
        out[path] = _pearson(x, y)
    return out
