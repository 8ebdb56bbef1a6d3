"""Argument checks shared by the losses: array dtypes, shapes and hyperparameter ranges.

Every check runs on static information only (shapes, dtypes, concrete Python or NumPy
hyperparameters), so it costs nothing under ``jax.jit`` and never forces a traced value.
Messages are one line and start with the loss's name.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_float_array(loss: str, name: str, x) -> jax.Array:
    """Returns ``x`` as a JAX array, raising TypeError unless it is floating point."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{loss}: {name} must be a floating-point array, got dtype {x.dtype} with shape "
            f"{tuple(x.shape)}; cast it, e.g. {name}.astype(jnp.float32)"
        )
    return x


def as_real_array(loss: str, name: str, x) -> jax.Array:
    """Returns ``x`` as a JAX array, raising TypeError unless it is bool, integer or float."""
    x = jnp.asarray(x)
    if not (
        jnp.issubdtype(x.dtype, jnp.floating)
        or jnp.issubdtype(x.dtype, jnp.integer)
        or jnp.issubdtype(x.dtype, jnp.bool_)
    ):
        raise TypeError(
            f"{loss}: {name} must be a real (bool, integer or float) array, got dtype "
            f"{x.dtype} with shape {tuple(x.shape)}"
        )
    return x


def compute_dtype(predictions: jax.Array) -> jnp.dtype:
    """The dtype a loss computes and returns in: float32, or float64 for float64 inputs.

    bfloat16 and float16 predictions are promoted to float32 so that exponentials, logs and
    the batch reduction keep full precision.
    """
    return jnp.promote_types(predictions.dtype, jnp.float32)


def check_batched(loss: str, name: str, x: jax.Array, *, min_ndim: int = 1, layout: str) -> None:
    """Raises ValueError unless ``x`` has at least ``min_ndim`` axes (the first is the batch)."""
    if x.ndim < min_ndim:
        raise ValueError(
            f"{loss}: {name} must have shape {layout} with a leading batch axis, got shape "
            f"{tuple(x.shape)}"
        )


def check_same_shape(loss: str, name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    """Raises ValueError naming both shapes unless they are equal (losses never broadcast)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{loss}: {name_a} shape {tuple(a.shape)} and {name_b} shape {tuple(b.shape)} "
            "differ; pass arrays of the same shape (losses never broadcast)"
        )


def check_range(
    loss: str,
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ValueError if a concrete hyperparameter lies outside [low, high].

    Traced values (a hyperparameter under ``jax.grad`` or ``optax.inject_hyperparams``) are
    not checked: their value is unknown at trace time.
    """
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{loss}: {name} must be a real number, got {value!r}")
    if array.size == 0:
        return
    too_low = low is not None and (np.any(array <= low) if low_open else np.any(array < low))
    too_high = high is not None and (np.any(array >= high) if high_open else np.any(array > high))
    if too_low or too_high or np.any(np.isnan(array)):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lower = "-inf" if low is None else low
        upper = "inf" if high is None else high
        interval = f"{left}{lower}, {upper}{right}"
        raise ValueError(f"{loss}: {name} must lie in {interval}, got {value!r}")
