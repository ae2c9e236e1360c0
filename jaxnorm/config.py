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

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'lamb')
SCHEDULES = ('constant', 'cosine', 'step', 'linear')
LAWN_PROJECTIONS = ('gradient', 'update', 'none')
# Settings that do not change what a run computes: they may differ when it is resumed.
PRESENTATION_KEYS = ('workdir', 'progress', 'keep_checkpoints', 'data_dir', 'eval_batch_size',
                     'divergence_factor')


def default_config() -> ml_collections.ConfigDict:
    """The defaults: ResNet-20 with BatchNorm on the embedded digits data (CPU, ~1 minute)."""
    c = ml_collections.ConfigDict()
    c.model = 'resnet20'
    c.model_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    c.norm = 'bn'
    c.norm_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    c.dataset = 'digits'
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.image_size = ml_collections.FieldReference(None, field_type=int)
    c.augment = ml_collections.FieldReference(None, field_type=str)  # None: per-dataset default
    c.epochs = 30
    c.batch_size = 64
    c.eval_batch_size = 256
    c.optimizer = 'sgd'
    c.lr = 0.05
    c.momentum = 0.9
    c.schedule = 'cosine'
    c.warmup_epochs = 0.0
    # schedule='step': epochs at which the rate drops tenfold; None: at 50 % and 75 %.
    c.lr_decay_epochs = ml_collections.FieldReference(None, field_type=tuple)
    c.weight_decay = 5e-4
    # Most papers reproduced here decay every parameter (coupled L2); True skips 1-D leaves
    # (norm scales/offsets and biases), the usual choice for large-batch training.
    c.no_decay_norm_and_bias = False
    c.label_smoothing = 0.0
    # LAWN (optim.lawn, arXiv:2108.05839): None trains without it; else the free-phase epochs
    # before the norms of the final homogeneous sub-network are frozen. lawn_mask is a regex
    # on parameter paths (e.g. 'head/kernel'); None: the layers after the last normalization.
    c.lawn_free_epochs = ml_collections.FieldReference(None, field_type=float)
    c.lawn_mask = ml_collections.FieldReference(None, field_type=str)
    c.lawn_per_unit = False
    c.lawn_projection = 'gradient'
    c.lawn_target_norm = ml_collections.FieldReference(None, field_type=float)
    c.lawn_reset_inner_state = False
    # A-FAN (jaxnorm.afan, arXiv:2103.12171): None trains without it; else the module path
    # whose output is attacked (e.g. 'stage1_block3', the repo's stage-1 output). PGD of
    # afan_steps sign steps of afan_step_size, clipped to afan_epsilon if set; the loss
    # averages the clean loss and the losses at the afan_strengths interpolation points
    # (afan_loss_weights: clean first, then one per strength; None: uniform), optionally on
    # the adversarially normalized features, statistics 'positional' (repo) or 'batch'.
    c.afan_layer = ml_collections.FieldReference(None, field_type=str)
    c.afan_steps = 5
    c.afan_step_size = 0.5 / 255
    c.afan_epsilon = ml_collections.FieldReference(None, field_type=float)
    c.afan_random_start = False
    c.afan_strengths = (1.0,)
    c.afan_normalize = False
    c.afan_statistics = 'positional'
    c.afan_loss_weights = ml_collections.FieldReference(None, field_type=tuple)
    c.afan_keep_attack_stats = False
    # EMAN (jaxnorm.eman, arXiv:2101.08482): None trains without a teacher; else the EMA
    # momentum m of a teacher (params and BN statistics, eval mode) evaluated every epoch.
    c.eman_momentum = ml_collections.FieldReference(None, field_type=float)
    c.seed = 0
    # Stop at the first step whose loss exceeds this many times the reference loss (see
    # jaxnorm.divergence); non-finite losses and gradients always stop. None: only those.
    c.divergence_factor = ml_collections.FieldReference(1e3, field_type=float)
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
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys are errors."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(f'{source}: unknown config key {key!r}; valid keys: '
                             f"{', '.join(sorted(config.keys()))}")
        if key in ('model_kwargs', 'norm_kwargs'):
            config[key] = ml_collections.ConfigDict(dict(value or {}), type_safe=False)
            continue
        try:
            config[key] = value
        except TypeError as err:
            raise ValueError(f'{source}: bad value {value!r} for {key!r}: {err}') from None
    validate(config)
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Check values that a type alone cannot; raise ValueError saying what to change."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f'unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}')
    if config.schedule not in SCHEDULES:
        raise ValueError(f'unknown schedule {config.schedule!r}; choose one of {SCHEDULES}')
    positive = {'epochs': config.epochs, 'batch_size': config.batch_size,
                'eval_batch_size': config.eval_batch_size, 'lr': config.lr,
                'keep_checkpoints': config.keep_checkpoints}
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
    if config.weight_decay < 0 or config.warmup_epochs < 0:
        raise ValueError('weight_decay and warmup_epochs must be non-negative')
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f'label_smoothing must be in [0, 1), got {config.label_smoothing}')
    if config.lawn_free_epochs is None and (config.lawn_mask or config.lawn_per_unit):
        raise ValueError('lawn_mask and lawn_per_unit need lawn_free_epochs (LAWN is off)')
    if config.lawn_free_epochs is not None and config.lawn_free_epochs < 0:
        raise ValueError(f'lawn_free_epochs must be >= 0, got {config.lawn_free_epochs}')
    if config.lawn_projection not in LAWN_PROJECTIONS:
        raise ValueError(f'unknown lawn_projection {config.lawn_projection!r}; choose one of '
                         f'{LAWN_PROJECTIONS}')
    if config.lawn_target_norm is not None and not config.lawn_target_norm > 0:
        raise ValueError(f'lawn_target_norm must be positive, got {config.lawn_target_norm}')
    if config.eman_momentum is not None and not 0.0 <= config.eman_momentum <= 1.0:
        raise ValueError(f'eman_momentum must be in [0, 1] (e.g. 0.999), '
                         f'got {config.eman_momentum}')
    from jaxnorm import models  # the model, norm and their options, before any data loads
    models.get_model(config.model, norm=config.norm, num_classes=1,
                     norm_kwargs=dict(config.norm_kwargs), **config.model_kwargs)
    if config.afan_layer:
        from jaxnorm import afan
        afan.from_run_config(config)


def changes_from_saved(saved_config_path: str, config: ml_collections.ConfigDict) -> dict:
    """``{key: (saved, now)}`` for every setting outside :data:`PRESENTATION_KEYS` that differs
    from the run's saved ``config.json`` (none when there is no saved file)."""
    if not os.path.exists(saved_config_path):
        return {}
    with open(saved_config_path) as f:
        saved = json.load(f)
    now = json.loads(config.to_json_best_effort())
    return {key: (saved.get(key), value) for key, value in now.items()
            if key not in PRESENTATION_KEYS and saved.get(key) != value}
