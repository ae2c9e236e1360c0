"""jaxnorm.losses against optax and a float64 closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import losses


def test_cross_entropies_agree_with_optax_on_ordinary_logits():
    logits = jax.random.normal(jax.random.key(0), (6, 5)) * 3
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    reference = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), reference, rtol=1e-6)
    np.testing.assert_allclose(losses.precise_cross_entropy(logits, labels), reference,
                               rtol=1e-5)
    assert losses.mean_cross_entropy(logits, labels) == jnp.mean(
        losses.cross_entropy(logits, labels))


def test_precise_cross_entropy_keeps_a_loss_that_float32_rounds_to_zero():
    # Margins of 20 and 25: the loss is log(1 + e^-20 + e^-25), about 2.06e-9.
    logits = jnp.array([[30.0, 10.0, 5.0]])
    labels = jnp.array([0])
    exact = np.log1p(np.exp(-20.0) + np.exp(-25.0))
    assert float(losses.cross_entropy(logits, labels)[0]) == 0.0
    np.testing.assert_allclose(float(losses.precise_cross_entropy(logits, labels)[0]), exact,
                               rtol=1e-5)


def _numpy_cross_entropy(logits, labels, smoothing=0.0):
    """-sum_c t_c log softmax(z)_c in float64, t = (1 - a) onehot(y) + a / C."""
    z = np.asarray(logits, np.float64)
    log_softmax = z - z.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    classes = z.shape[-1]
    targets = (1 - smoothing) * np.eye(classes)[labels] + smoothing / classes
    return -(targets * log_softmax).sum(-1)


def test_cross_entropy_is_the_log_softmax_formula_with_and_without_label_smoothing():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 4, 7)) * 4, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 7, size=(3, 4)))
    for smoothing in (0.0, 0.1, 0.5):
        ours = losses.cross_entropy(logits, labels, smoothing)
        assert ours.shape == (3, 4) and ours.dtype == jnp.float32
        expected = _numpy_cross_entropy(logits, labels, smoothing)
        np.testing.assert_allclose(ours, expected, rtol=1e-5)
        np.testing.assert_allclose(losses.mean_cross_entropy(logits, labels, smoothing),
                                   expected.mean(), rtol=1e-5)


def test_bfloat16_logits_reduce_in_float32():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(64, 10)) * 3, jnp.bfloat16)
    labels = jnp.asarray(rng.integers(0, 10, size=64))
    # the reference sees the same bfloat16 values, exactly widened
    widened = np.asarray(logits.astype(jnp.float32))
    for smoothing in (0.0, 0.2):
        ours = losses.cross_entropy(logits, labels, smoothing)
        assert ours.dtype == jnp.float32
        np.testing.assert_allclose(ours, _numpy_cross_entropy(widened, labels, smoothing),
                                   rtol=1e-5)


def test_float64_logits_stay_float64():
    with jax.enable_x64(True):
        logits = jnp.asarray([[1e-9, 0.0], [0.0, 3.0]], jnp.float64)
        labels = jnp.asarray([0, 1])
        ours = losses.cross_entropy(logits, labels)
        assert ours.dtype == jnp.float64
        # log(2) - 5e-10 to first order: lost in float32, kept in float64
        np.testing.assert_allclose(ours, _numpy_cross_entropy(logits, labels), rtol=1e-14)
