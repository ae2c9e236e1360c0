"""Parameter-importance estimators of EWC, MAS, SI and RWalk, offline and online.

All functions are pure and work on any parameter pytree. Importances are float32 trees with
the params' structure.

**Offline** (once, at the end of a task, from a few batches of its training data):

* EWC (empirical Fisher): :math:`\\Omega = \\mathbb{E}_i[(\\nabla_\\theta \\ell_i)^2]` over
  single examples (``per_example=True``), or the squared gradient of each batch's mean loss
  averaged over batches (``per_example=False``; with one same-class batch per class this is
  the estimator of the EMR authors' code).
* MAS: :math:`\\Omega = |\\nabla_\\theta \\tfrac1B \\sum_i \\lVert f(x_i) \\rVert_2^2|`,
  either per example (mean of absolute gradients) or per batch (absolute value of the
  batch-averaged gradient, averaged over batches before the absolute value, as that code).

**Online** (an EMA updated after every optimizer step, weight ``momentum`` on the new value,
:math:`r \\leftarrow m\\,x_t + (1-m)\\,r`):

* EWC: :math:`x_t = g_t^2` with :math:`g_t` the minibatch gradient of the step.
* MAS: :math:`x_t = |\\nabla_\\theta \\lVert f(X_t) \\rVert^2|` (passed in by the caller).
* SI and RWalk: the path term :math:`x_t = |g_t \\odot (\\theta_{t+1} - \\theta_{start})|`
  (``path='abs'``, EMR v1 code) or its ReLU (``path='relu'``, later code); RWalk also keeps
  :math:`F \\leftarrow m (g_t \\odot \\theta_t)^2 + (1-m) F`, kept across tasks by default
  (the EMR code and RWalk's own definition; ``keep_fisher=False`` zeroes it at each task).

The importance *used* from the running sums, with :math:`\\theta^*` the previous task's end
point and damping :math:`\\xi` (1e-10):

* EWC, MAS: :math:`\\Omega = r`;
* SI: :math:`\\Omega = r / ((\\theta - \\theta^*)^2 + \\xi)`;
* RWalk: :math:`\\Omega = F + r / (F (\\theta - \\theta^*)^2 + \\xi)`.

:class:`ImportanceTracker` keeps these sums over a sequence of tasks (:class:`ImportanceState`):
it updates them after every step and, at a task boundary (:func:`merge_task`), merges the
finished task's importance into the past one, :math:`\\Omega_{prev} \\leftarrow (\\Omega_{prev} +
\\Omega_{task}) / 2`, and moves the anchor :math:`\\theta^*` to the current parameters.
:func:`optim.quadratic` and :func:`optim.emr` are built on it.

References:
  Kirkpatrick et al. 2017 (EWC); Aljundi et al. 2018 (MAS); Zenke et al. 2017 (SI);
  Chaudhry et al. 2018 (RWalk); Lubana, Trivedi, Koutra, Dick, `How do Quadratic Regularizers
  Prevent Catastrophic Forgetting: The Role of Interpolation
  <https://arxiv.org/abs/2102.02805>`_, 2021/2022.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp

from jaxnorm.trees import aligned

IMPORTANCES = ('ewc', 'mas', 'si', 'rwalk')
PATHS = ('abs', 'relu')
DAMPING = 1e-10


def check_importance(name: str) -> str:
    """``name`` if it is one of :data:`IMPORTANCES`, else a ``ValueError`` listing them."""
    if name not in IMPORTANCES:
        raise ValueError(f'unknown importance {name!r}; choose one of {IMPORTANCES}')
    return name


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _mean_trees(trees: list, weights: list | None = None):
    """Weighted mean of ``trees`` (equal weights without ``weights``)."""
    if not trees:
        raise ValueError('importance needs at least one batch')
    weights = [1.0] * len(trees) if weights is None else [float(w) for w in weights]
    total = jax.tree.map(lambda x: weights[0] * x, trees[0])
    for weight, tree in zip(weights[1:], trees[1:]):
        total = jax.tree.map(lambda t, x, w=weight: t + w * x, total, tree)
    return jax.tree.map(lambda x: x / sum(weights), total)


def _batch_size(batch) -> int:
    """Examples in ``batch`` (the leading axis of its leaves, which must agree)."""
    sizes = {int(jnp.shape(leaf)[0]) for leaf in jax.tree.leaves(batch) if jnp.ndim(leaf)}
    if len(sizes) != 1:
        raise ValueError(f'a batch needs one example axis shared by its leaves, got leading '
                         f'sizes {sorted(sizes)}')
    size = sizes.pop()
    if size == 0:
        raise ValueError('importance got an empty batch')
    return size


def _per_example_grads(scalar_fn: Callable, params, batch):
    """Gradient of ``scalar_fn(params, batch_of_one)`` for every example of ``batch``."""
    def one(example):
        return jax.grad(scalar_fn)(params, jax.tree.map(lambda a: a[None], example))
    return jax.vmap(one)(batch)


def ewc_importance(loss_fn: Callable[[Any, Any], jax.Array], params, batches: Iterable, *,
                   per_example: bool = True):
    """Offline EWC importance (empirical Fisher diagonal).

    Args:
      loss_fn: ``(params, batch) -> scalar`` mean loss of a batch (a pytree of arrays with
        the example axis first).
      params: parameter tree.
      batches: one or more batches.
      per_example: mean over all examples of all batches of the squared single-example
        gradients (the empirical Fisher; batches of unequal size count by their examples), or
        mean over batches of the squared batch gradient (the EMR code, one batch per class).

    Returns:
      A float32 tree like ``params``.

    Example:
      >>> omega = ewc_importance(loss, params, [batch])
    """
    terms, sizes = [], []
    for batch in batches:
        if per_example:
            sizes.append(_batch_size(batch))
            grads = _per_example_grads(loss_fn, params, batch)
            terms.append(jax.tree.map(lambda g: jnp.mean(jnp.square(_f32(g)), axis=0), grads))
        else:
            terms.append(jax.tree.map(lambda g: jnp.square(_f32(g)),
                                      jax.grad(loss_fn)(params, batch)))
    # per example: every example counts once, so batch means are weighted by batch size
    return _mean_trees(terms, sizes if per_example else None)


REDUCTIONS = ('mean', 'sum')


def squared_output_norm(apply_fn: Callable[[Any, Any], jax.Array], reduction: str = 'mean'):
    """``(params, inputs) -> mean (or sum) over the batch of ||f(x)||_2^2``, MAS's objective.

    ``reduction='mean'`` is Aljundi et al.'s per-example average; ``'sum'`` is the EMR v1
    code's ``output.norm(2, dim=1).pow(2).sum()`` (its online MAS applies it to the features
    before the classifier), B times the mean for a batch of B.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f'unknown reduction {reduction!r}; choose one of {REDUCTIONS}')
    reduce = jnp.mean if reduction == 'mean' else jnp.sum

    def objective(params, inputs):
        outputs = jnp.asarray(apply_fn(params, inputs), jnp.float32)
        return reduce(jnp.sum(jnp.square(outputs.reshape(outputs.shape[0], -1)), axis=-1))
    return objective


