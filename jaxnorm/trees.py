"""Parameter trees by path: naming, masks, and the check that a tree matches the params.

What :mod:`optim`, :mod:`prune` and :mod:`jaxnorm.mimicnorm` share about params pytrees. It
imports only jax, numpy and optax, so both packages can use it without import cycles.

* **Paths.** A leaf's path is its tree keys joined by ``/``: ``'stage1_block0/conv1/kernel'``
  (:func:`path_name`, :func:`named_leaves`). Trees are compared by these key names, never by
  container type, so a plain-dict mask or gradient fits FrozenDict params.
* **Placeholders.** ``None`` and ``optax.MaskedNode`` (what ``optax.masked`` puts in place of
  an excluded subtree) are placeholders: kept as leaves where asked, never parameters.
* **Masks.** A mask is a tree of Python bools that is a *prefix* of the params tree (one entry
  may stand for a whole subtree), or a function ``params -> such a tree`` such as
  :func:`regex_mask`; :func:`mask_flags` turns it into one flag per parameter leaf.
* **Matching.** :func:`check_like` is the one validator: it raises a ``ValueError`` naming
  every path missing from a tree, every path it has that the params lack, and every leaf of
  the wrong shape.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np
import optax

MaskOrFn = Any | Callable[[Any], Any]
MAX_LISTED = 8  # paths named in one error message


def key_name(key) -> str:
    """The name of one ``jax.tree_util`` path entry: a dict key, attribute or index."""
    for attribute in ('key', 'name', 'idx'):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def key_names(path) -> tuple[str, ...]:
    """The names of a ``jax.tree_util`` key path's entries, less the trailing ``.value`` that
    a ``flax.nnx.Variable`` adds, so an ``nnx.state(model, nnx.Param)`` leaf is named as the
    same Linen parameter (``'head/kernel'``, not ``'head/kernel/value'``)."""
    names = tuple(key_name(key) for key in path)
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == 'value':
        return names[:-1]
    return names


def path_name(path) -> str:
    """``'stage1_block0/conv1/kernel'`` for a ``jax.tree_util`` key path."""
    return '/'.join(key_names(path))


def is_placeholder(x) -> bool:
    """Whether ``x`` stands for no parameter: ``None`` or ``optax.MaskedNode``."""
    return x is None or isinstance(x, optax.MaskedNode)


def _keyed_leaves(tree, placeholders: bool) -> tuple[list[tuple[str, ...]], list, Any]:
    """``(key-name tuples, leaves, treedef)``; placeholders kept as leaves if asked."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=is_placeholder if placeholders else None)
    return ([key_names(path) for path, _ in with_paths],
            [leaf for _, leaf in with_paths], treedef)


def named_leaves(tree, *, placeholders: bool = False) -> tuple[list[str], list, Any]:
    """``(paths, leaves, treedef)`` of a pytree, paths joined by ``/``.

    Args:
      tree: any pytree.
      placeholders: keep ``None`` / ``optax.MaskedNode`` as leaves (and in the treedef), as
        transforms inside ``optax.masked`` need; by default they are empty subtrees, as in
        ``jax.tree.leaves``.

    Example:
      >>> named_leaves({'conv': {'kernel': 1, 'bias': 2}, 'head': None})[0]
      ['conv/bias', 'conv/kernel']
    """
    keys, leaves, treedef = _keyed_leaves(tree, placeholders)
    return ['/'.join(k) for k in keys], leaves, treedef


def _listed(keys) -> str:
    names = [repr('/'.join(k)) for k in keys]
    more = f' and {len(names) - MAX_LISTED} more' if len(names) > MAX_LISTED else ''
    return ', '.join(names[:MAX_LISTED]) + more


