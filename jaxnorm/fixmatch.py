"""FixMatch: confident pseudo-labels of weak views train the strong views of the same images.

Each step sees a labeled batch ``(x_l, y_l)`` of size B and an unlabeled batch ``u`` of size
μB (Sohn et al., 2020). With α a weak augmentation and A a strong one (``fixmatch.augment``:
``'shift'``, the default, :func:`weak_augment` / :func:`strong_augment` for 8x8 digits;
``'digits28'``, :mod:`jaxnorm.augment28`: translation; affine, contrast, brightness, cutout),
the labeler's stop-gradient class probabilities p = softmax(z(α(u))) give the pseudo-label
ŷ = argmax p and the mask 1[max p >= τ], and the student f minimizes

    L = mean_b CE(f(α(x_l))_b, y_l,b) + w_k · mean_b 1[max p_b >= τ] · CE(f(A(u))_b, ŷ_b),

with w_k = λ_u, or w_k = λ_u · min(1, k / R) at step k with ``fixmatch.ramp_steps`` R > 0 (a
linear warm-up of the unlabeled loss, off by default).

Two labelers (``fixmatch.labeler``):

* ``'self'``: stock FixMatch; the student forwards concat(α(x_l), α(u), A(u)) in train mode
  (one BN batch) and labels A(u) from its own logits of α(u).
* ``'teacher'``: a teacher held by the ``eman`` extension (:mod:`jaxnorm.eman`, its
  ``eman.kind`` picks EMAN or the standard EMA teacher) labels α(u) from the state *before*
  the step; the student forwards concat(α(x_l), A(u)). EMAN-FixMatch (Cai et al., 2021).

The augmentations run inside the loss, with keys split from the step's key, so a resumed run
repeats the uninterrupted one. The batches come from :class:`SemiSupervisedBatches`
(``fit(batches=...)``): ``image`` and ``label`` are the labeled batch, ``unlabeled`` the
unlabeled images, and ``unlabeled_label`` their true labels, read only for the metric
``pseudo_label_accuracy`` (accuracy of the confident pseudo-labels; with ``mask_rate``, the
fraction of confident ones, averaged per epoch into the records).

The extension replaces the step's loss (it runs its own forward pass), as ``afan`` does, so
it does not compose with another extension that replaces the loss.

References: K. Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence", NeurIPS 2020, arXiv:2001.07685. Z. Cai et al., "Exponential Moving Average
Normalization for Self-supervised and Semi-supervised Learning", CVPR 2021, arXiv:2101.08482.
"""
from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import augment28, eman, extension, losses

LABELERS = ('self', 'teacher')
AUGMENTS = ('shift', 'digits28')


def shift(images: jax.Array, corners: jax.Array, max_shift: int) -> jax.Array:
    """Each image of a batch (B, H, W, C) translated by ``max_shift - corners[b]`` pixels:
    the H x W window at ``corners[b]`` (B, 2 integers in [0, 2 max_shift]) of the image
    zero-padded by ``max_shift`` on each side."""
    _, h, w, c = images.shape
    pad = (max_shift, max_shift)
    padded = jnp.pad(images, ((0, 0), pad, pad, (0, 0)))
    return jax.vmap(lambda image, corner: jax.lax.dynamic_slice(
        image, (corner[0], corner[1], 0), (h, w, c)))(padded, corners)


def _integers(uniform: jax.Array, n: int) -> jax.Array:
    """Uniform draws in [0, 1) mapped to integers uniform in {0, ..., n - 1}."""
    return jnp.minimum(jnp.floor(uniform * n), n - 1).astype(jnp.int32)


# Each image's random scalars come from one uniform draw per batch, with the classic threefry:
# every draw site of the partitionable one costs seconds of XLA compile time on CPU, and the
# augmentations run inside every training step.


def weak_augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """α: every image of the batch shifted by its own random offset in [-1, 1]^2 pixels (no
    flips: digits are not flip-invariant)."""
    with jax.threefry_partitionable(False):
        corners = _integers(jax.random.uniform(key, (images.shape[0], 2)), 3)
    return shift(images, corners, 1)


