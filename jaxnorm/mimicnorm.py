"""MimicNorm: the weight-mean projection and the last BatchNorm (Fei et al., arXiv:2010.09278).

MimicNorm removes every BatchNorm of a CNN and keeps two light operations that reproduce what
BN does to a network:

* **Weight mean.** Every selected conv kernel has its output filters centred,
  :math:`W_o \\leftarrow W_o - \\frac{1}{k_h k_w c_{in}} \\sum_{h,w,i} W_{h,w,i,o}`. With
  zero-mean filters the constant part of the input (the mean of the previous ReLU) cancels,
  which is BN's mean subtraction in weight space: the correlation between samples no longer
  drifts to 1 with depth. It is a hard projection of the *stored* weights, applied at
  initialization (:func:`centered_kernel_init`) and after every optimizer step
  (:func:`weight_mean_projection`); the forward pass uses the weights as stored.
* **Last BN.** One BatchNorm without affine parameters on the logits (:class:`LogitBatchNorm`),
  the paper's "autotuned learning rate".
* **Head init.** The classifier head is drawn from N(0, 2 / fan_in) [code: the authors'
  ``*_nobn.py`` models init every Linear so]; the library's shared head keeps PyTorch's
  uniform U(+-1/sqrt(fan_in)) (variance 1 / (3 fan_in)), so :func:`redraw_head` re-draws it
  and :func:`head_initial_state` does so for :func:`jaxnorm.train.fit` (``initial_state=``).
  With the last BN the loss is invariant to the scale of each head column w_j, so its
  gradient is orthogonal to w_j and shrinks as 1/||w_j||: the effective learning rate of the
  head is about lr / ||w_j||^2, set by this init (6x the variance of PyTorch's default).

``get_model(name, norm='mimic', ...)`` builds the whole architecture (no BN in the body, conv
biases, the learnable residual scale, the init gain, the last BN); see
:mod:`jaxnorm.layers`. In :func:`jaxnorm.train.fit` the :class:`WeightMeanExtension` chains
the projection after every step when ``config.norm == 'mimic'`` (``mimicnorm.project``).

Layer selection (:func:`weight_mean_mask`), the authors' rule [code: ``meanweigh`` in
``Cifar100/main.py``]: a leaf is centred when it is a conv kernel (named ``kernel``, rank >= 3,
flax layout ``(*spatial, in / groups, out)``) whose fan-in ``prod(shape[:-1]) = kh * kw *
c_in / groups`` exceeds ``min_fan_in`` (50: the RGB stem, 27, and 3x3 depthwise convs, 9,
stay free) and that is not depthwise, i.e. has more than one input channel per group (the
ImageNet code's ``groups == 1`` rule; a kernel shape cannot tell a depthwise conv from a conv
on a one-channel input, so both are left free). Dense kernels are never centred (the
authors' code for them is commented out).

References:
  Wen Fei, Wenrui Dai, Chenglin Li, Junni Zou and Hongkai Xiong, `MimicNorm: Weight Mean and
  Last BN Layer Mimic the Dynamic of Batch Normalization <https://arxiv.org/abs/2010.09278>`_,
  2020 (code: github.com/Kid-key/MimicNorm).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import extension
from jaxnorm import functional as F
from jaxnorm._norm_layers import BatchNorm
from jaxnorm.trees import MaskOrFn, key_names, mask_flags, named_leaves, require_params

MIN_FAN_IN = 50
# The head's init variance c / fan_in [code: ``nn.init.normal_(m.weight, 0, sqrt(2 / fan_in))``
# for Linear layers in the authors' ``models/*_nobn.py``, research/norm.md 2.4].
HEAD_GAIN = 2.0
# Folded into a lane's run key to draw its head (independent of the model's init key).
_HEAD_SALT = 0x4D494D  # 'MIM'
# Conv init variances c / fan_in of the authors' models: ResNets 2, plain VGGs 2.8, close to
# 2 / (1 - 1/pi) = 2.93, the gain that keeps the variance of centred-filter ReLU layers.
RESIDUAL_GAIN, PLAIN_GAIN = 2.0, 2.8
# Residual-branch scale of block k (1-based, counted over the whole network): 1.2**2 / k for
# BasicBlocks (1.2**3 / k for Bottlenecks, which this library does not have).
RESIDUAL_SCALE = 1.2 ** 2


def is_centered_kernel(shape: Sequence[int], min_fan_in: int = MIN_FAN_IN) -> bool:
    """Whether a conv kernel of this flax shape is selected for the weight mean.

    Args:
      shape: ``(*spatial, in_per_group, out)``; rank < 3 (Dense, bias, scalar) is never selected.
      min_fan_in: selected only when ``prod(shape[:-1]) > min_fan_in``.

    Returns:
      True for a non-depthwise conv kernel (``in_per_group > 1``) with fan-in above the bar.
    """
    return len(shape) >= 3 and shape[-2] > 1 and math.prod(shape[:-1]) > min_fan_in


def weight_mean_mask(params: Any, min_fan_in: int = MIN_FAN_IN) -> Any:
    """The bool tree of the leaves MimicNorm centres (see the module docstring).

    Args:
      params: a parameter tree (flax ``params`` collection or any pytree of arrays).
      min_fan_in: the fan-in bar of :func:`is_centered_kernel`.

    Returns:
      A tree of Python bools with the structure of ``params``: True for ``.../kernel`` leaves
      that pass :func:`is_centered_kernel`.

    Example:
      >>> weight_mean_mask({'conv': {'kernel': jnp.ones((3, 3, 16, 8)), 'bias': jnp.ones(8)},
      ...                   'head': {'kernel': jnp.ones((8, 10))}})
      {'conv': {'bias': False, 'kernel': True}, 'head': {'kernel': False}}
    """
    def selected(path, leaf):
        return (bool(path) and key_names(path)[-1] == 'kernel'
                and is_centered_kernel(np.shape(leaf), min_fan_in))

    return jax.tree_util.tree_map_with_path(selected, params)


def _mask_flags(mask: MaskOrFn, params: Any) -> list[bool]:
    """One Python bool per leaf of ``params`` (``optim`` mask rules), each selected leaf checked
    to be a floating kernel that can be centred."""
    flags = mask_flags(mask, params)
    for flag, name, leaf in zip(flags, *named_leaves(params, placeholders=True)[:2]):
        if flag and (np.ndim(leaf) < 2 or not jnp.issubdtype(jnp.result_type(leaf),
                                                             jnp.floating)):
            raise ValueError(f'weight-mean mask selects {name!r} of shape '
                             f'{np.shape(leaf)}; only floating kernels with the output filters '
                             'on the last axis (rank >= 2) can be centred')
    return flags


def center_kernels(params: Any, mask: MaskOrFn = weight_mean_mask) -> Any:
    """The weight-mean projection P: every selected kernel with its output filters centred.

    .. math:: P(W)_{\\ldots, o} = W_{\\ldots, o} - \\operatorname{mean}_{h, w, i} W_{h, w, i, o}

    (:func:`jaxnorm.functional.weight_center`, the mean over every axis but the last, in
    float32); unselected leaves are returned as they are.

    Args:
      params: parameter tree.
      mask: bool tree matching ``params`` or ``params -> bool tree`` (default: the authors'
        rule, :func:`weight_mean_mask`).

    Returns:
      The projected tree, same structure and dtypes.

    Raises:
      ValueError: the mask does not match ``params`` or selects a leaf of rank < 2.
      TypeError: a mask entry is not a Python bool.
    """
    flags = _mask_flags(mask, params)
    _, leaves, treedef = named_leaves(params, placeholders=True)
    return jax.tree_util.tree_unflatten(
        treedef, [F.weight_center(leaf) if flag else leaf for leaf, flag in zip(leaves, flags)])


class WeightMeanProjectionState(NamedTuple):
    """State of :func:`weight_mean_projection`: none (the projection is memoryless)."""


def weight_mean_projection(mask: MaskOrFn = weight_mean_mask) -> optax.GradientTransformation:
    """An optax transform that lands every step on centred kernels (MimicNorm's weight mean).

    Chain it *after* the optimizer. Given the inner update u and the params theta it returns

    .. math:: u' = P(\\theta + u) - \\theta

    on the selected leaves (u elsewhere), so ``optax.apply_updates`` gives the projected
    weights P(theta + u), as the authors' ``net.apply(meanweigh)`` after ``optimizer.step()``.
    The gradient and the inner optimizer's state (momentum, decay) see the unprojected
    update, as in the reference code.

    Args:
      mask: bool tree matching the params or ``params -> bool tree``; default the authors'
        rule (:func:`weight_mean_mask`, fan-in > 50, no depthwise, no Dense).

    Returns:
      ``optax.GradientTransformation`` with an empty :class:`WeightMeanProjectionState`.

    Raises:
      ValueError: ``update`` called without params, or a mask that does not fit them.

    Example:
      >>> tx = optax.chain(optax.sgd(0.1, momentum=0.9), weight_mean_projection())
      >>> updates, opt_state = tx.update(grads, opt_state, params)
      >>> params = optax.apply_updates(params, updates)   # selected kernels centred

    References:
      arXiv:2010.09278.
    """
    def init_fn(params):
        del params
        return WeightMeanProjectionState()

    def update_fn(updates, state, params=None):
        require_params(params, 'weight_mean_projection')
        flags = _mask_flags(mask, params)
        _, param_leaves, treedef = named_leaves(params, placeholders=True)
        update_leaves = treedef.flatten_up_to(updates)

        def project(u, p):
            target = F.weight_center(p.astype(jnp.float32) + u.astype(jnp.float32))
            return (target - p.astype(jnp.float32)).astype(u.dtype)

        new = [project(u, p) if flag else u
               for u, p, flag in zip(update_leaves, param_leaves, flags)]
        return jax.tree_util.tree_unflatten(treedef, new), state

    return optax.GradientTransformation(init_fn, update_fn)


def centered_kernel_init(gain: float = RESIDUAL_GAIN,
                         min_fan_in: int = MIN_FAN_IN) -> Callable[..., jax.Array]:
    """Kernel initializer N(0, gain / fan_in), centred when :func:`is_centered_kernel` says so.

    The initial weight mean as part of the init: ``init(key, shape) ==
    weight_center(variance_scaling(gain, 'fan_in', 'normal')(key, shape))`` for a selected
    shape, the plain draw otherwise (``'normal'`` is untruncated in jax, as the authors'
    ``normal_(0, sqrt(c / fan_in))``).

    Args:
      gain: variance c of ``N(0, c / fan_in)``: 2 for ResNets, 2.8 for plain VGG nets.
      min_fan_in: the selection bar (must equal the projection's, see :func:`weight_mean_mask`).

    Returns:
      A flax initializer ``(key, shape, dtype) -> array``.
    """
    draw = nn.initializers.variance_scaling(gain, 'fan_in', 'normal')

    def init(key, shape, dtype=jnp.float32):
        kernel = draw(key, shape, dtype)
        return F.weight_center(kernel) if is_centered_kernel(shape, min_fan_in) else kernel

    return init


def residual_scale_init(block: int, base: float = RESIDUAL_SCALE) -> float:
    """Initial learnable residual-branch scale ``base / k`` of block ``k`` (1-based, global).

    ``out = relu(s_k * F(x) + shortcut(x))`` with ``s_k = 1.2**2 / k`` for BasicBlocks
    [code: ``models/resnet_nobn.py``]: the branches shrink as 1/k with depth.
    """
    if block < 1:
        raise ValueError(f'blocks are counted from 1, got {block}')
    return base / block


class LogitBatchNorm(BatchNorm):
    """MimicNorm's last BN: BatchNorm over the logits with no scale and no bias.

    Train: ``y = (z - mean_B z) / sqrt(var_B z + eps)`` per class over the batch (biased
    variance); eval: the running statistics (``momentum`` 0.9 in flax's convention is torch's
    default 0.1; ``epsilon`` 1e-5). The cross-entropy is taken on ``y``.
    """

    use_scale: bool = False
    use_bias: bool = False
    enabled: bool = True  # False: the identity, no statistics (the weight-mean-only ablation)

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if not self.enabled:
            return x
        return super().__call__(x, train=train)


def redraw_head(params: Any, key: jax.Array, gain: float = HEAD_GAIN,
                name: str = 'head') -> Any:
    """``params`` with the classifier kernel ``params[name]['kernel']`` re-drawn from
    N(0, gain / fan_in), untruncated (torch's ``normal_(0, sqrt(gain / fan_in))``), fan_in =
    the kernel's input dimension; every other leaf (the head's bias too) is returned as it is.

    Args:
      params: a flax ``params`` tree with a top-level Dense ``name`` (``(fan_in, classes)``).
      key: a jax PRNG key.
      gain: the variance numerator c (2: MimicNorm's head, :data:`HEAD_GAIN`).
      name: the head's module name (the library's models call it ``head``).

    Raises:
      ValueError: no ``name/kernel`` leaf of rank 2, or a non-positive gain.
    """
    if not gain > 0:
        raise ValueError(f'head init gain must be positive, got {gain}')
    head = params.get(name) if hasattr(params, 'get') else None
    kernel = None if head is None else head.get('kernel')
    if kernel is None or np.ndim(kernel) != 2:
        raise ValueError(f'redraw_head needs a Dense {name!r} with a rank-2 kernel at the top '
                         f'of params; got {None if kernel is None else np.shape(kernel)}')
    std = math.sqrt(gain / np.shape(kernel)[0])
    new = std * jax.random.normal(key, np.shape(kernel), jnp.float32)
    return {**params, name: {**head, 'kernel': new.astype(jnp.result_type(kernel))}}


def head_initial_state(gain: float = HEAD_GAIN, name: str = 'head') -> Callable[[Any], Any]:
    """A ``train.fit(..., initial_state=...)`` function that re-draws the head of a freshly
    initialised train state (:func:`redraw_head`); a seed-batched state gets one draw per
    lane, keyed by the lane's own run key (``state.rng``), so a lane's head is the one its
    single-seed run would get. Apply it only at a fresh start (``fit`` restores a resumed
    run's checkpoint over it)."""
    def redraw(params, rng):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng), _HEAD_SALT)
        return redraw_head(params, key, gain, name)

    def initial_state(state):
        batched = np.ndim(state.rng) == 2
        params = (jax.jit(jax.vmap(redraw) if batched else redraw)(state.params, state.rng))
        return state.replace(params=params)
    return initial_state



@extension.register
class WeightMeanExtension(extension.Extension):
    """The weight-mean projection after every optimizer step of a ``norm='mimic'`` run (a
    :mod:`jaxnorm.extension`); kernels are selected by :func:`weight_mean_mask` with the
    norm's ``min_fan_in`` option."""

    name = 'mimicnorm'
    summary = ("MimicNorm (arXiv:2010.09278): with norm 'mimic', centre the conv kernels' "
               'filters after every step')
    options = {'project': extension.Option(
        True, "chain the weight-mean projection when norm is 'mimic' (False: ablation)")}

    @classmethod
    def is_active(cls, config: Any) -> bool:
        return config.norm == 'mimic' and config.mimicnorm.project

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        min_fan_in = dict(self.context.config.norm_kwargs).get('min_fan_in', MIN_FAN_IN)
        return optax.chain(tx, weight_mean_projection(
            lambda params: weight_mean_mask(params, min_fan_in)))



__all__ = ['HEAD_GAIN', 'LogitBatchNorm', 'MIN_FAN_IN', 'PLAIN_GAIN', 'RESIDUAL_GAIN',
           'RESIDUAL_SCALE', 'WeightMeanExtension', 'WeightMeanProjectionState',
           'center_kernels', 'centered_kernel_init', 'head_initial_state', 'is_centered_kernel',
           'redraw_head', 'residual_scale_init', 'weight_mean_mask', 'weight_mean_projection']
