"""Numpy references shared by the normalizer tests: random draws, moments, standardization."""
import math

import flax.linen as nn
import jax
import numpy as np

EPS = 1e-5


def draw(shape, seed=0, loc=0.0):
    return np.random.default_rng(seed).normal(loc, 1.0, shape).astype(np.float32)


def randomize(params, seed=1):
    """Replace every parameter by a random positive-ish value so affine terms are exercised."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype) for leaf in leaves])


def init_apply(module, x, *, train=True, seed=1):
    """Random params; returns (output of a jitted train-or-eval apply, variables, updates)."""
    call_kw = {} if isinstance(module, nn.Conv) else {'train': train}
    variables = dict(module.init(jax.random.key(0), x, **call_kw))
    if 'params' in variables:
        variables['params'] = randomize(variables['params'], seed)
    apply = jax.jit(lambda v, x: module.apply(v, x, mutable=['batch_stats'], **call_kw))
    y, updates = apply(variables, x)
    return np.asarray(y), variables, updates


def np_var(x, axes, unbiased=False):
    n = math.prod(x.shape[a] for a in axes)
    var = ((x - x.mean(axes, keepdims=True)) ** 2).mean(axes, keepdims=True)
    return var * n / max(n - 1, 1) if unbiased else var


def np_standardize(x, axes, unbiased=False):
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(np_var(x, axes, unbiased) + EPS)


def group_moments(x, groups, unbiased=False):
    """Per-element mean and std (eps included) of x's (sample, channel group)."""
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean = grouped.mean(axes, keepdims=True)
    std = np.sqrt(np_var(grouped, axes, unbiased) + EPS)
    return [np.broadcast_to(a, grouped.shape).reshape(x.shape) for a in (mean, std)]


def grouped_standardize(x, groups, unbiased=False):
    mean, std = group_moments(x, groups, unbiased)
    return (x - mean) / std
