"""Divergences between distributions: kl_divergence(targets || predicted)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import _reduction, _validation


def kl_divergence(
    predictions,
    targets,
    *,
    from_logits: bool = True,
    log_targets: bool = False,
    reduction: str = "mean",
    where=None,
) -> jax.Array:
    """KL(p || q) = sum_c p_c (log p_c - log q_c): targets p, predicted distribution q.

    ``predictions`` describe q: logits when ``from_logits=True`` (the default; q =
    softmax(predictions)), or log-probabilities log q when ``from_logits=False``. Passing
    log-probabilities with from_logits=True is also correct, since log_softmax leaves
    normalised log-probabilities unchanged. ``targets`` are the probabilities p (or log p
    with ``log_targets=True``).

    Argument order: the PREDICTION comes first and the divergence is of the targets from it,
    KL(targets || predicted), the order used for distillation and label-distribution
    learning. This matches ``optax.losses.kl_divergence(log_predictions, targets)`` and
    ``torch.nn.functional.kl_div(input=log q, target=p)``; with "mean" this is the mean over
    the batch of per-example KL, which PyTorch calls reduction="batchmean" (PyTorch's
    "mean" divides by N*C instead).

    Zero-probability targets contribute 0 (0 log 0 = 0) with a finite gradient, even where
    log q is -inf: a "double where" replaces the value before the log and masks after.
    Targets are not checked to be normalised (that is a value check, impossible under jit).

    Args:
      predictions: (batch, C) logits or log-probabilities; (batch, ..., C) is meaned over
        the middle axes per example.
      targets: probabilities (or log-probabilities) of the same shape, floating point.
      from_logits: whether predictions are logits (normalised here with log_softmax).
      log_targets: whether targets are log-probabilities (-inf for zero probability).
      reduction: "mean" ("batchmean"), "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import kl_divergence
      >>> log_q = jnp.log(jnp.array([[0.5, 0.5]]))
      >>> p = jnp.array([[1.0, 0.0]])
      >>> print(f"{float(kl_divergence(log_q, p, from_logits=False)):.4f}")  # log 2
      0.6931
    """
    loss = "kl_divergence"
    _reduction.check_reduction(loss, reduction)
    predictions = _validation.as_float_array(loss, "predictions", predictions)
    targets = _validation.as_float_array(loss, "targets", targets)
    _validation.check_batched(
        loss, "predictions", predictions, min_ndim=2, layout="(batch, num_classes)"
    )
    _validation.check_same_shape(loss, "predictions", predictions, "targets", targets)
    mask = _reduction.as_mask(loss, where, predictions.shape[0])
    dtype = _validation.compute_dtype(predictions)
    log_q = _reduction.mask_rows(mask, predictions.astype(dtype))
    targets = _reduction.mask_rows(mask, targets.astype(dtype))
    if from_logits:
        log_q = jax.nn.log_softmax(log_q, axis=-1)
    if log_targets:
        # Masked rows were zeroed, i.e. log p = 0 (p = 1) everywhere: finite, then discarded.
        present = targets > -jnp.inf
        log_p = jnp.where(present, targets, 0.0)
        p = jnp.where(present, jnp.exp(log_p), 0.0)
    else:
        # != 0, not > 0: a negative "probability" then gives NaN from the log (loud).
        present = targets != 0
        p = targets
        log_p = jnp.log(jnp.where(present, targets, 1.0))
    terms = jnp.where(present, p * (log_p - jnp.where(present, log_q, 0.0)), 0.0)
    per_example = _reduction.mean_over_trailing(jnp.sum(terms, axis=-1))
    return _reduction.reduce(per_example, reduction, mask)
