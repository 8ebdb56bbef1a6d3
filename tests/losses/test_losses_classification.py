"""Classification losses: values against optax / NumPy formulas, edge cases and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import losses
from losses import _targets

C = 5


def _logits(seed, shape=(12, C), scale=2.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _labels(seed, n=12, c=C):
    return np.random.default_rng(seed).integers(0, c, size=n).astype(np.int32)


def _soft(seed, shape=(12, C)):
    raw = np.random.default_rng(seed).uniform(size=shape)
    return (raw / raw.sum(-1, keepdims=True)).astype(np.float32)


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)


# ---------------------------------------------------------------- cross-entropy


def test_cross_entropy_integer_labels_matches_optax():
    x, y = _logits(0), _labels(0)
    # Reference: optax.losses.softmax_cross_entropy_with_integer_labels.
    expected = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
    got = jax.jit(lambda x, y: losses.cross_entropy(x, y, reduction="none"))(x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(losses.cross_entropy(x, y), np.mean(expected), rtol=1e-6)


def test_cross_entropy_soft_targets_matches_optax():
    x, t = _logits(1), _soft(1)
    # Reference: optax.losses.softmax_cross_entropy.
    expected = optax.losses.softmax_cross_entropy(x, t)
    np.testing.assert_allclose(losses.cross_entropy(x, t, reduction="none"), expected, rtol=1e-6)


def test_cross_entropy_label_smoothing_matches_optax_smooth_labels():
    x, y = _logits(2), _labels(2)
    # Reference: optax.smooth_labels ((1 - eps) one-hot + eps / C) then softmax_cross_entropy.
    smoothed = optax.smooth_labels(jax.nn.one_hot(y, C), 0.1)
    expected = optax.losses.softmax_cross_entropy(x, smoothed)
    got = losses.cross_entropy(x, y, label_smoothing=0.1, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_weighted_cross_entropy_divides_by_summed_target_weights():
    x, y = _logits(3), _labels(3)
    w = np.array([1.0, 2.0, 0.5, 3.0, 0.25], np.float32)
    # Reference: torch.nn.CrossEntropyLoss(weight=w) documentation, written in NumPy:
    # l_i = -w[y_i] log p_i[y_i]; mean = sum_i l_i / sum_i w[y_i].
    nll = -_np_log_softmax(x)[np.arange(12), y]
    per_example = w[y] * nll
    got = losses.cross_entropy(x, y, class_weights=w, reduction="none")
    np.testing.assert_allclose(got, per_example, rtol=1e-6)
    mean = losses.cross_entropy(x, y, class_weights=w)
    np.testing.assert_allclose(mean, per_example.sum() / w[y].sum(), rtol=1e-6)
    # One-hot targets and integer labels agree (also with weights).
    onehot = np.eye(C, dtype=np.float32)[y]
    np.testing.assert_allclose(losses.cross_entropy(x, onehot, class_weights=w), mean, rtol=1e-6)


def test_weighted_cross_entropy_with_label_smoothing_matches_pytorch_formula():
    x, y, eps = _logits(4), _labels(4), 0.2
    w = np.array([1.0, 2.0, 0.5, 3.0, 0.25], np.float32)
    # Reference: torch.nn.functional.cross_entropy with weight and label_smoothing (its
    # source): (1 - eps) * sum_i w[y_i] nll_i / sum_i w[y_i]
    #        + eps / C * sum_i sum_c w_c (-log p_ic) / sum_i w[y_i].
    logp = _np_log_softmax(x)
    nll = -logp[np.arange(12), y]
    smooth = -(logp * w).sum(-1)
    expected = ((1 - eps) * (w[y] * nll).sum() + eps / C * smooth.sum()) / w[y].sum()
    got = losses.cross_entropy(x, y, label_smoothing=eps, class_weights=w)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cross_entropy_extreme_and_infinite_logits():
    x = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [-jnp.inf, 0.0, 1.0]])
    y = jnp.array([0, 0, 2])
    value, grad = jax.value_and_grad(lambda x: losses.cross_entropy(x, y, reduction="sum"))(x)
    # Hand-derived: row 0 log-softmax of the target = 0; row 1 = -2e4; row 2 (the -inf class
    # has target probability 0) = 1 - log(e^0 + e^1).
    expected = 0.0 + 2e4 + (np.log(1 + np.e) - 1.0)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.all(np.isfinite(grad))
    # Soft targets that are 0 where the logit is -inf: 0 * log 0 = 0, no NaN.
    t = jnp.array([[0.0, 0.5, 0.5]])
    value, grad = jax.value_and_grad(losses.cross_entropy)(x[2:], t)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_cross_entropy_all_zero_targets_give_zero():
    x = _logits(5)
    value, grad = jax.value_and_grad(losses.cross_entropy)(x, np.zeros_like(x))
    # sum_c 0 * log p_c = 0 (formula).
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(x))


def test_cross_entropy_out_of_range_label_is_nan():
    # Documented: an invalid integer label gives NaN for that example, never a silent 0.
    got = losses.cross_entropy(_logits(6, (3, C)), jnp.array([0, C, -1]), reduction="none")
    assert np.isfinite(got[0]) and np.isnan(got[1]) and np.isnan(got[2])


def test_cross_entropy_spatial_axes_are_meaned():
    x = _logits(7, (2, 3, 4, C))
    y = np.random.default_rng(7).integers(0, C, size=(2, 3, 4)).astype(np.int32)
    # Reference: optax per position, meaned over the middle (pixel) axes.
    expected = np.asarray(optax.losses.softmax_cross_entropy_with_integer_labels(x, y))
    got = losses.cross_entropy(x, y, reduction="none")
    np.testing.assert_allclose(got, expected.reshape(2, -1).mean(1), rtol=1e-6)


# ---------------------------------------------------------------- binary cross-entropy


@pytest.mark.parametrize("shape", [(12,), (12, C)])
def test_binary_cross_entropy_matches_optax(shape):
    x = _logits(8, shape)
    t = (np.random.default_rng(8).uniform(size=shape) > 0.5).astype(np.float32)
    # Reference: optax.losses.sigmoid_binary_cross_entropy, meaned over the classes.
    elementwise = np.asarray(optax.losses.sigmoid_binary_cross_entropy(x, t))
    expected = elementwise.reshape(shape[0], -1).mean(1)
    got = jax.jit(lambda x, t: losses.binary_cross_entropy(x, t, reduction="none"))(x, t)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # "mean" = PyTorch BCEWithLogitsLoss's mean over all N*C elements.
    np.testing.assert_allclose(losses.binary_cross_entropy(x, t), elementwise.mean(), rtol=1e-6)


def test_binary_cross_entropy_pos_weight_matches_numpy():
    x = _logits(9)
    t = np.random.default_rng(9).uniform(size=(12, C)).astype(np.float32)
    pw = np.array([1.0, 2.0, 3.0, 0.5, 4.0], np.float32)
    # Reference: torch.nn.BCEWithLogitsLoss documentation in NumPy:
    # l = -[pw t log s(x) + (1 - t) log(1 - s(x))].
    expected = -(pw * t * _np_log_sigmoid(x) + (1 - t) * _np_log_sigmoid(-x)).mean(1)
    got = losses.binary_cross_entropy(x, t, pos_weight=pw, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_binary_cross_entropy_extreme_logits():
    x = jnp.array([1e4, 1e4, -1e4, -1e4, jnp.inf, -jnp.inf])
    t = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    value, grad = jax.value_and_grad(lambda x: losses.binary_cross_entropy(x, t, reduction="sum"))(
        x
    )
    # Hand-derived: -log s(1e4) = 0, -log(1 - s(1e4)) = 1e4, and symmetric; the infinite
    # logits predict their targets with certainty (0).
    np.testing.assert_allclose(value, 2e4, rtol=1e-6)
    # d/dx = s(x) - t: 0, 1, -1, 0, 0, 0.
    np.testing.assert_allclose(grad, [0.0, 1.0, -1.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_binary_cross_entropy_all_zero_targets():
    x = _logits(10)
    # Reference: optax with all-zero labels (only the negative term remains).
    expected = np.asarray(optax.losses.sigmoid_binary_cross_entropy(x, np.zeros_like(x))).mean()
    np.testing.assert_allclose(
        losses.binary_cross_entropy(x, np.zeros_like(x)), expected, rtol=1e-6
    )


# ---------------------------------------------------------------- focal


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_matches_optax(alpha, gamma):
    x = _logits(11)
    t = np.random.default_rng(11).uniform(size=(12, C)).round(1).astype(np.float32)
    # Reference: optax.losses.sigmoid_focal_loss (elementwise), meaned over the classes.
    expected = np.asarray(optax.losses.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma))
    got = losses.focal(x, t, alpha=alpha, gamma=gamma, reduction="none")
    np.testing.assert_allclose(got, expected.mean(1), rtol=1e-5, atol=1e-7)


def test_focal_gamma_zero_equals_binary_cross_entropy():
    x, t = _logits(12), (_soft(12) > 0.2).astype(np.float32)
    # FL with gamma = 0 and alpha = None is BCE (Lin et al. 2017, eq. 1 vs 5).
    np.testing.assert_allclose(
        losses.focal(x, t, gamma=0.0, reduction="none"),
        losses.binary_cross_entropy(x, t, reduction="none"),
        rtol=1e-6,
    )


def _np_softmax_focal(x, t, alpha, gamma):
    # Softmax focal loss: -sum_c alpha_c t_c (1 - p_c)^gamma log p_c, float64 NumPy.
    logp = _np_log_softmax(x)
    a = 1.0 if alpha is None else np.asarray(alpha)
    return -(a * t * (1 - np.exp(logp)) ** gamma * logp).sum(-1)


@pytest.mark.parametrize("alpha", [None, 0.5, [1.0, 2.0, 0.5, 1.0, 3.0]])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_matches_numpy(alpha, gamma):
    x, y = _logits(13), _labels(13)
    expected = _np_softmax_focal(x, np.eye(C)[y], alpha, gamma)
    got = losses.focal(x, y, alpha=alpha, gamma=gamma, multiclass=True, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    t = _soft(14)
    expected = _np_softmax_focal(x, t, alpha, gamma)
    got = losses.focal(x, t, alpha=alpha, gamma=gamma, multiclass=True, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_softmax_focal_gamma_zero_equals_cross_entropy():
    x, y = _logits(15), _labels(15)
    np.testing.assert_allclose(
        losses.focal(x, y, gamma=0.0, multiclass=True),
        losses.cross_entropy(x, y),
        rtol=1e-6,
    )


@pytest.mark.parametrize("multiclass", [False, True])
def test_focal_extreme_logits_have_finite_gradients(multiclass):
    if multiclass:
        x = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [-jnp.inf, 0.0, 1.0]])
        t = jnp.array([0, 0, 2])
    else:
        x = jnp.array([1e4, 1e4, -1e4, -1e4, 0.0, jnp.inf, -jnp.inf])
        t = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])

    # gamma is traced (one compile for all values); gamma < 1 is where the naive
    # (1 - p_t)^gamma has an infinite derivative, gamma = 0 where 0 * log 0 appears.
    @jax.jit
    def value_and_grad(x, gamma):
        return jax.value_and_grad(
            lambda x: losses.focal(x, t, gamma=gamma, multiclass=multiclass, reduction="sum")
        )(x)

    for gamma in (0.0, 0.3, 2.0):
        value, grad = value_and_grad(x, gamma)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), (gamma, value, grad)


def test_log_one_minus_softmax_is_exact_where_probability_rounds_to_one():
    # softmax((30, 0, -5)) rounds p_0 to 1 in float32, so log1p(-p_0) would be -inf; the
    # helper behind the softmax focal factor must still give log(1 - p_c) exactly.
    # Reference, float64 NumPy: log1p(-p_c) where p_c <= 1/2 (accurate there), and
    # log(1 - p_c) = logsumexp(x without c) - logsumexp(x) for the largest class (whose
    # other classes' mass is far from 1, so the difference is accurate too).
    x = np.array([[30.0, 0.0, -5.0], [1.0, 1.0, -2.0]])
    p = np.exp(_np_log_softmax(x))
    expected = np.log1p(-p)
    for row, top in enumerate(x.argmax(-1)):
        rest = np.logaddexp.reduce(np.delete(x[row], top))
        expected[row, top] = rest - np.logaddexp.reduce(x[row])
    got = jax.jit(_targets.log_one_minus_softmax)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_focal_refuses_bad_hyperparameters():
    x, t = jnp.zeros((2, 3)), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="gamma"):
        losses.focal(x, t, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        losses.focal(x, t, alpha=1.5)
    with pytest.raises(ValueError, match="multiclass=True"):
        losses.focal(x, t, alpha=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="2 classes"):
        losses.focal(jnp.zeros((2, 1)), jnp.array([0, 0]), multiclass=True)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("name", "targets", "kwargs"),
    [
        # Integer labels share the soft-target code path after one_hot: one case covers both.
        ("cross_entropy", "soft", {"label_smoothing": 0.1, "class_weights": [1, 2, 3, 1, 0.5]}),
        ("binary_cross_entropy", "binary", {"pos_weight": 2.0}),
        ("focal", "binary", {"alpha": 0.25, "gamma": 0.5}),
        ("focal", "labels", {"gamma": 0.5, "multiclass": True}),
        ("focal", "soft", {"gamma": 2.0, "multiclass": True, "alpha": 0.3}),
    ],
)
def test_gradients_match_finite_differences(name, targets, kwargs):
    with jax.enable_x64(True):
        x = jnp.asarray(_logits(16, (4, C)).astype(np.float64))
        t = {
            "labels": jnp.asarray(_labels(16, 4)),
            "soft": jnp.asarray(_soft(16, (4, C)).astype(np.float64)),
            "binary": jnp.asarray((_soft(17, (4, C)) > 0.2).astype(np.float64)),
        }[targets]
        fn = losses.get(name)
        # Jitted, as training uses them; first order (second order triples the time).
        check_grads(jax.jit(lambda x: fn(x, t, **kwargs)), (x,), 1, ["rev"])
