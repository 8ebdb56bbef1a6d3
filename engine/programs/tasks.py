"""The task adapter: turns (a registered loss, the dataset) into per-example losses and metric sums.

A loss declares at registration what it compares (`losses.LossSpec`: its kind, the keyword
arguments the engine sets, whether two classes take one logit); this module knows the kinds,
never a loss by name. Every (loss, dataset) pair either gets a meaningful definition here or
is refused before training with a one-line reason:

* `labels` and `one_hot` losses work on logits (`one_hot` ones against one-hot targets,
  smoothed when the loss says so). A `binary` loss takes one logit on a two-class dataset.
* `values` losses compare outputs with the targets, which are standardised with training
  statistics (metrics are reported in the original units). On a classification dataset they
  compare softmax probabilities with one-hot targets, so `--loss=huber` on digits trains a
  classifier and reports accuracy.
* `triplets` losses need a program that forms the triplets (metric learning claims them).

Metrics are sums (and counts) over the unmasked examples of a batch, so padded, sharded and
multi-host batches add up exactly; `summarize` turns the accumulated sums into means on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import losses
from engine.config import ConfigError
from engine.data.source import CLASSIFICATION, REGRESSION, DatasetInfo

# (outputs, targets, mask, norm) -> (per-example loss (B,), per-example weight (B,))
LossFn = Callable[[jax.Array, jax.Array, jax.Array, dict], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Task:
    """How outputs are scored for one (loss, dataset) pair.

    Attributes:
      kind: "classification" or "regression" (the dataset's task), or a program's own.
      num_outputs: size of the model's head.
      loss: `(outputs, targets, mask, norm) -> (losses (B,), weights (B,))`; the batch loss is
        `sum(losses) / sum(weights)` taken over the whole global batch.
      metrics: `(outputs, targets, mask, norm) -> dict of sums` for one batch.
      monitor: the validation metric that picks the best checkpoint by default (its direction
        is the program's: `engine.programs.supervised.HIGHER_IS_BETTER`).
    """

    kind: str
    num_outputs: int
    loss: LossFn
    metrics: Callable[[jax.Array, jax.Array, jax.Array, dict], dict]
    monitor: str


def make(
    name: str,
    loss: losses.LossSpec,
    info: DatasetInfo,
    *,
    hyperparameters: Mapping[str, Any],
    label_smoothing: float = 0.0,
    class_weights: np.ndarray | None = None,
    balanced: bool = False,
) -> Task:
    """Builds the task adapter, or raises ConfigError saying why the pair makes no sense.

    Args:
      name: the loss's name (for messages).
      loss: its registration (`losses.spec(name)`, or a user function's `LossSpec`).
      info: the dataset's description.
      hyperparameters: the values of the loss's keyword arguments (`loss.hyperparameters`).
      label_smoothing: the smoothing of one-hot targets, for losses that take it.
      class_weights: per-class loss weights (C,), or None.
      balanced: the training split is rebalanced (`--class_weights`, `--balance`): refused on
        a regression dataset.
    """
    if loss.kind == "triplets":
        raise ConfigError(
            f"--loss={name} compares triplets; train it with a program that forms them"
        )
    if info.task == REGRESSION:
        if loss.kind != "values":
            raise ConfigError(
                f"--loss={name} needs class labels but --dataset={info.name} is a regression "
                f"dataset; use one of: {', '.join(losses.names('values'))}"
            )
        if balanced:
            raise ConfigError(
                "--class_weights and --balance need class labels; "
                f"--dataset={info.name} is a regression dataset"
            )
        fn = _called(loss.fn, hyperparameters)
        return _regression(info.target_dim, lambda p, t, where: fn(p, t, where=where))
    if info.task != CLASSIFICATION:
        raise ConfigError(f"dataset {info.name} has an unknown task {info.task!r}")
    return _classification(loss, info.num_classes, hyperparameters, label_smoothing, class_weights)


def _called(fn: Callable, kwargs: Mapping[str, Any]) -> Callable:
    """`fn` with its keyword arguments given and per-example values returned."""

    def call(predictions, targets, *, where, **more):
        return fn(predictions, targets, **kwargs, **more, reduction="none", where=where)

    return call


def _classification(loss: losses.LossSpec, c: int, kwargs, label_smoothing, class_weights):
    """Logits scored by the loss as its kind says (one logit for a binary loss on two classes)."""
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    binary_logit = loss.binary and c == 2
    fixed = {} if binary_logit else dict(loss.fixed)
    if loss.class_weights:
        fixed["class_weights"] = weights
    fn = _called(loss.fn, {**kwargs, **fixed})

    def per_example(outputs, targets, mask):
        if binary_logit:
            return fn(outputs, targets[:, None].astype(jnp.float32), where=mask)
        if loss.kind == "labels":
            return fn(outputs, targets, where=mask)
        if loss.kind == "one_hot":
            smoothing = label_smoothing if loss.smooth else 0.0
            return fn(outputs, _smoothed_one_hot(targets, c, smoothing), where=mask)
        # A values loss on classes: softmax probabilities against one-hot targets.
        probs = jax.nn.softmax(outputs, axis=-1)
        return fn(probs, jax.nn.one_hot(targets, c), where=mask)

    num_outputs = 1 if binary_logit else c
    return _classification_task(num_outputs, per_example, class_weights, not loss.class_weights)


def _regression(target_dim: int, per_example: Callable) -> Task:
    """Outputs against standardised targets; metrics in the target's own units."""

    def loss(outputs, targets, mask, norm):
        scaled = (targets - norm["target_shift"]) / norm["target_scale"]
        values = per_example(outputs.astype(jnp.float32), scaled, mask)
        return values, mask.astype(jnp.float32)

    def metrics(outputs, targets, mask, norm):
        values, weights = loss(outputs, targets, mask, norm)
        m = mask.astype(jnp.float32)[:, None]
        # Predictions back in the target's own units, so MAE/RMSE/R^2 mean what users expect.
        pred = outputs.astype(jnp.float32) * norm["target_scale"] + norm["target_shift"]
        err = (pred - targets) * m
        return {
            "loss_sum": jnp.sum(values),
            "weight_sum": jnp.sum(weights),
            "count": jnp.sum(mask.astype(jnp.float32)),
            "abs_err": jnp.sum(jnp.abs(err), axis=0),
            "sq_err": jnp.sum(err**2, axis=0),
            "y_sum": jnp.sum(targets * m, axis=0),
            "y_sq_sum": jnp.sum(targets**2 * m, axis=0),
        }

    return Task(REGRESSION, target_dim, loss, metrics, "r2")


def _classification_task(
    num_outputs: int, per_example: Callable, class_weights, weights_in_loss: bool
) -> Task:
    """Logits scored by `per_example(outputs, targets, mask) -> (B,)`; accuracy as the metric.

    Args:
      num_outputs: the head's size (C, or 1 for a single binary logit).
      class_weights: (C,) or None; each example weighs its class's weight in the mean.
      weights_in_loss: True when `per_example` does not weight by class itself, so the engine
        multiplies each value by its class's weight (cross_entropy weights its own terms).
    """
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    def loss(outputs, targets, mask, norm):
        del norm
        w = mask.astype(jnp.float32)
        if weights is not None:
            w = w * weights[targets]
        values = per_example(outputs.astype(jnp.float32), targets, mask)
        if weights is not None and weights_in_loss:
            values = values * weights[targets]
        return values, w

    def metrics(outputs, targets, mask, norm):
        values, w = loss(outputs, targets, mask, norm)
        if num_outputs == 1:
            pred = (outputs[:, 0] > 0).astype(targets.dtype)
        else:
            pred = jnp.argmax(outputs, axis=-1).astype(targets.dtype)
        m = mask.astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(values),
            "weight_sum": jnp.sum(w),
            "count": jnp.sum(m),
            "correct": jnp.sum((pred == targets) * m),
        }

    return Task(CLASSIFICATION, num_outputs, loss, metrics, "accuracy")


def _smoothed_one_hot(targets, num_classes, eps):
    return jax.nn.one_hot(targets, num_classes) * (1.0 - eps) + eps / num_classes


def summarize(sums: dict) -> dict[str, float]:
    """Turns accumulated metric sums (host NumPy) into the numbers users read.

    Classification: loss, accuracy. Regression: loss, mae, rmse, r2 (R^2 averaged over target
    columns, as scikit-learn's `r2_score` default 'uniform_average').
    """
    s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    count = float(s["count"])
    out = {"loss": float(s["loss_sum"] / max(float(s["weight_sum"]), 1e-12)), "count": int(count)}
    if "correct" in s:
        out["accuracy"] = float(s["correct"] / max(count, 1.0))
        return out
    n = max(count, 1.0)
    out["mae"] = float(np.mean(s["abs_err"] / n))
    out["rmse"] = float(np.sqrt(np.mean(s["sq_err"] / n)))
    total = s["y_sq_sum"] - s["y_sum"] ** 2 / n
    out["r2"] = float(np.mean(1.0 - s["sq_err"] / np.maximum(total, 1e-12)))
    return out
