"""Class-target handling shared by the softmax losses: integer labels or distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import _reduction, _validation


def class_targets(
    loss: str, logits: jax.Array, targets, mask: jax.Array | None
) -> tuple[jax.Array, jax.Array | None]:
    """Turns integer labels or per-class targets into distributions over the last axis.

    Args:
      loss: the loss's name, for messages.
      logits: (batch, ..., num_classes), already in the compute dtype.
      targets: integer labels of shape logits.shape[:-1], or float per-class targets
        (one-hot or soft) of logits.shape.
      mask: optional boolean (batch,); masked rows are zeroed (label 0) so padding may hold
        anything, e.g. label -1.

    Returns:
      (targets as float (batch, ..., num_classes), valid) where ``valid`` is a boolean
      logits.shape[:-1] telling which integer labels lie in [0, num_classes), or None for
      per-class targets.
    """
    targets = jnp.asarray(targets)
    num_classes = logits.shape[-1]
    label_shape = tuple(logits.shape[:-1])
    if jnp.issubdtype(targets.dtype, jnp.integer) and targets.shape == label_shape:
        targets = _reduction.mask_rows(mask, targets)
        valid = (targets >= 0) & (targets < num_classes)
        return jax.nn.one_hot(targets, num_classes, dtype=logits.dtype), valid
    if jnp.issubdtype(targets.dtype, jnp.floating) and targets.shape == logits.shape:
        return _reduction.mask_rows(mask, targets.astype(logits.dtype)), None
    if targets.shape == label_shape:
        raise TypeError(
            f"{loss}: targets of shape {tuple(targets.shape)} are read as class indices and "
            f"must be integers, got dtype {targets.dtype} (predictions shape "
            f"{tuple(logits.shape)}); cast with targets.astype(jnp.int32)"
        )
    if targets.shape == logits.shape:
        raise TypeError(
            f"{loss}: per-class targets of shape {tuple(targets.shape)} must be floating "
            f"point, got dtype {targets.dtype}; cast with targets.astype(jnp.float32)"
        )
    raise ValueError(
        f"{loss}: targets shape {tuple(targets.shape)} does not fit predictions shape "
        f"{tuple(logits.shape)}; pass integer labels of shape {label_shape} or per-class "
        f"probabilities of shape {tuple(logits.shape)} (losses never broadcast)"
    )


def class_vector(
    loss: str, name: str, value, logits: jax.Array, *, allow_scalar: bool
) -> jax.Array | None:
    """Validates an optional per-class hyperparameter of shape (num_classes,) (or a scalar).

    Returns it in the compute dtype, ready to broadcast against (..., num_classes).
    """
    if value is None:
        return None
    _validation.check_range(loss, name, value, low=0.0)
    array = jnp.asarray(value, logits.dtype)
    if array.ndim == 0 and allow_scalar:
        return array
    per_class = (logits.shape[-1],) if logits.ndim >= 2 else None
    if per_class is not None and array.shape == per_class:
        return array
    expected = f"(num_classes,) = {per_class}" if per_class else "a scalar"
    if allow_scalar and per_class:
        expected = f"a scalar or {expected}"
    raise ValueError(
        f"{loss}: {name} must have shape {expected} for predictions shape "
        f"{tuple(logits.shape)}, got shape {tuple(array.shape)}"
    )


def modulating_factor(log_one_minus_p: jax.Array, gamma) -> jax.Array:
    """Focal loss's (1 - p)^gamma from log(1 - p), with 0^0 = 1 and no NaN gradient.

    Working in log space keeps the gradient finite for gamma < 1, where the naive power's
    derivative gamma (1 - p)^(gamma - 1) is infinite at p = 1. Where 1 - p is exactly 0
    (infinite logits), the factor is 0 for gamma > 0 and 1 for gamma = 0, and the log is
    swapped for 0 before the exp so that no 0 * inf reaches the gradient.
    """
    finite = log_one_minus_p > -jnp.inf
    safe = jnp.where(finite, log_one_minus_p, 0.0)
    at_zero = jnp.where(jnp.asarray(gamma) == 0, 1.0, 0.0).astype(safe.dtype)
    return jnp.where(finite, jnp.exp(gamma * safe), at_zero)


def log_one_minus_softmax(logits: jax.Array) -> jax.Array:
    """log(1 - softmax(logits)) along the last axis, accurate even where p rounds to 1.

    1 - p_c is the softmax mass of the other classes. For every class but the largest,
    p_c = e_c / s <= 1/2 (with e = exp(x - max), s = sum e), so log1p(-p_c) is accurate. For
    the largest class the other classes' log-sum-exp is taken directly. O(num_classes), no
    (1 - p) cancellation: logits (1e4, -1e4) give log(1 - p_0) = -2e4, not -inf.
    """
    num_classes = logits.shape[-1]
    is_top = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.bool_)
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    exps = jnp.exp(logits - top)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    log_total = jnp.log(total)
    # Other classes: log(1 - e_c / s) with e_c / s <= 1/2, well conditioned for log1p; the
    # top class's ratio (up to 1) is replaced before the log so log1p(-1) never appears.
    log_rest_others = jnp.log1p(-jnp.where(is_top, 0.0, exps / total))
    others = jnp.where(is_top, -jnp.inf, logits)
    any_other = jnp.any(others > -jnp.inf, axis=-1, keepdims=True)
    # Double where: a row whose other classes are all -inf would give logsumexp a NaN gradient.
    lse_others = jax.nn.logsumexp(jnp.where(any_other, others, 0.0), axis=-1, keepdims=True)
    log_rest_top = jnp.where(any_other, lse_others, -jnp.inf) - top - log_total
    return jnp.where(is_top, log_rest_top, log_rest_others)
