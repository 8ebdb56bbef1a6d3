"""Classification losses from logits: cross_entropy, binary_cross_entropy and focal.

All three take unnormalised logits (never probabilities) and work in log space
(``log_softmax``, ``log_sigmoid``), so logits of +-1e4 give finite values and gradients, and a
logit of -inf contributes nothing where its target probability is 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from losses import _reduction, _targets, _validation


def _prepare_logits(loss: str, predictions, reduction: str, where, *, min_ndim: int, layout: str):
    """Checks predictions/reduction/where; returns (logits in the compute dtype, mask)."""
    _reduction.check_reduction(loss, reduction)
    logits = _validation.as_float_array(loss, "predictions", predictions)
    _validation.check_batched(loss, "predictions", logits, min_ndim=min_ndim, layout=layout)
    mask = _reduction.as_mask(loss, where, logits.shape[0])
    logits = logits.astype(_validation.compute_dtype(logits))
    return _reduction.mask_rows(mask, logits), mask


def _zero_where_no_target(weights: jax.Array, log_probs: jax.Array) -> jax.Array:
    """Returns weights * log_probs with 0 * log 0 = 0: a -inf log-prob of weight 0 adds 0.

    The log-probability is replaced before the product (not after), so the gradient of the
    discarded 0 * -inf is 0 instead of NaN.
    """
    return weights * jnp.where(weights != 0, log_probs, 0.0)


def cross_entropy(
    predictions,
    targets,
    *,
    label_smoothing: float = 0.0,
    class_weights=None,
    reduction: str = "mean",
    where=None,
) -> jax.Array:
    """Softmax cross-entropy from logits: -sum_c w_c t_c log softmax(x)_c per example.

    Targets t are integer labels (one-hot) or per-class probabilities. With
    ``label_smoothing`` eps, t becomes (1 - eps) t + eps / C. With ``class_weights`` w, the
    example's weight is omega = sum_c w_c t_c over the targets BEFORE smoothing (w_y for an
    integer label y), and "mean" divides the summed losses by the summed omega of the kept
    examples, not by their count: this is ``torch.nn.CrossEntropyLoss(weight=w)``'s mean for
    integer labels, also with label smoothing. (For soft targets PyTorch divides by N; here
    one-hot and integer targets always agree.) "none" returns the weighted per-example
    values (numerators), "sum" their sum. Without weights this is
    ``optax.losses.softmax_cross_entropy(_with_integer_labels)``.

    Integer labels outside [0, C) give NaN for that example (loud, instead of a silent 0 or a
    clamped class); padded rows masked by ``where`` may hold any label.

    Args:
      predictions: logits (batch, C), or (batch, ..., C) with the per-example value meaned
        over the middle axes (e.g. pixels).
      targets: integer labels of shape predictions.shape[:-1], or float probabilities /
        one-hot of predictions.shape.
      label_smoothing: eps in [0, 1].
      class_weights: optional non-negative (C,) weights.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import cross_entropy
      >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
      >>> print(f"{float(cross_entropy(logits, jnp.array([0, 1]))):.4f}")  # (0.2761 + 2.9518) / 2
      1.6140
    """
    loss = "cross_entropy"
    layout = "(batch, num_classes)"
    logits, mask = _prepare_logits(loss, predictions, reduction, where, min_ndim=2, layout=layout)
    _validation.check_range(loss, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    given, valid = _targets.class_targets(loss, logits, targets, mask)
    weights = _targets.class_vector(
        loss, "class_weights", class_weights, logits, allow_scalar=False
    )
    smoothed = given
    if not (isinstance(label_smoothing, int | float) and label_smoothing == 0):
        smoothed = (1.0 - label_smoothing) * given + label_smoothing / logits.shape[-1]
    if weights is not None:
        smoothed = smoothed * weights
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    per_position = -jnp.sum(_zero_where_no_target(smoothed, log_probs), axis=-1)
    if valid is not None:
        per_position = jnp.where(valid, per_position, jnp.nan)
    normalisers = None
    if weights is not None:
        normalisers = _reduction.mean_over_trailing(jnp.sum(given * weights, axis=-1))
    per_example = _reduction.mean_over_trailing(per_position)
    return _reduction.reduce(per_example, reduction, mask, normalisers)


def _binary_terms(logits: jax.Array, targets: jax.Array):
    """(t log sigmoid(x), (1 - t) log sigmoid(-x)) with 0 * log 0 = 0 for infinite logits."""
    positive = _zero_where_no_target(targets, jax.nn.log_sigmoid(logits))
    negative = _zero_where_no_target(1.0 - targets, jax.nn.log_sigmoid(-logits))
    return positive, negative


def _log_one_minus_pt(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log(1 - p_t) = log((1 - t) p + t (1 - p)) with p = sigmoid(logits), in log space.

    A two-term log-sum-exp weighted by (1 - t, t), handling hard and soft targets alike.
    Zero-weight terms and infinite logits are masked on both sides of the exp so that even
    logits of +-inf give a finite gradient (optax's version gives NaN there).
    """
    weights = (1.0 - targets, targets)
    terms = tuple(
        jnp.where(w > 0, log_s, -jnp.inf)
        for w, log_s in zip(weights, (jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)))
    )
    top = jax.lax.stop_gradient(jnp.maximum(*terms))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    total = sum(w * jnp.exp(term - top) for w, term in zip(weights, terms))
    positive = total > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, total, 1.0)) + top, -jnp.inf)


