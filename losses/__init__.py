"""Loss functions as plain jax.numpy functions, selectable by name with ``losses.get(name)``.

Conventions shared by every loss:

* Call: ``loss(predictions, targets, *, <hyperparameters>, reduction="mean", where=None)``
  (``triplet_margin(anchor, positive, negative, *, ...)``). Hyperparameters are
  keyword-only.
* Shapes: the first axis is the batch. Each loss first reduces the trailing axes to one
  value per example (regression: mean over the non-batch axes; binary_cross_entropy and
  sigmoid focal: mean over classes; cross_entropy, softmax focal and kl_divergence: sum over
  the class axis, then mean over any axes between batch and classes; triplet_margin: a
  distance over all non-batch axes).
* ``reduction``: "mean" (default) averages the per-example values over the kept examples;
  "sum" adds them; "none" returns them, shape (batch,). cross_entropy with
  ``class_weights`` divides its "mean" by the summed weights of the kept examples' targets
  instead of their count (PyTorch's convention). A mean over zero kept examples is 0.
* ``where``: optional boolean mask of shape (batch,). False rows never count: they are
  zeroed before the loss is computed (so padding may even hold NaN, inf or label -1) and
  set to 0 in "none"; values AND gradients equal those of the batch without them.
* Checks, done at trace time only: predictions must be floating point (TypeError);
  shapes must match exactly, never broadcast (ValueError naming both shapes); integer
  class labels must have the logits' shape without the class axis; concrete
  hyperparameters are range-checked (ValueError). Values are not checked under jit:
  cross_entropy gives NaN for an integer label outside [0, num_classes).
* Precision: computed in float32 (float64 if predictions are float64) and returned in that
  dtype, so bfloat16 and float16 inputs get a float32 loss; gradients come back in the
  inputs' dtype. Every loss works under ``jax.jit``, ``jax.vmap`` (over extra leading axes)
  and ``jax.grad``, with finite gradients at the documented edge cases.

Relation to other frameworks, in short: ``mse`` has no 0.5 factor (optax.l2_loss does);
``smooth_l1(beta) = huber(delta=beta) / beta`` (PyTorch SmoothL1Loss vs HuberLoss);
``kl_divergence(predictions, targets)`` is KL(targets || predicted), optax's and PyTorch's
``kl_div(input=log q, target=p)`` order, and its "mean" is PyTorch's "batchmean".

Example:
  >>> import jax.numpy as jnp
  >>> import losses
  >>> fn = losses.get("huber")
  >>> print(f"{float(fn(jnp.array([2.0]), jnp.array([0.0]), delta=1.0)):.4f}")
  1.5000
"""

from __future__ import annotations

from collections.abc import Callable

from losses.classification import binary_cross_entropy, cross_entropy, focal
from losses.divergence import kl_divergence
from losses.metric_learning import triplet_margin
from losses.regression import huber, log_cosh, mae, mse, smooth_l1

__all__ = [
    "binary_cross_entropy",
    "cross_entropy",
    "focal",
    "get",
    "huber",
    "kl_divergence",
    "log_cosh",
    "mae",
    "mse",
    "names",
    "smooth_l1",
    "triplet_margin",
]

_REGISTRY: dict[str, Callable] = {
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "smooth_l1": smooth_l1,
    "log_cosh": log_cosh,
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "focal": focal,
    "kl_divergence": kl_divergence,
    "triplet_margin": triplet_margin,
}


def names() -> tuple[str, ...]:
    """The registered loss names, in registry order (regression, classification, others)."""
    return tuple(_REGISTRY)


def get(name: str) -> Callable:
    """Returns the loss function registered as ``name``.

    Raises:
      ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(_REGISTRY)}") from None
