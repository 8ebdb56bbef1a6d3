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

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from losses.classification import binary_cross_entropy, cross_entropy, focal
from losses.divergence import kl_divergence
from losses.metric_learning import triplet_margin
from losses.regression import huber, log_cosh, mae, mse, smooth_l1

__all__ = [
    "KINDS",
    "LossSpec",
    "binary_cross_entropy",
    "cross_entropy",
    "focal",
    "get",
    "huber",
    "kind",
    "kl_divergence",
    "log_cosh",
    "mae",
    "mse",
    "names",
    "register",
    "smooth_l1",
    "spec",
    "triplet_margin",
    "unregister",
]

# What each loss compares, so the engine knows which targets to hand it:
#   labels: logits (B, C) against integer class ids (B,);
#   one_hot: logits (B, C) against one-hot or soft targets (B, C) of the same shape;
#   values: real-valued predictions against real targets of the same shape (regression; on a
#     classification dataset the engine compares softmax probabilities with one-hot targets);
#   triplets: (anchor, positive, negative) embeddings.
KINDS = ("labels", "one_hot", "values", "triplets")


def _none_if_negative(value: float) -> float | None:
    """`--focal_alpha`'s convention: a negative value means no alpha weighting."""
    return None if value < 0 else value


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function and how a training engine calls it.

    Attributes:
      fn: the loss, following this package's conventions.
      kind: what targets it compares with (one of `KINDS`).
      hyperparameters: its keyword arguments set by the engine's settings: `{keyword:
        setting}` or `{keyword: (setting, convert)}` (e.g. huber's `delta` from `--delta`).
      fixed: keyword arguments always given (kl_divergence's `from_logits=True`).
      binary: on two classes it takes one logit (B, 1) against 0/1 targets (B, 1) (a sigmoid
        form), called without `fixed`.
      smooth: a `one_hot` loss's targets are smoothed by the label-smoothing setting.
      class_weights: it weighs each term by its class itself (takes `class_weights=`); else
        the engine weighs each example's value by its class's weight.
    """

    fn: Callable
    kind: str
    hyperparameters: Mapping[str, str | tuple[str, Callable[[Any], Any]]] = dataclasses.field(
        default_factory=dict
    )
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    binary: bool = False
    smooth: bool = True
    class_weights: bool = False


_REGISTRY: dict[str, LossSpec] = {
    "mse": LossSpec(mse, "values"),
    "mae": LossSpec(mae, "values"),
    "huber": LossSpec(huber, "values", {"delta": "delta"}),
    "smooth_l1": LossSpec(smooth_l1, "values", {"beta": "delta"}),
    "log_cosh": LossSpec(log_cosh, "values"),
    "cross_entropy": LossSpec(
        cross_entropy, "labels", {"label_smoothing": "label_smoothing"}, class_weights=True
    ),
    "binary_cross_entropy": LossSpec(binary_cross_entropy, "one_hot", binary=True, smooth=False),
    "focal": LossSpec(
        focal,
        "labels",
        {"gamma": "focal_gamma", "alpha": ("focal_alpha", _none_if_negative)},
        fixed={"multiclass": True},
        binary=True,
    ),
    "kl_divergence": LossSpec(kl_divergence, "one_hot", fixed={"from_logits": True}),
    "triplet_margin": LossSpec(triplet_margin, "triplets", {"margin": "margin"}),
}
BUILTIN = tuple(_REGISTRY)


def names(kind: str | None = None) -> tuple[str, ...]:
    """The registered loss names (of `kind`, if given), in registry order.

    >>> names("values")
    ('mse', 'mae', 'huber', 'smooth_l1', 'log_cosh')
    """
    return tuple(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def spec(name: str) -> LossSpec:
    """The registration of loss ``name``.

    Raises:
      ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def get(name: str) -> Callable:
    """Returns the loss function registered as ``name``.

    Raises:
      ValueError: ``name`` is not registered; the message lists the valid names.
    """
    return spec(name).fn


def kind(name: str) -> str:
    """The kind of targets the loss registered as ``name`` expects (one of ``KINDS``).

    >>> kind("cross_entropy"), kind("huber")
    ('labels', 'values')
    """
    return spec(name).kind


def name_of(fn: Callable) -> str | None:
    """The name ``fn`` is registered under, or None."""
    return next((n for n, s in _REGISTRY.items() if s.fn is fn), None)


def check_loss(fn: Callable, kind: str, *, what: str = "loss") -> None:
    """Raises a one-line ValueError unless ``fn`` can be called as a loss of ``kind``.

    A loss must be callable and accept the keyword arguments ``reduction`` and ``where`` (the
    conventions above), and ``kind`` must be one of ``KINDS``.
    """
    if not callable(fn):
        raise ValueError(f"{what} must be a function, got {fn!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; valid: {', '.join(KINDS)}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [k for k in ("reduction", "where") if k not in params]
    if missing:
        raise ValueError(
            f"{what} {getattr(fn, '__name__', fn)!r} must accept the keyword arguments "
            f"reduction and where (missing: {', '.join(missing)}), like the losses in this package"
        )


def register(
    name: str,
    fn: Callable,
    *,
    kind: str,
    hyperparameters: Mapping[str, Any] | None = None,
    **how: Any,
) -> Callable:
    """Registers ``fn`` as the loss ``name``, usable as ``--loss=name`` and ``losses.get(name)``.

    Args:
      name: a new name (letters, digits and underscores).
      fn: ``fn(predictions, targets, *, reduction="mean", where=None)`` following the package's
        conventions (per-example values with ``reduction="none"``, ``where`` masks rows).
      kind: what targets it compares with, one of ``KINDS``.
      hyperparameters: its keyword arguments the engine sets from its settings, ``{keyword:
        setting}`` (e.g. ``{"delta": "delta"}``); see ``LossSpec``.
      **how: the other ``LossSpec`` fields (``fixed``, ``binary``, ``smooth``,
        ``class_weights``).

    Returns:
      ``fn`` unchanged, so ``register`` also works as a decorator's body.

    Raises:
      ValueError: one line naming a taken or malformed name, an unknown kind, or a function that
        does not take ``reduction`` and ``where``.

    >>> import jax.numpy as jnp
    >>> def cubed(predictions, targets, *, reduction="mean", where=None):
    ...     return mse(predictions**3, targets, reduction=reduction, where=where)
    >>> _ = register("doc_cubed", cubed, kind="values")
    >>> float(get("doc_cubed")(jnp.array([2.0]), jnp.array([0.0])))
    64.0
    >>> register("mse", cubed, kind="values")
    Traceback (most recent call last):
    ValueError: loss 'mse' is already registered; choose another name
    >>> unregister("doc_cubed")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"loss name must be a Python identifier (letters, digits _), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered; choose another name")
    check_loss(fn, kind, what=f"loss {name!r}")
    _REGISTRY[name] = LossSpec(fn, kind, dict(hyperparameters or {}), **how)
    return fn


def unregister(name: str) -> None:
    """Removes a loss added with ``register`` (built-in losses cannot be removed)."""
    if name in BUILTIN:
        raise ValueError(f"loss {name!r} is built in and cannot be unregistered")
    spec(name)
    del _REGISTRY[name]
