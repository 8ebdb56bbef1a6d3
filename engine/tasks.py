"""The task adapter: turns (loss name, dataset) into a per-example loss and metric sums on outputs.

Every (loss, dataset) pair the registries allow either gets a meaningful definition here or is
refused before training with a one-line reason:

* classification losses (cross_entropy, kl_divergence, focal, binary_cross_entropy) work on
  logits. On a binary dataset, binary_cross_entropy and focal use one logit (sigmoid); on a
  multi-class dataset binary_cross_entropy is one-vs-rest over C logits, focal its softmax form.
* regression losses (mse, mae, huber, smooth_l1, log_cosh) compare outputs with the targets,
  which are standardised with training statistics (metrics are reported in the original units).
  On a classification dataset they compare softmax probabilities with one-hot targets, so
  `--loss=huber` on digits trains a classifier and reports accuracy.
* triplet_margin on a classification dataset learns an embedding, its triplets mined in
  class-balanced batches (`engine.metric_learning`).

Metrics are sums (and counts) over the unmasked examples of a batch, so padded, sharded and
multi-host batches add up exactly; `summarize` turns the accumulated sums into means on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import losses
from engine.config import Config, ConfigError
from engine.data.source import CLASSIFICATION, REGRESSION, DatasetInfo

CLASSIFICATION_LOSSES = ("cross_entropy", "kl_divergence", "focal", "binary_cross_entropy")
REGRESSION_LOSSES = ("mse", "mae", "huber", "smooth_l1", "log_cosh")

# (outputs, targets, mask, norm) -> (per-example loss (B,), per-example weight (B,))
LossFn = Callable[[jax.Array, jax.Array, jax.Array, dict], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Task:
    """How outputs are scored for one (loss, dataset) pair.

    Attributes:
      kind: "classification" or "regression" (the dataset's task).
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
    config: Config,
    info: DatasetInfo,
    class_weights: np.ndarray | None = None,
    *,
    loss_fn: Callable | None = None,
    loss_kind: str | None = None,
    axis_name: str | None = None,
) -> Task:
    """Builds the task adapter, or raises ConfigError saying why the pair makes no sense.

    Args:
      config: the run's configuration (`loss` names the loss and its hyperparameters).
      info: the dataset's description.
      class_weights: per-class loss weights (C,), or None.
      loss_fn: a user loss `fn(predictions, targets, *, reduction, where)` used instead of the
        registry's `config.loss`; `loss_kind` says what targets it takes (`losses.KINDS`).
      axis_name: the pmap axis, for a task whose loss looks across the batch (triplets mined
        over the global batch), or None.
    """
    name = config.loss
    if loss_fn is None and name not in losses.BUILTIN:
        loss_fn, loss_kind = losses.get(name), losses.kind(name)
    if loss_fn is not None:
        return _user(config, info, class_weights, loss_fn, loss_kind)
    if name == "triplet_margin":
        if info.task != CLASSIFICATION:
            raise ConfigError(
                "--loss=triplet_margin learns an embedding from class labels (triplets mined "
                f"in the batch); --dataset={info.name} has none: pick a regression loss"
            )
        if config.class_weights != "none" or config.balance != "none":
            raise ConfigError(
                "--loss=triplet_margin draws class-balanced batches itself; drop "
                "--class_weights and --balance"
            )
        from engine import metric_learning

        return metric_learning.task(
            config.embedding_dim, mining=config.mining, margin=config.margin, axis_name=axis_name
        )
    if info.task == REGRESSION:
        if name not in REGRESSION_LOSSES:
            raise _needs_labels(name, info)
        _no_class_balancing(config, info)
        return _regression(info.target_dim, _regression_loss_fn(config))
    if info.task != CLASSIFICATION:
        raise ConfigError(f"dataset {info.name} has an unknown task {info.task!r}")
    return _classification(config, info, class_weights)


