"""kl_divergence: values against optax and SciPy, zero-probability targets, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from jax.test_util import check_grads

import losses


def _case(seed, shape=(6, 4)):
    rng = np.random.default_rng(seed)
    logits = (2 * rng.standard_normal(shape)).astype(np.float32)
    raw = rng.uniform(size=shape)
    raw[0, 1] = 0.0  # a zero-probability target class
    targets = (raw / raw.sum(-1, keepdims=True)).astype(np.float32)
    return logits, targets


def test_kl_matches_optax_and_scipy():
    logits, p = _case(0)
    log_q = jax.nn.log_softmax(logits)
    # References: optax.losses.kl_divergence(log_predictions, targets), and SciPy's
    # rel_entr(p, q) = p log(p / q) (0 for p = 0) summed over classes, in float64.
    expected = optax.losses.kl_divergence(log_q, p)
    q64 = scipy.special.softmax(logits.astype(np.float64), axis=-1)
    scipy_kl = scipy.special.rel_entr(p.astype(np.float64), q64).sum(-1)
    got = jax.jit(lambda x, p: losses.kl_divergence(x, p, reduction="none"))(logits, p)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got, scipy_kl, rtol=1e-5, atol=1e-7)
    # "mean" is the batch mean of per-example KL (PyTorch's "batchmean").
    np.testing.assert_allclose(losses.kl_divergence(logits, p), scipy_kl.mean(), rtol=1e-5)


def test_kl_from_log_probabilities_and_log_targets():
    logits, p = _case(1)
    log_q = jax.nn.log_softmax(logits)
    expected = optax.losses.kl_divergence(log_q, p)
    # Log-probabilities need no normalisation: from_logits=False uses them as they are, and
    # from_logits=True (log_softmax of normalised log-probabilities) agrees.
    for from_logits in (False, True):
        got = losses.kl_divergence(log_q, p, from_logits=from_logits, reduction="none")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Reference: optax.losses.kl_divergence_with_log_targets (rows without zero targets, as
    # optax gives NaN for a -inf log target).
    log_p = np.log(p[1:])
    expected = optax.losses.kl_divergence_with_log_targets(log_q[1:], log_p)
    got = losses.kl_divergence(log_q[1:], log_p, log_targets=True, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # A -inf log target (zero probability) contributes 0, like p = 0 does.
    with np.errstate(divide="ignore"):
        log_p0 = np.log(p[:1])
    got = losses.kl_divergence(log_q[:1], log_p0, log_targets=True)
    np.testing.assert_allclose(got, losses.kl_divergence(log_q[:1], p[:1]), rtol=1e-6)


def test_kl_argument_order_is_targets_from_predictions():
    # KL is asymmetric: KL(p || q) with p = targets = (1, 0) and q = softmax(0, 0) = (1/2, 1/2)
    # is log 2 (hand-derived); the reverse KL(q || p) would be infinite.
    got = losses.kl_divergence(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(got, np.log(2.0), rtol=1e-6)


def test_zero_probability_targets_give_zero_and_finite_gradients():
    logits = jnp.array([[0.0, -jnp.inf, 1.0], [1e4, -1e4, 0.0]])
    p = jnp.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])

    def loss(x, p):
        return losses.kl_divergence(x, p, reduction="sum")

    value, (g_x, g_p) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(logits, p)
    # Hand-derived: row 0, q = softmax(0, 1) on the finite classes = (1/(1+e), e/(1+e)),
    # KL = 0.5 log(0.5 (1 + e)) + 0.5 log(0.5 (1 + e) / e); row 1: q_0 = 1 so KL = 0.
    expected = 0.5 * np.log(0.5 * (1 + np.e)) + 0.5 * np.log(0.5 * (1 + np.e) / np.e)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.all(np.isfinite(g_x)) and np.all(np.isfinite(g_p))
    # All-zero targets: every term is 0.
    value, grad = jax.value_and_grad(losses.kl_divergence)(logits, jnp.zeros_like(p))
    assert float(value) == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("from_logits", [True, False])
def test_gradients_match_finite_differences(from_logits):
    with jax.enable_x64(True):
        logits, p = _case(2, (3, 4))
        x = jnp.asarray(logits, jnp.float64)
        if not from_logits:
            x = jax.nn.log_softmax(x)
        p = jnp.asarray(p, jnp.float64)
        fn = jax.jit(lambda x, p: losses.kl_divergence(x, p, from_logits=from_logits))
        # Gradient in both arguments (targets too, for distillation with learned targets);
        # the zero-probability target sits at a kink in p, so p is nudged off it here.
        check_grads(fn, (x, p + 0.05), 1, ["rev"])
