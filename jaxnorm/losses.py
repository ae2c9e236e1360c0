"""The classification loss every training path shares.

.. math:: \ell(z, y) = -\sum_c t_c \log \operatorname{softmax}(z)_c, \qquad
   t = (1 - \alpha)\,\mathrm{onehot}(y) + \alpha / C

with label smoothing :math:`\alpha` (Szegedy et al., 2016, arXiv:1512.00567) over :math:`C`
classes; :math:`\alpha = 0` is the plain cross-entropy. Logits are cast to float32 first, so a
bfloat16 model still reduces in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy of integer ``labels`` (shape ``logits.shape[:-1]``)."""
    logits = logits.astype(jnp.float32)
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def mean_cross_entropy(logits: jax.Array, labels: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
    """The batch mean of :func:`cross_entropy`: the training loss."""
    return jnp.mean(cross_entropy(logits, labels, label_smoothing))