def strong_augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """A, per image x of the batch: a shift in [-2, 2]^2 pixels, a 3x3 cutout at a uniform
    position filled with the image's minimum, contrast c and brightness b uniform in
    [-0.3, 0.3] (``(x - mean)(1 + c) + mean + b``) and Gaussian noise of std 0.1."""
    _, h, w, _ = images.shape
    with jax.threefry_partitionable(False):
        k_scalars, k_noise = jax.random.split(key)
        draws = jax.random.uniform(k_scalars, (images.shape[0], 6))
        noise = jax.random.normal(k_noise, images.shape)
    images = shift(images, _integers(draws[:, :2], 5), 2)
    top, left = _integers(draws[:, 2], h - 2), _integers(draws[:, 3], w - 2)
    rows = jnp.arange(h)[None, :, None] - top[:, None, None]
    cols = jnp.arange(w)[None, None, :] - left[:, None, None]
    hole = (rows >= 0) & (rows < 3) & (cols >= 0) & (cols < 3)
    lowest = images.min(axis=(1, 2, 3), keepdims=True)
    images = jnp.where(hole[..., None], lowest, images)
    contrast, brightness = (-0.3 + 0.6 * draws[:, 4:, None, None, None]).swapaxes(0, 1)
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    return (images - mean) * (1.0 + contrast) + mean + brightness + 0.1 * noise


def pseudo_labels(logits: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array]:
    """Argmax pseudo-labels and the float mask ``max softmax >= threshold`` (no gradient)."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32))
    return probs.argmax(-1), (probs.max(-1) >= threshold).astype(jnp.float32)


@extension.register
class FixMatch(extension.Extension):
    """FixMatch (arXiv:2001.07685) as a :mod:`jaxnorm.extension`: the step's loss becomes the
    module docstring's L, labeled by the student itself or by the ``eman`` teacher."""

    name = 'fixmatch'
    summary = ('FixMatch (arXiv:2001.07685): confident pseudo-labels of weak views train '
               'strong views; labeler the student or the eman teacher (arXiv:2101.08482)')
    options = {
        'threshold': extension.Option(
            None, 'confidence threshold τ of the pseudo-labels, e.g. 0.95 (None: off)', float),
        'lambda_u': extension.Option(1.0, 'weight λ_u of the unlabeled loss'),
        'labeler': extension.Option(
            'self', "'self': the student labels its weak views (stock FixMatch); 'teacher': "
            'the eman extension\'s teacher does', choices=LABELERS),
        'augment': extension.Option(
            'shift', "weak/strong views: 'shift' (weak_augment / strong_augment here, for "
            "8x8 digits) or 'digits28' (jaxnorm.augment28.weak / strong: translation; affine, "
            'contrast, brightness, cutout)', choices=AUGMENTS),
        'ramp_steps': extension.Option(
            0, 'steps of a linear ramp of λ_u from 0 (weight λ_u·min(1, step/ramp_steps)); 0: '
            'no ramp', int)}
    switch = 'threshold'

    @classmethod
    def check_section(cls, config: Any) -> None:
        section = config.fixmatch
        if section.threshold is None:
            return
        if (not 0.0 <= section.threshold <= 1.0 or section.lambda_u < 0
                or section.ramp_steps < 0):
            raise ValueError(f'fixmatch.threshold must be in [0, 1], lambda_u >= 0 and '
                             f'ramp_steps >= 0, got {section.threshold}, {section.lambda_u}, '
                             f'{section.ramp_steps}')
        if section.labeler == 'teacher' and config.eman.momentum is None:
            raise ValueError("fixmatch.labeler 'teacher' reads the eman extension's teacher; "
                             'set eman.momentum (e.g. 0.999)')

    def wrap_loss(self, forward: extension.ForwardLoss, train_state: Any
                  ) -> extension.ForwardLoss:
        del forward  # replaced: the loss needs its own forward pass on the concatenated views
        threshold, lambda_u = self.section.threshold, self.section.lambda_u
        smoothing = self.context.config.label_smoothing
        apply_fn = self.context.model.apply
        # The teacher as it was before this step, and how it runs (eman.kind).
        teacher = (train_state.extensions['eman'] if self.section.labeler == 'teacher'
                   else None)
        kind = self.context.config.eman.kind
        weak_fn, strong_fn = ((augment28.weak, augment28.strong)
                              if self.section.augment == 'digits28'
                              else (weak_augment, strong_augment))
        if self.section.ramp_steps:  # the weight at this step (the state before it)
            lambda_u = lambda_u * jnp.minimum(
                1.0, jnp.asarray(train_state.step, jnp.float32) / self.section.ramp_steps)

        def fixmatch_loss(params, batch_stats, batch, key):
            k_labeled, k_weak, k_strong, k_dropout = jax.random.split(key, 4)
            labeled = weak_fn(k_labeled, batch['image'])
            weak = weak_fn(k_weak, batch['unlabeled'])
            strong = strong_fn(k_strong, batch['unlabeled'])
            views = [labeled, strong] if teacher is not None else [labeled, weak, strong]
            logits, updates = apply_fn(
                {'params': params, 'batch_stats': batch_stats}, jnp.concatenate(views),
                train=True, mutable=['batch_stats'], rngs={'dropout': k_dropout})
            n_labeled, n_strong = labeled.shape[0], strong.shape[0]
            if teacher is None:
                weak_logits = logits[n_labeled:n_labeled + weak.shape[0]]
            else:
                weak_logits = eman.apply_teacher(apply_fn, teacher, weak, kind=kind)
            pseudo, confident = pseudo_labels(weak_logits, threshold)
            unlabeled_loss = jnp.mean(confident * losses.cross_entropy(logits[-n_strong:],
                                                                       pseudo))
            labeled_loss = losses.mean_cross_entropy(logits[:n_labeled], batch['label'],
                                                     smoothing)
            metrics = {'mask_rate': jnp.mean(confident)}
            if 'unlabeled_label' in batch:
                right = confident * (pseudo == batch['unlabeled_label'])
                metrics['pseudo_label_accuracy'] = (jnp.sum(right)
                                                    / jnp.maximum(jnp.sum(confident), 1.0))
            return labeled_loss + lambda_u * unlabeled_loss, (
                logits[:n_labeled], updates.get('batch_stats', batch_stats), metrics)
        return fixmatch_loss


