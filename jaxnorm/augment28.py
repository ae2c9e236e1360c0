"""Weak and strong augmentations for 28x28 digits (FixMatch / FixMatch-EMAN on ``mnist5k``).

FixMatch (Sohn et al., 2020) pairs a weak view α (flip and translate) with a strong view A
(RandAugment followed by Cutout). Digits are not flip-invariant, so here:

* α (:func:`weak`): a random integer translation in [-s, s]^2 pixels (s = ``max_shift``,
  default 2, about 7 % of the side; FixMatch translates by up to 12.5 %), no flip.
* A (:func:`strong`): a RandAugment-like chain of ops that keep a digit's class: one random
  affine map (rotation θ ~ U(-30°, 30°), shear k ~ U(-0.3, 0.3), scale σ ~ U(0.8, 1.2),
  translation t ~ U(-3, 3)^2 px) resampled bilinearly in one pass, then contrast c and
  brightness b each ~ U(-0.4, 0.4) (``(x - mean)(1 + c) + mean + b``, the image mean), then a
  Cutout square of side ~ U{1, ..., ``max_cutout``} (default 10 on 28x28, up to 13 % of
  the image; FixMatch cuts up to half the side) filled with the image's background (its
  minimum). Rotations of more than 30° and flips are left out (6 vs 9), as are colour ops
  that make no sense on grey digits (solarize, posterize, equalize). [infer: ranges chosen
  for digits]

Every affine op maps an output pixel o = (row, col) to the input point

    p = M (o − c) + c + t,     c = ((H − 1)/2, (W − 1)/2),

sampled bilinearly; points outside the image read the fill value (the image's minimum, the
background of standardized digits). :func:`affine` takes M and t per image; with ``offset =
c + t − M c`` it is ``scipy.ndimage.affine_transform(image, M, offset, order=1,
mode='constant', cval=fill)``, the tests' reference.

Per-image random scalars come from one uniform draw per batch with the classic threefry
(as in :mod:`jaxnorm.fixmatch`: every draw site of the partitionable one costs compile time).

References: K. Sohn et al., "FixMatch", NeurIPS 2020, arXiv:2001.07685; E. D. Cubuk et al.,
"RandAugment", 2020, arXiv:1909.13719; T. DeVries, G. Taylor, "Cutout", arXiv:1708.04552.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_ROTATION = 30.0   # degrees
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
MAX_TRANSLATE = 3.0   # pixels
MAX_JITTER = 0.4      # contrast and brightness


def _check_batch(images: jax.Array, name: str) -> None:
    if images.ndim != 4:
        raise ValueError(f'{name}: expected images (B, H, W, C), got shape {images.shape}')


def affine(images: jax.Array, matrices: jax.Array, translations: jax.Array,
           fill: jax.Array | None = None) -> jax.Array:
    """Each image resampled bilinearly at ``p = M_b (o − c) + c + t_b`` (module docstring).

    Args:
      images: (B, H, W, C).
      matrices: (B, 2, 2) maps M_b of output (row, col) offsets from the centre to input ones.
      translations: (B, 2) input-side translations t_b in pixels (row, col).
      fill: (B,) value read outside the image; default each image's minimum.

    Returns:
      The transformed batch, same shape and dtype.
    """
    _check_batch(images, 'affine')
    b, h, w, _ = images.shape
    if matrices.shape != (b, 2, 2) or translations.shape != (b, 2):
        raise ValueError(f'affine: need matrices ({b}, 2, 2) and translations ({b}, 2), got '
                         f'{matrices.shape} and {translations.shape}')
    if fill is None:
        fill = images.min(axis=(1, 2, 3))
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                                  jnp.arange(w, dtype=jnp.float32), indexing='ij'), -1)
    offsets = (grid - centre).reshape(-1, 2)  # (HW, 2)

    def one(image, m, t, value):
        points = offsets @ m.T + centre + t  # (HW, 2) input coordinates
        r, c = points[:, 0], points[:, 1]
        r0, c0 = jnp.floor(r), jnp.floor(c)
        fr, fc = r - r0, c - c0
        r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)

        def read(rows, cols):
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            pixels = image[jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1)]  # (HW, C)
            return jnp.where(inside[:, None], pixels, value)
        out = (read(r0, c0) * ((1 - fr) * (1 - fc))[:, None]
               + read(r0, c0 + 1) * ((1 - fr) * fc)[:, None]
               + read(r0 + 1, c0) * (fr * (1 - fc))[:, None]
               + read(r0 + 1, c0 + 1) * (fr * fc)[:, None])
        return out.reshape(image.shape).astype(image.dtype)
    return jax.vmap(one)(images, matrices.astype(jnp.float32),
                         translations.astype(jnp.float32), fill)


def affine_matrix(rotation: jax.Array, shear: jax.Array, scale: jax.Array) -> jax.Array:
    """(B, 2, 2) output-to-input maps ``R(θ) · [[1, k], [0, 1]] / σ`` in (row, col)
    coordinates, θ in radians (so the content turns by −θ, shears by −k and scales by σ)."""
    cos, sin = jnp.cos(rotation), jnp.sin(rotation)
    rot = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    zeros, ones = jnp.zeros_like(shear), jnp.ones_like(shear)
    shr = jnp.stack([jnp.stack([ones, shear], -1), jnp.stack([zeros, ones], -1)], -2)
    return rot @ shr / scale[:, None, None]


def cutout(images: jax.Array, corners: jax.Array, sizes: jax.Array,
           fill: jax.Array | None = None) -> jax.Array:
    """Each image with the square ``[top, top + s) x [left, left + s)`` set to ``fill``
    (default its minimum); ``corners`` (B, 2) integers (top, left), ``sizes`` (B,) integers."""
    _check_batch(images, 'cutout')
    _, h, w, _ = images.shape
    if fill is None:
        fill = images.min(axis=(1, 2, 3))
    rows = jnp.arange(h)[None, :, None] - corners[:, 0, None, None]
    cols = jnp.arange(w)[None, None, :] - corners[:, 1, None, None]
    size = sizes[:, None, None]
    hole = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    return jnp.where(hole[..., None], fill[:, None, None, None].astype(images.dtype), images)


def contrast_brightness(images: jax.Array, contrast: jax.Array, brightness: jax.Array
                        ) -> jax.Array:
    """``(x − mean)(1 + c_b) + mean + b_b`` per image (mean over its pixels and channels)."""
    _check_batch(images, 'contrast_brightness')
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    c, b = contrast[:, None, None, None], brightness[:, None, None, None]
    return ((images - mean) * (1.0 + c) + mean + b).astype(images.dtype)


def _integers(uniform: jax.Array, low: int, high: int) -> jax.Array:
    """Uniform [0, 1) draws mapped to integers uniform in {low, ..., high}."""
    n = high - low + 1
    return low + jnp.minimum(jnp.floor(uniform * n), n - 1).astype(jnp.int32)


def weak(key: jax.Array, images: jax.Array, max_shift: int = 2) -> jax.Array:
    """α: every image translated by its own integer offset in [−s, s]^2 (s = ``max_shift``),
    the uncovered border filled with the image's minimum; no flip."""
    _check_batch(images, 'weak')
    if max_shift < 0:
        raise ValueError(f'weak: max_shift must be >= 0, got {max_shift}')
    b = images.shape[0]
    with jax.threefry_partitionable(False):
        shifts = _integers(jax.random.uniform(key, (b, 2)), -max_shift, max_shift)
    eye = jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (b, 2, 2))
    return affine(images, eye, shifts.astype(jnp.float32))


