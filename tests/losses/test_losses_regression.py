"""Regression losses: values against optax / NumPy formulas, edge cases and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import losses


def _pair(seed, shape=(16, 3), scale=3.0):
    rng = np.random.default_rng(seed)
    return (
        (scale * rng.standard_normal(shape)).astype(np.float32),
        (scale * rng.standard_normal(shape)).astype(np.float32),
    )


def _np_huber(e, delta):
    # Huber (1964) / Wikipedia "Huber loss": 0.5 e^2 if |e| <= delta else delta (|e| - delta/2).
    a = np.abs(e)
    return np.where(a <= delta, 0.5 * e**2, delta * (a - 0.5 * delta))


def _np_smooth_l1(e, beta):
    # torch.nn.SmoothL1Loss documentation: 0.5 e^2 / beta if |e| < beta else |e| - 0.5 beta.
    a = np.abs(e)
    if beta == 0:
        return a
    return np.where(a < beta, 0.5 * e**2 / beta, a - 0.5 * beta)


@pytest.mark.parametrize("shape", [(16,), (16, 3), (4, 2, 5)])
def test_mse_matches_optax_squared_error(shape):
    p, t = _pair(0, shape)
    # Reference: optax.losses.squared_error (no 0.5 factor), averaged per example over the
    # non-batch axes and then over the batch.
    elementwise = np.asarray(optax.losses.squared_error(p, t))
    per_example = elementwise.reshape(shape[0], -1).mean(axis=1)
    np.testing.assert_allclose(losses.mse(p, t, reduction="none"), per_example, rtol=1e-6)
    np.testing.assert_allclose(losses.mse(p, t), per_example.mean(), rtol=1e-6)
    # mse is twice optax.l2_loss (which carries the 0.5 factor).
    l2 = np.asarray(optax.l2_loss(p, t)).mean()
    np.testing.assert_allclose(losses.mse(p, t), 2 * l2, rtol=1e-6)


def test_mae_matches_numpy():
    p, t = _pair(1)
    # Reference: NumPy mean absolute error (optax has no MAE).
    expected = np.abs(p.astype(np.float64) - t).mean(axis=1)
    np.testing.assert_allclose(losses.mae(p, t, reduction="none"), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.mae(p, t, reduction="sum"), expected.sum(), rtol=1e-6)


@pytest.mark.parametrize("delta", [0.1, 1.0, 2.5])
def test_huber_matches_optax(delta):
    p, t = _pair(2)
    # Reference: optax.losses.huber_loss, elementwise, meaned over the feature axis.
    expected = np.asarray(optax.losses.huber_loss(p, t, delta=delta)).mean(axis=1)
    got = jax.jit(lambda p, t: losses.huber(p, t, delta=delta, reduction="none"))(p, t)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, _np_huber(p - t, delta).mean(axis=1), rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_smooth_l1_matches_numpy_and_huber_ratio(beta):
    p, t = _pair(3)
    # Reference: the torch.nn.SmoothL1Loss formula in NumPy (optax has no smooth L1).
    expected = _np_smooth_l1(p.astype(np.float64) - t, beta).mean(axis=1)
    got = losses.smooth_l1(p, t, beta=beta, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if beta > 0:
        # Identity smooth_l1(beta) = huber(delta=beta) / beta (reference notes).
        huber = losses.huber(p, t, delta=beta, reduction="none")
        np.testing.assert_allclose(got, huber / beta, rtol=1e-5)
    else:
        # beta = 0 is exactly L1: same bits as mae.
        np.testing.assert_array_equal(got, losses.mae(p, t, reduction="none"))


def test_smooth_l1_beta_zero_traced_is_l1_without_nan():
    p, t = _pair(4)

    def loss(beta):
        return losses.smooth_l1(p, t, beta=beta)

    value, grad = jax.jit(jax.value_and_grad(loss))(0.0)
    # Reference: mean |e| (L1), as smooth_l1's beta -> 0 limit.
    np.testing.assert_allclose(value, np.abs(p.astype(np.float64) - t).mean(), rtol=1e-6)
    assert np.isfinite(grad)


def test_log_cosh_matches_optax_and_numpy():
    p, t = _pair(5)
    # References: optax.losses.log_cosh, and log(cosh(e)) in float64 NumPy (no overflow for
    # these small residuals).
    expected = np.asarray(optax.losses.log_cosh(p, t)).mean(axis=1)
    np.testing.assert_allclose(losses.log_cosh(p, t, reduction="none"), expected, rtol=1e-5)
    naive = np.log(np.cosh(p.astype(np.float64) - t)).mean(axis=1)
    np.testing.assert_allclose(losses.log_cosh(p, t, reduction="none"), naive, rtol=1e-5)


def test_log_cosh_does_not_overflow():
    e = jnp.array([1000.0, -1000.0, 89.5, -200.0])
    value = losses.log_cosh(e, jnp.zeros(4), reduction="none")
    # For |e| >> 1, log cosh e = |e| - log 2 + log1p(exp(-2|e|)) ~= |e| - log 2 (exact identity).
    np.testing.assert_allclose(value, np.abs(np.asarray(e)) - np.log(2.0), rtol=1e-6)
    assert abs(float(value[0]) - 999.3069) < 1e-3  # the number
    grad = jax.grad(lambda e: losses.log_cosh(e, jnp.zeros(4), reduction="sum"))(e)
    # d/de log cosh e = tanh e = +-1 here.
    np.testing.assert_allclose(grad, np.sign(np.asarray(e)), rtol=1e-6)


REGRESSION = ["mse", "mae", "huber", "smooth_l1", "log_cosh"]


@pytest.mark.parametrize("name", REGRESSION)
def test_zero_residual_gives_zero_value_and_gradient(name):
    t = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    fn = losses.get(name)
    value, grad = jax.value_and_grad(fn)(t, t)
    # At e = 0 every loss is 0, and the (sub)gradient is 0: the minimum of a convex loss.
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((2, 2)))


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_residual_exactly_at_delta(delta):
    e = jnp.array([delta, -delta], jnp.float32)
    value, grad = jax.value_and_grad(
        lambda e: losses.huber(e, jnp.zeros(2), delta=delta, reduction="sum")
    )(e)
    # At |e| = delta both branches give 0.5 delta^2 and slope delta * sign(e) (formula above).
    np.testing.assert_allclose(value, 2 * 0.5 * delta**2, rtol=1e-6)
    np.testing.assert_allclose(grad, [delta, -delta], rtol=1e-6)
    sl1 = jax.grad(lambda e: losses.smooth_l1(e, jnp.zeros(2), beta=delta, reduction="sum"))(e)
    # Smooth L1's slope at |e| = beta is 1 (huber's slope / beta).
    np.testing.assert_allclose(sl1, [1.0, -1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs", "order"),
    [
        ("mse", {}, 2),
        ("mae", {}, 1),
        ("huber", {"delta": 1.5}, 1),
        ("smooth_l1", {"beta": 0.7}, 1),
        ("smooth_l1", {"beta": 0.0}, 1),
        ("log_cosh", {}, 2),
    ],
)
def test_gradients_match_finite_differences(name, kwargs, order):
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        t = rng.standard_normal((5, 3))
        # Residual magnitudes kept off the kinks at 0, 0.7 (beta) and 1.5 (delta), where no
        # finite difference applies.
        bins = np.array([[0.1, 0.6], [0.8, 1.4], [1.6, 3.0]])
        low, high = bins[rng.integers(0, 3, size=t.shape)].transpose(2, 0, 1)
        p = t + rng.choice([-1.0, 1.0], size=t.shape) * rng.uniform(low, high)
        fn = losses.get(name)
        check_grads(jax.jit(lambda p: fn(p, t, **kwargs)), (jnp.asarray(p),), order, ["rev"])


@pytest.mark.parametrize(
    ("name", "kwargs"), [("huber", {"delta": 0.0}), ("smooth_l1", {"beta": -1})]
)
def test_bad_threshold_is_refused(name, kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=key):
        losses.get(name)(jnp.zeros(2), jnp.zeros(2), **kwargs)
