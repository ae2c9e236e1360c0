"""A-FAN: adversarial feature augmentation and normalization (Chen et al., arXiv:2103.12171).

A-FAN trains on intermediate features pushed by a small adversarial attack, in addition to
the clean features. For a model ``f = tail o head`` split at one module (``layer``), a batch
(x, y) and the clean features ``h = stop_gradient(head(x))``:

1. **Feature-space PGD** on an additive perturbation delta, from delta_0 = 0 (or uniform in
   [-eps, eps] with ``random_start``), for t = 1..T::

       delta_t = clip_eps(delta_{t-1} + gamma * sign(grad_delta L(tail(h + delta_{t-1}), y)))

   with no clip unless ``epsilon`` is set, so ``||delta_T||_inf = T * gamma`` exactly by
   default (the repo's "norandclip" run: T = 5, gamma = 0.5/255, at the stage-1 output).
2. **Interpolated strengths**: ``f_k = h + s_k * delta_T`` for the strengths s_k (the
   detection code's lerp(h, h_adv, k/(n-1))).
3. **Adversarial feature normalization** (optional per point): the clean features carrying
   the adversarial point's statistics, ``n_k = sigma_k * (h - mu_h) / sigma_h + mu_k``, with
   mean and unbiased ``sigma = sqrt(var + 1e-5)`` over ``stat_axes``. The repo's version
   (``mix_feature`` in the detection/segmentation code) reduces over the channel axis
   separately at every (sample, row, column) position, i.e. positional normalization:
   ``POSITIONAL = (-1,)`` for NHWC. ``BATCH = (0, 1, 2)`` is the BatchNorm-style variant
   (per channel over N, H, W) that the abstract's wording suggests.
4. **Loss**: ``w_0 * L(f(x), y) + sum_k w_k * L(tail(point_k), y)``, by default uniform
   weights 1/(K+1): ½(L_clean + L_adv) for the classification code's single point. A point
   at strength 0 without normalization *is* the clean feature, and its term is the clean
   loss itself (in the detection code the k=0 point is L_clean), so strengths ``(0.0,)``
   give exactly the clean loss and the clean gradient.

How the model is split without changing it: every pass is a whole ``apply`` under
``flax.linen.intercept_methods`` (the technique of :mod:`jaxnorm.theory`); the interceptor
records the chosen module's output, or replaces it by a given array. The head's outputs are
then unused, and under ``jit`` XLA drops that dead computation, so an attack pass costs about
a tail forward and backward. The head gets gradients only from the clean term (the features
are detached, as in the repo).

BatchNorm statistics: the repo runs PGD in train mode, so every attack pass updates the
running statistics. Here only the clean pass's update is kept by default; with
``keep_attack_stats=True`` the statistics are threaded through every attack and adversarial
pass in order (each a full forward, so layers before ``layer`` also average in the clean
batch again at each pass).

Example::

    cfg = afan.AFANConfig(layer='stage1_block3', steps=5, step_size=0.5 / 255)
    def loss(params):
        return afan.afan_loss(model.apply, {'params': params, 'batch_stats': stats},
                              batch, key, cfg)
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    stats = aux.batch_stats

References: Chen, Cheng, Gan, Liu, Wang, "A-FAN: Adversarial Feature Augmentation and
Normalization for visual recognition", arXiv:2103.12171; repo VITA-Group/CV_A-FAN.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import extension, losses

POSITIONAL = (-1,)
BATCH = (0, 1, 2)
STATISTICS = {'positional': POSITIONAL, 'batch': BATCH}

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class AFANConfig:
    """Static A-FAN settings (hashable, so they can be a ``jit`` static argument).

    Attributes:
      layer: module path of the perturbed output, '/'-joined (e.g. ``'stage1_block3'``);
        :func:`layer_names` lists a model's choices.
      steps: PGD steps T (0: delta = 0 or its random start).
      step_size: sign-step size gamma, in feature units (the repo's 0.5/255).
      epsilon: l_inf radius the perturbation is clipped to; None: no clip (repo default).
      random_start: start delta uniform in [-epsilon, epsilon] (needs ``epsilon``).
      strengths: interpolation points s_k in [0, 1] between h and h + delta_T.
      normalize: bool for every point or one bool per point: train on the adversarially
        normalized clean features instead of the perturbed ones.
      stat_axes: axes of the normalization statistics (``POSITIONAL`` or ``BATCH``).
      norm_eps: added to the unbiased variance inside the square root.
      loss_weights: (w_clean, w_1..w_K); None: uniform 1/(K+1).
      keep_attack_stats: let attack passes update BatchNorm statistics (repo behaviour).
    """

    layer: str
    steps: int = 5
    step_size: float = 0.5 / 255
    epsilon: float | None = None
    random_start: bool = False
    strengths: tuple[float, ...] = (1.0,)
    normalize: bool | tuple[bool, ...] = False
    stat_axes: tuple[int, ...] = POSITIONAL
    norm_eps: float = 1e-5
    loss_weights: tuple[float, ...] | None = None
    keep_attack_stats: bool = False

    def __post_init__(self):
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f'layer must be a non-empty module path string, got {self.layer!r}')
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f'steps must be an integer >= 0, got {self.steps!r}')
        if not self.step_size >= 0:
            raise ValueError(f'step_size must be >= 0, got {self.step_size}')
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f'epsilon must be positive or None (no clip), got {self.epsilon}')
        if self.random_start and self.epsilon is None:
            raise ValueError('random_start draws delta uniformly in [-epsilon, epsilon]; '
                             'set epsilon as well')
        if not self.strengths or not all(0.0 <= s <= 1.0 for s in self.strengths):
            raise ValueError(f'strengths must be a non-empty sequence of values in [0, 1], '
                             f'got {self.strengths!r}')
        object.__setattr__(self, 'strengths', tuple(float(s) for s in self.strengths))
        normalize = self.normalize
        if isinstance(normalize, bool):
            normalize = (normalize,) * len(self.strengths)
        if len(normalize) != len(self.strengths):
            raise ValueError(f'normalize needs one flag per strength ({len(self.strengths)}), '
                             f'got {self.normalize!r}')
        object.__setattr__(self, 'normalize', tuple(bool(n) for n in normalize))
        object.__setattr__(self, 'stat_axes', tuple(int(a) for a in self.stat_axes))
        if self.loss_weights is not None:
            weights = tuple(float(w) for w in self.loss_weights)
            if len(weights) != len(self.strengths) + 1 or min(weights) < 0:
                raise ValueError(f'loss_weights needs {len(self.strengths) + 1} non-negative '
                                 f'values (clean, then one per strength), got {weights!r}')
            object.__setattr__(self, 'loss_weights', weights)

    def weights(self) -> tuple[float, ...]:
        """(w_clean, w_1, ..., w_K)."""
        n = len(self.strengths) + 1
        return self.loss_weights or (1.0 / n,) * n


class AFANAux(NamedTuple):
    """Side outputs of :func:`afan_loss`.

    Attributes:
      logits: the clean forward pass's logits.
      batch_stats: the new ``batch_stats`` (the clean pass's update unless
        ``keep_attack_stats``); ``{}`` for models without statistics.
      clean_loss: L(f(x), y).
      point_losses: (K,) loss at each interpolated (or normalized) point.
      perturbation: delta_T, the PGD perturbation of the features.
    """

    logits: jax.Array
    batch_stats: Any
    clean_loss: jax.Array
    point_losses: jax.Array
    perturbation: jax.Array


# ----------------------------------------------------------------------------- normalization


def feature_statistics(x: jax.Array, axes: Sequence[int], eps: float = 1e-5
                       ) -> tuple[jax.Array, jax.Array]:
    """Mean and ``sqrt(unbiased var + eps)`` over ``axes`` (kept), in float32.

    Raises:
      ValueError: fewer than 2 elements per statistic (no unbiased variance).
    """
    axes = tuple(a % x.ndim for a in axes)
    count = 1
    for a in axes:
        count *= x.shape[a]
    if count < 2:
        raise ValueError(f'statistics over axes {axes} of a {tuple(x.shape)} array have '
                         f'{count} element(s); the unbiased variance needs at least 2')
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=axes, keepdims=True)
    var = jnp.sum(jnp.square(x32 - mean), axis=axes, keepdims=True) / (count - 1)
    return mean, jnp.sqrt(var + eps)


def adversarial_normalize(clean: jax.Array, adversarial: jax.Array,
                          axes: Sequence[int] = POSITIONAL, eps: float = 1e-5) -> jax.Array:
    """Re-inject the adversarial features' statistics into the clean features.

    ``sigma_a * (clean - mu_c) / sigma_c + mu_a`` with means and ``sigma = sqrt(var + eps)``
    (unbiased variance) over ``axes``: the repo's ``mix_feature``. With eps = 0 the output has
    exactly the adversarial mean and unbiased std over ``axes``.

    Args:
      clean, adversarial: arrays of one shape.
      axes: reduction axes; ``POSITIONAL`` (channels, per position; the repo's) or ``BATCH``.
      eps: variance floor.

    Returns:
      An array like ``clean``.
    """
    if clean.shape != adversarial.shape:
        raise ValueError(f'clean {clean.shape} and adversarial {adversarial.shape} features '
                         'must have one shape')
    mu_c, sigma_c = feature_statistics(clean, axes, eps)
    mu_a, sigma_a = feature_statistics(adversarial, axes, eps)
    return (sigma_a * (clean.astype(jnp.float32) - mu_c) / sigma_c + mu_a).astype(clean.dtype)


# ----------------------------------------------------------------------------- instrumentation


def _split_forward(apply_fn: Callable, variables: Any, images: jax.Array, layer: str,
                   features: jax.Array | None, rngs: dict):
    """One train-mode pass; records the output of ``layer`` or, if ``features`` is given,
    replaces it. Returns ``(logits, batch_stats, recorded output)``.

    Raises (at trace time):
      ValueError: no module at path ``layer`` was called; the message lists the valid paths.
    """
    found, paths = [], []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != '__call__':
            return out
        path = '/'.join(context.module.path)
        paths.append(path)
        if path == layer and not found:
            if not isinstance(out, jax.Array):
                raise TypeError(f'A-FAN perturbs array outputs; {layer!r} returned '
                                f'{type(out).__name__}')
            found.append(out)
            if features is not None:
                return features.astype(out.dtype)
        return out

    with nn.intercept_methods(interceptor):
        logits, updates = apply_fn(variables, images, train=True, mutable=['batch_stats'],
                                   rngs=rngs)
    if not found:
        valid = ', '.join(dict.fromkeys(p for p in paths if p))
        raise ValueError(f'A-FAN layer {layer!r} is not a module of this model; valid module '
                         f'paths: {valid}')
    return logits, updates.get('batch_stats', {}), found[0]


def layer_names(apply_fn: Callable, variables: Any, images: jax.Array) -> tuple[str, ...]:
    """Every module path called in a train-mode forward pass, in call order (no compute)."""
    names = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == '__call__' and context.module.path:
            names.append('/'.join(context.module.path))
        return next_fun(*args, **kwargs)

    def forward(variables, images):
        with nn.intercept_methods(interceptor):
            apply_fn(variables, images, train=True, mutable=['batch_stats'])

    jax.eval_shape(forward, variables, images)
    return tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- attack and loss


def feature_pgd(tail_loss: Callable[[jax.Array, Any], tuple[jax.Array, Any]],
                features: jax.Array, stats: Any, key: jax.Array, config: AFANConfig
                ) -> tuple[jax.Array, Any, jax.Array]:
    """Sign-gradient ascent on an additive perturbation of ``features``.

    Args:
      tail_loss: ``(perturbed features, batch_stats) -> (loss, new batch_stats)``.
      features: the clean features h (treated as constants).
      stats: batch statistics the first pass starts from.
      key: PRNG key for the random start.
      config: steps, step size, clip and start.

    Returns:
      ``(delta_T, batch_stats after the passes, (T + 1,) losses at delta_0..delta_T)``; the
      last loss costs one extra forward, only for monitoring (dead code if unused).
    """
    h = jax.lax.stop_gradient(features)
    if config.random_start:
        delta = jax.random.uniform(key, h.shape, h.dtype, -config.epsilon, config.epsilon)
    else:
        delta = jnp.zeros_like(h)

    def step(carry, _):
        delta, stats = carry
        (loss, new_stats), grad = jax.value_and_grad(
            lambda d: tail_loss(h + d, stats), has_aux=True)(delta)
        delta = delta + config.step_size * jnp.sign(grad).astype(h.dtype)
        if config.epsilon is not None:
            delta = jnp.clip(delta, -config.epsilon, config.epsilon)
        return (delta, new_stats if config.keep_attack_stats else stats), loss

    (delta, stats), losses = jax.lax.scan(step, (delta, stats), None, length=config.steps)
    final_loss, _ = tail_loss(h + delta, stats)
    return delta, stats, jnp.concatenate([losses, final_loss[None]])


def tail_loss_fn(apply_fn: Callable, variables: Any, batch: dict, layer: str, *,
                 loss_fn: LossFn = losses.mean_cross_entropy, rngs: dict | None = None
                 ) -> Callable[[jax.Array, Any], tuple[jax.Array, Any]]:
    """The loss of the network after ``layer`` as a function of that layer's output.

    Returns:
      ``tail(features, batch_stats) -> (loss, new batch_stats)``: a train-mode pass of
      ``variables`` with the statistics replaced by ``batch_stats`` and the output of
      ``layer`` replaced by ``features``.
    """
    def tail(features, stats):
        logits, new_stats, _ = _split_forward(
            apply_fn, {**variables, 'batch_stats': stats}, batch['image'], layer, features,
            rngs or {})
        return loss_fn(logits, batch['label']), new_stats

    return tail


def afan_loss(apply_fn: Callable, variables: Any, batch: dict, key: jax.Array,
              config: AFANConfig, *, loss_fn: LossFn = losses.mean_cross_entropy
              ) -> tuple[jax.Array, AFANAux]:
    """The A-FAN training loss of one batch (see the module docstring for the maths).

    Differentiate it with respect to ``variables['params']`` (``has_aux=True``); the attack
    itself sees the parameters as constants.

    Args:
      apply_fn: a flax ``apply(variables, x, train=, mutable=, rngs=)``.
      variables: ``params`` and, for BN models, ``batch_stats``.
      batch: ``image`` and ``label``.
      key: PRNG key (random start and dropout).
      config: an :class:`AFANConfig`.
      loss_fn: ``(logits, labels) -> scalar``.

    Returns:
      ``(loss, AFANAux)``; ``aux.batch_stats`` are the statistics to store.
    """
    start_key, dropout_key = jax.random.split(key)
    rngs = {'dropout': dropout_key}
    logits, stats, features = _split_forward(apply_fn, variables, batch['image'], config.layer,
                                             None, rngs)
    clean_loss = loss_fn(logits, batch['label'])
    h = jax.lax.stop_gradient(features)
    frozen = jax.lax.stop_gradient(variables)
    attack_stats = stats if config.keep_attack_stats else frozen.get('batch_stats', {})
    delta, attack_stats, _ = feature_pgd(
        tail_loss_fn(apply_fn, frozen, batch, config.layer, loss_fn=loss_fn, rngs=rngs),
        h, attack_stats, start_key, config)
    delta = jax.lax.stop_gradient(delta)

    tail = tail_loss_fn(apply_fn, variables, batch, config.layer, loss_fn=loss_fn, rngs=rngs)
    point_losses = []
    for strength, normalized in zip(config.strengths, config.normalize):
        if strength == 0.0 and not normalized:
            point_losses.append(clean_loss)
            continue
        point = h + strength * delta
        if normalized:
            point = adversarial_normalize(h, point, config.stat_axes, config.norm_eps)
        loss, new_stats = tail(point, attack_stats)
        if config.keep_attack_stats:
            attack_stats = new_stats
        point_losses.append(loss)
    weights = config.weights()
    total = weights[0] * clean_loss + sum(w * l for w, l in zip(weights[1:], point_losses))
    aux = AFANAux(logits=logits, batch_stats=attack_stats if config.keep_attack_stats else stats,
                  clean_loss=clean_loss, point_losses=jnp.stack(point_losses),
                  perturbation=delta)
    return total, aux


def from_run_config(config: Any, model: nn.Module | None = None,
                    image_shape: Sequence[int] | None = None) -> AFANConfig | None:
    """The :class:`AFANConfig` of a run config's ``afan`` section; None when ``afan.layer`` is
    None or '' (``--afan ''`` turns off a config file's A-FAN).

    With ``model`` and ``image_shape`` the layer is also checked against the model (abstract
    trace, no compute); an unknown layer's error lists the valid module paths.

    Raises:
      ValueError: a bad ``afan.*`` value, or a layer the model does not have.
    """
    section = config.afan
    if not section.layer:
        return None
    try:
        afan_config = AFANConfig(
            layer=section.layer, steps=section.steps, step_size=section.step_size,
            epsilon=section.epsilon, random_start=section.random_start,
            strengths=tuple(section.strengths),
            normalize=(section.normalize if section.normalize_points is None
                       else tuple(section.normalize_points)),
            stat_axes=STATISTICS[section.statistics], loss_weights=section.loss_weights,
            keep_attack_stats=section.keep_attack_stats)
    except (TypeError, ValueError) as err:
        raise ValueError(f'A-FAN settings (afan.*): {err}') from None
    if model is not None:
        images = jnp.zeros((2, *image_shape))
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
        names = layer_names(model.apply, variables, images)
        if afan_config.layer not in names:
            raise ValueError(f'afan.layer {afan_config.layer!r} is not a module of '
                             f'{type(model).__name__}; valid: {", ".join(names)}')
    return afan_config


@extension.register
class AdversarialFeatures(extension.Extension):
    """A-FAN (arXiv:2103.12171) as a :mod:`jaxnorm.extension`: the step's loss becomes
    :func:`afan_loss` at ``config.afan.layer``."""

    name = 'afan'
    summary = ('A-FAN (arXiv:2103.12171): train on PGD-perturbed, optionally adversarially '
               'normalized features of one layer')
    options = {
        'layer': extension.Option(
            None, "module path whose output is attacked, e.g. 'stage1_block3' (the repo's "
            "stage-1 output); '' or None: off", str),
        'steps': extension.Option(5, 'PGD sign steps'),
        'step_size': extension.Option(0.5 / 255, 'PGD step, in feature units'),
        'epsilon': extension.Option(None, 'l_inf clip of the perturbation (None: no clip)',
                                    float),
        'random_start': extension.Option(False, 'start uniformly in [-epsilon, epsilon]'),
        'strengths': extension.Option((1.0,), 'interpolation points in [0, 1]'),
        'normalize': extension.Option(
            False, 'train on the adversarially normalized clean features'),
        'normalize_points': extension.Option(
            None, 'one normalize flag per strength (overrides normalize)', tuple),
        'statistics': extension.Option('positional', "normalization statistics ('positional'"
                                       " is the repo's)", choices=tuple(STATISTICS)),
        'loss_weights': extension.Option(
            None, 'clean weight, then one per strength (None: uniform)', tuple),
        'keep_attack_stats': extension.Option(
            False, 'let the attack passes update BatchNorm statistics (repo behaviour)'),
    }
    switch = 'layer'

    @classmethod
    def check_section(cls, config: Any) -> None:
        from_run_config(config)

    def __init__(self, section: Any, context: extension.RunContext):
        super().__init__(section, context)
        self.settings = from_run_config(context.config, context.model, context.input_shape)

    def identity(self) -> dict:
        return {}  # the loss changes, not what a checkpoint holds

    def wrap_loss(self, forward: extension.ForwardLoss, train_state: Any
                  ) -> extension.ForwardLoss:
        smoothing = self.context.config.label_smoothing
        apply_fn = self.context.model.apply

        def adversarial(params, batch_stats, batch, key):
            loss, aux = afan_loss(
                apply_fn, {'params': params, 'batch_stats': batch_stats}, batch, key,
                self.settings, loss_fn=lambda z, y: losses.mean_cross_entropy(z, y, smoothing))
            return loss, (aux.logits, aux.batch_stats, {})
        return adversarial
