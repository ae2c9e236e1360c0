"""BYOL with an EMAN or a plain EMA target, as a :mod:`jaxnorm.extension`, and kNN evaluation.

BYOL (Grill et al., 2020) trains an online network (encoder f, projector g, predictor q) to
predict a target network's projection of another view of the same image. With two views
v1, v2 of a batch, online predictions p_i = q(g(f(v_i))) and target projections
z_i = g_T(f_T(v_i)) (stop-gradient), and ``ℓ(p, z) = ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``,

    L = mean_b [ ℓ(p_1,b, z_2,b) + ℓ(p_2,b, z_1,b) ]            (symmetrized, BYOL eq. 2)

The target's parameters follow the online ones by an EMA with BYOL's annealed momentum
``m_k = 1 - (1 - m_0)(cos(πk/K) + 1)/2`` (:func:`jaxnorm.eman.cosine_momentum`, K the run's
steps). The target is one of EMAN's two teachers (:mod:`jaxnorm.eman`; Cai et al. 2021):

* ``byol.teacher='ema'``: BYOL as published: params averaged, the target's BN normalizes each
  view with *that batch's* statistics (train mode, cross-sample dependency);
* ``byol.teacher='eman'``: BYOL-EMAN: params *and* BN running statistics averaged with the
  same m_k, target in eval mode (per-sample).

Each view is forwarded separately (online and target alike), so every BN sees batches of the
pretraining batch size B, as in the reference code, and the online network's running
statistics are updated twice per step. The views are drawn inside the loss from the step's
key (:mod:`jaxnorm.byol_augment`), so a resumed run repeats the uninterrupted one.

The network is :class:`BYOLNet` (model ``byol_cnn``): a small BN CNN encoder, BYOL's MLP
projector and predictor (Linear-BN-ReLU-Linear), and a linear head on the *stop-gradient*
features that the BYOL loss never trains; it only exists because the engine evaluates
``(N, classes)`` logits (its test accuracy is chance and is ignored). Representations are
judged by :func:`knn_classify` on :func:`features` (cosine kNN, similarity-weighted votes).

The extension holds the target in its own state (a :class:`jaxnorm.eman.TeacherState`), not
in the ``eman`` extension's, because BYOL's momentum is a schedule and the ``eman``
extension's is a constant; ``eman.update`` / ``eman.apply_teacher`` do the averaging and the
forward pass. It replaces the step's loss, so it does not compose with another loss-replacing
extension. It is one of :data:`jaxnorm.extension.BUILTIN_MODULES`; :func:`register_model`
adds the ``byol_cnn`` model (called when ``byol`` is switched on).

References: J.-B. Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733.
Z. Cai et al., "Exponential Moving Average Normalization for Self-supervised and
Semi-supervised Learning", CVPR 2021, arXiv:2101.08482.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import byol_augment, eman, extension, models

BN_MOMENTUM = 0.9  # flax; PyTorch's 0.1, as in the BYOL-EMAN code (research/norm.md 4.5)
OUTPUTS = ('logits', 'features', 'projection', 'prediction', 'all')


class _MLP(nn.Module):
    """BYOL's projector / predictor: Dense(hidden) - BN - ReLU - Dense(out)."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(self.hidden)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(x)
        return nn.Dense(self.out)(nn.relu(x))


class BYOLNet(nn.Module):
    """Encoder (3x3 convs ``channels``, each with stride 2 and conv-BN-ReLU, then global
    average pooling: 28x28 -> 14 -> 7 -> 4 -> 1), projector, predictor and a stop-gradient
    linear head.

    ``__call__(x, train, output)``: ``output`` one of :data:`OUTPUTS`; every part is
    computed whatever the output, so ``init`` creates every parameter.
    """

    num_classes: int
    channels: Sequence[int] = (16, 32, 64)
    hidden: int = 128
    projection: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False, output: str = 'logits'):
        if output not in OUTPUTS:
            raise ValueError(f'unknown output {output!r}; choose one of {OUTPUTS}')
        if x.ndim != 4:
            raise ValueError(f'byol_cnn needs NHWC images, got shape {x.shape}')
        h = x
        for i, c in enumerate(self.channels):
            h = nn.Conv(c, (3, 3), strides=2, use_bias=False,
                        kernel_init=nn.initializers.kaiming_normal())(h)
            h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(h))
        feats = h.mean(axis=(1, 2))
        proj = _MLP(self.hidden, self.projection, name='projector')(feats, train)
        pred = _MLP(self.hidden, self.projection, name='predictor')(proj, train)
        logits = nn.Dense(self.num_classes, name='head')(jax.lax.stop_gradient(feats))
        parts = {'logits': logits, 'features': feats, 'projection': proj, 'prediction': pred}
        return parts if output == 'all' else parts[output]


