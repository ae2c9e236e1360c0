"""Run configuration: defaults, Python config files with ``get_config()``, and overrides.

A run is described by one :class:`ml_collections.ConfigDict`. Values come from three layers,
later ones winning: :func:`default_config`, an optional Python file whose ``get_config()``
returns a ConfigDict or a plain dict (big_vision style), and command-line overrides. Every key
is known in advance, so a misspelt key or a value of the wrong type is an error, not a silently
ignored setting.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from typing import Any, Mapping

import ml_collections

from jaxnorm import extension

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'lamb')
SCHEDULES = ('constant', 'cosine', 'step', 'linear')
# Settings that do not change what a run computes: they may differ when it is resumed.
PRESENTATION_KEYS = ('workdir', 'progress', 'keep_checkpoints', 'data_dir', 'eval_batch_size',
                     'divergence_factor', 'stop_on_divergence')


def default_config() -> ml_collections.ConfigDict:
    """The defaults: ResNet-20 with BatchNorm on the embedded digits data (CPU, ~1 minute).

    Every registered extension (:mod:`jaxnorm.extension`) adds its section,
    ``config.<name>.<option>``, off by default.
    """
    c = core_config()
    for name, cls in extension.registered().items():
        if name in c:
            raise ValueError(f'extension {cls.__qualname__} is named {name!r}, a core key')
        c[name] = section_config(cls)
    return c


def section_config(cls: type[extension.Extension]) -> ml_collections.ConfigDict:
    """An extension's section with its defaults, typed like the core keys."""
    section = ml_collections.ConfigDict()
    for key, option in cls.options.items():
        section[key] = (ml_collections.FieldReference(None, field_type=option.value_type)
                        if option.default is None else option.default)
    return section


def core_config() -> ml_collections.ConfigDict:
    """The settings of the engine itself, without extension sections."""
    c = ml_collections.ConfigDict()
    c.model = 'resnet20'
    c.model_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    c.norm = 'bn'
    c.norm_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    c.dataset = 'digits'
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.image_size = ml_collections.FieldReference(None, field_type=int)
    # How images reach image_size: None or 'pad' (zero padding), 'bilinear' (resampling).
    c.resize = ml_collections.FieldReference(None, field_type=str)
    c.augment = ml_collections.FieldReference(None, field_type=str)  # None: per-dataset default
    c.epochs = 30
    # An epoch (one record, evaluation and checkpoint) may span several passes over the
    # training set, e.g. for full-batch runs of hundreds of steps.
    c.passes_per_epoch = 1
    c.batch_size = 64
    c.eval_batch_size = 256
    c.optimizer = 'sgd'
    c.lr = 0.05
    c.momentum = 0.9
    # SGD only: Nesterov's look-ahead form of the momentum update (optax.sgd(nesterov=True)).
    c.nesterov = False
    c.schedule = 'cosine'
    c.warmup_epochs = 0.0
    # schedule='step': epochs at which the rate drops tenfold; None: at 50 % and 75 %.
    c.lr_decay_epochs = ml_collections.FieldReference(None, field_type=tuple)
    c.weight_decay = 5e-4
    # Most papers reproduced here decay every parameter (coupled L2); True skips 1-D leaves
    # (norm scales/offsets and biases), the usual choice for large-batch training.
    c.no_decay_norm_and_bias = False
    c.label_smoothing = 0.0
    c.seed = 0
    # Seeds trained at once by one vmapped step: seed, seed + 1, ..., seed + num_seeds - 1.
    c.num_seeds = 1
    # Stop at the first step whose loss exceeds this many times the reference loss (see
    # jaxnorm.divergence); non-finite losses and gradients always stop. None: only those.
    c.divergence_factor = ml_collections.FieldReference(1e3, field_type=float)
    # False: a diverged seed keeps training (NaN) while the others go on, and each record
    # names the step it diverged at ('diverged_at_step'): for sweeps whose unstable settings
    # are part of the result (e.g. a regularization strength grid).
    c.stop_on_divergence = True
    # None: a new folder runs/<model>-<norm>-<dataset>-<time> for every run (see train.fit).
    c.workdir = ml_collections.FieldReference(None, field_type=str)
    c.keep_checkpoints = 2
    c.progress = True
    return c