def mas_importance(apply_fn: Callable[[Any, Any], jax.Array], params, batches: Iterable, *,
                   per_example: bool = False):
    """Offline MAS importance: sensitivity of the squared L2 norm of the outputs.

    Args:
      apply_fn: ``(params, inputs) -> outputs`` (logits or features), batch axis first.
      params: parameter tree.
      batches: one or more input batches (arrays, or pytrees the model accepts).
      per_example: mean over all examples of all batches of
        :math:`|\\nabla \\lVert f(x_i)\\rVert^2|` (Aljundi et al.; batches count by their
        examples), or :math:`|\\mathrm{mean}_b \\nabla \\mathrm{mean}_{i \\in b}
        \\lVert f(x_i)\\rVert^2|` (the EMR code: averaged before the absolute value).

    Returns:
      A float32 tree like ``params``.
    """
    objective = squared_output_norm(apply_fn)
    terms, sizes = [], []
    for inputs in batches:
        if per_example:
            sizes.append(_batch_size(inputs))
            grads = _per_example_grads(objective, params, inputs)
            terms.append(jax.tree.map(lambda g: jnp.mean(jnp.abs(_f32(g)), axis=0), grads))
        else:
            terms.append(_f32(jax.grad(objective)(params, inputs)))
    mean = _mean_trees(terms, sizes if per_example else None)
    return mean if per_example else jax.tree.map(jnp.abs, mean)


def ema(running, new, momentum: float):
    """``momentum * new + (1 - momentum) * running`` leaf by leaf (float32)."""
    return jax.tree.map(lambda r, x: momentum * jnp.asarray(x, jnp.float32)
                        + (1.0 - momentum) * r, running, new)


def path_term(grads, new_params, start, path: str = 'abs'):
    """SI / RWalk's per-step contribution :math:`|g \\odot (\\theta_{t+1}-\\theta_{start})|`.

    ``path='relu'`` takes :math:`\\max(0, \\cdot)` instead of the absolute value.
    """
    if path not in PATHS:
        raise ValueError(f'unknown path {path!r}; choose one of {PATHS}')
    act = jnp.abs if path == 'abs' else jax.nn.relu

    def term(g, p, s):
        return act(jnp.asarray(g, jnp.float32)
                   * (jnp.asarray(p, jnp.float32) - jnp.asarray(s, jnp.float32)))
    return jax.tree.map(term, grads, new_params, start)