def _byol_cnn(*, num_classes, norm, model_name, **options):
    if getattr(norm, 'name', norm) != 'bn':
        raise ValueError(f"byol_cnn is a BatchNorm network (EMAN is about BN); got norm "
                         f"{getattr(norm, 'name', norm)!r}")
    return BYOLNet(num_classes=num_classes, **options)


MODEL_ENTRY = (_byol_cnn, {}, ('channels', 'hidden', 'projection'))


def register_model() -> None:
    """Add ``byol_cnn`` to :func:`jaxnorm.models.get_model`'s registry (idempotent). Done
    when a config switches ``byol`` on and by :mod:`jaxnorm.papers.eman_selfsup`, not at import,
    so importing this module leaves the model list as it is; until the lead registers the
    model in ``jaxnorm/models/__init__.py``, this writes the registry's private dict."""
    models._MODELS.setdefault('byol_cnn', MODEL_ENTRY)


def normalized_mse(p: jax.Array, z: jax.Array) -> jax.Array:
    """Per-row ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`` (float32; rows of zeros are guarded
    by an epsilon of 1e-12 on the squared norm)."""
    p, z = p.astype(jnp.float32), z.astype(jnp.float32)
    p = p * jax.lax.rsqrt(jnp.maximum(jnp.sum(p * p, -1, keepdims=True), 1e-12))
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), 1e-12))
    return jnp.sum((p - z) ** 2, -1)


def byol_loss(p1, p2, z1, z2) -> jax.Array:
    """The symmetrized BYOL loss ``mean_b ℓ(p1, z2) + ℓ(p2, z1)`` (module docstring); the
    targets ``z`` get no gradient."""
    z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
    return jnp.mean(normalized_mse(p1, z2) + normalized_mse(p2, z1))


