"""BatchNorm with a row mask whose statistics are those of the real rows of the global batch.

The engine pads the last batch of an epoch with rows that the loss ignores (mask False); they
must not enter the batch statistics either, or they change the normalisation of the real rows
and the running averages used for evaluation right after.

Why not `flax.linen.BatchNorm(...)(x, mask=...)`: with `axis_name` set (pmap), flax 0.12's
`_compute_stats` takes `lax.pmean` of each device's masked mean. That is the global masked mean
only when every device holds the same number of real rows; the padded last batch puts its padding
on the last devices (one device may hold none, and its masked mean is then 0/0 = NaN). This layer
sums the masked values, their squares and the real-row count, `psum`s the three over the axis
and divides once, so every parallel mode gets the same statistics.

Everything else follows `flax.linen.BatchNorm` as the zoo used it, so checkpoints and parameter
counts are unchanged: the same variables (`params`: `scale`, `bias`; `batch_stats`: `mean`,
`var`, float32, shaped (features,)), statistics over every axis but the last, computed in float32
as E[x^2] - E[x]^2 clipped at 0 (flax's `use_fast_variance`), running averages
`momentum * old + (1 - momentum) * batch` of the mean and of the biased variance, not updated
at init, and `(x - mean) * rsqrt(var + epsilon) * scale + bias` cast to `dtype`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def masked_moments(
    x: jax.Array, mask: jax.Array | None, axis_name: str | None
) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance per feature (last axis) over the real rows of the global batch.

    Args:
        x: (N, ..., C) activations.
        mask: (N,) bool, True for a real row; None when every row is real.
        axis_name: the mapped axis (pmap, shard_map, vmap) holding the other parts of the
            batch, or None when `x` is the whole batch.

    Returns:
        (mean, var), each float32 (C,).

    >>> x = jnp.array([[1.0], [3.0], [100.0]])
    >>> [v.tolist() for v in masked_moments(x, jnp.array([True, True, False]), None)]
    [[2.0], [1.0]]
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    per_row = math.prod(x.shape[1:-1])  # spatial positions per row
    if mask is None:
        count = jnp.asarray(x.shape[0] * per_row, jnp.int32)
    else:
        row = mask.astype(bool).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
        # where, not multiply: a padded row holding inf or NaN must not reach the sums.
        x = jnp.where(row, x, 0.0)
        count = jnp.sum(mask.astype(jnp.int32)) * per_row
    # Two arrays, not one stacked (2, C): indexing the stack back apart cost ~1.5 ms of tracing
    # per layer (a ResNet-18 step has 20); psum of the tuple is still one all-reduce.
    total, total_sq = jnp.sum(x, axes), jnp.sum(jnp.square(x), axes)
    if axis_name is not None:
        total, total_sq, count = jax.lax.psum((total, total_sq, count), axis_name)
    # A batch always has real rows; the floor only keeps an all-padding call from dividing by 0.
    n = jnp.maximum(count, 1).astype(total.dtype)
    mean, mean_sq = total / n, total_sq / n
    return mean, jnp.maximum(0.0, mean_sq - jnp.square(mean))


class BatchNorm(nn.Module):
    """`flax.linen.BatchNorm` over all axes but the last, with exact masked cross-device stats.

    Attributes:
        use_running_average: normalise with the stored running statistics (evaluation).
        momentum: decay of the running averages (flax's 0.9 is PyTorch's 0.1).
        epsilon: added to the variance.
        dtype: output dtype (None: the result type of the input and the parameters).
        param_dtype: dtype of `scale` and `bias`.
        axis_name: mapped axis to sum statistics over (pmap); None for plain and sharded jit,
            where arrays are global and XLA inserts the collectives.
        scale_init, bias_init: initialisers of `scale` (ones) and `bias` (zeros).
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    axis_name: str | None = None
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Normalises x (N, ..., C); `mask` (N,) bool marks the real rows (None: all)."""
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            # At init the axis may not exist yet (flax does the same).
            axis = None if self.is_initializing() else self.axis_name
            mean, var = masked_moments(x, mask, axis)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        dtype = self.dtype if self.dtype is not None else jnp.result_type(x, scale, bias)
        return y.astype(dtype)
