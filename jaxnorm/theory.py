"""Probes of a network at initialization: the measurements of Beyond BatchNorm (arXiv:2106.05956).

Lubana, Dick and Tanaka explain normalizers by what they do to a randomly initialized network.
:func:`probe` measures their four quantities in one jitted forward and backward pass, for any
model of :mod:`jaxnorm.models` (or any flax.linen ``apply``) and any normalizer:

* **activation variance** of a layer output ``a`` of shape (N, ..., C): the unbiased variance
  of each channel over every other axis (N, H, W), averaged over channels,
  ``mean_c Var_{n,h,w}(a[n, h, w, c])`` (the repo's ``Activs_prober`` uses ``torch.var``);
* **stable rank** of the sample-normalized activations: each sample's output is flattened to a
  vector ``a_i`` and scaled to unit Euclidean norm, ``u_i = a_i / ||a_i||``; with the B x B
  Gram matrix ``G = U U^T``, ``srank = tr(G) / lambda_max(G) = sum_k s_k^2 / s_max^2`` over the
  singular values ``s_k`` of U, which is ``B / lambda_max(G)`` since every ``u_i`` has unit
  norm. It lies in [1, B]: 1 when all samples point the same way, B for orthogonal samples.
  (A sample whose output is exactly zero keeps a zero row and only lowers ``tr(G)``.)
* **numerical rank** of the same B x D matrix U of unit-norm sample rows (D = the flattened
  sample size): the number of singular values ``s_k`` of U above the tolerance
  ``tol = s_max * max(B, D) * eps`` with ``eps`` the float32 machine epsilon, the default of
  ``numpy.linalg.matrix_rank`` (Press et al., *Numerical Recipes*, 2nd ed., sec. 2.6): the
  bound on the rounding error of a float32 SVD of U, so a singular value below it cannot be
  told from 0 in the arithmetic the network runs in. Unlike the stable rank (a smooth lower
  bound of the rank), this is the rank that the Omega(sqrt(width / group size)) bound of
  Beyond BatchNorm speaks of, as far as float32 can resolve it. A relative tolerance ``rtol``
  (``tol = s_max * rtol``) can be given instead. The singular values are those of U itself
  (an SVD), not square roots of G's eigenvalues, whose float32 error (~ eps * s_max^2) would
  swamp singular values below ~ sqrt(eps) * s_max;
* **mean cosine similarity**: the mean off-diagonal entry of G,
  ``(sum_ij G_ij - tr G) / (B (B - 1))``, the average cosine between two different samples;
* **gradient norm** of every conv (and Dense) layer: the Frobenius norm, over the whole batch,
  of ``dL/dz`` where z is the layer's output and L the mean cross-entropy of the batch.

How the model is instrumented, without changing it: the forward pass runs under
``flax.linen.intercept_methods``. The interceptor sees every module call; it adds a zero array
("tap") to the output of each conv/Dense and records the outputs of the selected layers. Since
``z + t`` at ``t = 0`` is z, ``dL/dt = dL/dz`` exactly, so one ``jax.grad`` with respect to the
list of taps gives every layer's output gradient at once (norm.md 1.5's recipe). The tap
shapes come from a ``jax.eval_shape`` of the same forward pass, at trace time. This was chosen
over ``capture_intermediates``, which records outputs but cannot inject taps, and over
``Module.perturb``, which needs a call inside every model. Per-layer statistics are computed in
a Python loop *at trace time*; the compiled program is one XLA computation with no loop over
layers at run time.

The paper's probe networks that are not named models, ``uniform_resnet`` and ``uniform_cnn``,
live in :mod:`jaxnorm.models.uniform` and are re-exported here, next to the probes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm.losses import mean_cross_entropy
from jaxnorm.models.uniform import uniform_cnn, uniform_resnet

LAYER_SELECTIONS = ('blocks', 'activations', 'convs')
TAPPED = (nn.Conv, nn.Dense)

Selector = Callable[[str, nn.Module], bool]


# ----------------------------------------------------------------------------- statistics


def _check_batch_rows(x: jax.Array, what: str) -> None:
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f'{what} needs a batch of at least 2 samples on axis 0 (it compares '
                         f'samples or estimates a variance), got shape {tuple(x.shape)}')


def channel_variance(x: jax.Array) -> jax.Array:
    """Unbiased per-channel variance over every axis but the last, averaged over channels.

    Args:
      x: (N, ..., C) activations with N * H * W >= 2.

    Returns:
      A float32 scalar, ``mean_c Var(x[..., c])`` with Bessel's correction.
    """
    _check_batch_rows(x, 'channel_variance')
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return jnp.mean(jnp.var(flat, axis=0, ddof=1))


def sample_gram(x: jax.Array) -> jax.Array:
    """B x B Gram matrix of the samples of ``x`` flattened and scaled to unit norm.

    Zero samples stay zero rows (their norm is clamped to the smallest normal float), so G is
    finite for any input. The product runs at full float32 precision: cosines close to 1 are
    the quantity of interest, and TPU/GPU default matmul precision would blur them.
    """
    _check_batch_rows(x, 'sample_gram')
    rows = x.reshape(x.shape[0], -1).astype(jnp.float32)
    norms = jnp.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / jnp.maximum(norms, jnp.finfo(jnp.float32).tiny)
    return jnp.matmul(unit, unit.T, precision=jax.lax.Precision.HIGHEST)


def stable_rank(x: jax.Array) -> jax.Array:
    """Stable rank ``tr(G) / lambda_max(G)`` of the sample-normalized activations (see module).

    Args:
      x: (B, ...) with B >= 2; each sample is flattened and scaled to unit norm first.

    Returns:
      A float32 scalar in [1, B] (NaN if every sample is exactly zero).
    """
    return _stable_rank_of_gram(sample_gram(x))


def unit_rows(x: jax.Array) -> jax.Array:
    """The samples of ``x`` flattened to rows of a (B, D) float32 matrix and scaled to unit
    Euclidean norm (a zero sample stays a zero row), the U of :func:`sample_gram`."""
    _check_batch_rows(x, 'unit_rows')
    rows = x.reshape(x.shape[0], -1).astype(jnp.float32)
    norms = jnp.linalg.norm(rows, axis=1, keepdims=True)
    return rows / jnp.maximum(norms, jnp.finfo(jnp.float32).tiny)


def rank_tolerance(singular: jax.Array, shape: tuple[int, int],
                   rtol: float | None = None) -> jax.Array:
    """The tolerance of :func:`numerical_rank`: ``s_max * max(shape) * eps(float32)``
    (numpy.linalg.matrix_rank's default), or ``s_max * rtol`` when ``rtol`` is given."""
    if rtol is not None and not rtol > 0:
        raise ValueError(f'rtol must be positive, got {rtol}')
    factor = max(shape) * jnp.finfo(jnp.float32).eps if rtol is None else rtol
    return jnp.max(singular, axis=-1) * factor


def numerical_rank(x: jax.Array, rtol: float | None = None) -> jax.Array:
    """Numerical rank of the sample-normalized activations (see module): the number of
    singular values of :func:`unit_rows` ``(x)`` above :func:`rank_tolerance`.

    Args:
      x: (B, ...) with B >= 2.
      rtol: relative tolerance; None: ``max(B, D) * eps(float32)`` (numpy's default).

    Returns:
      An int32 scalar in [0, B].
    """
    unit = unit_rows(x)
    singular = jnp.linalg.svd(unit, compute_uv=False)
    tol = rank_tolerance(singular, unit.shape, rtol)
    return jnp.sum(singular > tol[..., None], axis=-1).astype(jnp.int32)


def mean_cosine(x: jax.Array) -> jax.Array:
    """Mean cosine similarity over the B (B - 1) ordered pairs of different samples of ``x``."""
    return _mean_cosine_of_gram(sample_gram(x))


def _stable_rank_of_gram(gram: jax.Array) -> jax.Array:
    """``tr(G) / lambda_max(G)`` over the last two axes of (..., B, B) Gram matrices."""
    return jnp.trace(gram, axis1=-2, axis2=-1) / jnp.linalg.eigvalsh(gram)[..., -1]


def _mean_cosine_of_gram(gram: jax.Array) -> jax.Array:
    """Mean off-diagonal entry over the last two axes of (..., B, B) Gram matrices."""
    batch = gram.shape[-1]
    off_diagonal = jnp.sum(gram, axis=(-2, -1)) - jnp.trace(gram, axis1=-2, axis2=-1)
    return off_diagonal / (batch * (batch - 1))


# ----------------------------------------------------------------------------- instrumentation


def _selector(layers: str | Selector) -> Selector:
    """The predicate ``(path, module) -> bool`` choosing which outputs feed the statistics."""
    if callable(layers):
        return layers
    if layers == 'blocks':
        # Direct children of the model except its linear layers: the stem and the residual
        # blocks of a ResNet, the conv-norm-act layers of a VGG, a MobileNet's blocks.
        return lambda path, module: (path.count('/') == 0 and path != ''
                                     and not isinstance(module, TAPPED))
    if layers == 'activations':
        # The models name their activation slot act / act1 / act2 (EvoNorms live there too).
        return lambda path, module: path.rsplit('/', 1)[-1].startswith('act')
    if layers == 'convs':
        return lambda path, module: isinstance(module, nn.Conv)
    raise ValueError(f'unknown layer selection {layers!r}; valid: {", ".join(LAYER_SELECTIONS)} '
                     f'or a callable (path, module) -> bool')


def _instrumented_forward(apply_fn: Callable, variables: Any, images: jax.Array, taps, *,
                          select: Selector, tapped: tuple[type, ...], train: bool):
    """Run the model once, adding ``taps[k]`` to the k-th tapped output (none if ``taps`` is
    None) and recording the selected outputs.

    Returns:
      ``(logits, [(path, selected output)], [(path, tapped output)])`` in completion order.
    """
    selected, tapped_out, calls = [], [], {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != '__call__':
            return out
        path = '/'.join(context.module.path)
        # A module applied twice gets '#2', '#3', ... so every recorded name is unique.
        calls[path] = calls.get(path, 0) + 1
        name = path if calls[path] == 1 else f'{path}#{calls[path]}'
        if isinstance(context.module, tapped):
            if taps is not None:
                out = out + taps[len(tapped_out)]
            tapped_out.append((name, out))
        if select(path, context.module):
            selected.append((name, out))
        return out

    with nn.intercept_methods(interceptor):
        if train:
            logits, _ = apply_fn(variables, images, train=True, mutable=['batch_stats'])
        else:
            logits = apply_fn(variables, images, train=False)
    return logits, selected, tapped_out


def _resolve(model_or_apply: nn.Module | Callable, layers: str | Selector,
             tapped: Sequence[type]) -> tuple[Callable, Selector, tuple[type, ...]]:
    apply_fn = model_or_apply.apply if isinstance(model_or_apply, nn.Module) else model_or_apply
    return apply_fn, _selector(layers), tuple(tapped)


def probe_layers(model_or_apply: nn.Module | Callable, variables: Any, images: jax.Array, *,
                 layers: str | Selector = 'blocks', tapped: Sequence[type] = TAPPED,
                 train: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names, in forward order, of the probed layers and of the tapped (conv/Dense) layers.

    Traces the model abstractly (``jax.eval_shape``); nothing is computed. The order matches
    the arrays of :func:`probe_arrays` with the same arguments.
    """
    apply_fn, select, tapped = _resolve(model_or_apply, layers, tapped)
    names = {}

    def forward(variables, images):
        _, selected, tapped_out = _instrumented_forward(
            apply_fn, variables, images, None, select=select, tapped=tapped, train=train)
        names['layers'] = tuple(name for name, _ in selected)
        names['tapped'] = tuple(name for name, _ in tapped_out)

    jax.eval_shape(forward, variables, images)
    return names['layers'], names['tapped']


def probe_arrays(model_or_apply: nn.Module | Callable, variables: Any, images: jax.Array,
                 labels: jax.Array | None = None, *, layers: str | Selector = 'blocks',
                 tapped: Sequence[type] = TAPPED, train: bool = True,
                 loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                 with_numerical_rank: bool = False) -> dict[str, jax.Array]:
    """The probe as a pure, jittable function of arrays; :func:`probe` adds the layer names
    and the jit. To probe many seeds or models, jit this once per model and call it per seed
    (:func:`probe_layers` gives the names).

    Args:
      model_or_apply: a flax module, or an ``apply(variables, x, train=..., mutable=...)``.
      variables: the model's variables (``params`` and, for BN-like layers, ``batch_stats``).
      images: (B, ...) inputs, B >= 2.
      labels: (B,) integer labels; None skips the backward pass (no ``grad_norm``/``loss``).
      layers: ``'blocks'`` (the model's direct children except linear layers), ``'activations'``
        (every activation-slot output), ``'convs'`` (every conv output) or a predicate
        ``(path, module) -> bool``.
      tapped: module classes whose outputs get a tap (subclasses included, so the weight-
        reparameterized convs of WN/sWS are tapped too).
      train: run norms in training mode (batch statistics), as the paper does at init.
      loss_fn: ``(logits, labels) -> scalar``; default the batch-mean softmax cross-entropy.
      with_numerical_rank: also return ``numerical_rank``, int32 (L,), :func:`numerical_rank`
        of every probed layer (one SVD per layer; off by default).

    Returns:
      ``variance``, ``stable_rank``, ``cosine``: float32 (L,) over the probed layers;
      with labels also ``grad_norm``: float32 (K,) over the tapped layers, and ``loss``.
    """
    apply_fn, select, tapped = _resolve(model_or_apply, layers, tapped)
    _check_batch_rows(images, 'probe')
    if labels is not None and labels.shape != images.shape[:1]:
        raise ValueError(f'labels must have shape ({images.shape[0]},) to match the images, '
                         f'got {tuple(labels.shape)}')
    forward = functools.partial(_instrumented_forward, apply_fn, variables, images,
                                select=select, tapped=tapped, train=train)
    loss_fn = loss_fn or mean_cross_entropy

    if labels is None:
        _, selected, _ = forward(None)
        out = {}
    else:
        shapes = jax.eval_shape(lambda: [z for _, z in forward(None)[2]])
        if not shapes:
            raise ValueError(f'no module of the tapped classes {[t.__name__ for t in tapped]} '
                             f'was called, so there is no gradient to probe')

        def loss_of_taps(taps):
            logits, selected, _ = forward(taps)
            return loss_fn(logits, labels), selected

        taps = [jnp.zeros(s.shape, s.dtype) for s in shapes]
        (loss, selected), grads = jax.value_and_grad(loss_of_taps, has_aux=True)(taps)
        out = {'grad_norm': jnp.stack([jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
                                       for g in grads]),
               'loss': loss.astype(jnp.float32)}
    if not selected:
        raise ValueError(f'the layer selection {layers!r} matched no module of this model')
    acts = [a for _, a in selected]
    # Every layer's Gram matrix is B x B whatever its shape, so one batched eigensolver serves
    # all layers (a per-layer eigvalsh would double the compile time of a deep model).
    grams = jnp.stack([sample_gram(a) for a in acts])
    return {'variance': jnp.stack([channel_variance(a) for a in acts]),
            'stable_rank': _stable_rank_of_gram(grams), 'cosine': _mean_cosine_of_gram(grams),
            **out, **({'numerical_rank': jnp.stack([numerical_rank(a) for a in acts])}
                      if with_numerical_rank else {})}


def probe(model_or_apply: nn.Module | Callable, variables: Any,
          batch: Mapping[str, Any] | tuple | jax.Array, **options) -> dict[str, Any]:
    """Measure a network once (Beyond BatchNorm's probes, arXiv:2106.05956; see the module).

    Every call traces and compiles anew; in a loop, jit :func:`probe_arrays` instead.

    Args:
      model_or_apply: a flax module of :mod:`jaxnorm.models` (or its ``apply``).
      variables: its variables, e.g. ``model.init(key, images)``.
      batch: ``{'image': (B, ...), 'label': (B,)}``, an ``(images, labels)`` pair, or images
        alone (forward statistics only).
      **options: ``layers``, ``tapped``, ``train``, ``loss_fn`` of :func:`probe_arrays`.

    Returns:
      ``layers`` (names of the probed layers, forward order) with the float32 arrays
      ``variance``, ``stable_rank``, ``cosine`` (one entry per probed layer); when labels are
      given also ``tapped`` (names of the conv/Dense layers), ``grad_norm`` (one entry per
      tapped layer) and ``loss``.

    Example::

        model = get_model('resnet56_wide', norm='bn', num_classes=10)
        x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
        y = jnp.arange(16) % 10
        out = probe(model, model.init(jax.random.key(0), x), (x, y))
        out['layers'][:2]                          # ('stem', 'stage1_block1')
        out['variance'][-1] / out['variance'][1]   # growth over the 27 blocks
    """
    if isinstance(batch, Mapping):
        if 'image' not in batch:
            raise ValueError(f"batch mapping needs an 'image' entry, got keys {sorted(batch)}")
        images, labels = batch['image'], batch.get('label')
    elif isinstance(batch, tuple):
        if len(batch) != 2:
            raise ValueError(f'batch tuple must be (images, labels), got {len(batch)} items')
        images, labels = batch
    else:
        images, labels = batch, None
    images = jnp.asarray(images)
    labels = None if labels is None else jnp.asarray(labels)
    name_options = {k: v for k, v in options.items() if k in ('layers', 'tapped', 'train')}
    layer_names, tapped_names = probe_layers(model_or_apply, variables, images, **name_options)
    arrays = jax.jit(functools.partial(probe_arrays, model_or_apply, **options))(
        variables, images, labels)
    return {'layers': layer_names, **({'tapped': tapped_names} if labels is not None else {}),
            **arrays}


__all__ = ['LAYER_SELECTIONS', 'TAPPED', 'channel_variance', 'mean_cosine', 'numerical_rank',
           'probe', 'probe_arrays', 'probe_layers', 'rank_tolerance', 'sample_gram',
           'stable_rank', 'uniform_cnn', 'uniform_resnet', 'unit_rows']