def read_config_file(path: str) -> dict:
    """``get_config()`` of a Python config file, as a plain dict (any script's config)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    spec = importlib.util.spec_from_file_location('_jaxnorm_user_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
        raise ValueError(f'config file {path!r} defines no get_config() function')
    return dict(module.get_config())


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Load ``get_config()`` from a Python file and merge it over :func:`default_config`."""
    return apply_overrides(default_config(), read_config_file(path), source=path)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *,
                    source: str = 'overrides') -> ml_collections.ConfigDict:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys are errors.

    An extension's option is ``'<section>.<option>'`` (``{'teacher.momentum': 0.99}``) or a
    nested mapping (``{'teacher': {'momentum': 0.99}}``).
    """
    config = copy.deepcopy(config)
    for key, value in flatten(overrides).items():
        section, _, option = key.rpartition('.')
        if section and section not in sections(config):
            raise ValueError(f'{source}: unknown config section {section!r} in {key!r}; '
                             f"sections: {', '.join(sections(config))}")
        target = config[section] if section else config
        if option not in target:
            raise ValueError(f'{source}: unknown config key {key!r}; valid keys: '
                             f"{', '.join(sorted(target.keys()))}")
        if not section and option in ('model_kwargs', 'norm_kwargs'):
            config[option] = ml_collections.ConfigDict(dict(value or {}), type_safe=False)
            continue
        try:
            target[option] = value
        except TypeError as err:
            raise ValueError(f'{source}: bad value {value!r} for {key!r}: {err}') from None
    validate(config)
    return config


def sections(config: ml_collections.ConfigDict) -> list[str]:
    """The extension sections of ``config``."""
    return [name for name in extension.registered() if name in config]


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{'teacher': {'momentum': 0.9}}`` -> ``{'teacher.momentum': 0.9}``; kwargs dicts stay
    whole (their keys are the model's or norm's, not config keys)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key not in ('model_kwargs', 'norm_kwargs'):
            flat.update({f'{key}.{k}': v for k, v in flatten(value).items()})
        else:
            flat[key] = value
    return flat


def validate(config: ml_collections.ConfigDict) -> None:
    """Check values that a type alone cannot; raise ValueError saying what to change."""
    if config.resize not in (None, 'pad', 'bilinear'):
        raise ValueError(f"unknown resize {config.resize!r}; choose 'pad' or 'bilinear'")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f'unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}')
    if config.schedule not in SCHEDULES:
        raise ValueError(f'unknown schedule {config.schedule!r}; choose one of {SCHEDULES}')
    positive = {'epochs': config.epochs, 'batch_size': config.batch_size,
                'eval_batch_size': config.eval_batch_size, 'lr': config.lr,
                'keep_checkpoints': config.keep_checkpoints, 'num_seeds': config.num_seeds,
                'passes_per_epoch': config.passes_per_epoch}
    for key, value in positive.items():
        if not value > 0:
            raise ValueError(f'{key} must be positive, got {value}')
    if config.lr_decay_epochs is not None and (
            config.schedule != 'step' or list(config.lr_decay_epochs) != sorted(config.lr_decay_epochs)
            or not all(0 < e < config.epochs for e in config.lr_decay_epochs)):
        raise ValueError(f'lr_decay_epochs {tuple(config.lr_decay_epochs)} needs schedule '
                         f"'step' and increasing epochs inside (0, {config.epochs})")
    if config.divergence_factor is not None and not config.divergence_factor > 1:
        raise ValueError(f'divergence_factor must be > 1 (or None), got '
                         f'{config.divergence_factor}')
    if config.nesterov and (config.optimizer != 'sgd' or not config.momentum):
        raise ValueError(f'nesterov needs optimizer sgd with momentum > 0, got optimizer '
                         f'{config.optimizer!r}, momentum {config.momentum}')
    if config.weight_decay < 0 or config.warmup_epochs < 0:
        raise ValueError('weight_decay and warmup_epochs must be non-negative')
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f'label_smoothing must be in [0, 1), got {config.label_smoothing}')
    from jaxnorm import models  # the model, norm and their options, before any data loads
    models.get_model(config.model, norm=config.norm, num_classes=1,
                     norm_kwargs=dict(config.norm_kwargs), **config.model_kwargs)
    for name, cls in extension.registered().items():
        if name in config:
            extension.check_choices(cls, config[name])
            cls.check_section(config)


def changes_from_saved(saved_config_path: str, config: ml_collections.ConfigDict) -> dict:
    """``{key: (saved, now)}`` for every setting outside :data:`PRESENTATION_KEYS` that differs
    from the run's saved ``config.json`` (none when there is no saved file)."""
    if not os.path.exists(saved_config_path):
        return {}
    with open(saved_config_path) as f:
        saved = json.load(f)
    # A setting added after the run was saved had its default value then.
    saved = {**flatten(json.loads(default_config().to_json_best_effort())), **flatten(saved)}
    now = flatten(json.loads(config.to_json_best_effort()))
    return {key: (saved.get(key), value) for key, value in now.items()
            if key not in PRESENTATION_KEYS and saved.get(key) != value}