def si_importance(path_sum, params, anchor, damping: float = DAMPING):
    """SI: ``path_sum / ((params - anchor)**2 + damping)``."""
    def leaf(r, p, a):
        delta = jnp.asarray(p, jnp.float32) - jnp.asarray(a, jnp.float32)
        return r / (jnp.square(delta) + damping)
    return jax.tree.map(leaf, path_sum, params, anchor)


def rwalk_importance(path_sum, fisher, params, anchor, damping: float = DAMPING):
    """RWalk: ``fisher + path_sum / (fisher * (params - anchor)**2 + damping)``."""
    def leaf(r, f, p, a):
        delta = jnp.asarray(p, jnp.float32) - jnp.asarray(a, jnp.float32)
        return f + r / (f * jnp.square(delta) + damping)
    return jax.tree.map(leaf, path_sum, fisher, params, anchor)


def current_importance(name: str, running, fisher, params, anchor,
                       damping: float = DAMPING):
    """The importance in use for ``name`` given the running sums (module docstring)."""
    check_importance(name)
    if name in ('ewc', 'mas'):
        return running
    if name == 'si':
        return si_importance(running, params, anchor, damping)
    return rwalk_importance(running, fisher, params, anchor, damping)


class ImportanceState(NamedTuple):
    """What :class:`ImportanceTracker` keeps across steps and tasks.

    Attributes:
      has_anchor: bool scalar, False until the first :func:`merge_task` (during the first
        task there is no past to protect).
      anchor: :math:`\\theta^*`, the parameters at the end of the previous task (the params'
        dtypes).
      start: the parameters at the start of the current task (origin of SI's path term).
      omega_prev: float32 importance of past tasks.
      running: float32 EMA :math:`r` of the online term of the current task.
      fisher: float32 EMA :math:`F` of :math:`(g \\odot \\theta)^2` (RWalk only; zeros otherwise).
      omega_cur: float32 importance of the current task after the last step.
      keep_fisher: bool scalar: :func:`merge_task` keeps RWalk's :math:`F` across tasks (the
        reference code) instead of zeroing it (set from :attr:`ImportanceTracker.keep_fisher`).
    """

    has_anchor: jax.Array
    anchor: Any
    start: Any
    omega_prev: Any
    running: Any
    fisher: Any
    omega_cur: Any
    keep_fisher: Any = False


def _zeros32(tree):
    return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), tree)


