"""Micro-structured weight unification in the training engine: ADMM and tied retraining.

Two :mod:`jaxnorm.extension` s carry the training of Lin et al. (arXiv:2106.08301) into
:func:`jaxnorm.train.fit`; the maths is :mod:`prune.admm`'s, unchanged.

``admm`` (``config.admm.rho0 = ρ₀`` switches it on) wraps the run's optimizer in
:func:`prune.admm`: on the constrained kernels :math:`W` every step's gradient gains the
augmented-Lagrangian term, and once per epoch (at the first update of the next epoch, every
``steps_per_epoch`` updates) the auxiliary and dual variables are refreshed,

.. math::

    g \\leftarrow g + \\rho_t (W - Z + U), \\qquad
    Z \\leftarrow \\Pi_S(W + U), \\quad U \\leftarrow U + W - Z, \\qquad
    \\rho_t = \\rho_0 \\, f^{\\lfloor t / \\text{steps per epoch} \\rfloor},

with :math:`\\Pi_S` the (greedy) projection onto the unified set of the section's block shape
and ratios (:mod:`prune.unify`) and :math:`f` = ``admm.rho_factor``. The optimizer starts at
:math:`Z = \\Pi_S(W_0)`, :math:`U = 0` for the weights it is initialized with, so a run that
starts from other weights must re-initialize it from them: :func:`start_from`. Each epoch's
record gets ``admm_gap`` :math:`= \\lVert W - Z \\rVert / \\lVert W \\rVert` over the
constrained kernels.

``tied`` (``config.tied.retrain = True``) wraps it in :func:`prune.tied_optimizer` for the
retraining after the hard projection: the unified and pruned blocks of the installed codes are
frozen, or (``tied.train_magnitudes``) each unified block keeps its signs and trains its one
shared magnitude, re-tied after every step (a magnitude that crosses 0 flips the whole block,
which stays in the unified set); pruned blocks stay 0 and free blocks train normally. The
codes are installed with ``fit(initial_state=lambda state: with_codes(state, projected,
codes, spec))``. Each epoch's record gets ``tied_fraction``, the fraction of the
constrained blocks that are tied (0 means no codes were installed).

Both work seed-batched (``num_seeds = S``): params and codes then carry a leading lane axis
(:func:`hard_projection` selects and projects lane by lane).

Example::

    cfg = config.apply_overrides(config.default_config(), {
        'model': 'mlp', 'norm': 'none', 'optimizer': 'adam', 'lr': 3e-3, 'weight_decay': 0.0,
        'admm.rho0': 0.1, 'admm.rho_factor': 1.6, 'admm.block': (1, 4),
        'admm.unify_ratio': 0.5, 'admm.prune_ratio': 0.25})
    result = train.fit(cfg, initial_state=lambda state: start_from(state, pretrained))
    # [r['admm_gap'] for r in result.history] shrinks as rho grows

References:
  Lin, Jiang, Wang, Xu, Wang, Liu, Li, `Efficient Micro-Structured Weight Unification and
  Pruning for Neural Network Compression <https://arxiv.org/abs/2106.08301>`_, 2021.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import prune
from jaxnorm import extension, trees
from prune import unify

# The kernels UnifySpec constrains by default: every one but the classifier's.
EVERY_KERNEL_BUT_HEAD = unify.UnifySpec().pattern


@extension.register
class Admm(extension.Extension):
    """ADMM toward the unified set (arXiv:2106.08301) as a :mod:`jaxnorm.extension`."""

    name = 'admm'
    summary = ('ADMM toward micro-structured weight unification (arXiv:2106.08301): adds '
               'rho (W - Z + U) to the gradient, refreshes Z and U every epoch; records '
               '||W - Z|| / ||W||')
    options = {
        'rho0': extension.Option(None, 'initial penalty rho (None: ADMM off)', float),
        'rho_factor': extension.Option(1.0, 'rho is multiplied by this every epoch'),
        'block': extension.Option((1, 4), 'micro-block shape (rows, cols) in the out x fan_in '
                                  'matrix'),
        'unify_ratio': extension.Option(0.5, "fraction of each pool's blocks unified (one "
                                        'shared magnitude, signs kept)'),
        'prune_ratio': extension.Option(0.0, "fraction of each pool's blocks pruned (zero)"),
        'pattern': extension.Option(EVERY_KERNEL_BUT_HEAD, 'constrained kernels by path regex '
                                    '(default: every kernel but the head)'),
        'scope': extension.Option('layer', "selection pool: each layer, or one 'global' "
                                  'ranking', choices=unify.SCOPES),
    }
    switch = 'rho0'

    @classmethod
    def check_section(cls, config: Any) -> None:
        admm = config.admm
        if admm.rho0 is None:
            return
        if admm.rho0 < 0 or not admm.rho_factor > 0:
            raise ValueError(f'admm.rho0 must be >= 0 and admm.rho_factor > 0, got '
                             f'{admm.rho0}, {admm.rho_factor}')
        if Tied.is_active(config):
            raise ValueError('admm and tied.retrain are two phases; switch on one per run')
        unify.check_spec(admm_spec(admm))

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self.spec = admm_spec(section)
        self._gap = jax.jit(lambda params, opt_state: prune.admm_gap(
            params, trees.find_state(opt_state, prune.AdmmState)))

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        every = self.context.steps_per_epoch
        rho = prune.rho_schedule(self.section.rho0, self.section.rho_factor, every)
        return prune.admm(tx, self.spec, rho, update_every=every)

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        return {'admm_gap': float(self._gap(train_state.params, train_state.opt_state))}


@extension.register
class Tied(extension.Extension):
    """Retraining with unified blocks tied (arXiv:2106.08301) as a :mod:`jaxnorm.extension`."""

    name = 'tied'
    summary = ('retraining after the unification projection (arXiv:2106.08301): unified '
               'blocks keep their signs and one magnitude (frozen or trained), pruned blocks '
               'stay 0; install the codes with fit(initial_state=...)')
    options = {
        'retrain': extension.Option(False, 'wrap the optimizer in prune.tied_optimizer (codes: '
                                    'jaxnorm.unification.with_codes)'),
        'block': extension.Option((1, 4), 'micro-block shape (rows, cols) the codes were '
                                  'selected with'),
        'pattern': extension.Option(EVERY_KERNEL_BUT_HEAD, 'constrained kernels by path regex '
                                    '(those the codes name)'),
        'train_magnitudes': extension.Option(False, "train each unified block's shared "
                                             'magnitude (default: unified blocks frozen)'),
    }

    @classmethod
    def is_active(cls, config: Any) -> bool:
        return bool(config.tied.retrain)

    @classmethod
    def check_section(cls, config: Any) -> None:
        if cls.is_active(config):
            unify.check_spec(tied_spec(config.tied))

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self._fraction = jax.jit(lambda opt_state: tied_fraction(
            trees.find_state(opt_state, prune.TiedState).codes))

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return prune.tied_optimizer(tx, tied_spec(self.section),
                                    train_magnitudes=self.section.train_magnitudes)

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        return {'tied_fraction': float(self._fraction(train_state.opt_state))}


def admm_spec(section: Any) -> unify.UnifySpec:
    """The unified set of an ``admm`` section."""
    return unify.UnifySpec(tuple(section.block), section.unify_ratio, section.prune_ratio,
                           section.scope, pattern=section.pattern)


def tied_spec(section: Any) -> unify.UnifySpec:
    """The block geometry of a ``tied`` section (the codes fix which blocks are tied, so the
    ratios play no part)."""
    return unify.UnifySpec(tuple(section.block), 0.0, 0.0, pattern=section.pattern)


def tied_fraction(codes: dict) -> jax.Array:
    """The fraction of the blocks in ``codes`` that are unified or pruned."""
    leaves = jax.tree.leaves(codes)
    return (sum(jnp.count_nonzero(c) for c in leaves) / sum(c.size for c in leaves)).astype(
        jnp.float32)


def seed_batched(train_state: Any) -> bool:
    """Whether ``train_state`` holds a leading seed axis (``num_seeds > 1``)."""
    return jnp.ndim(train_state.step) == 1


def start_from(train_state: Any, params: Any) -> Any:
    """``train_state`` with ``params`` and its optimizer state initialized from them (lane by
    lane when seed-batched): the state a phase starts from, e.g. ADMM with
    :math:`Z = \\Pi_S(W_0)` of the pre-trained :math:`W_0`. Use it in
    ``fit(initial_state=...)``."""
    init = jax.vmap(train_state.tx.init) if seed_batched(train_state) else train_state.tx.init
    # Compiled: op by op, ADMM's initial projection costs seconds of dispatch per run.
    return train_state.replace(params=params, opt_state=jax.jit(init)(params))


def with_codes(train_state: Any, params: Any, codes: dict, spec: unify.UnifySpec) -> Any:
    """:func:`start_from` ``params`` with ``codes`` installed in the tied optimizer: the state a
    ``tied.retrain`` run starts from (use it in ``fit(initial_state=...)``).

    Args:
      train_state: the fresh state of a run with ``tied.retrain`` on.
      params: the projected weights (:func:`prune.unify.project` with ``codes``); the signs
        of the unified blocks are read from them.
      codes: ``{path: int8 codes}`` of :func:`prune.unify.select_blocks` (0 free, 1 unified,
        2 pruned), with a leading lane axis when seed-batched.
      spec: the :class:`prune.unify.UnifySpec` the codes were selected with.

    Raises:
      ValueError: the run has no tied optimizer, or the codes do not match its kernels.
    """
    state = start_from(train_state, params)
    trees.find_state(state.opt_state, prune.TiedState)  # raises when tied.retrain is off

    def one_lane(tied, params, codes):
        return prune.install_codes(tied, params, codes, spec)
    install = jax.jit(jax.vmap(one_lane) if seed_batched(state) else one_lane)
    is_tied = lambda node: isinstance(node, prune.TiedState)  # noqa: E731
    return state.replace(opt_state=jax.tree.map(
        lambda node: install(node, params, codes) if is_tied(node) else node,
        state.opt_state, is_leaf=is_tied))


def hard_projection(params: Any, spec: unify.UnifySpec, lanes: int) -> tuple[Any, dict]:
    """Each lane of seed-batched ``params`` projected onto the unified set of ``spec`` with its
    own minimum-cost block selection (``'exact'``, :func:`prune.unify.select_blocks`).

    Returns:
      The projected params and the codes, both with the leading lane axis (what
      :func:`with_codes` takes).
    """
    codes = [unify.select_blocks(jax.tree.map(lambda leaf: leaf[k], params), spec, 'exact')
             for k in range(lanes)]
    codes = jax.tree.map(lambda *lane_codes: jnp.stack(lane_codes), *codes)
    return project_lanes(params, codes, spec), codes


@functools.partial(jax.jit, static_argnums=2)
def project_lanes(params: Any, codes: dict, spec: unify.UnifySpec) -> Any:
    """Every lane of ``params`` projected with its lane of ``codes`` (e.g. to re-tie the
    weights after retraining: the stored model)."""
    return jax.vmap(lambda p, c: unify.project(p, spec, codes=c))(params, codes)
