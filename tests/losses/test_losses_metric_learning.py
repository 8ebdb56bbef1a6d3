"""triplet_margin: values against optax (p = 2) and NumPy (p = 1, 3, swap), gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import losses


def _triplets(seed, shape=(10, 4)):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape).astype(np.float32) for _ in range(3))


def _np_triplet(a, pos, neg, margin, p, swap, eps=0.0):
    # Hand-derived from the definition (Balntas et al. 2016; PyTorch TripletMarginLoss docs):
    # max(d(a, pos) - d(a, neg) + margin, 0), d(x, y) = (sum |x - y|^p + eps)^(1/p), and with
    # swap d(a, neg) -> min(d(a, neg), d(pos, neg)). Float64.
    def d(x, y):
        return ((np.abs(x.astype(np.float64) - y) ** p).sum(-1) + eps) ** (1.0 / p)

    to_neg = np.minimum(d(a, neg), d(pos, neg)) if swap else d(a, neg)
    return np.maximum(d(a, pos) - to_neg + margin, 0.0)


def test_p2_matches_optax():
    a, pos, neg = _triplets(0)
    # Reference: optax.losses.triplet_margin_loss (correct for p = 2), with its eps = 1e-6
    # under the root, which our eps reproduces.
    expected = optax.losses.triplet_margin_loss(a, pos, neg, norm_degree=2, margin=1.0, eps=1e-6)
    got = losses.triplet_margin(a, pos, neg, margin=1.0, p=2, eps=1e-6, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1, 2, 3.0])
@pytest.mark.parametrize("swap", [False, True])
def test_matches_numpy_definition(p, swap):
    a, pos, neg = _triplets(1)
    expected = _np_triplet(a, pos, neg, 0.5, p, swap)
    fn = jax.jit(lambda a, b, c: losses.triplet_margin(a, b, c, margin=0.5, p=p, swap=swap))
    np.testing.assert_allclose(fn(a, pos, neg), expected.mean(), rtol=1e-5)


def test_p1_uses_absolute_differences():
    a = jnp.array([[0.0, 0.0]])
    pos = jnp.array([[1.0, -1.0]])  # L1 distance 2 (without |.|, the sum would be 0)
    neg = jnp.array([[0.5, 0.5]])  # L1 distance 1
    # Hand-derived: max(2 - 1 + 0.2, 0) = 1.2.
    np.testing.assert_allclose(losses.triplet_margin(a, pos, neg, margin=0.2, p=1), 1.2)


def test_swap_uses_the_harder_negative():
    a = jnp.array([[0.0, 0.0]])
    pos = jnp.array([[1.0, 0.0]])
    neg = jnp.array([[2.0, 0.0]])
    # Hand-derived: d(a, pos) = 1, d(a, neg) = 2, d(pos, neg) = 1. No swap: max(1 - 2 + 1, 0)
    # = 0; with swap the negative distance is min(2, 1) = 1: max(1 - 1 + 1, 0) = 1.
    assert float(losses.triplet_margin(a, pos, neg, margin=1.0)) == 0.0
    assert float(losses.triplet_margin(a, pos, neg, margin=1.0, swap=True)) == 1.0


@pytest.mark.parametrize("p", [1, 2, 3.0])
def test_zero_distance_has_finite_gradient(p):
    a = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])

    def loss(a, pos, neg):
        return losses.triplet_margin(a, pos, neg, p=p, margin=1.0, swap=True)

    # anchor == positive == negative: every distance is 0, loss = margin, and the gradient is
    # the subgradient 0 (not NaN from the root's infinite slope at 0).
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(a, a, a)
    assert float(value) == 1.0
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros_like(a))


@pytest.mark.parametrize(("p", "swap"), [(1, False), (2, True), (3.0, False)])
def test_gradients_match_finite_differences(p, swap):
    with jax.enable_x64(True):
        a, pos, neg = (jnp.asarray(x, jnp.float64) for x in _triplets(2, (4, 3)))
        # Margin large enough that every hinge is active (no kink at 0 to trip on).
        fn = jax.jit(lambda a, b, c: losses.triplet_margin(a, b, c, margin=10.0, p=p, swap=swap))
        check_grads(fn, (a, pos, neg), 1, ["rev"])


def test_refuses_bad_norm_and_margin():
    a = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="p must be"):
        losses.triplet_margin(a, a, a, p=0.5)
    with pytest.raises(ValueError, match="margin"):
        losses.triplet_margin(a, a, a, margin=-1.0)
