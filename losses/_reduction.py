"""Batch reduction shared by the losses: the ``reduction`` modes and the ``where`` mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(loss: str, reduction: str) -> None:
    """Raises ValueError unless ``reduction`` is one of REDUCTIONS."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{loss}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
            f"got {reduction!r}"
        )


def as_mask(loss: str, where, batch_size: int) -> jax.Array | None:
    """Validates the optional ``where`` mask: a boolean array of shape (batch,).

    A float or integer mask is refused rather than cast: it could be meant as per-example
    weights, which ``where`` is not.
    """
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(
            f"{loss}: where must be a boolean array of shape ({batch_size},), got dtype "
            f"{where.dtype} with shape {tuple(where.shape)}; use e.g. where=mask > 0"
        )
    if where.shape != (batch_size,):
        raise ValueError(
            f"{loss}: where must have shape (batch,) = ({batch_size},), got shape "
            f"{tuple(where.shape)}"
        )
    return where


def mask_rows(mask: jax.Array | None, x: jax.Array) -> jax.Array:
    """Replaces the masked-out rows of ``x`` (shape (batch, ...)) by zeros.

    This is the first half of a "double where": padded rows may hold anything (NaN, inf,
    out-of-range labels), and zeroing them before the loss is computed keeps both the value
    and the gradient of the kept rows exactly as if the padded rows were absent.
    """
    if mask is None:
        return x
    row_mask = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    return jnp.where(row_mask, x, jnp.zeros((), x.dtype))


def mean_over_trailing(x: jax.Array, keep: int = 1) -> jax.Array:
    """Means ``x`` over every axis after the first ``keep`` ones (identity if there are none)."""
    axes = tuple(range(keep, x.ndim))
    return jnp.mean(x, axis=axes) if axes else x


def reduce(
    per_example: jax.Array,
    reduction: str,
    mask: jax.Array | None,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Reduces per-example values of shape (batch,) as the ``reduction`` mode says.

    Args:
      per_example: loss per example, shape (batch,).
      reduction: "mean", "sum" or "none".
      mask: optional boolean (batch,); False rows count as absent.
      weights: optional per-example normalisers, shape (batch,). "mean" then divides the sum
        of the kept values by the sum of the kept weights instead of by the kept count.

    Returns:
      A scalar for "mean" and "sum"; shape (batch,) for "none", masked rows set to 0. A mean
      over no kept examples (or zero total weight) is 0, not NaN, so an all-padding batch or
      device shard cannot poison a training step.
    """
    if mask is not None:
        # jnp.where, not multiplication: a masked NaN times 0 would still be NaN.
        per_example = jnp.where(mask, per_example, jnp.zeros((), per_example.dtype))
    if reduction == "none":
        return per_example
    total = jnp.sum(per_example)
    if reduction == "sum":
        return total
    if weights is None:
        if mask is None:
            count = jnp.asarray(per_example.shape[0], per_example.dtype)
        else:
            count = jnp.sum(mask, dtype=per_example.dtype)
    else:
        if mask is not None:
            weights = jnp.where(mask, weights, jnp.zeros((), weights.dtype))
        count = jnp.sum(weights)
    positive = count > 0
    return jnp.where(positive, total / jnp.where(positive, count, 1), jnp.zeros((), total.dtype))
