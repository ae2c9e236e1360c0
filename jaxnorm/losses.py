r"""The classification loss every training path shares.

.. math:: \ell(z, y) = -\sum_c t_c \log \operatorname{softmax}(z)_c, \qquad
   t = (1 - \alpha)\,\mathrm{onehot}(y) + \alpha / C

with label smoothing :math:`\alpha` (Szegedy et al., 2016, arXiv:1512.00567) over :math:`C`
classes; :math:`\alpha = 0` is the plain cross-entropy. Logits are cast to at least float32
first, so a bfloat16 model still reduces in float32 (and float64 logits stay float64).
:func:`precise_cross_entropy` is the same loss in a form that stays exact when it is tiny (for
measuring loss floors, not for training).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy of integer ``labels`` (shape ``logits.shape[:-1]``)."""
    # At least float32: float64 logits (x64 checks of gradient-flow identities) stay float64.
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def mean_cross_entropy(logits: jax.Array, labels: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
    """The batch mean of :func:`cross_entropy`: the training loss."""
    return jnp.mean(cross_entropy(logits, labels, label_smoothing))


def precise_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy as ``softplus(logsumexp_{j != y}(z_j - z_y))``.

    The same value as :func:`cross_entropy` (``-log softmax(z)_y = log(1 + sum_{j != y}
    exp(z_j - z_y))``), but where the usual ``logsumexp(z) - z_y`` rounds to exactly 0 in
    float32 once every margin ``z_y - z_j`` exceeds about 17, this form keeps the tiny loss,
    so two loss floors near zero can still be told apart.
    """
    logits = logits.astype(jnp.float32)
    margins = logits - jnp.take_along_axis(logits, labels[..., None], axis=-1)
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1]) > 0, -jnp.inf, margins)
    return jax.nn.softplus(jax.nn.logsumexp(others, axis=-1))