def _prepare_binary(loss: str, predictions, targets, reduction: str, where):
    logits, mask = _prepare_logits(
        loss, predictions, reduction, where, min_ndim=1, layout="(batch,) or (batch, C)"
    )
    targets = _validation.as_real_array(loss, "targets", targets)
    _validation.check_same_shape(loss, "predictions", logits, "targets", targets)
    return logits, _reduction.mask_rows(mask, targets.astype(logits.dtype)), mask


def binary_cross_entropy(
    predictions, targets, *, pos_weight=None, reduction: str = "mean", where=None
) -> jax.Array:
    """Sigmoid binary cross-entropy from logits: -(w+ t log s(x) + (1 - t) log s(-x)).

    s is the sigmoid, computed through ``jax.nn.log_sigmoid`` (never log(sigmoid(x)), where
    sigmoid underflows to 0, so log gives -inf, for x below about -88 in float32).
    ``pos_weight`` w+ multiplies only the positive term (use negatives / positives per class
    to balance), as in
    ``torch.nn.BCEWithLogitsLoss(pos_weight=...)``; without it the elementwise values are
    ``optax.losses.sigmoid_binary_cross_entropy``. For (batch, C) multi-label / one-vs-rest
    targets the per-example value is the MEAN over the C classes, so "mean" equals
    PyTorch's and Keras' mean over all N*C elements; "sum" is the sum of per-example means
    (PyTorch's "sum" is C times larger).

    Args:
      predictions: logits (batch,) or (batch, C) (or more trailing axes, all meaned).
      targets: same shape, values in [0, 1] (bool, integer or float).
      pos_weight: optional non-negative scalar or (C,) weight of the positive term.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import binary_cross_entropy
      >>> loss = binary_cross_entropy(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]))
      >>> print(f"{float(loss):.4f}")  # (log 2 + log(1 + e^2)) / 2
      1.4100
    """
    loss = "binary_cross_entropy"
    logits, targets, mask = _prepare_binary(loss, predictions, targets, reduction, where)
    weight = _targets.class_vector(loss, "pos_weight", pos_weight, logits, allow_scalar=True)
    positive, negative = _binary_terms(logits, targets)
    if weight is not None:
        positive = weight * positive
    per_example = _reduction.mean_over_trailing(-(positive + negative))
    return _reduction.reduce(per_example, reduction, mask)