def split_labels(labels: np.ndarray, fraction: float, seed: int,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-stratified labeled / unlabeled split of a training set's indices.

    Class c keeps ``max(1, round(fraction * n_c))`` of its n_c images labeled, drawn by
    ``np.random.default_rng(seed)``; every other index is unlabeled.

    Returns:
      ``(labeled, unlabeled)``: sorted, disjoint index arrays covering ``range(len(labels))``.
    """
    rng = np.random.default_rng(seed)
    labeled = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        labeled.extend(idx[:max(1, round(fraction * len(idx)))])
    labeled = np.sort(np.asarray(labeled, dtype=np.int64))
    return labeled, np.setdiff1d(np.arange(len(labels)), labeled)


class SemiSupervisedBatches:
    """One lane's FixMatch batches (a :class:`jaxnorm.train.BatchSource`): every step draws
    ``labeled_batch`` indices of the seed's labeled split and ``unlabeled_batch`` of its
    unlabeled split, each uniformly with replacement.

    A pass (an engine epoch) is ``steps_per_pass`` steps; pass e draws from
    ``np.random.default_rng([seed, e])``, so the batches of a resumed run repeat.

    Args:
      images: the standardized training images (N, H, W, C); augmentation is the loss's.
      labels: their labels (N,).
      fraction: labeled fraction per class (:func:`split_labels` with ``seed``).
      seed: the lane's seed (split and draws).
      num_classes: classes of ``labels``.
      labeled_batch: B, labeled images per step.
      unlabeled_batch: μB, unlabeled images per step.
      steps_per_pass: batches per pass.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, fraction: float, seed: int,
                 num_classes: int, labeled_batch: int, unlabeled_batch: int,
                 steps_per_pass: int):
        self.images, self.labels = images, np.asarray(labels, np.int32)
        self.labeled, self.unlabeled = split_labels(self.labels, fraction, seed, num_classes)
        self.seed, self.steps_per_pass = seed, steps_per_pass
        self.labeled_batch, self.unlabeled_batch = labeled_batch, unlabeled_batch

    def __len__(self) -> int:
        return self.steps_per_pass

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """The pass's batches: ``image``, ``label`` (labeled), ``unlabeled``,
        ``unlabeled_label`` (the unlabeled images' true labels, for the metric only)."""
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.steps_per_pass):
            rows = self.labeled[rng.integers(0, len(self.labeled), self.labeled_batch)]
            free = self.unlabeled[rng.integers(0, len(self.unlabeled), self.unlabeled_batch)]
            yield {'image': self.images[rows], 'label': self.labels[rows],
                   'unlabeled': self.images[free], 'unlabeled_label': self.labels[free]}
