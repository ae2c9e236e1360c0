"""Extensions: how a training method plugs into :func:`jaxnorm.train.fit` without editing it.

An extension is a subclass of :class:`Extension` with a config section of typed
:class:`Option` s and any of seven hooks. :func:`register` makes it known; from then on
:func:`jaxnorm.config.default_config` has its section (``config.<name>.<option>``), the
training command line has its flags (``--<name>-<option>``), and ``fit`` builds it for every
run whose section switches it on. ``fit`` then calls, in this order:

1. :meth:`Extension.wrap_optimizer`: wraps the update rule (before coupled weight decay
   is prepended, so a projection sees the decayed gradient).
2. :meth:`Extension.init_state`: the extension's own pytree, held in
   ``TrainState.extensions[name]``, checkpointed and restored with the rest and batched over
   seeds like the parameters.
3. :meth:`Extension.wrap_loss`: wraps the forward-and-loss function of a step; it sees the
   train state before the step (e.g. a teacher held in the extension's state) and may add
   per-step metrics, which are averaged into the epoch's record.
4. :meth:`Extension.optimizer_args`: extra keyword arguments of the optimizer's ``update``
   at this step. :meth:`Extension.after_step`: updates the train state after the step (its
   own state, or the parameters).
5. :meth:`Extension.epoch_metrics`: entries added to each epoch's ``metrics.jsonl`` record.
6. :meth:`Extension.identity`: settings a checkpoint must share with the run resuming it.

Example (an eleventh method, with no core file edited)::

    from jaxnorm import extension

    @extension.register
    class LogitPenalty(extension.Extension):
        name = 'logit_penalty'
        summary = 'add c * mean squared logit to the loss'
        options = {'coef': extension.Option(None, 'penalty weight c', float)}
        switch = 'coef'

        def wrap_loss(self, forward, train_state):
            def penalized(params, batch_stats, batch, key):
                loss, (logits, stats, metrics) = forward(params, batch_stats, batch, key)
                penalty = self.section.coef * jnp.mean(logits ** 2)
                return loss + penalty, (logits, stats, {**metrics, 'logit_penalty': penalty})
            return penalized

    cfg = config.apply_overrides(config.default_config(), {'logit_penalty.coef': 1e-3})
    train.fit(cfg)
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, ClassVar, NamedTuple

import optax

# (params, batch_stats, batch, key) -> (loss, (logits, new_batch_stats, metrics)), where
# metrics is a dict of scalars (per step; the epoch's record gets their means).
ForwardLoss = Callable[..., tuple[Any, tuple[Any, Any]]]
# The modules whose import registers the extensions that ship with jaxnorm.
BUILTIN_MODULES = ('jaxnorm.lawn', 'jaxnorm.afan', 'jaxnorm.advprop', 'jaxnorm.eman',
                   'jaxnorm.fixmatch', 'jaxnorm.byol', 'jaxnorm.mimicnorm', 'jaxnorm.orthoreg',
                   'jaxnorm.sparsity', 'jaxnorm.unification', 'jaxnorm.continual')


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of an extension's config section.

    Attributes:
      default: the value when nothing overrides it.
      help: one line for ``--help`` and the docs.
      type: the value's type where ``default`` is None (``float``, ``str``, ``tuple``...);
        otherwise ``type(default)``.
      choices: the only values allowed (checked in configs and on the command line).
    """

    default: Any
    help: str
    type: type | None = None
    choices: tuple | None = None

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)


class RunContext(NamedTuple):
    """What an extension may know about the run it joins.

    Attributes:
      config: the whole run config.
      model: the flax module being trained.
      input_shape: one example's shape, e.g. ``(32, 32, 3)``.
      num_classes: the dataset's number of classes.
      steps_per_epoch: optimizer steps in one epoch.
    """

    config: Any
    model: Any
    input_shape: tuple[int, ...]
    num_classes: int
    steps_per_epoch: int