def _needs_labels(name: str, info: DatasetInfo) -> ConfigError:
    return ConfigError(
        f"--loss={name} needs class labels but --dataset={info.name} is a regression "
        f"dataset; use one of: {', '.join(REGRESSION_LOSSES)}"
    )


def _no_class_balancing(config: Config, info: DatasetInfo) -> None:
    if config.class_weights != "none" or config.balance != "none":
        raise ConfigError(
            "--class_weights and --balance need class labels; "
            f"--dataset={info.name} is a regression dataset"
        )


def _user(config: Config, info: DatasetInfo, class_weights, fn: Callable, kind: str) -> Task:
    """A registered or user-given loss, adapted by the kind of targets it takes."""
    name = config.loss
    try:
        losses.check_loss(fn, kind, what=f"--loss={name}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if kind == "triplets":
        raise ConfigError(f"--loss={name} compares triplets; it needs a metric-learning program")
    if info.task == REGRESSION:
        if kind != "values":
            raise _needs_labels(name, info)
        _no_class_balancing(config, info)
        return _regression(
            info.target_dim, lambda p, t, where: fn(p, t, reduction="none", where=where)
        )
    c = info.num_classes

    def per_example(outputs, targets, mask):
        if kind == "labels":
            return fn(outputs, targets, reduction="none", where=mask)
        if kind == "one_hot":
            dist = _smoothed_one_hot(targets, c, config.label_smoothing)
            return fn(outputs, dist, reduction="none", where=mask)
        probs = jax.nn.softmax(outputs, axis=-1)  # values: probabilities against one-hot
        return fn(probs, jax.nn.one_hot(targets, c), reduction="none", where=mask)

    return _classification_task(c, per_example, class_weights, weights_in_loss=True)


def _regression_loss_fn(config: Config) -> Callable:
    fn = losses.get(config.loss)
    if config.loss == "huber":
        return lambda p, t, where: fn(p, t, delta=config.delta, reduction="none", where=where)
    if config.loss == "smooth_l1":
        return lambda p, t, where: fn(p, t, beta=config.delta, reduction="none", where=where)
    return lambda p, t, where: fn(p, t, reduction="none", where=where)


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


def _classification(config: Config, info: DatasetInfo, class_weights) -> Task:
    c = info.num_classes
    name = config.loss
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    binary_logit = name in ("binary_cross_entropy", "focal") and c == 2
    num_outputs = 1 if binary_logit else c
    alpha = None if config.focal_alpha < 0 else config.focal_alpha
    fn = losses.get(name)

    def per_example(outputs, targets, mask):
        outputs = outputs.astype(jnp.float32)
        if name == "cross_entropy":
            # The loss weights each class's term itself (PyTorch's definition, which differs
            # from weighting the example when labels are smoothed); the engine normalises.
            return fn(
                outputs,
                targets,
                label_smoothing=config.label_smoothing,
                class_weights=weights,
                reduction="none",
                where=mask,
            )
        if name == "kl_divergence":
            dist = _smoothed_one_hot(targets, c, config.label_smoothing)
            return fn(outputs, dist, from_logits=True, reduction="none", where=mask)
        if name == "binary_cross_entropy":
            t = targets[:, None].astype(jnp.float32) if binary_logit else jax.nn.one_hot(targets, c)
            return fn(outputs, t, reduction="none", where=mask)
        if name == "focal":
            if binary_logit:
                t = targets[:, None].astype(jnp.float32)
                return fn(
                    outputs, t, alpha=alpha, gamma=config.focal_gamma, reduction="none", where=mask
                )
            return fn(
                outputs,
                targets,
                alpha=alpha,
                gamma=config.focal_gamma,
                multiclass=True,
                reduction="none",
                where=mask,
            )
        # A regression loss on classes: softmax probabilities against one-hot targets.
        probs = jax.nn.softmax(outputs, axis=-1)
        return _regression_loss_fn(config)(probs, jax.nn.one_hot(targets, c), mask)

    return _classification_task(num_outputs, per_example, class_weights, name != "cross_entropy")


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
