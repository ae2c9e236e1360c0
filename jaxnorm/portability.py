"""Accelerator readiness on a CPU-only machine: lower a jitted function for GPU and TPU.

JAX can lower (not run) a function for platforms it has no device for:
``jax.export.export(jitted, platforms=[...])`` produces one StableHLO module that dispatches on
the platform at load time. If that succeeds for ``cuda``, ``rocm`` and ``tpu``, every primitive
in the function has a lowering on those platforms, no host callback sits in it, and its
shardings are expressible there. What lowering cannot find out (numerics, speed, memory, a
compiler bug in the backend) needs a real accelerator: ``pytest -m accelerator``.

:func:`export_for_platforms` runs two checks and raises :class:`LoweringError` naming the
primitive and the line of user code that created it:

1. host round trips (``pure_callback``, ``io_callback``, ``debug_callback``) anywhere in the
   jaxpr, including inside ``scan``/``cond``/``custom_vjp`` bodies: they pin a step to the host
   and cannot be exported;
2. the multi-platform export itself; a primitive without a lowering rule for one platform is
   reported with the platform and its source line.

Example::

    from jaxnorm import portability
    exported = portability.export_for_platforms(train_step, state, batch)
    exported.platforms  # ('cpu', 'cuda', 'rocm', 'tpu')
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Sequence

import jax
from jax import export
from jax.extend import core as jax_core
from jax.extend import source_info_util

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
# Primitives that call back into Python on the host during a step.
HOST_CALLBACKS = frozenset({'pure_callback', 'io_callback', 'debug_callback', 'callback'})


class LoweringError(RuntimeError):
    """A jitted function cannot be lowered for one of the requested platforms.

    Attributes:
      primitive: the offending primitive's name ('' when JAX's error does not name one).
      platform: the platform whose lowering failed ('' for host callbacks, which fail on all).
      locations: source lines (``file:line (function)``) where the primitive was created.
    """

    def __init__(self, message: str, *, primitive: str = '', platform: str = '',
                 locations: Sequence[str] = ()):
        super().__init__(message)
        self.primitive = primitive
        self.platform = platform
        self.locations = tuple(locations)


def equations(jaxpr: jax_core.Jaxpr, *, opaque: frozenset[str] = frozenset()
              ) -> Iterator[jax_core.JaxprEqn]:
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations' parameters,
    except inside equations whose primitive is in ``opaque`` (yielded, not entered)."""
    for eqn in jaxpr.eqns:
        yield eqn
        if eqn.primitive.name not in opaque:
            for sub in jax_core.jaxprs_in_params(eqn.params):
                yield from equations(sub, opaque=opaque)


def primitive_locations(fn: Callable, *args: Any, primitives=None, **kwargs) -> dict[str, list[str]]:
    """Where each primitive of ``fn(*args, **kwargs)``'s jaxpr comes from.

    Args:
      fn: a function (jitted or not) of ``args``; arrays may be ``jax.ShapeDtypeStruct``.
      primitives: only these names (default: every primitive).

    Returns:
      ``{primitive name: [source lines, first occurrence first, without repeats]}``.
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    found: dict[str, list[str]] = {}
    for eqn in equations(closed.jaxpr):
        name = eqn.primitive.name
        if primitives is not None and name not in primitives:
            continue
        where = source_info_util.summarize(eqn.source_info)
        lines = found.setdefault(name, [])
        if where not in lines:
            lines.append(where)
    return found


def _named_primitive(error: Exception) -> str:
    """The primitive JAX's lowering error names, if any."""
    match = (re.search(r"primitive ['\"]?([\w-]+)['\"]?", str(error))
             or re.search(r'lowering for ([\w-]+)', str(error)))
    return match.group(1) if match else ''


def export_for_platforms(fn: Callable, *args: Any, platforms: Sequence[str] = PLATFORMS,
                         **kwargs) -> export.Exported:
    """Lower ``fn(*args, **kwargs)`` for every platform in ``platforms`` (no device needed).

    Args:
      fn: the function; it is jitted here unless it already is (a jitted function keeps its
        ``in_shardings``/``out_shardings``, which the exported module records).
      *args: arrays or ``jax.ShapeDtypeStruct`` (with a ``sharding`` for sharded inputs).
      platforms: subset of :data:`PLATFORMS`.

    Returns:
      The ``jax.export.Exported`` module (``.platforms``, ``.nr_devices``,
      ``.in_shardings_hlo``, ``.mlir_module()``).

    Raises:
      LoweringError: a host callback in the function, or a primitive without a lowering on a
        platform; the message names the primitive and the source lines that created it.
    """
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown:
        raise ValueError(f'unknown platform(s) {unknown}; choose from {PLATFORMS}')
    jitted = fn if hasattr(fn, 'lower') else jax.jit(fn)
    callbacks = primitive_locations(jitted, *args, primitives=HOST_CALLBACKS, **kwargs)
    if callbacks:
        name, where = next(iter(callbacks.items()))
        raise LoweringError(
            f'{name} (a host callback) at {", ".join(where)} runs Python on the host inside a '
            'jitted step, which cannot be lowered for accelerators without a host round trip; '
            'compute it with jax.numpy, or move it out of the step', primitive=name,
            locations=where)
    try:
        return export.export(jitted, platforms=tuple(platforms))(*args, **kwargs)
    except (NotImplementedError, ValueError) as error:
        platform = next((p for p in platforms if re.search(rf'\b{p}\b', str(error))), '')
        primitive = _named_primitive(error)
        where = (primitive_locations(jitted, *args, primitives={primitive}, **kwargs)
                 .get(primitive, []) if primitive else [])
        at = f' at {", ".join(where)}' if where else ''
        raise LoweringError(
            f'cannot lower {getattr(fn, "__name__", fn)!r} for {platform or platforms}: '
            f'primitive {primitive or "?"}{at}: {error}', primitive=primitive,
            platform=platform, locations=where) from error


def abstract(tree: Any) -> Any:
    """``tree`` with every array replaced by its ``jax.ShapeDtypeStruct`` (sharding kept)."""
    def spec(x):
        if not hasattr(x, 'shape'):
            return x
        sharding = getattr(x, 'sharding', None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.tree.map(spec, tree)
