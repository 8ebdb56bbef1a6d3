"""Metric-learning losses on embeddings: triplet_margin."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from losses import _reduction, _validation


def _distance(x: jax.Array, y: jax.Array, p: float, eps) -> jax.Array:
    """(sum |x - y|^p + eps)^(1/p) over the trailing axes; gradient 0 at zero distance.

    The root's derivative is infinite at 0, so a "double where" feeds it 1 there and selects
    0: the result is the subgradient 0 (a valid one for every p-norm), never NaN.
    """
    diff = (x - y).reshape(x.shape[0], math.prod(x.shape[1:]))
    # |d| as d * sign(d): gradient sign(d), 0 where x == y (jnp.abs's gradient at 0 is 1).
    diff = diff * jnp.sign(diff)
    if p == 1:
        return jnp.sum(diff, axis=-1) + eps
    total = jnp.sum(diff**2 if p == 2 else diff**p, axis=-1) + eps
    positive = total > 0
    safe = jnp.where(positive, total, 1.0)
    root = jnp.sqrt(safe) if p == 2 else safe ** (1.0 / p)
    return jnp.where(positive, root, 0.0)


def triplet_margin(
    anchor,
    positive,
    negative,
    *,
    margin: float = 1.0,
    p: float = 2,
    swap: bool = False,
    eps: float = 0.0,
    reduction: str = "mean",
    where=None,
) -> jax.Array:
    """Triplet margin loss: max(d(a, pos) - d(a, neg) + margin, 0), d the p-norm distance.

    d(x, y) = (sum_i |x_i - y_i|^p + eps)^(1/p) over all non-batch axes. With ``swap``
    (Balntas et al. 2016), d(a, neg) is replaced by min(d(a, neg), d(pos, neg)), the harder
    of the two negatives distances. The absolute value makes p = 1 the L1 distance (optax's
    ``triplet_margin_loss`` omits it, so its p = 1 can go negative, and has no swap).

    eps defaults to 0: the distance is exact, and its gradient at zero distance is the
    subgradient 0 instead of NaN. ``optax.losses.triplet_margin_loss`` adds its eps (1e-6)
    in the same place, so ``eps=1e-6`` reproduces it for p = 2; PyTorch's
    ``TripletMarginLoss`` adds eps to the difference vector instead (||x - y + eps||_p), an
    O(eps) difference.

    Args:
      anchor: float embeddings (batch, dim) (or (batch, ...), flattened).
      positive: same shape: embeddings that should be close to the anchor.
      negative: same shape: embeddings that should be far from the anchor.
      margin: wanted gap between the two distances, >= 0.
      p: norm degree, a real number >= 1 (1 and 2 have exact fast paths).
      swap: use the distance swap.
      eps: non-negative constant added to the sum of powers before the root.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import triplet_margin
      >>> a, pos, neg = jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0]])
      >>> print(f"{float(triplet_margin(a, pos, neg, margin=1.0, p=2)):.4f}")  # 5 - 1 + 1
      5.0000
      >>> print(f"{float(triplet_margin(a, pos, neg, margin=1.0, p=1)):.4f}")  # 7 - 1 + 1
      7.0000
    """
    loss = "triplet_margin"
    _reduction.check_reduction(loss, reduction)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p < 1:
        raise ValueError(f"{loss}: p must be a finite real number >= 1 (a norm), got {p!r}")
    _validation.check_range(loss, "margin", margin, low=0.0)
    _validation.check_range(loss, "eps", eps, low=0.0)
    anchor = _validation.as_float_array(loss, "anchor", anchor)
    positive = _validation.as_float_array(loss, "positive", positive)
    negative = _validation.as_float_array(loss, "negative", negative)
    _validation.check_batched(loss, "anchor", anchor, layout="(batch, dim)")
    _validation.check_same_shape(loss, "anchor", anchor, "positive", positive)
    _validation.check_same_shape(loss, "anchor", anchor, "negative", negative)
    mask = _reduction.as_mask(loss, where, anchor.shape[0])
    dtype = _validation.compute_dtype(anchor)
    anchor, positive, negative = (
        _reduction.mask_rows(mask, x.astype(dtype)) for x in (anchor, positive, negative)
    )
    to_positive = _distance(anchor, positive, p, eps)
    to_negative = _distance(anchor, negative, p, eps)
    if swap:
        to_negative = jnp.minimum(to_negative, _distance(positive, negative, p, eps))
    per_example = jax.nn.relu(to_positive - to_negative + margin)
    return _reduction.reduce(per_example, reduction, mask)
