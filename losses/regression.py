"""Regression losses on residuals e = predictions - targets: mse, mae, huber, smooth_l1, log_cosh.

Shapes: ``predictions`` and ``targets`` are (batch,) or (batch, d1, ...) with exactly the same
shape (never broadcast). The per-example value is the elementwise loss MEANED over the
non-batch axes, so "mean" equals the mean over all elements (as ``torch.nn.MSELoss()`` and
``keras.losses.MeanSquaredError`` give) and "none" returns shape (batch,).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from losses import _reduction, _validation

_LAYOUT = "(batch,) or (batch, ...)"


def _residuals(loss: str, predictions, targets, reduction: str, where):
    """Checks the arguments; returns (residuals in the compute dtype, mask or None)."""
    _reduction.check_reduction(loss, reduction)
    predictions = _validation.as_float_array(loss, "predictions", predictions)
    targets = _validation.as_real_array(loss, "targets", targets)
    _validation.check_batched(loss, "predictions", predictions, layout=_LAYOUT)
    _validation.check_same_shape(loss, "predictions", predictions, "targets", targets)
    mask = _reduction.as_mask(loss, where, predictions.shape[0])
    dtype = _validation.compute_dtype(predictions)
    predictions = _reduction.mask_rows(mask, predictions.astype(dtype))
    targets = _reduction.mask_rows(mask, targets.astype(dtype))
    return predictions - targets, mask


def _finish(elementwise: jax.Array, reduction: str, mask) -> jax.Array:
    return _reduction.reduce(_reduction.mean_over_trailing(elementwise), reduction, mask)


def _abs(errors: jax.Array) -> jax.Array:
    """|e| with gradient sign(e), i.e. 0 at e = 0 (``jnp.abs``'s gradient at 0 is 1)."""
    return errors * jnp.sign(errors)


def _huber(errors: jax.Array, delta) -> jax.Array:
    abs_errors = jnp.abs(errors)
    # Both branches are finite everywhere, so the unselected one never leaks a NaN gradient.
    return jnp.where(abs_errors <= delta, 0.5 * errors**2, delta * (abs_errors - 0.5 * delta))


def mse(predictions, targets, *, reduction: str = "mean", where=None) -> jax.Array:
    """Mean squared error: the mean of e^2, with e = predictions - targets.

    There is no 0.5 factor: this is ``optax.losses.squared_error`` (not ``optax.l2_loss``,
    which is 0.5 e^2), ``torch.nn.MSELoss`` and Keras' ``MeanSquaredError``.

    Args:
      predictions: float array (batch,) or (batch, ...).
      targets: array of the same shape (bool/int/float, cast to the compute dtype).
      reduction: "mean" (over kept examples), "sum" or "none" (per example, shape (batch,)).
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      float32 (float64 for float64 inputs) scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import mse
      >>> print(f"{float(mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))):.4f}")
      2.5000
    """
    errors, mask = _residuals("mse", predictions, targets, reduction, where)
    return _finish(errors**2, reduction, mask)


def mae(predictions, targets, *, reduction: str = "mean", where=None) -> jax.Array:
    """Mean absolute error (L1): the mean of |e|, with e = predictions - targets.

    Same as ``torch.nn.L1Loss`` and Keras' ``MeanAbsoluteError``. The gradient is sign(e),
    0 at e = 0 as in PyTorch (``jnp.abs`` alone would give 1 there).

    Args:
      predictions: float array (batch,) or (batch, ...).
      targets: array of the same shape.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import mae
      >>> print(f"{float(mae(jnp.array([1.0, -2.0]), jnp.array([0.0, 0.0]))):.4f}")
      1.5000
    """
    errors, mask = _residuals("mae", predictions, targets, reduction, where)
    return _finish(_abs(errors), reduction, mask)


def huber(
    predictions, targets, *, delta: float = 1.0, reduction: str = "mean", where=None
) -> jax.Array:
    """Huber loss: 0.5 e^2 if |e| <= delta, else delta * (|e| - 0.5 * delta).

    Quadratic near zero, linear (slope delta) beyond delta; value and slope are continuous at
    |e| = delta. Same elementwise values as ``optax.losses.huber_loss(delta=...)`` and
    ``torch.nn.HuberLoss(delta=...)``. ``smooth_l1(beta)`` is ``huber(delta=beta) / beta``.

    Args:
      predictions: float array (batch,) or (batch, ...).
      targets: array of the same shape.
      delta: threshold between the quadratic and linear parts, > 0.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import huber
      >>> loss = huber(jnp.array([0.5, 3.0]), jnp.array([0.0, 0.0]), delta=1.0)
      >>> print(f"{float(loss):.4f}")  # (0.125 + 2.5) / 2
      1.3125
    """
    _validation.check_range("huber", "delta", delta, low=0.0, low_open=True)
    errors, mask = _residuals("huber", predictions, targets, reduction, where)
    return _finish(_huber(errors, delta), reduction, mask)


def smooth_l1(
    predictions, targets, *, beta: float = 1.0, reduction: str = "mean", where=None
) -> jax.Array:
    """Smooth L1: 0.5 e^2 / beta if |e| < beta, else |e| - 0.5 * beta; beta = 0 is exactly L1.

    Equals ``huber(delta=beta) / beta``: the linear part has slope 1 (like L1) instead of
    delta, and the quadratic part narrows as beta shrinks. This is ``torch.nn.SmoothL1Loss``
    (Fast R-CNN's loss). beta = 0 returns |e| exactly, without dividing by zero, also when
    beta is a traced value.

    Args:
      predictions: float array (batch,) or (batch, ...).
      targets: array of the same shape.
      beta: width of the quadratic zone, >= 0.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import smooth_l1
      >>> loss = smooth_l1(jnp.array([0.5, 3.0]), jnp.array([0.0, 0.0]), beta=1.0)
      >>> print(f"{float(loss):.4f}")  # (0.125 + 2.5) / 2
      1.3125
      >>> print(f"{float(smooth_l1(jnp.array([0.5]), jnp.array([0.0]), beta=0.0)):.4f}")
      0.5000
    """
    _validation.check_range("smooth_l1", "beta", beta, low=0.0)
    errors, mask = _residuals("smooth_l1", predictions, targets, reduction, where)
    positive = jnp.asarray(beta) > 0
    # Double where: the Huber branch sees beta = 1 when beta = 0, so it stays finite and its
    # (discarded) gradient cannot turn into 0 * inf = NaN.
    safe_beta = jnp.where(positive, beta, 1.0).astype(errors.dtype)
    elementwise = jnp.where(positive, _huber(errors, safe_beta) / safe_beta, _abs(errors))
    return _finish(elementwise, reduction, mask)


def log_cosh(predictions, targets, *, reduction: str = "mean", where=None) -> jax.Array:
    """Log-cosh loss: log(cosh(e)), about e^2 / 2 near 0 and |e| - log 2 far away.

    Computed as logaddexp(e, -e) - log 2, as ``optax.losses.log_cosh`` does: the naive
    ``log(cosh(e))`` overflows to inf for |e| > ~89 in float32. Twice differentiable, unlike
    Huber.

    Args:
      predictions: float array (batch,) or (batch, ...).
      targets: array of the same shape.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import log_cosh
      >>> print(f"{float(log_cosh(jnp.array([1000.0]), jnp.array([0.0]))):.2f}")
      999.31
    """
    errors, mask = _residuals("log_cosh", predictions, targets, reduction, where)
    elementwise = jnp.logaddexp(errors, -errors) - jnp.asarray(math.log(2.0), errors.dtype)
    return _finish(elementwise, reduction, mask)