def focal(
    predictions,
    targets,
    *,
    alpha=None,
    gamma: float = 2.0,
    multiclass: bool = False,
    reduction: str = "mean",
    where=None,
) -> jax.Array:
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t.

    Sigmoid form (``multiclass=False``, the default): every logit is an independent binary
    prediction, p = sigmoid(x), p_t = p if t = 1 else 1 - p (soft t mixes both), and
    alpha_t = alpha t + (1 - alpha)(1 - t) (no weighting when alpha is None). Same
    elementwise values as ``optax.losses.sigmoid_focal_loss`` and torchvision's
    ``sigmoid_focal_loss``; the detection default is alpha=0.25, gamma=2. Per example the
    elementwise values are MEANED over the classes, as in ``binary_cross_entropy``, so
    gamma=0 with alpha=None equals ``binary_cross_entropy`` exactly.

    Softmax form (``multiclass=True``): mutually exclusive classes, p = softmax(x), targets
    as in ``cross_entropy`` (integer labels or per-class probabilities), per example
    -sum_c alpha_c t_c (1 - p_c)^gamma log p_c, SUMMED over classes; alpha is None, a
    scalar, or per-class (C,) weights; "mean" divides by the kept count. gamma=0 with
    alpha=None equals ``cross_entropy`` exactly.

    (1 - p_t)^gamma is computed as exp(gamma log(1 - p_t)) with log(1 - p_t) taken in log
    space, so gradients stay finite for gamma < 1 and for logits of +-1e4.

    Args:
      predictions: logits (batch,) or (batch, C); (batch, ..., C) for multiclass.
      targets: sigmoid form: same shape as predictions, values in [0, 1]. Softmax form:
        integer labels predictions.shape[:-1] or probabilities predictions.shape.
      alpha: None, or the positive-class weight in [0, 1] (sigmoid); None, a scalar or (C,)
        non-negative per-class weights (softmax).
      gamma: focusing exponent >= 0.
      multiclass: False for the sigmoid form, True for the softmax form.
      reduction: "mean", "sum" or "none".
      where: optional boolean (batch,); False rows are ignored.

    Returns:
      Scalar, or (batch,) for reduction="none".

    Example:
      >>> import jax.numpy as jnp
      >>> from losses import focal
      >>> logits, labels = jnp.array([0.0, 3.0]), jnp.array([1.0, 1.0])
      >>> print(f"{float(focal(logits, labels, gamma=2.0)):.4f}")  # easy example down-weighted
      0.0867
      >>> print(f"{float(focal(jnp.zeros((1, 4)), jnp.array([2]), multiclass=True)):.4f}")
      0.7798
    """
    loss = "focal"
    _validation.check_range(loss, "gamma", gamma, low=0.0)
    if multiclass:
        return _softmax_focal(predictions, targets, alpha, gamma, reduction, where)
    logits, targets, mask = _prepare_binary(loss, predictions, targets, reduction, where)
    if alpha is not None:
        _validation.check_range(loss, "alpha", alpha, low=0.0, high=1.0)
        if np.ndim(alpha) != 0:
            raise ValueError(
                f"{loss}: alpha must be None or a scalar in [0, 1] for the sigmoid form, got "
                f"shape {np.shape(alpha)}; per-class weights need multiclass=True"
            )
    positive, negative = _binary_terms(logits, targets)
    log_one_minus_pt = _log_one_minus_pt(logits, targets)
    elementwise = -(positive + negative) * _targets.modulating_factor(log_one_minus_pt, gamma)
    if alpha is not None:
        elementwise = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * elementwise
    per_example = _reduction.mean_over_trailing(elementwise)
    return _reduction.reduce(per_example, reduction, mask)


def _softmax_focal(predictions, targets, alpha, gamma, reduction: str, where) -> jax.Array:
    loss = "focal"
    layout = "(batch, num_classes) when multiclass=True"
    logits, mask = _prepare_logits(loss, predictions, reduction, where, min_ndim=2, layout=layout)
    if logits.shape[-1] < 2:
        raise ValueError(
            f"{loss}: multiclass=True needs at least 2 classes, got predictions shape "
            f"{tuple(logits.shape)}; use multiclass=False for one binary logit"
        )
    probs, valid = _targets.class_targets(loss, logits, targets, mask)
    weights = _targets.class_vector(loss, "alpha", alpha, logits, allow_scalar=True)
    if weights is not None:
        probs = probs * weights
    factor = _targets.modulating_factor(_targets.log_one_minus_softmax(logits), gamma)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    per_position = -jnp.sum(factor * _zero_where_no_target(probs, log_probs), axis=-1)
    if valid is not None:
        per_position = jnp.where(valid, per_position, jnp.nan)
    per_example = _reduction.mean_over_trailing(per_position)
    return _reduction.reduce(per_example, reduction, mask)
