"""EMAN: an exponential-moving-average teacher of the parameters *and* BN statistics.

Student-teacher methods (MoCo, BYOL, FixMatch) keep a teacher whose parameters follow the
student by an exponential moving average. EMAN (Cai et al., arXiv:2101.08482) also averages
the BatchNorm running statistics with the same momentum and always applies the teacher in
eval mode, so the teacher's output for one sample never depends on the rest of its batch.

For every leaf θ of the teacher (weights, BN scale/bias, running mean and variance):

    θ_T ← m_k · θ_T + (1 − m_k) · θ_S,

where θ_S is the student's leaf *after* its optimizer step (for the statistics, the student's
updated running averages, themselves an EMA of batch statistics with flax momentum 0.9), and
m_k is the momentum at teacher step k: a constant (0.999 for MoCo/FixMatch) or a schedule
(BYOL's cosine ramp ``1 − (1 − m_0)(cos(πk/K) + 1)/2``, :func:`cosine_momentum`).

Two teachers share this state:

* ``'eman'``: the EMAN teacher; its ``batch_stats`` are averaged and it runs with
  ``train=False`` (:func:`apply_teacher`).
* ``'ema'``: the standard EMA teacher (MoCo/BYOL/mean-teacher baseline): only ``params``
  are averaged (``update(..., average_stats=False)`` leaves ``batch_stats`` at their initial
  value) and it runs with BN in batch mode (``train=True``, the statistics it would write are
  discarded), so its output for one sample depends on the rest of its batch.

In :func:`jaxnorm.train.fit` the teacher is the ``eman`` extension (:class:`Teacher`):
``eman.momentum`` switches it on and ``eman.kind`` picks one of the two; a loss wrapper such
as :mod:`jaxnorm.fixmatch` reads it from ``train_state.extensions['eman']``.

Example::

    teacher = eman.init(params, batch_stats)
    ...  # one student step -> params, batch_stats
    teacher = eman.update(teacher, params, batch_stats, 0.999)
    logits = eman.apply_teacher(model.apply, teacher, images)

References: Z. Cai, A. Ravichandran, S. Maji, C. Fowlkes, Z. Tu, S. Soatto, "Exponential
Moving Average Normalization for Self-supervised and Semi-supervised Learning", CVPR 2021,
arXiv:2101.08482.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import extension, losses

Momentum = Union[float, optax.Schedule]
TEACHERS = ('eman', 'ema')


class TeacherState(NamedTuple):
    """The teacher: averaged ``params``, averaged ``batch_stats`` and its update count."""

    params: Any
    batch_stats: Any
    step: jax.Array


def init(student_params: Any, student_batch_stats: Any = None) -> TeacherState:
    """A teacher equal to the student (params and statistics alike), at step 0.

    Args:
      student_params: the student's ``params`` collection.
      student_batch_stats: its ``batch_stats`` collection (None or ``{}`` without BN).

    Returns:
      A :class:`TeacherState` holding copies of both collections.
    """
    copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731 (own buffers, not aliases)
    return TeacherState(copy(student_params), copy(student_batch_stats or {}),
                        jnp.zeros((), jnp.int32))


def momentum_at(momentum: Momentum, step: jax.Array) -> jax.Array:
    """The momentum m_k for teacher step ``step``: ``momentum`` itself or ``momentum(step)``."""
    if callable(momentum):
        return jnp.asarray(momentum(step), jnp.float32)
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
        raise ValueError(f'EMA momentum must be in [0, 1] (1 freezes the teacher), got {momentum}')
    return jnp.asarray(momentum, jnp.float32)


def cosine_momentum(base: float, total_steps: int) -> optax.Schedule:
    """BYOL/EMAN's annealed momentum ``m_k = 1 − (1 − base)(cos(π k / K) + 1) / 2``.

    Starts at ``base`` and reaches 1 at ``k = K = total_steps`` (held at 1 after).
    """
    if not 0.0 <= base <= 1.0 or total_steps <= 0:
        raise ValueError(f'need 0 <= base <= 1 and total_steps > 0, got {base}, {total_steps}')

    def schedule(step):
        progress = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
        return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0
    return schedule


def _average(teacher_tree: Any, student_tree: Any, m: jax.Array) -> Any:
    def mix(t, s):
        mixed = m * t.astype(jnp.float32) + (1.0 - m) * s.astype(jnp.float32)
        return mixed.astype(t.dtype)
    return jax.tree.map(mix, teacher_tree, student_tree)


def update(teacher: TeacherState, student_params: Any, student_batch_stats: Any,
           momentum: Momentum, *, average_stats: bool = True) -> TeacherState:
    """One EMA step ``θ_T ← m·θ_T + (1 − m)·θ_S`` on every leaf (float32 arithmetic).

    Args:
      teacher: the current :class:`TeacherState`.
      student_params: the student's params after its optimizer step.
      student_batch_stats: the student's updated running statistics (``{}`` without BN).
      momentum: m in [0, 1] (0 copies the student, 1 freezes the teacher) or a schedule of
        the teacher step (e.g. :func:`cosine_momentum`), evaluated at ``teacher.step``.
      average_stats: True (EMAN) averages the statistics with the same m; False is the
        standard EMA teacher, whose statistics are left as they are (it uses batch mode).

    Returns:
      The new :class:`TeacherState`, with ``step`` incremented.
    """
    if jax.tree.structure(teacher.params) != jax.tree.structure(student_params):
        raise ValueError('student params do not match the teacher\'s structure; build the '
                         'teacher with eman.init(student_params, student_batch_stats)')
    m = momentum_at(momentum, teacher.step)
    batch_stats = teacher.batch_stats
    if average_stats:
        batch_stats = _average(teacher.batch_stats, student_batch_stats or {}, m)
    return TeacherState(_average(teacher.params, student_params, m), batch_stats,
                        teacher.step + 1)


def apply_teacher(apply_fn: Callable, teacher: TeacherState, x: jax.Array, *,
                  kind: str = 'eman') -> jax.Array:
    """The teacher's forward pass: eval mode for ``'eman'``, BN batch mode for ``'ema'``.

    Args:
      apply_fn: the model's ``apply``.
      teacher: the :class:`TeacherState`.
      x: the input batch.
      kind: ``'eman'`` (running statistics, per-sample) or ``'ema'`` (batch statistics; the
        statistics it would store are discarded).

    Returns:
      The teacher's outputs (no gradient flows into the teacher).
    """
    if kind not in TEACHERS:
        raise ValueError(f'unknown teacher kind {kind!r}; choose one of {TEACHERS}')
    variables = {'params': teacher.params, 'batch_stats': teacher.batch_stats}
    if kind == 'eman':
        out = apply_fn(variables, x, train=False)
    else:
        out, _ = apply_fn(variables, x, train=True, mutable=['batch_stats'])
    return jax.lax.stop_gradient(out)


@extension.register
class Teacher(extension.Extension):
    """An EMA teacher (arXiv:2101.08482) as a :mod:`jaxnorm.extension`: a
    :class:`TeacherState` that follows the student after every step (:func:`update`) and is
    evaluated after every epoch (``teacher_test_loss``, ``teacher_test_accuracy``).

    ``kind='eman'`` averages params and BN statistics and is evaluated in eval mode;
    ``kind='ema'`` (the standard EMA teacher) averages params only and is evaluated with BN in
    batch mode, the statistics taken over the whole test split of ``config.dataset`` at once
    (its test accuracy depends on that batch, as its pseudo-labels depend on theirs). That
    split is loaded here, since the hooks see no data; a run on other in-memory splits
    (``fit(splits=...)``) is refused at its first evaluation.
    """

    name = 'eman'
    summary = ('EMAN (arXiv:2101.08482): an EMA teacher of params and BN statistics in eval '
               "mode (or kind 'ema': params only, batch-mode BN), evaluated every epoch")
    options = {
        'momentum': extension.Option(
            None, 'EMA momentum m of the teacher, e.g. 0.999 (None: no teacher)', float),
        'kind': extension.Option(
            'eman', "'eman': params and BN statistics averaged, eval mode; 'ema': params "
            'only, BN in batch mode (the standard EMA teacher)', choices=TEACHERS)}
    switch = 'momentum'

    @classmethod
    def check_section(cls, config: Any) -> None:
        m = config.eman.momentum
        if m is not None and not 0.0 <= m <= 1.0:
            raise ValueError(f'eman.momentum must be in [0, 1] (e.g. 0.999), got {m}')

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self._test_split_checked = False

    def init_state(self, params: Any, batch_stats: Any) -> TeacherState:
        return init(params, batch_stats)

    def after_step(self, train_state: Any) -> Any:
        teacher = update(self.state_of(train_state), train_state.params,
                         train_state.batch_stats, self.section.momentum,
                         average_stats=self.section.kind == 'eman')
        return self.with_state(train_state, teacher)

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        teacher = self.state_of(train_state)
        if self.section.kind == 'ema':
            return self._batch_mode_metrics(teacher, evaluate, train_state)
        result = evaluate(train_state.replace(params=teacher.params,
                                              batch_stats=teacher.batch_stats))
        return {'teacher_test_loss': result['loss'],
                'teacher_test_accuracy': result['accuracy']}

    @functools.cached_property
    def _test_split(self) -> tuple[np.ndarray, np.ndarray]:
        from jaxnorm import data  # only the 'ema' teacher needs the images
        cfg = self.context.config
        splits = data.load_standardized(cfg.dataset, data_dir=cfg.data_dir,
                                        image_size=cfg.image_size, resize=cfg.resize or 'pad')
        return splits.test_images, splits.test_labels

    @functools.cached_property
    def _test_losses(self) -> Callable:
        """``(teacher, images, labels, kind) -> (per-example cross-entropy, correct)``."""
        apply_fn = self.context.model.apply

        def losses_of(teacher, images, labels, kind):
            logits = apply_teacher(apply_fn, teacher, images, kind=kind)
            return losses.cross_entropy(logits, labels), jnp.argmax(logits, -1) == labels
        return jax.jit(losses_of, static_argnames='kind')

    def _batch_mode_metrics(self, teacher: TeacherState, evaluate: Callable[[Any], dict],
                            train_state: Any) -> dict:
        images, labels = self._test_split
        if not self._test_split_checked:  # same eval-mode loss: the engine's test split
            engine = evaluate(train_state.replace(params=teacher.params,
                                                  batch_stats=teacher.batch_stats))['loss']
            mine = float(jnp.mean(self._test_losses(teacher, images, labels, 'eman')[0]))
            if not np.isclose(mine, engine, rtol=1e-4, atol=1e-6):
                raise ValueError(
                    f"eman.kind='ema' evaluates on the test split of config.dataset "
                    f'{self.context.config.dataset!r}, but this run evaluates on other data '
                    f'(teacher eval-mode test loss {mine:.6g} there, {engine:.6g} here); name '
                    "the dataset instead of passing splits, or use eman.kind='eman'")
            self._test_split_checked = True
        loss, correct = self._test_losses(teacher, images, labels, 'ema')
        return {'teacher_test_loss': float(jnp.mean(loss)),
                'teacher_test_accuracy': float(jnp.mean(correct))}
