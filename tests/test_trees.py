"""Tests for jaxnorm.trees: path names, masks and the one tree-matches-params validator.

Expected flags and paths are written out by hand; error messages must name the paths.
"""
import ast
import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import FrozenDict

import optim
import prune
from jaxnorm import trees

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params():
    return {'conv': {'kernel': jnp.ones((3, 3, 2, 4)), 'bias': jnp.zeros(4)},
            'blocks': [{'w': jnp.ones((4, 4))}, {'w': jnp.ones((4, 4))}],
            'head': {'kernel': jnp.ones((4, 10)), 'bias': jnp.zeros(10)}}


# ---------------------------------------------------------------- paths

def test_named_leaves_joins_dict_keys_and_list_indices():
    paths, leaves, treedef = trees.named_leaves(_params())
    assert paths == ['blocks/0/w', 'blocks/1/w', 'conv/bias', 'conv/kernel', 'head/bias',
                     'head/kernel']
    assert [np.shape(x) for x in leaves] == [(4, 4), (4, 4), (4,), (3, 3, 2, 4), (10,),
                                             (4, 10)]
    assert jax.tree_util.tree_structure(_params()) == treedef


def test_path_names_agree_for_dict_and_frozendict():
    plain = trees.named_leaves(_params())[0]
    assert trees.named_leaves(FrozenDict(_params()))[0] == plain
    (path, _), = jax.tree_util.tree_flatten_with_path({'a': [0, {'b': 1}]})[0][1:]
    assert trees.path_name(path) == 'a/1/b'


def test_nnx_variables_are_named_like_the_linen_params():
    """An ``nnx.Variable`` adds a ``.value`` entry to its leaf's path; it is dropped, while a
    dict key or a NamedTuple field called ``value`` inside the tree is kept."""
    from flax import nnx
    variables = {'head': {'kernel': nnx.Param(jnp.ones((2, 3))), 'bias': nnx.Param(jnp.ones(3))}}
    assert trees.named_leaves(variables)[0] == ['head/bias', 'head/kernel']
    assert trees.mask_flags(optim.regex_mask('kernel$'), variables) == [False, True]
    Holder = collections.namedtuple('Holder', ['value', 'count'])
    assert trees.named_leaves({'value': 1, 'v': {'value': 2}})[0] == ['v/value', 'value']
    assert trees.named_leaves({'state': Holder({'value': 1}, 2)})[0] == [
        'state/value/value', 'state/count']


def test_placeholders_are_leaves_only_when_asked():
    tree = {'a': jnp.ones(2), 'b': optax.MaskedNode(), 'c': None}
    assert trees.named_leaves(tree)[0] == ['a']
    paths, leaves, _ = trees.named_leaves(tree, placeholders=True)
    assert paths == ['a', 'b', 'c']
    assert [trees.is_placeholder(x) for x in leaves] == [False, True, True]


# ---------------------------------------------------------------- masks

def test_prefix_mask_gives_one_flag_per_leaf():
    mask = {'conv': True, 'blocks': [False, {'w': True}], 'head': {'kernel': False,
                                                                    'bias': True}}
    # leaf order: blocks/0/w, blocks/1/w, conv/bias, conv/kernel, head/bias, head/kernel
    assert trees.mask_flags(mask, _params()) == [False, True, True, True, True, False]
    assert trees.mask_flags(True, _params()) == [True] * 6


def test_dict_mask_fits_frozendict_params_and_placeholders_are_never_selected():
    params = FrozenDict({'body': {'w': jnp.ones(2)}, 'head': optax.MaskedNode()})
    assert trees.mask_flags({'body': True, 'head': True}, params) == [True, False]
    # optax.masked's placeholder stands for the whole subtree the mask describes
    assert trees.mask_flags({'body': {'w': True}, 'head': {'kernel': True}}, params) == [
        True, False]
    selected = trees.mask_tree(None, params)
    assert selected == FrozenDict({'body': {'w': True}, 'head': False})


