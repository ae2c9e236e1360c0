"""What the transforms here share: params-tree masks and the check that ``update`` got params.

A mask is a tree of Python bools (a prefix of the params tree) or a ``params -> tree`` function;
:func:`mask_flags` turns it into one flag per leaf, matching paths by key name so a dict mask
fits FrozenDict params, and names any parameter or mask entry the other lacks.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax

MaskOrFn = Any | Callable[[Any], Any]


def require_params(params: Any, transform: str) -> None:
    """Raise ``ValueError`` naming ``transform`` when ``params`` is None."""
    if params is None:
        raise ValueError(f'{transform} needs the current params: call '
                         'tx.update(updates, state, params)')


def is_placeholder(x) -> bool:
    return x is None or isinstance(x, optax.MaskedNode)


def flatten_with_placeholders(tree) -> tuple[list, list, Any]:
    """Leaves with ``None`` / ``MaskedNode`` kept as leaves, their paths, and the treedef."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_placeholder)
    return [leaf for _, leaf in with_paths], [path for path, _ in with_paths], treedef


def _key_name(key) -> str:
    for attribute in ('key', 'name', 'idx'):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def path_name(path) -> str:
    """``'stage1_block0/conv1/kernel'`` for a ``jax.tree_util`` key path."""
    return '/'.join(_key_name(key) for key in path)


def mask_flags(mask: MaskOrFn, params) -> list[bool]:
    """One flag per leaf of ``params``; ``mask`` may be a prefix tree of Python bools.

    Paths are compared by their key names, so a dict mask fits FrozenDict params.
    """
    mask = mask(params) if callable(mask) else mask
    leaves, paths, _ = flatten_with_placeholders(params)
    mask_leaves, mask_paths, _ = flatten_with_placeholders(mask)
    entries = {}
    for value, path in zip(mask_leaves, mask_paths):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f'mask entry {path_name(path)!r} must be a Python bool, got '
                            f'{type(value).__name__}')
        entries[tuple(_key_name(k) for k in path)] = bool(value)
    used, flags = set(), []
    for leaf, path in zip(leaves, paths):
        names = tuple(_key_name(k) for k in path)
        prefix = next((names[:n] for n in range(len(names), -1, -1) if names[:n] in entries),
                      None)
        # optax.masked replaces a whole excluded subtree by one MaskedNode.
        below = ([name for name in entries if name[:len(names)] == names]
                 if is_placeholder(leaf) else [])
        if prefix is None and not below:
            raise ValueError(f'mask does not match params: no mask entry for parameter '
                             f'{path_name(path)!r}')
        used.update([prefix] if prefix is not None else below)
        flags.append(prefix is not None and entries[prefix] and not is_placeholder(leaf))
    unused = [name for name in entries if name not in used]
    if unused:
        raise ValueError(f"mask does not match params: mask entry {'/'.join(unused[0])!r} "
                         'names no parameter')
    return flags
