"""The normalizers as ``flax.nnx`` modules over the same functional core as :mod:`jaxnorm.layers`.

Every Linen module of :mod:`jaxnorm.layers` has an NNX twin here with the same name, options,
defaults, parameters and maths: each calls the same :mod:`jaxnorm.functional` function, and
the tests check every twin against its Linen module to 1e-6. Conventions:

* Construction: ``Norm(num_features, *, rngs, **options)``; ``rngs: nnx.Rngs`` is required
  (keyword) by every module with parameters, as flax's ``nnx.BatchNorm``; the convs take
  ``nnx.Conv``'s arguments ``(in_features, out_features, kernel_size, strides, *, ..., rngs)``.
  Group counts are checked against ``num_features`` at construction, with the functional
  core's message; rank and dtype errors come from the functional core at the call.
* Variables: parameters are ``nnx.Param`` (``scale``, ``bias``, ``v``, ``tau``, conv
  ``kernel`` / ``scale`` / ``gain``), running statistics ``nnx.BatchStat`` (``mean``,
  ``var``) in float32. One rename: FRN's learned epsilon is ``learned_epsilon`` (Linen
  ``params['epsilon']``), since ``epsilon`` is the option.
* Train / eval, as ``nnx.BatchNorm``: the modules with running statistics (BatchNorm,
  VarianceNorm, EvoNormB0, LogitBatchNorm) have a ``use_running_average`` attribute, False
  (train: batch statistics, running averages updated) unless the constructor says otherwise,
  overridable per call (``bn(x, use_running_average=True)``), set for a whole model by
  ``model.train()`` / ``model.eval()`` (``set_attributes``) or ``nnx.view(model,
  use_running_average=True)`` (``set_view``). The other modules take ``x`` only.
* dtypes, as the Linen layers: statistics in float32, ``param_dtype`` the parameters'
  storage dtype, ``dtype`` the output dtype (None keeps the input's; flax promotes instead).
  The convs are ``nnx.Conv`` and keep its dtype promotion.
* ``axis_name``: as the Linen layers, the named axis batch statistics are averaged over
  inside ``jax.shard_map``.

:func:`get_norm` is the registry of :func:`jaxnorm.layers.get_norm` (same names, options,
checks and errors: it resolves the Linen spec and swaps each module for its twin); its
factories are called ``spec.norm(channels, rngs=rngs)``, ``spec.act(channels, rngs=rngs)``,
``spec.dense_norm(features, rngs=rngs)``, ``spec.logit_norm(classes, rngs=rngs)`` and
``spec.conv(in, out, kernel_size, ..., rngs=rngs)``. :func:`from_linen_variables` copies a
Linen model's ``{'params', 'batch_stats'}`` into an NNX model whose attribute paths mirror
the Linen names (:class:`jaxnorm.models.nnx_resnet.ResNet` does); :func:`to_linen_variables`
goes back.

Example::

    import jax.numpy as jnp
    import optax
    from flax import nnx
    from jaxnorm import nnx as jnnx
    from jaxnorm.models.nnx_resnet import resnet20

    rngs = nnx.Rngs(0)
    x, labels = jnp.ones((8, 32, 32, 3)), jnp.zeros(8, jnp.int32)
    bn = jnnx.BatchNorm(3, momentum=0.9, rngs=rngs)
    y = bn(x)                                  # train mode: batch statistics, updates bn.mean/var
    y = bn(x, use_running_average=True)        # this call only: the running statistics
    spec = jnnx.get_norm('gn', num_groups=4)   # the registry: same names and options as Linen
    block = nnx.Sequential(spec.conv(3, 16, (3, 3), use_bias=spec.conv_bias, rngs=rngs),
                           spec.norm(16, rngs=rngs), spec.act(16, rngs=rngs))

    model = resnet20(num_classes=10, in_features=3, norm='bn', rngs=rngs)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)       # params only; the BatchStats were updated in model(x)
        return loss

    model.train(); train_step(model, optimizer, x, labels)
    model.eval(); logits = model(x)            # running statistics, left unchanged
    stats = nnx.state(model, nnx.BatchStat)    # exactly the running statistics
    # a trained Linen ResNet-20's variables: from_linen_variables(model, variables)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx
from flax import traverse_util

from jaxnorm import layers as linen_layers
from jaxnorm._nnx_convs import LINEN_TWINS as _CONV_TWINS
from jaxnorm._nnx_convs import CenteredConv, ScaledWSConv, WeightNormConv
from jaxnorm._nnx_layers import LINEN_TWINS as _LAYER_TWINS
from jaxnorm._nnx_layers import (BatchNorm, CenteredReLU, EvoNormB0, EvoNormS0,
                                 FilterResponseNorm, GroupNorm, Identity, InstanceNorm,
                                 LayerNorm, LogitBatchNorm, ReLU, TLU, VarianceNorm)
from jaxnorm.layers import BEYOND_BN_REPO_OPTIONS, conv_kernel_init, norm_names
from jaxnorm.mimicnorm import centered_kernel_init, residual_scale_init

Initializer = Callable[..., Any]

LINEN_TWINS: dict[Any, type[nnx.Module]] = {**_LAYER_TWINS, **_CONV_TWINS}


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """What a model needs to build one normalizer family with NNX modules.

    The fields of :class:`jaxnorm.layers.NormSpec`, with NNX factories: ``norm``, ``act``,
    ``dense_norm`` and ``logit_norm`` are called ``(num_features, *, rngs)``; ``conv`` is
    ``nnx.Conv`` or a reparameterized conv with ``nnx.Conv``'s signature.
    """

    name: str
    norm: Callable[..., nnx.Module]
    act: Callable[..., nnx.Module]
    conv: Callable[..., nnx.Module] = nnx.Conv
    conv_bias: bool = False
    dense_norm: Callable[..., nnx.Module] | None = None
    conv_init: Initializer = conv_kernel_init
    plain_conv_init: Initializer | None = None
    residual_scale: Callable[[int], float] | None = None
    logit_norm: Callable[..., nnx.Module] | None = None


_FACTORIES = ('norm', 'act', 'conv', 'dense_norm', 'logit_norm')


def _twin(factory: Any) -> Any:
    """The NNX twin of a Linen module class, or of a ``functools.partial`` of one."""
    if factory is None:
        return None
    if isinstance(factory, functools.partial):
        return functools.partial(_twin(factory.func), *factory.args, **factory.keywords)
    try:
        return LINEN_TWINS[factory]
    except (KeyError, TypeError):
        raise TypeError(f'{factory!r} has no flax.nnx twin in jaxnorm.nnx; twins exist for '
                        f'{sorted(t.__name__ for t in LINEN_TWINS)}') from None


def from_linen_spec(spec: linen_layers.NormSpec) -> NormSpec:
    """The NNX spec of a Linen :class:`jaxnorm.layers.NormSpec` (same options, twin modules).

    Raises:
      TypeError: a factory whose module has no NNX twin (a custom Linen module).
    """
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return NormSpec(**{key: _twin(value) if key in _FACTORIES else value
                       for key, value in fields.items()})


def get_norm(name: str | NormSpec | linen_layers.NormSpec, **kw) -> NormSpec:
    """Resolve a normalizer by registry name (options in ``kw``) into an NNX :class:`NormSpec`.

    Names and options are those of :func:`jaxnorm.layers.get_norm`, checked by it (same
    errors); a Linen ``NormSpec`` is translated, an NNX one returned as is.

    Raises:
      ValueError: unknown name (the message lists the valid ones), or an option out of range.
      TypeError: an option the family's configurable module does not have, or of a wrong type.
    """
    if isinstance(name, NormSpec):
        if kw:
            raise TypeError('options cannot be applied to an already built NormSpec')
        return name
    return from_linen_spec(linen_layers.get_norm(name, **kw))


# ------------------------------------------------------------------ Linen <-> NNX variables

_COLLECTIONS = ((nnx.BatchStat, 'batch_stats'), (nnx.Param, 'params'))


def _variables(module: nnx.Module) -> list[tuple[str, tuple[str, ...], nnx.Variable]]:
    """``(linen collection, linen path, variable)`` for every Param / BatchStat of ``module``."""
    owners = dict(nnx.iter_modules(module))
    found = []
    for path, node in nnx.iter_graph(module):
        if not isinstance(node, nnx.Variable):
            continue
        collection = next((c for kind, c in _COLLECTIONS if isinstance(node, kind)), None)
        if collection is None:
            continue  # RNG state and other variables have no Linen counterpart
        owner = owners[tuple(path[:-1])]
        leaf = getattr(owner, '_linen_names', {}).get(path[-1], path[-1])
        found.append((collection, (*map(str, path[:-1]), str(leaf)), node))
    return found


def from_linen_variables(module: nnx.Module, variables: Any) -> nnx.Module:
    """Copy a Linen model's variables into ``module`` (in place) and return it.

    ``module``'s attribute paths must mirror the Linen module names (``stem/conv/kernel``),
    ``params`` going to ``nnx.Param`` and ``batch_stats`` to ``nnx.BatchStat``; values are
    cast to the NNX variables' dtypes. ``module`` may be abstract, which skips its random
    init: ``from_linen_variables(nnx.eval_shape(lambda: resnet20(..., rngs=nnx.Rngs(0))),
    variables)``.

    Raises:
      ValueError: a variable missing on either side, a shape mismatch, or a Linen collection
        other than ``params`` / ``batch_stats``.
    """
    extra_collections = sorted(set(variables) - {'params', 'batch_stats'})
    if extra_collections:
        raise ValueError(f'from_linen_variables maps params and batch_stats only, got '
                         f'collections {extra_collections}')
    linen = {(collection, *path): value for collection in variables
             for path, value in traverse_util.flatten_dict(dict(variables[collection])).items()}
    targets = {(collection, *path): node for collection, path, node in _variables(module)}
    missing, unused = sorted(set(targets) - set(linen)), sorted(set(linen) - set(targets))
    if missing or unused:
        raise ValueError(f'Linen variables do not match {type(module).__name__}: missing '
                         f'{["/".join(k) for k in missing]}, unused '
                         f'{["/".join(k) for k in unused]}')
    for key, node in targets.items():
        value = jnp.asarray(linen[key])
        if value.shape != node.shape:
            raise ValueError(f'{"/".join(key)}: Linen shape {value.shape}, NNX shape '
                             f'{node.shape}')
        node.set_value(value.astype(node.dtype))
    return module


def to_linen_variables(module: nnx.Module) -> dict[str, Any]:
    """``{'params': ..., 'batch_stats': ...}`` of ``module`` in the Linen layout (the inverse
    of :func:`from_linen_variables`; an empty collection is left out, as Linen's ``init``)."""
    out: dict[str, dict] = {}
    for collection, path, node in _variables(module):
        out.setdefault(collection, {})[path] = node[...]
    return {collection: traverse_util.unflatten_dict(flat) for collection, flat in out.items()}


# ------------------------------------------------------------------ optimizer state

def edit_opt_state(optimizer: nnx.Optimizer, fn: Callable[..., Any], *args, **kwargs) -> None:
    """``optimizer.opt_state <- fn(opt_state, *args, **kwargs)``, in place.

    ``fn`` sees the plain optax state (arrays, as ``tx.update`` does), so the functions that
    start a new phase of a transform work on NNX models unchanged:
    ``edit_opt_state(optimizer, prune.install_masks, masks)``,
    ``edit_opt_state(optimizer, optim.new_task, nnx.as_pure(nnx.state(model, nnx.Param)))``.
    ``fn`` must keep the state's tree structure (those functions do).
    """
    new = fn(nnx.as_pure(optimizer.opt_state), *args, **kwargs)
    nnx.update(optimizer.opt_state, nnx.state(new))


__all__ = [
    'BEYOND_BN_REPO_OPTIONS', 'BatchNorm', 'CenteredConv', 'CenteredReLU', 'EvoNormB0',
    'EvoNormS0', 'FilterResponseNorm', 'GroupNorm', 'Identity', 'InstanceNorm', 'LINEN_TWINS',
    'LayerNorm', 'LogitBatchNorm', 'NormSpec', 'ReLU', 'ScaledWSConv', 'TLU', 'VarianceNorm',
    'WeightNormConv', 'centered_kernel_init', 'conv_kernel_init', 'edit_opt_state',
    'from_linen_spec',
    'from_linen_variables', 'get_norm', 'norm_names', 'residual_scale_init',
    'to_linen_variables',
]
