"""prune.early_bird and prune.group_importance against direct counts and brute force."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prune

RNG = np.random.default_rng(1)


def test_mask_distance_is_the_fraction_of_differing_bits():
    a = {'l1': RNG.random(7) < 0.5, 'l2': RNG.random((3, 4)) < 0.5}
    b = {'l1': RNG.random(7) < 0.5, 'l2': RNG.random((3, 4)) < 0.5}
    count = sum(int(x != y) for x, y in zip(np.concatenate([a['l1'], a['l2'].ravel()]),
                                            np.concatenate([b['l1'], b['l2'].ravel()])))
    assert prune.mask_distance(a, b) == pytest.approx(count / 19)
    assert prune.mask_distance(a, a) == 0.0
    with pytest.raises(ValueError, match='shapes'):
        prune.mask_distance({'l1': np.ones(3)}, {'l1': np.ones(4)})


def test_ticket_fires_when_the_whole_window_is_within_threshold():
    # 20 channels; each step flips the listed channels of the previous mask.
    flips = [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10], [11], [], [12], [], [], [], []]
    masks, current = [], np.ones(20, bool)
    for flip in flips:
        current = current.copy()
        current[flip] = ~current[flip]
        masks.append({'layer': current})
    # By hand (threshold 0.1 = 2 channels, window 4: newest vs the 3 older):
    # epoch 4 (masks 1..4): mask 4 vs mask 1 differs in 5,6,7,8,9,10,11 -> 7 > 2.
    # epoch 5: mask 5 vs mask 2 differs in 8,9,10,11 -> 4 > 2.
    # epoch 6: mask 6 vs mask 3: 11, 12 -> 2; vs 4: 12 -> 1; vs 5: 12 -> 1. Ticket.
    assert prune.find_ticket(masks, window=4, threshold=0.1) == 6
    assert prune.find_ticket(masks, window=4, threshold=0.0) == 9  # masks 6..9 are equal
    assert prune.find_ticket(masks[:5], window=4, threshold=0.1) is None
    np.testing.assert_allclose(prune.window_distances(masks[2:6]), [2 / 20, 1 / 20, 1 / 20])


def test_global_channel_mask_is_one_threshold_over_all_layers():
    scores = {'a': np.array([0.5, 3.0, 1.0]), 'b': np.array([2.0, 0.1, 4.0, 0.7])}
    alive = prune.global_channel_mask(scores, 0.5)  # prune floor(3.5) = 3 lowest: .1 .5 .7
    np.testing.assert_array_equal(alive['a'], [False, True, True])
    np.testing.assert_array_equal(alive['b'], [True, False, True, False])


def _tiny_model():
    """conv(3x3, 1->4, bias) -> BN-like affine -> relu -> mean pool -> dense(4->3)."""
    params = {'conv': {'kernel': RNG.normal(size=(3, 3, 1, 4)).astype(np.float32),
                       'bias': RNG.normal(size=4).astype(np.float32)},
              'norm': {'scale': RNG.normal(size=4).astype(np.float32),
                       'bias': RNG.normal(size=4).astype(np.float32)},
              'head': {'kernel': RNG.normal(size=(4, 3)).astype(np.float32)}}
    group = prune.ChannelGroup(
        'conv', 4, prune.Slot('conv/kernel', -1),
        (prune.Slot('conv/kernel', -1), prune.Slot('conv/bias', 0),
         prune.Slot('norm/scale', 0), prune.Slot('norm/bias', 0),
         prune.Slot('head/kernel', -2)))

    def loss(p, x, y):
        h = jax.lax.conv_general_dilated(x, p['conv']['kernel'], (1, 1), 'SAME',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        h = jax.nn.relu((h + p['conv']['bias']) * p['norm']['scale'] + p['norm']['bias'])
        logits = h.mean((1, 2)) @ p['head']['kernel']
        return -jax.nn.log_softmax(logits)[..., y].squeeze()

    return params, group, loss


@pytest.mark.parametrize('scope', ['filter', 'group'])
def test_fisher_scores_equal_brute_force_from_per_example_gradients(scope):
    params, group, loss = _tiny_model()
    x = RNG.normal(size=(16, 1, 5, 5, 1)).astype(np.float32)
    y = RNG.integers(0, 3, size=(16, 1))
    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    grads = jax.tree.map(lambda g: np.asarray(g, np.float64).mean(0), per_example)
    theta = jax.tree.map(lambda t: np.asarray(t, np.float64), params)
    expected = []
    for k in range(4):
        total = np.sum(theta['conv']['kernel'][..., k] * grads['conv']['kernel'][..., k])
        total += theta['conv']['bias'][k] * grads['conv']['bias'][k]
        if scope == 'group':
            total += theta['norm']['scale'][k] * grads['norm']['scale'][k]
            total += theta['norm']['bias'][k] * grads['norm']['bias'][k]
            total += np.sum(theta['head']['kernel'][k] * grads['head']['kernel'][k])
        expected.append(total ** 2)
    scores = prune.fisher_scores(params, jax.tree.map(jnp.asarray, grads), [group], scope=scope)
    np.testing.assert_allclose(scores['conv'], expected, rtol=1e-4)
    members = np.array([[True, False, True, False], [False, True, True, True]])
    np.testing.assert_allclose(prune.group_estimate(scores['conv'], members),
                               [expected[0] + expected[2], sum(expected[1:])], rtol=1e-4)


def test_bn_scale_scores_are_abs_gamma():
    params, group, _ = _tiny_model()
    scores = prune.bn_scale_scores(params, [group])
    np.testing.assert_array_equal(scores['conv'], np.abs(params['norm']['scale']))
    bare = group._replace(params=group.params[:2])
    with pytest.raises(ValueError, match='normalizer scale'):
        prune.bn_scale_scores(params, [bare])


def test_random_groups_have_the_requested_size():
    members = prune.random_groups(16, 0.25, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(members.sum(1), 4)
    assert len({tuple(m) for m in members}) > 1
