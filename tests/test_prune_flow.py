"""prune.flow's closed forms against finite differences along an integrated gradient flow."""
import jax
import jax.numpy as jnp
import numpy as np

import prune
from jaxnorm.models import VGG

STEP = 1e-4


def rk4_flow(loss, params, t):
    """theta(t) under d theta / dt = -grad L, one classical Runge-Kutta step of size t."""
    grad = jax.grad(loss)

    def move(p, k, c):
        return jax.tree.map(lambda a, b: a - c * b, p, k)

    k1 = grad(params)
    k2 = grad(move(params, k1, t / 2))
    k3 = grad(move(params, k2, t / 2))
    k4 = grad(move(params, k3, t))
    return jax.tree.map(lambda p, a, b, c, d: p - t / 6 * (a + 2 * b + 2 * c + d),
                        params, k1, k2, k3, k4)


def sq_norm(tree):
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


def test_flow_identities_match_finite_differences(seed=0):
    """dL/dt, dN/dt, d2N/dt2 and d|g|^2/dt (total and one layer) from theta, g, Hg agree
    with central differences of the integrated flow at t = +-STEP, in float64.

    RK4 is O(STEP^5) per step and the central differences O(STEP^2), so the expected
    relative error is ~1e-8 (rounding adds ~1e-16 / STEP^2 to the second differences); the
    check is 1e-3. A small step also keeps ReLU pre-activations from crossing 0 between the
    sample points, where the loss is not smooth. No normalizer: the float32 statistics of
    the BN layers would cap the precision, and the flow identities do not need one.
    """
    with jax.enable_x64(True):
        model = VGG(num_classes=3, layers=(4, (4, 2), 4), norm='none')
        rng = np.random.default_rng(seed)
        x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float64)
        y = jnp.asarray(rng.integers(0, 3, 16))
        params = jax.tree.map(lambda p: p.astype(jnp.float64),
                              model.init(jax.random.key(seed), x)['params'])
        loss_of = prune.classifier_loss(model.apply, {}, train=False)
        loss = lambda p: loss_of(p, {'image': x, 'label': y})  # noqa: E731
        layer = 'layer2/conv/kernel'

        def observables(p):
            grads = jax.grad(loss)(p)
            layer_params = dict(zip(*prune.named_leaves(p)[:2]))[layer]
            return jnp.stack([loss(p), sq_norm(p), sq_norm(grads),
                              jnp.sum(jnp.square(layer_params))])

        at = jax.jit(lambda t: observables(rk4_flow(loss, params, t)))
        plus, zero, minus = at(STEP), observables(params), at(-STEP)
        first = (plus - minus) / (2 * STEP)
        second = (plus - 2 * zero + minus) / STEP ** 2
        flow = jax.jit(prune.flow_derivatives, static_argnums=0)(loss, params)
        total, in_layer = flow['total'], flow['per_layer'][layer]
        pairs = {'dL/dt': (first[0], total['loss_rate']),
                 'dN/dt': (first[1], total['norm_rate']),
                 'd2N/dt2': (second[1], total['norm_acceleration']),
                 'd|g|^2/dt': (first[2], total['grad_norm_rate']),
                 'dN_layer/dt': (first[3], in_layer['norm_rate']),
                 'd2N_layer/dt2': (second[3], in_layer['norm_acceleration'])}
        for name, (numeric, closed_form) in pairs.items():
            assert closed_form.dtype == jnp.float64
            np.testing.assert_allclose(float(numeric), float(closed_form), rtol=1e-3,
                                       err_msg=name)
