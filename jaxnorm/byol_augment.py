"""BYOL views of small grey-scale digits (28x28x1 ``mnist5k``), drawn inside a jitted step.

BYOL (Grill et al., 2020) trains on two random views of each image; its ImageNet recipe
(random resized crop, flip, colour jitter, grey-scale, blur, solarize) does not fit 28x28
digits: flips change digit identity, colour does not exist. The digit view used here is

    view(x) = J(A(x)),

* A: a random affine warp about the image centre, per image: rotation θ ~ U(-15°, 15°),
  isotropic scale s ~ U(0.8, 1.2), translation t ~ U(-3, 3)^2 pixels, bilinear sampling of the
  output pixel p at ``R(θ)^-1 (p - c - t) / s + c`` (c the centre), zero (the background
  value after padding) outside the image;
* J: :func:`jaxnorm.fixmatch.strong_augment` (a shift of up to 2 pixels, a 3x3 cutout,
  brightness/contrast jitter in [-0.3, 0.3], Gaussian noise of std 0.1).

The ranges are [infer]: the affine ones are the usual MNIST ones (e.g. Keras' and torchvision
MNIST examples use rotations of 10-15° and shifts of ~10 %), J is FixMatch's strong
augmentation of this library. Background: the standardized images' minimum would be more
faithful than 0, so A fills with each image's minimum value.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnorm import fixmatch

ROTATION_DEG = 15.0
SCALE = (0.8, 1.2)
TRANSLATE = 3.0


def affine(images: jax.Array, theta: jax.Array, scale: jax.Array, shift: jax.Array
           ) -> jax.Array:
    """Each image of a batch (B, H, W, C) rotated by ``theta[b]`` (radians), scaled by
    ``scale[b]`` and translated by ``shift[b]`` (rows, cols) pixels about its centre,
    bilinear, filled with the image's minimum outside it."""
    b, h, w, c = images.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                              jnp.arange(w, dtype=jnp.float32), indexing='ij')
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0

    def warp(image, t, s, d):
        y, x = rows - cy - d[0], cols - cx - d[1]
        cos, sin = jnp.cos(t), jnp.sin(t)
        src_y = (cos * y + sin * x) / s + cy   # R(θ)^-1 = R(-θ)
        src_x = (-sin * y + cos * x) / s + cx
        fill = image.min()

        def channel(plane):  # zero outside = ``fill`` after the shift back
            return jax.scipy.ndimage.map_coordinates(plane - fill, [src_y, src_x], order=1,
                                                     mode='constant', cval=0.0) + fill
        return jax.vmap(channel, in_axes=2, out_axes=2)(image)
    return jax.vmap(warp)(images, theta, scale, shift)


def digit_view(key: jax.Array, images: jax.Array) -> jax.Array:
    """One random view ``J(A(x))`` of every image of the batch (module docstring)."""
    with jax.threefry_partitionable(False):  # one draw site: see jaxnorm.fixmatch
        k_affine, k_strong = jax.random.split(key)
        u = jax.random.uniform(k_affine, (images.shape[0], 4))
    theta = jnp.deg2rad(ROTATION_DEG) * (2.0 * u[:, 0] - 1.0)
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 1]
    shift = TRANSLATE * (2.0 * u[:, 2:] - 1.0)
    return fixmatch.strong_augment(k_strong, affine(images, theta, scale, shift))


AUGMENTATIONS = {'digits': digit_view, 'strong': fixmatch.strong_augment}
