"""prune.unify: projection against brute force, selection, accounting and errors."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prune import unify, unify_storage
from prune.unify import FREE, PRUNED, UNIFIED, UnifySpec


def brute_force_block(w: np.ndarray) -> tuple[float, np.ndarray]:
    """min over every sign pattern s and a >= 0 of ||w - s a||^2 (a closed form per pattern:
    a = max(0, mean(s w))); returns the cost and the minimizer. No use of sign(w)."""
    best = (np.inf, None)
    for signs in itertools.product((-1.0, 1.0), repeat=w.size):
        s = np.array(signs)
        a = max(0.0, float(np.mean(s * w)))
        cost = float(np.sum((w - s * a) ** 2))
        if cost < best[0] - 1e-12:
            best = (cost, s * a)
    return best


def brute_force_projection(blocks: np.ndarray, n_unify: int, n_prune: int) -> float:
    """Minimum squared distance over every assignment of exactly n_prune pruned and n_unify
    unified blocks."""
    n = len(blocks)
    unify_cost = [brute_force_block(b)[0] for b in blocks]
    prune_cost = [float(np.sum(b ** 2)) for b in blocks]
    best = np.inf
    for pruned in itertools.combinations(range(n), n_prune):
        rest = [i for i in range(n) if i not in pruned]
        for unified in itertools.combinations(rest, n_unify):
            best = min(best, sum(prune_cost[i] for i in pruned)
                       + sum(unify_cost[i] for i in unified))
    return best


def test_single_block_projection_is_brute_force_argmin():
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.normal(size=4).astype(np.float32)
        kernel = jnp.asarray(w.reshape(4, 1))  # Dense (in=4, out=1): one 1x4 block
        ours = unify.project({'k': kernel}, UnifySpec((1, 4), 1.0, pattern='k'))['k']
        cost, argmin = brute_force_block(w.astype(np.float64))
        np.testing.assert_allclose(np.asarray(ours).ravel(), argmin, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.sum((np.asarray(ours).ravel() - w) ** 2), cost,
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('block_shape,ratios', [((1, 2), (0.5, 0.0)), ((1, 2), (0.0, 0.5)),
                                                ((2, 1), (0.5, 0.25)), ((1, 2), (0.25, 0.5)),
                                                ((2, 2), (0.5, 0.5))])
def test_exact_projection_matches_brute_force(block_shape, ratios):
    rng = np.random.default_rng(1)
    spec = UnifySpec(block_shape, *ratios, pattern='k')
    for trial in range(6):
        kernel = rng.normal(size=(4, 2)).astype(np.float32)  # out 2 x fan_in 4 -> matrix 2x4
        params = {'k': jnp.asarray(kernel)}
        g = unify.grid(kernel.shape, spec)
        blocks = np.asarray(unify.to_blocks(jnp.asarray(kernel), g, block_shape), np.float64)
        n_unify, n_prune = unify.block_counts(g.n_blocks, spec)
        best = brute_force_projection(blocks, n_unify, n_prune)
        exact = unify.project(params, spec, method='exact')
        assert unify.distance(params, exact, spec) == pytest.approx(best, rel=1e-5, abs=1e-8)
        greedy = unify.project(params, spec, method='greedy')
        assert unify.distance(params, greedy, spec) >= best - 1e-6
        if 0.0 in ratios:  # costs separate per block: greedy is exact too
            assert unify.distance(params, greedy, spec) == pytest.approx(best, rel=1e-5,
                                                                         abs=1e-8)
        codes = np.asarray(unify.select_blocks(params, spec, 'exact')['k'])
        assert (codes == UNIFIED).sum() == n_unify and (codes == PRUNED).sum() == n_prune


def test_greedy_is_not_always_exact_with_both_ratios():
    c_u, c_p = np.array([0.0, 1.0]), np.array([1.0, 1.05])
    assert unify.select_exact(c_u, c_p, 1, 1).tolist() == [UNIFIED, PRUNED]  # cost 1.05
    assert np.asarray(unify.select_greedy(jnp.asarray(c_u), jnp.asarray(c_p), 1, 1)
                      ).tolist() == [PRUNED, UNIFIED]  # cost 2.0


@pytest.mark.parametrize('method', unify.METHODS)
@pytest.mark.parametrize('scope', unify.SCOPES)
def test_projection_is_idempotent_bitwise(method, scope):
    rng = np.random.default_rng(2)
    params = {'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)},
              'dense': {'kernel': jnp.asarray(rng.normal(size=(12, 8)), jnp.float32),
                        'bias': jnp.ones(8)},
              'head': {'kernel': jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}}
    spec = UnifySpec((2, 4), 0.4, 0.3, scope=scope)
    once = unify.project(params, spec, method=method)
    twice = unify.project(once, spec, method=method)
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(twice)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(once['head']['kernel'], params['head']['kernel'])
    np.testing.assert_array_equal(once['dense']['bias'], params['dense']['bias'])
    jitted = jax.jit(lambda p: unify.project(p, spec))(params)
    if method == 'greedy':
        for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(jitted)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_zero_magnitudes_equal_block_pruning():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO -> matrix 4 x 18
    spec = UnifySpec((2, 3), 0.0, 0.5, pattern='k')
    out = np.asarray(unify.project({'k': jnp.asarray(kernel)}, spec)['k'])
    # reference: the matrix out x (H W I), 2x3 blocks, the half with the smallest L2 norm zeroed
    m = kernel.reshape(-1, 4).T
    norms = {(r, c): np.sum(m[r:r + 2, c:c + 3] ** 2) for r in range(0, 4, 2)
             for c in range(0, 18, 3)}
    expected = m.copy()
    for r, c in sorted(norms, key=norms.get)[:len(norms) // 2]:
        expected[r:r + 2, c:c + 3] = 0.0
    np.testing.assert_array_equal(out, expected.T.reshape(kernel.shape))
    # the same blocks unified with their magnitude at 0 give the same tensor, bit for bit
    codes = np.asarray(unify.select_blocks({'k': jnp.asarray(kernel)}, spec)['k'])
    as_unified = {'k': jnp.asarray(np.where(codes == PRUNED, UNIFIED, codes), jnp.int8)}
    zeroed = unify.project({'k': jnp.asarray(out)}, spec, codes=as_unified)['k']
    np.testing.assert_array_equal(np.asarray(zeroed), out)
    stored = unify_storage.encode({'k': zeroed}, as_unified, spec)['k']
    assert not np.any(stored.magnitudes)


def test_flax_layouts_and_padding_roundtrip():
    kernel = jnp.arange(2 * 2 * 3 * 5, dtype=jnp.float32).reshape(2, 2, 3, 5)
    m = unify.kernel_matrix(kernel)
    assert m.shape == (5, 12)
    np.testing.assert_array_equal(m[4], np.asarray(kernel)[..., 4].ravel())  # one output's fan-in
    spec = UnifySpec((2, 5), pad=True)
    g = unify.grid(kernel.shape, spec)
    assert (g.block_rows, g.block_cols) == (3, 3)
    np.testing.assert_array_equal(unify.from_blocks(unify.to_blocks(kernel, g, (2, 5)), g,
                                                    (2, 5)), kernel)
    # padded entries are not costed: a block whose real entries share |w| costs 0
    w = jnp.array([[1.0, -1.0, 1.0, -1.0, 0.5, -0.5]]).T  # Dense (6, 1): 2nd 1x4 block padded
    out = unify.project({'k': w}, UnifySpec((1, 4), 1.0, pad=True, pattern='k'))['k']
    np.testing.assert_array_equal(out, w)


def test_bits_from_stored_format_match_hand_count():
    # Dense (in=8, out=2): matrix 2x8, 1x4 blocks -> 4 blocks in row-major order
    matrix = np.array([[0.5, -0.2, 0.1, 0.3, 0.4, -0.4, 0.4, 0.4],
                       [0.0, 0.0, 0.0, 0.0, -0.7, 0.7, -0.7, 0.7]], np.float32)
    params = {'k': jnp.asarray(matrix.T), 'b': jnp.zeros(2)}
    spec = UnifySpec((1, 4), 0.5, 0.25, pattern='k')
    codes = {'k': jnp.array([FREE, UNIFIED, PRUNED, UNIFIED], jnp.int8)}
    projected = unify.project(params, spec, codes=codes)
    stored = unify_storage.encode(projected, codes, spec)['k']
    # free block: 4 floats; two magnitudes; 8 sign bits = 1 byte; 4 codes x 2 bits = 1 byte
    assert stored.bits == 4 * 32 + 2 * 32 + 8 + 8
    np.testing.assert_array_equal(unify_storage.decode_kernel(stored, (1, 4)),
                                  np.asarray(projected['k']))
    report = unify_storage.storage_report(projected, codes, spec)
    layer = report['layers']['k']
    assert layer['dense_bits'] == 16 * 32 and layer['stored_bits'] == 208
    # multiplies: 4 free weights + 1 per unified block row + 0 for the pruned block
    assert layer['multiplies'] == 6 and layer['multiplies_dense'] == 16
    assert report['total']['model_compression'] == pytest.approx((512 + 64) / (208 + 64))


def test_storage_with_padding_and_conv_positions():
    rng = np.random.default_rng(4)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 6)), jnp.float32)  # matrix 6 x 9
    spec = UnifySpec((4, 4), 1.0, 0.0, pad=True, pattern='k')  # 2 x 3 blocks, all unified
    codes = unify.select_blocks({'k': kernel}, spec)
    projected = unify.project({'k': kernel}, spec, codes=codes)
    stored = unify_storage.encode(projected, codes, spec)['k']
    # 6 magnitudes, 54 real sign bits -> 7 bytes, 6 codes -> 2 bytes
    assert stored.bits == 6 * 32 + 7 * 8 + 2 * 8
    np.testing.assert_array_equal(unify_storage.decode_kernel(stored, (4, 4)),
                                  np.asarray(projected['k']))
    report = unify_storage.storage_report(projected, codes, spec,
                                          positions={'k': 10})['layers']['k']
    # real rows per block: 4, 4, 4 (top) and 2, 2, 2 (bottom); 10 output positions
    assert report['multiplies'] == 10 * 18 and report['multiplies_dense'] == 10 * 54


@pytest.mark.parametrize('spec,shape,message', [
    (UnifySpec((1, 4)), (6, 8), 'does not divide'),
    (UnifySpec((3, 1)), (4, 8), 'does not divide'),
    (UnifySpec((1, 4), 0.8, 0.3), (8, 8), 'exceeds 1'),
    (UnifySpec((16, 1), pad=True), (4, 8), 'too small for one'),
    (UnifySpec((1, 16)), (8, 8), 'too small for one'),
    (UnifySpec((0, 4)), (8, 8), 'block_shape'),
    (UnifySpec((1, 4), -0.1), (8, 8), 'unify_ratio'),
    (UnifySpec((1, 4), scope='net'), (8, 8), 'scope'),
])
def test_bad_input_errors(spec, shape, message):
    with pytest.raises(ValueError, match=message):
        unify.project({'k': jnp.ones(shape)}, spec._replace(pattern='k'))


def test_pattern_matching_nothing_errors():
    with pytest.raises(ValueError, match='selects no kernel'):
        unify.project({'k': jnp.ones((8, 8))}, UnifySpec(pattern='nothing'))
