"""Normalisation statistics, class counts and weights, oversampling, imbalance warnings."""

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from engine.data import stats
from engine.data.source import ArraySource, Subset


def _images(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 5, 3)).astype(np.uint8)
    x[..., 2] = 7  # a constant channel
    return ArraySource(x, rng.integers(0, 3, n).astype(np.int32))


def test_standard_images_per_channel_matches_numpy():
    src = _images()
    shift, scale = stats.normalization(src, "standard")
    x = src.inputs.astype(np.float64)
    # Formula: mean and population std over N, H, W; a zero std becomes 1.
    np.testing.assert_allclose(shift, x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(scale[:2], x.std(axis=(0, 1, 2))[:2], rtol=1e-6)
    assert scale[2] == 1.0 and shift[2] == 7.0
    assert shift.dtype == np.float32 and shift.shape == (3,)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("minmax", lambda x: (x.min(0), x.max(0) - x.min(0))),
        ("symmetric", lambda x: ((x.max(0) + x.min(0)) / 2, (x.max(0) - x.min(0)) / 2)),
        ("none", lambda x: (np.zeros(x.shape[1]), np.ones(x.shape[1]))),
    ],
)
def test_table_methods_match_their_formulas(method, expected):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(500, 4)) * [1, 10, 100, 1000]).astype(np.float32)
    shift, scale = stats.normalization(ArraySource(x, np.zeros(500, np.int32)), method)
    want_shift, want_scale = expected(x.astype(np.float64))
    np.testing.assert_allclose(shift, want_shift, rtol=1e-6)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
    normalised = (x - shift) / scale
    if method == "minmax":
        np.testing.assert_allclose([normalised.min(), normalised.max()], [0, 1], atol=1e-6)
    if method == "symmetric":
        np.testing.assert_allclose([normalised.min(), normalised.max()], [-1, 1], atol=1e-6)


def test_chunked_float64_statistics_are_accurate_for_large_offsets():
    # Values 1e4 + N(0, 1): the one-pass E[x^2] - E[x]^2 formula in float32 loses the variance;
    # the float64 chunked (Chan et al.) update must agree with numpy's two-pass result.
    rng = np.random.default_rng(2)
    x = (1e4 + rng.normal(size=(5000, 2))).astype(np.float32)
    _, scale = stats.normalization(ArraySource(x, np.zeros(5000, np.int32)), "standard")
    np.testing.assert_allclose(scale, x.astype(np.float64).std(axis=0), rtol=1e-6)


def test_large_splits_use_an_evenly_spaced_sample():
    x = np.arange(100, dtype=np.float32)[:, None]
    src = ArraySource(x, np.zeros(100, np.int32))
    shift, _ = stats.normalization(src, "minmax", max_examples=11)
    assert shift[0] == 0.0  # evenly spaced from the first row...
    _, scale = stats.normalization(src, "minmax", max_examples=11)
    assert scale[0] == 99.0  # ...to the last row


def test_normalization_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown normalisation 'zscore'; valid: standard"):
        stats.normalization(_images(), "zscore")


def test_target_normalization():
    t = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], np.float32)
    shift, scale = stats.target_normalization(ArraySource(np.zeros((3, 1)), t))
    np.testing.assert_allclose(shift, [3.0, 5.0])
    np.testing.assert_allclose(scale, [np.std([1, 3, 5]), 1.0])  # zero std becomes 1
    with pytest.raises(ValueError, match="regression targets"):
        stats.target_normalization(_images())


def test_class_counts_and_balanced_weights_match_sklearn():
    labels = np.repeat(np.arange(3), [50, 30, 5]).astype(np.int32)
    src = Subset(ArraySource(np.zeros((85, 1)), labels), np.arange(85))
    np.testing.assert_array_equal(stats.class_counts(src, 3), [50, 30, 5])
    weights = stats.balanced_class_weights(src, 3)
    # Reference: scikit-learn's class_weight="balanced".
    want = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(weights, want, rtol=1e-6)
    assert weights.dtype == np.float32


def test_absent_class_gets_weight_one():
    src = ArraySource(np.zeros((4, 1)), np.array([0, 0, 0, 2], np.int32))
    np.testing.assert_allclose(stats.balanced_class_weights(src, 3), [4 / 9, 1.0, 4 / 3])


def test_class_statistics_reject_regression_targets_and_bad_labels():
    with pytest.raises(ValueError, match="integer class labels"):
        stats.class_counts(ArraySource(np.zeros((2, 1)), np.zeros((2, 1), np.float32)), 2)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\)"):
        stats.class_counts(ArraySource(np.zeros((2, 1)), np.array([0, 5], np.int32)), 2)


def test_oversample_balances_counts_deterministically():
    labels = np.repeat(np.arange(3), [100, 30, 7]).astype(np.int32)
    src = ArraySource(np.arange(137.0)[:, None], labels)
    over = stats.oversample(src, seed=0)
    np.testing.assert_array_equal(np.bincount(over.targets), [100, 100, 100])
    # Every original row is kept, a minority row appears k or k+1 times (30 -> 100: 3 or 4).
    repeats = np.bincount(over.indices, minlength=137)
    assert repeats[:100].tolist() == [1] * 100
    assert set(repeats[100:130].tolist()) == {3, 4} and set(repeats[130:].tolist()) == {14, 15}
    np.testing.assert_array_equal(over.indices, stats.oversample(src, seed=0).indices)
    assert not np.array_equal(over.indices, stats.oversample(src, seed=1).indices)
    x, y = over.get(np.arange(len(over)))
    np.testing.assert_array_equal(labels[x[:, 0].astype(int)], y)


def test_imbalance_warning_threshold_is_three_times():
    assert stats.imbalance_warning(np.array([30, 10])) is None  # exactly 3x: fine
    message = stats.imbalance_warning(np.array([31, 10]), ["cat", "dog"])
    assert message.startswith("class imbalance: largest class cat has 31 examples")
    assert "smallest dog has 10 (3.1x)" in message and "\n" not in message
    assert "no examples" in stats.imbalance_warning(np.array([5, 0]))
