"""The stored format of a unified kernel, and its measured bits and multiplies.

A layer is stored as 2-bit block codes, one float32 magnitude and one sign bit per weight for
each unified block, float32 weights for the free blocks and nothing for the pruned blocks
(:func:`encode`); the bit count is measured from the packed arrays, and :func:`decode_kernel`
rebuilds the projected kernel exactly. Compute: a unified block row costs one multiply,
:math:`a_b \\sum_i s_i x_i`, a free weight one, a pruned weight none (times the output
positions of a conv). Blocks, codes and projection: :mod:`prune.unify`.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnorm.trees import named_leaves
from prune.unify import (FREE, PRUNED, UNIFIED, Grid, UnifySpec, block_stats, constrained,
                         from_blocks, grid, to_blocks, valid_entries)


class StoredLayer(NamedTuple):
    """A unified kernel in its stored format.

    Attributes:
      shape: the kernel's shape.
      codes: block codes, 2 bits each, packed four per byte (``uint8``).
      magnitudes: float32, one per unified block, in block order.
      signs: one bit per real entry of the unified blocks (1 = negative), ``np.packbits``.
      free: float32 real entries of the free blocks, in block order.
    """

    shape: tuple[int, ...]
    codes: np.ndarray
    magnitudes: np.ndarray
    signs: np.ndarray
    free: np.ndarray

    @property
    def bits(self) -> int:
        """Bits of the stored arrays (the shape is metadata and not counted)."""
        return 8 * sum(a.nbytes for a in (self.codes, self.magnitudes, self.signs, self.free))


def _pack_codes(codes: np.ndarray) -> np.ndarray:
    padded = np.zeros(-(-codes.size // 4) * 4, np.uint8)
    padded[:codes.size] = codes
    quads = padded.reshape(-1, 4)
    return (quads[:, 0] | quads[:, 1] << 2 | quads[:, 2] << 4 | quads[:, 3] << 6).astype(
        np.uint8)


def _unpack_codes(packed: np.ndarray, n: int) -> np.ndarray:
    quads = np.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], axis=1)
    return quads.reshape(-1)[:n].astype(np.int8)


def encode_kernel(kernel, codes, g: Grid, block_shape) -> StoredLayer:
    """The stored format of a kernel already projected with ``codes``."""
    blocks = np.asarray(to_blocks(jnp.asarray(kernel, jnp.float32), g, block_shape))
    valid = valid_entries(g, block_shape)
    codes = np.asarray(codes).astype(np.int8)
    unified = codes == UNIFIED
    magnitude = np.asarray(block_stats(jnp.asarray(blocks), jnp.asarray(valid))[0])
    signs = (blocks[unified] < 0)[valid[unified]]
    free = blocks[codes == FREE][valid[codes == FREE]]
    return StoredLayer(tuple(g.shape), _pack_codes(codes), magnitude[unified].astype(np.float32),
                       np.packbits(signs), free.astype(np.float32))


def decode_kernel(stored: StoredLayer, block_shape) -> np.ndarray:
    """Rebuild the float32 kernel from its stored format."""
    g = grid(stored.shape, UnifySpec(block_shape, 0.0, 0.0, pad=True))
    valid = valid_entries(g, block_shape)
    codes = _unpack_codes(stored.codes, g.n_blocks)
    blocks = np.zeros(valid.shape, np.float32)
    unified = codes == UNIFIED
    n_signs = int(valid[unified].sum())
    negative = np.unpackbits(stored.signs)[:n_signs].astype(bool)
    values = np.repeat(stored.magnitudes, valid[unified].sum(axis=1))
    sub = blocks[unified]
    sub[valid[unified]] = np.where(negative, -values, values)
    blocks[unified] = sub
    sub = blocks[codes == FREE]
    sub[valid[codes == FREE]] = stored.free
    blocks[codes == FREE] = sub
    return np.asarray(from_blocks(jnp.asarray(blocks), g, block_shape))


def encode(params, codes, spec: UnifySpec) -> dict[str, StoredLayer]:
    """``{path: StoredLayer}`` of the constrained kernels (project them first)."""
    grids = constrained(params, spec)
    lookup = dict(zip(*named_leaves(params)[:2]))
    return {p: encode_kernel(lookup[p], codes[p], g, spec.block_shape) for p, g in grids.items()}


def multiplies(codes, g: Grid, block_shape) -> int:
    """Multiplies of one output position: a free weight costs 1, a unified block one per
    real row (:math:`a_b \\sum_i s_i x_i`), a pruned block 0."""
    valid = valid_entries(g, block_shape).reshape(-1, *block_shape)
    rows = valid.any(axis=2).sum(axis=1)
    entries = valid.sum(axis=(1, 2))
    codes = np.asarray(codes)
    return int(entries[codes == FREE].sum() + rows[codes == UNIFIED].sum())


def storage_report(params, codes, spec: UnifySpec, *,
                   positions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Bits and multiplies of the unified model against dense float32.

    Args:
      params: projected params (e.g. :func:`project` with ``codes``).
      codes: ``{path: codes}`` of the constrained kernels.
      spec: the :class:`UnifySpec`.
      positions: ``{kernel path: output positions}`` for convs (default 1).

    Returns:
      ``{'layers': {path: {...}}, 'total': {...}}``; a layer has ``dense_bits``,
      ``stored_bits`` (measured from :func:`encode`), ``compression``, ``blocks``,
      ``unified``, ``pruned``, ``multiplies_dense`` and ``multiplies``. The total adds the
      unconstrained leaves at 32 bits each to both sides (``model_compression``) and gives
      ``constrained_compression`` and ``multiply_reduction``.
    """
    grids = constrained(params, spec)
    stored = encode(params, codes, spec)
    positions = positions or {}
    layers, total = {}, dict.fromkeys(('dense_bits', 'stored_bits', 'multiplies_dense',
                                       'multiplies', 'free_bits'), 0)
    for path, leaf in zip(*named_leaves(params)[:2]):
        if path not in grids:
            total['free_bits'] += 32 * int(np.size(leaf))
            continue
        g, c = grids[path], np.asarray(codes[path])
        per = int(positions.get(path, 1))
        row = {'dense_bits': 32 * int(np.size(leaf)), 'stored_bits': stored[path].bits,
               'blocks': g.n_blocks, 'unified': int((c == UNIFIED).sum()),
               'pruned': int((c == PRUNED).sum()),
               'multiplies_dense': per * int(np.size(leaf)),
               'multiplies': per * multiplies(c, g, spec.block_shape)}
        row['compression'] = row['dense_bits'] / max(row['stored_bits'], 1)
        layers[path] = row
        for key in ('dense_bits', 'stored_bits', 'multiplies_dense', 'multiplies'):
            total[key] += row[key]
    total['constrained_compression'] = total['dense_bits'] / max(total['stored_bits'], 1)
    total['model_compression'] = ((total['dense_bits'] + total['free_bits'])
                                  / max(total['stored_bits'] + total['free_bits'], 1))
    total['multiply_reduction'] = total['multiplies_dense'] / max(total['multiplies'], 1)
    return {'layers': layers, 'total': total}
