"""The task adapter: which loss on which outputs, and metric sums that add up exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import mean_absolute_error, r2_score

from engine.config import Config, ConfigError
from engine.data.source import DatasetInfo
from engine.programs import tasks
from engine.workflows.build import loss_task

DIGITS = DatasetInfo("digits", "classification", (8, 8, 1), num_classes=10)
BINARY = DatasetInfo("breast_cancer", "classification", (30,), num_classes=2)
DIABETES = DatasetInfo("diabetes", "regression", (10,), target_dim=1)
NO_NORM = {}


def _batch_loss(task, outputs, targets, mask, norm=NO_NORM):
    values, weights = jax.jit(task.loss)(outputs, targets, mask, norm)
    return float(jnp.sum(values) / jnp.sum(weights))


def test_cross_entropy_matches_optax_and_ignores_masked_rows():
    task = loss_task(Config(loss="cross_entropy"), DIGITS)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6).astype(np.int32)
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    # Reference: optax's softmax cross-entropy on the four kept rows only.
    expected = optax.softmax_cross_entropy_with_integer_labels(logits[:4], labels[:4]).mean()
    assert _batch_loss(task, logits, labels, mask) == pytest.approx(float(expected), rel=1e-6)


def test_class_weighted_mean_divides_by_the_targets_weights():
    weights = np.linspace(0.5, 2.0, 10).astype(np.float32)
    task = loss_task(Config(loss="cross_entropy"), DIGITS, class_weights=weights)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    # Formula (as PyTorch's weighted CrossEntropyLoss): sum w_y * ce / sum w_y.
    expected = np.sum(weights[labels] * ce) / np.sum(weights[labels])
    mask = np.ones(8, bool)
    assert _batch_loss(task, logits, labels, mask) == pytest.approx(float(expected), rel=1e-5)


def test_binary_losses_use_one_logit_and_sigmoid_accuracy():
    task = loss_task(Config(loss="binary_cross_entropy"), BINARY)
    assert task.num_outputs == 1
    logits = np.array([[2.0], [-1.0], [0.5], [-3.0]], np.float32)
    labels = np.array([1, 1, 0, 0], np.int32)
    expected = optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(np.float32)).mean()
    mask = np.ones(4, bool)
    assert _batch_loss(task, logits, labels, mask) == pytest.approx(float(expected), rel=1e-6)
    sums = task.metrics(logits, labels, mask, NO_NORM)
    assert float(sums["correct"]) == 2  # logit > 0 predicts class 1: rows 0 and 3 are right


def test_regression_loss_on_classes_compares_probabilities_with_one_hot():
    task = loss_task(Config(loss="mse"), DIGITS)
    assert task.num_outputs == 10
    logits = np.random.default_rng(2).normal(size=(5, 10)).astype(np.float32)
    labels = np.arange(5, dtype=np.int32)
    probs = jax.nn.softmax(logits)
    expected = np.mean((np.asarray(probs) - np.eye(10)[labels]) ** 2)
    mask = np.ones(5, bool)
    assert _batch_loss(task, logits, labels, mask) == pytest.approx(float(expected), rel=1e-5)


def test_regression_metrics_in_original_units_match_sklearn():
    task = loss_task(Config(loss="huber"), DIABETES)
    rng = np.random.default_rng(3)
    y = rng.normal(150, 70, size=(40, 1)).astype(np.float32)
    pred = y + rng.normal(0, 30, size=(40, 1)).astype(np.float32)
    norm = {"target_shift": np.float32([150.0]), "target_scale": np.float32([70.0])}
    outputs = (pred - 150.0) / 70.0  # the model predicts standardised targets
    mask = np.ones(40, bool)
    # Split into two padded batches: sums must add up to the whole-set metrics.
    first = task.metrics(outputs[:24], y[:24], mask[:24], norm)
    padded_out = np.concatenate([outputs[24:], np.zeros((8, 1), np.float32)])
    padded_y = np.concatenate([y[24:], np.full((8, 1), 1e6, np.float32)])
    padded_mask = np.concatenate([mask[24:], np.zeros(8, bool)])
    second = task.metrics(padded_out, padded_y, padded_mask, norm)
    summary = tasks.summarize(
        jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), first, second)
    )
    assert summary["count"] == 40
    assert summary["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-4)
    assert summary["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - pred) ** 2))), rel=1e-4)
    assert summary["r2"] == pytest.approx(r2_score(y, pred), rel=1e-4)


@pytest.mark.parametrize(
    ("loss", "info", "fragment"),
    [
        ("cross_entropy", DIABETES, "regression dataset"),
        ("focal", DIABETES, "regression dataset"),
        ("triplet_margin", DIABETES, "compares triplets; train it with a program that forms"),
    ],
)
def test_meaningless_pairs_are_refused(loss, info, fragment):
    with pytest.raises(ConfigError, match=fragment):
        loss_task(Config(loss=loss), info)


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy",
        "kl_divergence",
        "focal",
        "binary_cross_entropy",
        "mse",
        "mae",
        "huber",
        "smooth_l1",
        "log_cosh",
    ],
)
def test_every_classification_pair_gives_a_finite_loss_and_gradient(loss):
    task = loss_task(Config(loss=loss), DIGITS)
    logits = np.random.default_rng(4).normal(size=(4, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3], np.int32)
    mask = np.array([1, 1, 1, 0], bool)

    def f(out):
        values, weights = task.loss(out, labels, mask, NO_NORM)
        return jnp.sum(values) / jnp.sum(weights)

    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[3] == 0)  # the masked row gets no gradient