@pytest.mark.parametrize('mask, error, message', [
    ({'conv': True, 'blocks': True}, ValueError,
     r"^mask does not match params: missing from the mask: 'head/bias', 'head/kernel'$"),
    ({'conv': True, 'blocks': True, 'head': True, 'tail': {'w': False}}, ValueError,
     r"^mask does not match params: not in params: 'tail/w'$"),
    ({'conv': True, 'blocks': [True, 1], 'head': True}, TypeError,
     r"'blocks/1' must be a Python bool, got int"),
])
def test_bad_masks_name_the_path(mask, error, message):
    with pytest.raises(error, match=message):
        trees.mask_flags(mask, _params())


def test_regex_mask_selects_by_path():
    flags = trees.regex_mask(r'kernel$|^blocks/1')(_params())
    assert flags == {'conv': {'kernel': True, 'bias': False}, 'blocks': [{'w': False},
                                                                         {'w': True}],
                     'head': {'kernel': True, 'bias': False}}
    with pytest.raises(ValueError, match=r"'tyop' matches no parameter; paths look like: "
                                         r"blocks/0/w, blocks/1/w"):
        trees.regex_mask('tyop')(_params())
    with pytest.raises(ValueError, match='invalid mask pattern'):
        trees.regex_mask('head(')


# ---------------------------------------------------------------- the validator

def test_check_like_names_missing_extra_and_misshaped_paths_at_once():
    params = _params()
    grads = jax.tree.map(jnp.zeros_like, params)
    del grads['conv']['bias']
    grads['extra'] = jnp.zeros(1)
    grads['head']['kernel'] = jnp.zeros((10, 4))
    with pytest.raises(ValueError) as info:
        trees.check_like(params, grads, 'grads tree')
    assert str(info.value) == (
        "grads tree does not match params: missing from the grads tree: 'conv/bias'; "
        "not in params: 'extra'; 'head/kernel' has shape (10, 4) in the grads tree, (4, 10) "
        'in params')


def test_check_like_lists_at_most_eight_paths():
    params = {f'w{i}': jnp.zeros(1) for i in range(10)}
    with pytest.raises(ValueError, match=r"'w7' and 2 more$"):
        trees.check_like(params, {}, 'tree')


def test_check_like_returns_entries_in_params_order_whatever_the_container():
    params = _params()
    grads = FrozenDict(jax.tree.map(lambda x: x + 1, params))
    entries = trees.check_like(params, grads, 'grads tree')
    for entry, leaf in zip(entries, jax.tree.leaves(params)):
        np.testing.assert_array_equal(entry, leaf + 1)
    rebuilt = trees.aligned(FrozenDict(params), {'conv': params['conv'], 'head': params['head'],
                                                 'blocks': params['blocks']}, 'grads tree')
    assert isinstance(rebuilt, FrozenDict)


def test_a_placeholder_in_the_reference_covers_the_subtree_below_it():
    # new_task's case: optax.masked's state has a MaskedNode where the full params have a head
    state_tree = {'body': {'w': jnp.ones(2)}, 'head': optax.MaskedNode()}
    full = {'body': {'w': jnp.full(2, 3.0)}, 'head': {'kernel': jnp.ones((2, 2))}}
    out = trees.aligned(state_tree, full, 'params tree', against='the optimizer state')
    assert isinstance(out['head'], optax.MaskedNode)
    np.testing.assert_array_equal(out['body']['w'], 3.0)
    with pytest.raises(ValueError, match=r"^params tree does not match the optimizer state: "
                                         r"missing from the params tree: 'body/w'$"):
        trees.aligned(state_tree, {'head': full['head']}, 'params tree',
                      against='the optimizer state')


def test_require_params_names_the_transform():
    trees.require_params({}, 'x')
    with pytest.raises(ValueError, match=r'^my.transform needs the current params'):
        trees.require_params(None, 'my.transform')


# ---------------------------------------------------------------- one module for everyone

def test_optim_and_prune_share_the_helpers():
    assert optim.regex_mask is trees.regex_mask and optim.path_name is trees.path_name
    assert prune.named_leaves is trees.named_leaves


def _imported_modules(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_prune_does_not_import_optim():
    folder = os.path.join(REPO, 'prune')
    offenders = sorted(
        (name, module) for name in os.listdir(folder) if name.endswith('.py')
        for module in _imported_modules(os.path.join(folder, name))
        if module == 'optim' or module.startswith('optim.'))
    assert offenders == []