def strong(key: jax.Array, images: jax.Array, max_cutout: int | None = None) -> jax.Array:
    """A: random affine (rotation, shear, scale, translation), contrast and brightness, then
    a Cutout square of random side in {1, ..., ``max_cutout``} lying inside the image
    (module docstring for the ranges; ``max_cutout`` defaults to 10/28 of the shorter side,
    10 on 28x28)."""
    _check_batch(images, 'strong')
    b, h, w, _ = images.shape
    if max_cutout is None:
        max_cutout = max(1, round(min(h, w) * 10 / 28))
    if not 1 <= max_cutout <= min(h, w):
        raise ValueError(f'strong: max_cutout must be in [1, {min(h, w)}], got {max_cutout}')
    with jax.threefry_partitionable(False):
        u = jax.random.uniform(key, (b, 10))
    spread = lambda x, half: (2.0 * x - 1.0) * half  # noqa: E731
    rotation = jnp.deg2rad(spread(u[:, 0], MAX_ROTATION))
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[:, 2]
    fill = images.min(axis=(1, 2, 3))
    out = affine(images, affine_matrix(rotation, spread(u[:, 1], MAX_SHEAR), scale),
                 spread(u[:, 3:5], MAX_TRANSLATE), fill)
    out = contrast_brightness(out, spread(u[:, 5], MAX_JITTER), spread(u[:, 6], MAX_JITTER))
    sizes = _integers(u[:, 7], 1, max_cutout)
    corners = jnp.stack([jnp.floor(u[:, 8] * (h - sizes + 1)),
                         jnp.floor(u[:, 9] * (w - sizes + 1))], -1).astype(jnp.int32)
    return cutout(out, corners, sizes, out.min(axis=(1, 2, 3)))