@extension.register
class BYOL(extension.Extension):
    """BYOL (arXiv:2006.07733) with an EMAN or EMA target (arXiv:2101.08482): the step's loss
    becomes the module docstring's L; the target follows the online network after each step."""

    name = 'byol'
    summary = ('BYOL (arXiv:2006.07733) with an EMAN (arXiv:2101.08482) or plain EMA target; '
               'model byol_cnn')
    options = {
        'momentum': extension.Option(
            None, "base target momentum m_0 of BYOL's cosine ramp to 1, e.g. 0.98 (None: off)",
            float),
        'teacher': extension.Option(
            'eman', "'eman': params and BN statistics averaged, eval mode; 'ema': params only, "
            'BN on the batch (BYOL as published)', choices=eman.TEACHERS),
        'augment': extension.Option(
            'digits', 'the random view: digits (affine + strong) or strong (FixMatch strong)',
            choices=tuple(byol_augment.AUGMENTATIONS))}
    switch = 'momentum'

    @classmethod
    def check_section(cls, config: Any) -> None:
        m = config.byol.momentum
        if m is None:
            return
        if not 0.0 <= m <= 1.0:
            raise ValueError(f'byol.momentum must be in [0, 1] (e.g. 0.98), got {m}')
        register_model()
        if config.model != 'byol_cnn':
            raise ValueError(f"byol needs model 'byol_cnn' (online encoder, projector and "
                             f'predictor), got {config.model!r}')

    @functools.cached_property
    def _momentum(self):
        total = self.context.steps_per_epoch * self.context.config.epochs
        return eman.cosine_momentum(self.section.momentum, max(total, 1))

    def init_state(self, params: Any, batch_stats: Any) -> eman.TeacherState:
        return eman.init(params, batch_stats)

    def wrap_loss(self, forward: extension.ForwardLoss, train_state: Any
                  ) -> extension.ForwardLoss:
        del forward  # replaced: two views, an online and a target pass each
        apply_fn = self.context.model.apply
        target = self.state_of(train_state)  # before the step, as in BYOL
        kind = self.section.teacher
        view = byol_augment.AUGMENTATIONS[self.section.augment]
        project = functools.partial(apply_fn, output='projection')

        def loss_fn(params, batch_stats, batch, key):
            k1, k2 = jax.random.split(key)
            v1, v2 = view(k1, batch['image']), view(k2, batch['image'])
            outs = []
            for v in (v1, v2):
                out, updates = apply_fn({'params': params, 'batch_stats': batch_stats}, v,
                                        train=True, output='all', mutable=['batch_stats'])
                batch_stats = updates['batch_stats']
                outs.append(out)
            z1 = eman.apply_teacher(project, target, v1, kind=kind)
            z2 = eman.apply_teacher(project, target, v2, kind=kind)
            loss = byol_loss(outs[0]['prediction'], outs[1]['prediction'], z1, z2)
            cos = jnp.mean(1.0 - 0.5 * normalized_mse(outs[0]['projection'], z1))
            return loss, (outs[0]['logits'], batch_stats, {'online_target_cos': cos})
        return loss_fn

    def after_step(self, train_state: Any) -> Any:
        target = eman.update(self.state_of(train_state), train_state.params,
                             train_state.batch_stats, self._momentum,
                             average_stats=self.section.teacher == 'eman')
        return self.with_state(train_state, target)


def features(apply_fn, variables: dict, images: np.ndarray, batch_size: int = 1000
             ) -> np.ndarray:
    """The encoder's pooled features of ``images`` in eval mode (running BN statistics),
    ``batch_size`` at a time (the result does not depend on it)."""
    fn = jax.jit(lambda v, x: apply_fn(v, x, train=False, output='features'))
    return np.concatenate([np.asarray(fn(variables, images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])


def knn_classify(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int,
                 num_classes: int) -> np.ndarray:
    """Cosine kNN: each query's k most cosine-similar bank rows vote for their labels with
    weight = cosine similarity; the class with the largest summed weight wins (ties: the
    smallest class index).

    Args:
      bank: (N, D) features with labels ``bank_labels`` (N,) in [0, num_classes).
      queries: (M, D) features to classify.
      k: neighbours, 1 <= k <= N.

    Returns:
      (M,) predicted labels.
    """
    bank, queries = np.asarray(bank, np.float32), np.asarray(queries, np.float32)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f'need (N, D) bank and (M, D) queries, got {bank.shape}, '
                         f'{queries.shape}')
    if not 1 <= k <= len(bank) or len(bank_labels) != len(bank):
        raise ValueError(f'need 1 <= k <= N = {len(bank)} labels, got k={k}, '
                         f'{len(bank_labels)} labels')
    return np.asarray(_knn(jnp.asarray(bank), jnp.asarray(bank_labels, jnp.int32),
                           jnp.asarray(queries), k, num_classes))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _knn(bank, labels, queries, k, num_classes):
    def unit(x):
        return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))
    sims = unit(queries) @ unit(bank).T
    top, idx = jax.lax.top_k(sims, k)
    votes = jnp.zeros((queries.shape[0], num_classes)).at[
        jnp.arange(queries.shape[0])[:, None], labels[idx]].add(top)
    return jnp.argmax(votes, -1)


def knn_accuracy(bank, bank_labels, queries, query_labels, k: int, num_classes: int) -> float:
    """Accuracy of :func:`knn_classify` on labelled queries."""
    predicted = knn_classify(bank, bank_labels, queries, k, num_classes)
    return float(np.mean(predicted == np.asarray(query_labels)))