def check_like(params, tree, what: str, *, against: str = 'params',
               prefix: bool = False) -> list:
    """Match ``tree`` to ``params`` path by path; raise ``ValueError`` naming what differs.

    A leaf of ``params`` is matched by the entry of ``tree`` at the same path (key names, so
    dict and FrozenDict agree), by an entry at a prefix of its path when ``prefix`` is True
    (mask prefix trees), and, when the leaf is a placeholder (``optax.masked``'s excluded
    subtree), by any entries at or below its path. Every entry must match some leaf, and with
    ``prefix`` False a matched entry must have the leaf's shape.

    Args:
      params: the reference tree (placeholders allowed).
      tree: the tree that must match it.
      what: the tree's name in the message, e.g. ``'mask tree'`` or ``'grads tree'``.
      against: the reference's name in the message.
      prefix: let one entry of ``tree`` stand for the whole subtree of ``params`` below it,
        and skip the shape check (mask entries are Python bools).

    Returns:
      One entry of ``tree`` per leaf of ``named_leaves(params, placeholders=True)``, in that
      order; at a placeholder, the placeholder itself (:func:`aligned` rebuilds the tree).

    Raises:
      ValueError: listing the paths of ``params`` that ``tree`` lacks, the paths of ``tree``
        that match no leaf of ``params``, and every leaf whose shape differs.

    Example:
      >>> check_like({'w': np.ones(2), 'b': np.ones(3)}, {'w': np.ones(4)}, 'grads tree')
      Traceback (most recent call last):
      ValueError: grads tree does not match params: missing from the grads tree: 'b'; 'w' ...
      has shape (4,) in the grads tree, (2,) in params
    """
    param_keys, param_leaves, _ = _keyed_leaves(params, placeholders=True)
    tree_keys, tree_leaves, _ = _keyed_leaves(tree, placeholders=True)
    entries = dict(zip(tree_keys, tree_leaves))
    used, found, missing, shapes = set(), [], [], []
    for keys, leaf in zip(param_keys, param_leaves):
        at = keys if keys in entries else None
        if at is None and prefix:
            at = next((keys[:n] for n in range(len(keys) - 1, -1, -1) if keys[:n] in entries),
                      None)
        if at is not None:
            used.add(at)
        if is_placeholder(leaf):
            below = [k for k in entries if k[:len(keys)] == keys]
            used.update(below)
            if at is None and not below:
                missing.append(keys)
            found.append(leaf)
        elif at is None or is_placeholder(entries[at]):
            missing.append(keys)
            found.append(None)
        else:
            if not prefix and np.shape(entries[at]) != np.shape(leaf):
                shapes.append(f"{'/'.join(keys)!r} has shape {np.shape(entries[at])} in the "
                              f'{what}, {np.shape(leaf)} in {against}')
            found.append(entries[at])
    extra = [k for k in tree_keys if k not in used]
    problems = ([f'missing from the {what}: {_listed(missing)}'] if missing else []) + (
        [f'not in {against}: {_listed(extra)}'] if extra else []) + shapes
    if problems:
        raise ValueError(f'{what} does not match {against}: ' + '; '.join(problems))
    return found


def aligned(params, tree, what: str, *, against: str = 'params') -> Any:
    """``tree`` checked by :func:`check_like` and rebuilt with ``params``' exact structure.

    Containers become ``params``' (a dict gradient for FrozenDict params comes back a
    FrozenDict), and where ``params`` has a placeholder the result has it too, so the two
    trees can go through one ``jax.tree.map``.
    """
    treedef = _keyed_leaves(params, placeholders=True)[2]
    return jax.tree_util.tree_unflatten(treedef, check_like(params, tree, what, against=against))