@dataclasses.dataclass(frozen=True)
class ImportanceTracker:
    """One online importance estimator, accumulated step by step over a sequence of tasks.

    After an optimizer step :math:`\\theta_{t+1} = \\theta_t + u_t` taken on the minibatch
    gradient :math:`g_t`, every selected leaf is updated as

    .. math::

        r \\leftarrow m\\,x_t + (1 - m)\\,r, \\qquad
        F \\leftarrow m\\,(g_t \\odot \\theta_t)^2 + (1 - m)\\,F \\ \\text{(RWalk)}, \\qquad
        \\Omega_{cur} = \\Omega(r, F, \\theta_{t+1}, \\theta^*),

    with the online term :math:`x_t` and the importance :math:`\\Omega` of the estimator
    (module docstring); unselected leaves keep zeros. :func:`merge_task` closes a task.

    Attributes:
      importance: ``'ewc'``, ``'mas'``, ``'si'`` or ``'rwalk'``.
      momentum: :math:`m`, the EMA weight of the new term, in (0, 1] (0.8 in the EMR
        authors' code); an array under ``optax.inject_hyperparams``.
      path: ``'abs'`` or ``'relu'``, SI/RWalk's path term (:func:`path_term`).
      damping: :math:`\\xi` > 0 in SI/RWalk's normalization.
      keep_fisher: True (default, the EMR authors' code and Chaudhry et al.'s RWalk, whose
        Fisher is one EMA over the whole sequence): RWalk's :math:`F` carries over task
        boundaries; False: :func:`merge_task` zeroes it with the path sums.

    Raises:
      ValueError: unknown importance or path, momentum outside (0, 1], damping <= 0.

    Example:
      >>> tracker = ImportanceTracker('si')
      >>> state = tracker.init(params)
      >>> selected = jaxnorm.trees.mask_tree(None, params)      # every leaf
      >>> state = tracker.update(state, grads, params, steps, selected)  # after each step
      >>> state = merge_task(state, params)                     # between tasks
    """

    importance: str
    momentum: Any = 0.8
    path: str = 'abs'
    damping: Any = DAMPING
    keep_fisher: bool = True

    def __post_init__(self):
        check_importance(self.importance)
        if self.path not in PATHS:
            raise ValueError(f'unknown path {self.path!r}; choose one of {PATHS}')
        if isinstance(self.momentum, (int, float)) and not 0 < self.momentum <= 1:
            raise ValueError(f'momentum must be in (0, 1], got {self.momentum}')
        if isinstance(self.damping, (int, float)) and not self.damping > 0:
            raise ValueError(f'damping must be positive, got {self.damping}')

    def init(self, params) -> ImportanceState:
        """No anchor yet; both anchor and start are copies of ``params``, the sums zero."""
        zeros = _zeros32(params)
        return ImportanceState(
            has_anchor=jnp.zeros([], jnp.bool_), anchor=jax.tree.map(jnp.array, params),
            start=jax.tree.map(jnp.array, params), omega_prev=zeros, running=zeros,
            fisher=zeros, omega_cur=zeros, keep_fisher=jnp.asarray(bool(self.keep_fisher)))

    def update(self, state: ImportanceState, grads, params, steps, selected, *,
               mas_grads=None) -> ImportanceState:
        """The state after one optimizer step (class docstring).

        Args:
          state: the state before the step.
          grads: the task gradient :math:`g_t` of the step (before any penalty).
          params: :math:`\\theta_t`, the parameters the step started from.
          steps: the update :math:`u_t` the step applied.
          selected: tree of Python bools like ``params`` (:func:`jaxnorm.trees.mask_tree`).
          mas_grads: for MAS, the gradient of :func:`squared_output_norm` at this step.

        Raises:
          ValueError: MAS without ``mas_grads``, or ``mas_grads`` not shaped like params.
        """
        m = self.momentum
        moved = jax.tree.map(lambda w, u: w.astype(jnp.float32) + u.astype(jnp.float32),
                             params, steps)
        if self.importance == 'ewc':
            terms = jax.tree.map(lambda g: jnp.square(g.astype(jnp.float32)), grads)
        elif self.importance == 'mas':
            if mas_grads is None:
                raise ValueError("importance='mas' needs the gradient of the squared output "
                                 'norm at every step: pass update(..., mas_grads=grads_of_norm) '
                                 '(see optim.importance.squared_output_norm)')
            terms = jax.tree.map(lambda e: jnp.abs(e.astype(jnp.float32)),
                                 aligned(params, mas_grads, 'mas_grads tree'))
        else:
            terms = path_term(grads, moved, state.start, self.path)

        def ema(keep, old, new):
            return m * new + (1.0 - m) * old if keep else old

        running = jax.tree.map(ema, selected, state.running, terms)
        fisher = state.fisher
        if self.importance == 'rwalk':
            fisher = jax.tree.map(ema, selected, fisher, jax.tree.map(
                lambda g, w: jnp.square(g.astype(jnp.float32) * w.astype(jnp.float32)),
                grads, params))
        current = current_importance(self.importance, running, fisher, moved, state.anchor,
                                     self.damping)
        omega_cur = jax.tree.map(lambda keep, new, old: new if keep else old, selected,
                                 current, state.omega_cur)
        return state._replace(running=running, fisher=fisher, omega_cur=omega_cur)


def merge_task(state: ImportanceState, params, omega=None) -> ImportanceState:
    """Close a task: :math:`\\Omega_{prev} \\leftarrow (\\Omega_{prev} + \\Omega_{task}) / 2`.

    :math:`\\Omega_{task}` is ``omega`` if given (an offline importance, e.g.
    :func:`ewc_importance`), else the online importance after the last step. Anchor and SI's
    start become ``params`` (in the anchor's dtypes), the running sums 0 (RWalk's Fisher
    :math:`F` too unless ``state.keep_fisher``), ``has_anchor`` True.
    Shapes and dtypes are kept, so jitted updates do not retrace.

    Args:
      state: the tracker's state.
      params: the parameters at the end of the finished task.
      omega: optional importance tree like ``params``.

    Raises:
      ValueError: ``params`` or ``omega`` does not match the state (missing or extra paths,
        shapes), named by :func:`jaxnorm.trees.check_like`.
    """
    params = aligned(state.anchor, params, 'params tree', against='the importance state')
    task = state.omega_cur
    if omega is not None:
        task = aligned(state.anchor, omega, 'omega tree', against='the importance state')
    merged = jax.tree.map(lambda p, t: 0.5 * (p + jnp.asarray(t, jnp.float32)),
                          state.omega_prev, task)
    anchor = jax.tree.map(lambda a, p: jnp.asarray(p, a.dtype), state.anchor, params)
    keep = jnp.asarray(state.keep_fisher, jnp.bool_)
    fisher = jax.tree.map(lambda f: jnp.where(keep, f, jnp.zeros_like(f)), state.fisher)
    return ImportanceState(
        has_anchor=jnp.ones([], jnp.bool_), anchor=anchor, start=anchor, omega_prev=merged,
        running=_zeros32(state.running), fisher=fisher,
        omega_cur=_zeros32(state.omega_cur), keep_fisher=state.keep_fisher)
