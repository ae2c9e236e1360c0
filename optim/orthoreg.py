"""OrthoReg: an entrywise-L1 orthonormality penalty on every layer's filters.

Each selected kernel is viewed as a matrix :math:`M_l` of shape ``(out, fan_in)``, one row per
output filter: a flax conv kernel ``HWIO`` (depthwise ``(H, W, 1, C)`` included) becomes
``kernel.reshape(-1, out).T`` and a Dense kernel ``(in, out)`` its transpose. Its Gram matrix
is taken on the smaller side, so that an identity target is reachable,

.. math::

    G_l = \\begin{cases} M_l M_l^\\top & \\text{out} \\le \\text{fan\\_in} \\\\
                          M_l^\\top M_l & \\text{otherwise,} \\end{cases}
    \\qquad
    R(\\theta) = \\sum_l w_l \\sum_{ij} \\lvert (G_l - I)_{ij} \\rvert,
    \\qquad w_l = \\frac{\\sqrt{s_l}}{\\sum_k \\sqrt{s_k}},

with the *entrywise* L1 norm (PyTorch ``Tensor.norm(1)`` on a matrix; not the induced norm
``jnp.linalg.norm(G, 1)``). Row orientation makes the filters orthonormal; the column
orientation is the reference's choice for layers with more filters than inputs (first conv,
1x1 shortcuts, MobileNet's depthwise ``(C, 9)`` kernels, which give a 9x9 Gram).
``gram_side='columns'`` takes :math:`M_l^\\top M_l` for *every* layer, square kernels included
(the reference's MobileNet-V1 code).

The layer size :math:`s_l` (``size``), per the reference's ``*_train_ortho`` functions
[code: ``EkdeepSLubana/OrthoReg`` ``main.py``; research/optim.md 3.2]:

==============  =============================================================================
``size``        :math:`s_l`
==============  =============================================================================
``'gram'``      the Gram side :math:`\\min(C_{out}, \\text{fan\\_in})` for every kernel
``'filters'``   :math:`C_{out}` (the reference's VGG rule)
``'resnet'``    :math:`\\min(C_{out}, \\text{fan\\_in})`, but :math:`C_{out}` for the stem (the
                reference's ResNet rule: ResNet-34's stem weighs :math:`\\sqrt{64}`, not
                :math:`\\sqrt{\\min(64, 27)}`)
``'mobilenet'`` stem :math:`C_{out}` (:math:`\\sqrt{32}`), depthwise ``(H, W, 1, C)``
                :math:`C`, pointwise ``(1, 1, C_in, C_out)`` and Dense :math:`C_{in}` (the
                reference's MobileNet-V1 rule)
==============  =============================================================================

The stem is the kernel whose path matches ``stem`` (a regex, default a path component named
``stem``, as :mod:`jaxnorm.models` names it). :data:`REFERENCE_RULES` gives ``size`` and
``gram_side`` per architecture of the paper (``orthoreg(k, **REFERENCE_RULES['resnet34'])``).

:func:`orthoreg` adds :math:`\\kappa \\nabla R(\\theta)` to the incoming gradient; chained
before SGD without weight decay this is the reference's loss ``CE + kappa R`` (the regularizer
replaces weight decay there, :math:`\\kappa = 10^{-2}`). The derivative of :math:`|x|` at 0 is
taken as 0, as PyTorch's (``jax.grad(jnp.abs)(0.)`` is 1). :func:`orthonormality` is the
reference's diagnostic
:math:`\\lVert \\mathrm{diag}\\, G \\rVert_1 / \\lVert G \\rVert_1`, 1 for a diagonal Gram.

Deviations: the reference appends VGG's conv bias as an extra column of :math:`M_l`; here
biases are separate leaves and are not regularized. Its ResNet shortcut reuses the weight of
the block's first conv; here each kernel has its own weight.

References:
  Lubana, Trivedi, Hougen, Dick, Hero, `OrthoReg: Robust Network Pruning Using
  Orthonormality Regularization <https://arxiv.org/abs/2009.05014>`_, 2020.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm.trees import MaskOrFn, is_placeholder, mask_flags, named_leaves, require_params

SIZES = ('gram', 'filters', 'resnet', 'mobilenet')
GRAM_SIDES = ('smaller', 'columns')
STEM = r'(^|/)stem(/|$)'
# The reference's rule per architecture of the paper [code: main.py, vgg/res/mobile_train_ortho].
REFERENCE_RULES = {
    'vgg13': {'size': 'filters', 'gram_side': 'smaller'},
    'resnet34': {'size': 'resnet', 'gram_side': 'smaller'},
    'resnet56': {'size': 'resnet', 'gram_side': 'smaller'},
    'mobilenet_v1': {'size': 'mobilenet', 'gram_side': 'columns'},
}


def _check_rule(size: str, gram_side: str) -> None:
    if size not in SIZES:
        raise ValueError(f'size must be one of {SIZES}, got {size!r}')
    if gram_side not in GRAM_SIDES:
        raise ValueError(f'gram_side must be one of {GRAM_SIDES}, got {gram_side!r}')


class OrthoRegState(NamedTuple):
    """State of :func:`orthoreg`: none is needed (the penalty depends on the params only)."""


def filter_matrix(kernel: jax.Array) -> jax.Array:
    """The kernel as a float32 ``(out, fan_in)`` matrix, one row per output filter."""
    kernel = jnp.asarray(kernel)
    return kernel.reshape(-1, kernel.shape[-1]).T.astype(jnp.float32)


def gram(kernel: jax.Array, gram_side: str = 'smaller') -> jax.Array:
    """:math:`MM^\\top` if ``out <= fan_in`` else :math:`M^\\top M` (float32); always
    :math:`M^\\top M` with ``gram_side='columns'``."""
    if gram_side not in GRAM_SIDES:
        raise ValueError(f'gram_side must be one of {GRAM_SIDES}, got {gram_side!r}')
    m = filter_matrix(kernel)
    rows = gram_side == 'smaller' and m.shape[0] <= m.shape[1]
    return m @ m.T if rows else m.T @ m


def _selected(params, mask: MaskOrFn | None) -> list[tuple[str, Any]]:
    """``(path, leaf)`` of every regularized kernel, after checking the mask."""
    names, leaves, _ = named_leaves(params, placeholders=True)
    if mask is None:
        flags = [not is_placeholder(leaf) and jnp.ndim(leaf) >= 2 for leaf in leaves]
    else:
        flags = mask_flags(mask, params)
    chosen = []
    for leaf, name, flag in zip(leaves, names, flags):
        # Biases and normalizer vectors have no Gram matrix: a mask such as
        # regex_mask('^(?!head)') selects the kernels among them.
        if not flag or jnp.ndim(leaf) < 2:
            continue
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f'orthoreg: selected parameter {name!r} is not float')
        chosen.append((name, leaf))
    if not chosen:
        raise ValueError('orthoreg: the mask selects no kernel; params need a leaf with >= 2 '
                         'axes (flax conv HWIO or Dense (in, out))')
    return chosen


def layer_size(path: str, shape, size: str = 'gram', stem: str = STEM) -> int:
    """The layer size :math:`s_l` of the kernel at ``path`` with ``shape`` under ``size``
    (module docstring's table).

    Raises:
      ValueError: unknown ``size``; under ``'mobilenet'`` a kernel that is neither the stem,
        depthwise, pointwise nor Dense.
    """
    if size not in SIZES:
        raise ValueError(f'size must be one of {SIZES}, got {size!r}')
    shape = tuple(int(d) for d in shape)
    out, fan_in = shape[-1], int(np.prod(shape[:-1]))
    is_stem = re.search(stem, path) is not None
    if size == 'gram':
        return min(out, fan_in)
    if size == 'filters' or is_stem:
        return out
    if size == 'resnet':
        return min(out, fan_in)
    if len(shape) == 2 or all(d == 1 for d in shape[:-2]):  # Dense or pointwise: C_in
        return shape[-2]
    if shape[-2] == 1:  # depthwise (H, W, 1, C): C
        return out
    raise ValueError(f"size='mobilenet': kernel {path!r} of shape {shape} is neither the stem "
                     f'(path matching {stem!r}), depthwise (H, W, 1, C), pointwise '
                     '(1, 1, C_in, C_out) nor Dense')


def layer_weights(params, mask: MaskOrFn | None = None, size: str = 'gram', *,
                  stem: str = STEM) -> dict[str, float]:
    """:math:`w_l = \\sqrt{s_l} / \\sum_k \\sqrt{s_k}` per selected kernel path (static floats).

    Args:
      params: parameter tree (only shapes are used).
      mask: as in :func:`orthoreg`.
      size: ``'gram'``, ``'filters'``, ``'resnet'`` or ``'mobilenet'`` (:func:`layer_size`).
      stem: regex on paths naming the stem (``'resnet'`` and ``'mobilenet'``).
    """
    roots = {name: float(np.sqrt(layer_size(name, jnp.shape(leaf), size, stem)))
             for name, leaf in _selected(params, mask)}
    if size in ('resnet', 'mobilenet') and not any(re.search(stem, n) for n in roots):
        raise ValueError(f'size={size!r} weighs the stem by C_out, but no selected kernel path '
                         f'matches stem={stem!r}: {sorted(roots)}')
    total = sum(roots.values())
    return {name: root / total for name, root in roots.items()}


def orthoreg_penalty(params, mask: MaskOrFn | None = None, size: str = 'gram', *,
                     gram_side: str = 'smaller', stem: str = STEM) -> jax.Array:
    """:math:`R(\\theta) = \\sum_l w_l \\sum_{ij} |(G_l - I)_{ij}|` (module docstring), float32.

    Args:
      params: parameter tree.
      mask: tree of Python bools (or ``params -> tree``, e.g.
        ``optim.regex_mask('^(?!head)')`` to leave the classifier out, as the reference does);
        only the selected leaves with >= 2 axes are regularized. None selects every kernel.
      size: layer-weight rule (:func:`layer_size`).
      gram_side: ``'smaller'`` (the smaller Gram side per kernel) or ``'columns'``
        (:math:`M^\\top M` for every kernel).
      stem: regex naming the stem (``size`` ``'resnet'`` / ``'mobilenet'``).

    Returns:
      A float32 scalar; add ``kappa * orthoreg_penalty(params)`` to the loss.

    Example:
      >>> orthoreg_penalty({'dense': {'kernel': jnp.eye(3)}})
      Array(0., dtype=float32)
    """
    _check_rule(size, gram_side)
    weights = layer_weights(params, mask, size, stem=stem)
    total = jnp.zeros((), jnp.float32)
    for name, leaf in _selected(params, mask):
        g = gram(leaf, gram_side)
        residual = g - jnp.eye(g.shape[0], dtype=jnp.float32)
        # x * sign(x) is |x| with derivative sign(x), 0 at 0 as PyTorch's abs (JAX's abs has 1).
        total = total + weights[name] * jnp.sum(residual * jnp.sign(residual))
    return total


def orthonormality(params, mask: MaskOrFn | None = None, gram_side: str = 'smaller'
                   ) -> dict[str, jax.Array]:
    """Entrywise :math:`\\lVert \\mathrm{diag}\\,G_l \\rVert_1 / \\lVert G_l \\rVert_1` per kernel.

    1 when the filters (or, for the column orientation, the input directions) are mutually
    orthogonal, ``1 / side`` when they are all parallel.

    Returns:
      ``{kernel path: float32 scalar}``.
    """
    out = {}
    for name, leaf in _selected(params, mask):
        g = gram(leaf, gram_side)
        out[name] = jnp.sum(jnp.abs(jnp.diagonal(g))) / jnp.sum(jnp.abs(g))
    return out


def orthoreg(strength, *, mask: MaskOrFn | None = None, size: str = 'gram',
             gram_side: str = 'smaller', stem: str = STEM) -> optax.GradientTransformation:
    """Add :math:`\\kappa \\nabla R(\\theta)` (module docstring) to the gradient.

    Chain it before the optimizer: ``optax.chain(orthoreg(1e-2), optax.sgd(0.1, 0.9))``.

    Args:
      strength: :math:`\\kappa \\ge 0` (reference: 1e-2 for VGG/ResNet, 1e-3 for MobileNet);
        a Python 0 makes the transform the identity.
      mask: which kernels are regularized (see :func:`orthoreg_penalty`); None selects every
        leaf with >= 2 axes, the classifier included.
      size: layer-weight rule (:func:`layer_size`); ``**REFERENCE_RULES[arch]`` gives
        ``size`` and ``gram_side`` of the reference's code for a paper architecture.
      gram_side: ``'smaller'`` or ``'columns'`` (:func:`orthoreg_penalty`).
      stem: regex naming the stem.

    Returns:
      An ``optax.GradientTransformation`` with :class:`OrthoRegState`; ``update`` needs
      ``params``.

    Raises:
      ValueError: negative ``strength``, unknown ``size`` or ``gram_side``; at trace time a
        mask that does not match params or selects no leaf with >= 2 axes; ``update``
        without params.

    Example:
      >>> tx = optax.chain(orthoreg(1e-2, mask=optim.regex_mask('^(?!head)')),
      ...                  optax.sgd(0.1, momentum=0.9))
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)

    References:
      Lubana et al., arXiv:2009.05014.
    """
    if isinstance(strength, (int, float, np.floating)) and not strength >= 0:
        raise ValueError(f'strength must be >= 0, got {strength!r}')
    _check_rule(size, gram_side)
    identity = isinstance(strength, (int, float, np.floating)) and strength == 0

    def init_fn(params):
        layer_weights(params, mask, size, stem=stem)
        return OrthoRegState()

    def update_fn(updates, state, params=None):
        require_params(params, 'optim.orthoreg')
        if identity:
            return updates, state
        penalty_grads = jax.grad(lambda p: orthoreg_penalty(
            p, mask, size, gram_side=gram_side, stem=stem))(params)
        flags = {name for name, _ in _selected(params, mask)}
        u_names, u_leaves, treedef = named_leaves(updates, placeholders=True)
        g_leaves = named_leaves(penalty_grads, placeholders=True)[1]
        out = [u if is_placeholder(u) or name not in flags
               else (u + strength * g).astype(u.dtype)
               for u, g, name in zip(u_leaves, g_leaves, u_names)]
        return jax.tree_util.tree_unflatten(treedef, out), state

    return optax.GradientTransformation(init_fn, update_fn)