def mask_flags(mask: MaskOrFn, params) -> list[bool]:
    """One Python bool per leaf of ``params`` (placeholders kept, and always False).

    Args:
      mask: a tree of Python bools that is a prefix of ``params`` (matched by key names, so a
        dict mask fits FrozenDict params), or a function ``params -> such a tree``. It may keep
        the placeholders of ``params`` (a ``jax.tree.map`` over params does).
      params: the parameter tree.

    Returns:
      The flags in the order of ``named_leaves(params, placeholders=True)``.

    Raises:
      TypeError: a mask entry is not a Python bool (a traced or array mask cannot select
        leaves at trace time).
      ValueError: the mask does not match ``params`` (:func:`check_like` names the paths).

    Example:
      >>> mask_flags({'conv': True, 'head': {'kernel': False, 'bias': True}},
      ...            {'conv': {'kernel': 1, 'bias': 2}, 'head': {'kernel': 3, 'bias': 4}})
      [True, True, True, False]
    """
    mask = mask(params) if callable(mask) else mask
    for keys, entry in zip(*_keyed_leaves(mask, placeholders=True)[:2]):
        if not (isinstance(entry, (bool, np.bool_)) or is_placeholder(entry)):
            raise TypeError(f"mask entry {'/'.join(keys)!r} must be a Python bool, got "
                            f'{type(entry).__name__}')
    entries = check_like(params, mask, 'mask', prefix=True)
    return [not is_placeholder(entry) and bool(entry) for entry in entries]


def mask_tree(mask: MaskOrFn | None, params) -> Any:
    """:func:`mask_flags` as a tree with ``params``' structure, placeholders included.

    ``jax.tree.map(f, mask_tree(mask, params), params, ...)`` then calls ``f`` with one
    Python bool per leaf (a placeholder gets False and is passed through as it is). A mask of
    None selects every parameter.
    """
    _, leaves, treedef = _keyed_leaves(params, placeholders=True)
    flags = ([not is_placeholder(leaf) for leaf in leaves] if mask is None
             else mask_flags(mask, params))
    return jax.tree_util.tree_unflatten(treedef, flags)


def regex_mask(pattern: str) -> Callable[[Any], Any]:
    """A mask function: True for the leaves whose path matches ``pattern`` (``re.search``).

    Paths are the tree keys joined by ``/``, e.g. ``head/kernel`` or ``dense1/kernel``.

    Args:
      pattern: regular expression searched in each leaf's path.

    Returns:
      ``params -> bool tree``, raising ``ValueError`` when no leaf matches (a typo would
      otherwise silently select nothing).

    Raises:
      ValueError: ``pattern`` is not a valid regular expression.

    Example:
      >>> mask = regex_mask(r'head/kernel$')
      >>> mask({'head': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}})
      {'head': {'bias': False, 'kernel': True}}
    """
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f'invalid mask pattern {pattern!r}: {err}') from None

    def mask_fn(params):
        paths, leaves, treedef = named_leaves(params, placeholders=True)
        flags = [not is_placeholder(leaf) and bool(compiled.search(path))
                 for leaf, path in zip(leaves, paths)]
        if not any(flags):
            raise ValueError(f'mask pattern {pattern!r} matches no parameter; paths look '
                             f"like: {', '.join(paths[:MAX_LISTED])}")
        return jax.tree_util.tree_unflatten(treedef, flags)

    return mask_fn


def require_params(params: Any, transform: str) -> None:
    """Raise ``ValueError`` naming ``transform`` when an optax ``update`` got no params."""
    if params is None:
        raise ValueError(f'{transform} needs the current params: call '
                         'tx.update(updates, state, params)')


__all__ = ['MaskOrFn', 'aligned', 'check_like', 'is_placeholder', 'key_name', 'key_names',
           'mask_flags',
           'mask_tree', 'named_leaves', 'path_name', 'regex_mask', 'require_params']


def find_state(opt_state: Any, kind: type) -> Any:
    """The one node of type ``kind`` (e.g. :class:`prune.AdmmState`) inside ``opt_state``,
    wherever a chain, ``optax.masked`` or ``optax.inject_hyperparams`` nests it.

    Raises:
      ValueError: there is none (the transform, or its extension, is off) or more than one.
    """
    def is_kind(node) -> bool:
        return isinstance(node, kind)
    found = [node for node in jax.tree.leaves(opt_state, is_leaf=is_kind) if is_kind(node)]
    if len(found) != 1:
        raise ValueError(f'expected one {kind.__name__} in the optimizer state, found '
                         f'{len(found)}; is its extension switched on?')
    return found[0]