class Extension:
    """Base class: a method's config section and hooks; every hook defaults to doing nothing.

    Class attributes:
      name: the config section and flag prefix (a Python identifier).
      summary: one line naming the method and its reference, for ``--help``.
      options: ``{option: Option}``, the section's schema.
      switch: the option that turns the method on when it is set (not None, not ''); None
        when :meth:`is_active` is overridden instead.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ''
    options: ClassVar[dict[str, Option]] = {}
    switch: ClassVar[str | None] = None

    def __init__(self, section: Any, context: RunContext):
        self.section = section
        self.context = context

    @classmethod
    def is_active(cls, config: Any) -> bool:
        """Whether a run with ``config`` uses the method."""
        value = config[cls.name][cls.switch]
        return value is not None and value != ''

    @classmethod
    def check_section(cls, config: Any) -> None:
        """Raise ``ValueError`` for a bad value in ``config[cls.name]`` (choices are checked
        already); override for range checks."""

    def identity(self) -> dict:
        """JSON settings a checkpoint must share with the run that resumes it (default: the
        whole section)."""
        return dict(self.section)

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return tx

    def init_state(self, params: Any, batch_stats: Any) -> Any:
        """The extension's initial state (a pytree), or None for a stateless method."""
        return None

    def wrap_loss(self, forward: ForwardLoss, train_state: Any) -> ForwardLoss:
        """The step's loss: ``forward`` (the plain or an earlier extension's loss) wrapped.
        ``train_state`` is the state before the step (its extension entries, step, rng);
        differentiate only through the ``params`` argument of the returned function. Added
        metric names must not clash with the engine's (loss, accuracy, logit_norm)."""
        return forward

    def optimizer_args(self, train_state: Any, batch: dict) -> dict:
        """Extra keyword arguments for this step's ``tx.update`` (optax's extra-args protocol),
        for an update rule that needs more than the loss gradient, e.g. MAS's output-norm
        gradient; ``train_state`` is the state before the step."""
        return {}

    def after_step(self, train_state: Any) -> Any:
        """The train state after an optimizer step, e.g. with this extension's state moved
        (:meth:`state_of`, :meth:`with_state`) or the params projected."""
        return train_state

    def state_of(self, train_state: Any) -> Any:
        """This extension's entry of ``train_state.extensions``."""
        return train_state.extensions[self.name]

    def with_state(self, train_state: Any, value: Any) -> Any:
        """``train_state`` with this extension's entry replaced by ``value``."""
        return train_state.replace(extensions={**train_state.extensions, self.name: value})

    def epoch_metrics(self, train_state: Any, evaluate: Callable[[Any], dict]) -> dict:
        """Extra entries of the epoch's record. ``evaluate(state)`` gives ``{'loss',
        'accuracy'}`` on the test set for a train state (e.g. one holding a teacher's
        variables)."""
        return {}


_REGISTRY: dict[str, type[Extension]] = {}


def register(cls: type[Extension]) -> type[Extension]:
    """Make ``cls`` known to configs, the command line and ``fit`` (usable as a decorator)."""
    name = getattr(cls, 'name', None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f'{cls.__name__}.name must be a Python identifier, got {name!r}')
    if cls.switch is not None and cls.switch not in cls.options:
        raise ValueError(f'{cls.__name__}.switch {cls.switch!r} is not one of its options '
                         f'{sorted(cls.options)}')
    previous = _REGISTRY.get(name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise ValueError(f'two extensions are named {name!r}: {previous.__qualname__} and '
                         f'{cls.__qualname__}')
    _REGISTRY[name] = cls
    return cls


def registered() -> dict[str, type[Extension]]:
    """Every known extension by name, the built-in ones included."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(sorted(_REGISTRY.items()))


def check_choices(cls: type[Extension], section: Any) -> None:
    for key, option in cls.options.items():
        if option.choices is not None and section[key] not in option.choices:
            raise ValueError(f'unknown {cls.name}.{key} {section[key]!r}; choose one of '
                             f'{option.choices}')


def active(config: Any, context: RunContext) -> list[Extension]:
    """The extensions that ``config`` switches on, built for the run."""
    return [cls(config[name], context) for name, cls in registered().items()
            if cls.is_active(config)]
