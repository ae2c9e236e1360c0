"""Fisher (Taylor) filter importance, its additive group estimate, and the BN-scale score.

**Fisher importance** [code: OrthoReg ``imp_estimator.py``]. With :math:`\\bar g` the loss
gradient averaged over a sample of the training data (:func:`prune.mean_gradient`), removing
the parameter set :math:`S` changes the loss to first order by
:math:`-\\sum_{i \\in S} \\theta_i \\bar g_i`; the score of filter :math:`k` is its square,

.. math::

    I_k = \\Big(\\sum_{i \\in k} \\theta_i \\bar g_i\\Big)^2 ,

squared *after* the sum. A group of filters :math:`S = \\{k\\}` is then scored additively,
:math:`\\hat I_S = \\sum_{k \\in S} I_k` (:func:`group_estimate`), which drops the cross terms
:math:`\\sum_{k \\ne k'} (\\theta_k^\\top \\bar g_k)(\\theta_{k'}^\\top \\bar g_{k'})` of
:math:`(\\sum_{k \\in S} \\theta_k^\\top \\bar g_k)^2`; OrthoReg's claim is that orthonormal
filters make the additive estimate reliable.

Which parameters belong to filter :math:`k` (``scope``): ``'filter'`` sums the producing
kernel's output slice and that module's bias (the reference's VGG conv + bias);
``'group'`` sums every ``params`` slot of the :class:`prune.ChannelGroup` (normalizer scale and
bias, the next layer's input slice), the exact first-order change when the whole channel is
masked as :func:`prune.structured_masks` does.

**BN-scale** (network slimming, Liu et al. 2017): the score of a channel is :math:`|\\gamma|`
of the normalizer after it. The reference's VGG variant divides by the conv's
:math:`C_{in} k^2`, an odd normalization not reproduced here.

Iterative pruning uses :func:`prune.round_fractions` (round :math:`r` of :math:`n` removes
:math:`p / (r p + n (1 - p))` of the alive filters) and :func:`prune.select_survivors` (one
global ranking of raw scores, per-layer minimum).

References:
  Lubana et al., `OrthoReg <https://arxiv.org/abs/2009.05014>`_, 2020; Liu et al., `Learning
  Efficient Convolutional Networks through Network Slimming
  <https://arxiv.org/abs/1708.06519>`_, ICCV 2017.
"""
from __future__ import annotations

import posixpath
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import named_leaves
from prune.masks import ChannelGroup, Slot

SCOPES = ('filter', 'group')


def _lookup(tree) -> dict:
    return dict(zip(*named_leaves(tree)[:2]))


def _slots(group: ChannelGroup, scope: str) -> tuple[Slot, ...]:
    if scope == 'group':
        return group.params
    bias = posixpath.join(posixpath.dirname(group.filter.path), 'bias')
    return (group.filter,) + tuple(s for s in group.params if s.path == bias)


def _per_channel_sum(x: jax.Array, axis: int) -> jax.Array:
    """Sum of ``x`` over every axis but ``axis`` (float32 or wider)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axis = axis % x.ndim
    return jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != axis))


def taylor_sums(params, grads, groups: Sequence[ChannelGroup], *, scope: str = 'filter'
                ) -> dict[str, jax.Array]:
    """:math:`\\sum_{i \\in k} \\theta_i \\bar g_i` per channel ``k`` of every group (signed).

    Args:
      params: parameters (already masked).
      grads: the mean gradient :math:`\\bar g`, a tree like ``params``.
      groups: channel groups.
      scope: ``'filter'`` or ``'group'`` (module docstring).

    Returns:
      ``{group name: float32 vector (width,)}``.
    """
    if scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
    theta, grad = _lookup(params), _lookup(grads)
    out = {}
    for group in groups:
        total = jnp.zeros(group.width, jnp.float32)
        for path, axis in _slots(group, scope):
            if path not in theta or path not in grad:
                raise ValueError(f'group {group.name!r} names {path!r}, which params or grads '
                                 'lack')
            total = total + _per_channel_sum(theta[path] * grad[path], axis)
        out[group.name] = total
    return out


def fisher_scores(params, grads, groups: Sequence[ChannelGroup], *, scope: str = 'filter'
                  ) -> dict[str, jax.Array]:
    """Fisher importance :math:`I_k = (\\sum_{i \\in k} \\theta_i \\bar g_i)^2` per channel.

    Args:
      params, grads, groups, scope: as in :func:`taylor_sums`.

    Returns:
      ``{group name: float32 vector (width,)}``, higher = more important; feed it to
      :func:`prune.select_survivors`.

    Example:
      >>> loss = prune.classifier_loss(model.apply, {'batch_stats': stats}, train=False)
      >>> grads = prune.mean_gradient(loss, params, batches)
      >>> scores = prune.fisher_scores(params, grads, groups)
      >>> alive = prune.select_survivors(jax.device_get(scores), alive, 0.5)
    """
    return {name: jnp.square(s) for name, s in taylor_sums(params, grads, groups,
                                                          scope=scope).items()}


def group_estimate(scores: jax.Array, members) -> jax.Array:
    """The additive estimate :math:`\\sum_{k \\in S} I_k` of a group's importance.

    Args:
      scores: per-channel scores of one layer, shape ``(width,)``.
      members: bool/0-1 array ``(..., width)`` marking each group's channels (a leading batch
        of groups is allowed).
    """
    return jnp.sum(jnp.asarray(members, jnp.float32) * scores, axis=-1)


def bn_scale_scores(params, groups: Sequence[ChannelGroup], *, scale_name: str = 'scale'
                    ) -> dict[str, jax.Array]:
    """:math:`|\\gamma|` per channel: the group's normalizer scale (a slot whose leaf name is
    ``scale_name`` on axis 0).

    Raises:
      ValueError: a group has no such slot or more than one (e.g. no normalizer, ``norm='none'``).
    """
    theta = _lookup(params)
    out = {}
    for group in groups:
        slots = [s for s in group.params
                 if posixpath.basename(s.path) == scale_name and s.axis == 0]
        if len(slots) != 1:
            raise ValueError(f'group {group.name!r} has {len(slots)} normalizer scale slots '
                             f'named {scale_name!r}; BN-scale scoring needs exactly one')
        out[group.name] = jnp.abs(jnp.asarray(theta[slots[0].path], jnp.float32))
    return out


def random_groups(width: int, fraction: float, count: int, rng: np.random.Generator
                  ) -> np.ndarray:
    """``count`` random groups of ``max(1, round(fraction * width))`` channels of one layer,
    as a bool array ``(count, width)``."""
    size = max(1, int(round(fraction * width)))
    members = np.zeros((count, width), bool)
    for row in members:
        row[rng.choice(width, size, replace=False)] = True
    return members


__all__ = ['bn_scale_scores', 'fisher_scores', 'group_estimate', 'random_groups', 'taylor_sums']
