"""Statistics of the training split: input and target normalisation, class counts and balance.

Normalisation is `(x - shift) / scale`, applied on the device; the numbers come from the training
split only, so validation and test never influence training.
"""

from __future__ import annotations

import numpy as np

from engine.data.source import Source, Subset

NORMALIZATIONS = ("standard", "minmax", "symmetric", "none")
# Inputs of at most this many examples (evenly spaced over the split) are read for the input
# statistics: exact for small data, a tight estimate for big streamed data (e.g. ImageNet), and
# bounded in cost either way.
MAX_STAT_EXAMPLES = 10_000
_CHUNK = 1_024  # examples read at once


def _stat_indices(n: int, max_examples: int) -> np.ndarray:
    if n <= max_examples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_examples).round().astype(np.int64))


def _safe(scale: np.ndarray) -> np.ndarray:
    """Constant features (scale 0) get scale 1, so `(x - shift) / scale` never divides by 0."""
    return np.where(scale > 0, scale, 1.0)


def normalization(
    source: Source, method: str, *, max_examples: int = MAX_STAT_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images) or per-feature (tables) `(shift, scale)` for `(x - shift) / scale`.

    Statistics reduce over every axis but the last (N, H, W for images; N for tables), in
    float64, over the whole split or over at most `max_examples` evenly spaced examples.

    - standard: shift = mean, scale = population std (ddof 0), giving mean 0 and std 1;
    - minmax: shift = min, scale = max - min, giving [0, 1];
    - symmetric: shift = (max + min) / 2, scale = (max - min) / 2, giving [-1, 1];
    - none: shift = 0, scale = 1.

    A zero scale (a constant feature) is replaced by 1, leaving the feature at `x - shift`.

    Args:
      source: the training split.
      method: one of `NORMALIZATIONS`.
      max_examples: cap on the examples read.

    Returns:
      `(shift, scale)`, float32 arrays of shape `(C,)` (images) or `(D,)` (tables).

    >>> from engine.data.source import ArraySource
    >>> x = np.array([[0.0, 2.0], [4.0, 2.0]], np.float32)
    >>> src = ArraySource(x, np.zeros(2, np.int32))
    >>> [a.tolist() for a in normalization(src, "standard")]
    [[2.0, 2.0], [2.0, 1.0]]
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; valid: {', '.join(NORMALIZATIONS)}")
    if len(source) == 0:
        raise ValueError("cannot compute normalisation statistics of an empty split")
    indices = _stat_indices(len(source), max_examples)
    count, mean, m2 = 0, 0.0, 0.0
    low, high = np.inf, -np.inf
    for start in range(0, len(indices), _CHUNK):
        x, _ = source.get(indices[start : start + _CHUNK])
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(-1, x.shape[-1])  # rows of channels / features
        # Chan et al.'s pairwise update of mean and sum of squared deviations: stable in one
        # pass over chunks (no E[x^2] - E[x]^2 cancellation).
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta**2 * count * n_b / total
        count = total
        low, high = np.minimum(low, x.min(axis=0)), np.maximum(high, x.max(axis=0))
    if method == "standard":
        shift, scale = mean, _safe(np.sqrt(m2 / count))
    elif method == "minmax":
        shift, scale = low, _safe(high - low)
    elif method == "symmetric":
        shift, scale = (high + low) / 2, _safe((high - low) / 2)
    else:
        shift, scale = np.zeros_like(mean), np.ones_like(mean)
    return np.asarray(shift, np.float32), np.asarray(scale, np.float32)


def target_normalization(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0; 0 replaced by 1) of regression targets, each of shape `(d,)`."""
    targets = np.asarray(source.targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) == 0:
        raise ValueError(
            f"target normalisation needs regression targets of shape (n, d), got {targets.shape}"
        )
    return (
        targets.mean(axis=0).astype(np.float32),
        _safe(targets.std(axis=0)).astype(np.float32),
    )


def _labels(source: Source, num_classes: int) -> np.ndarray:
    labels = np.asarray(source.targets)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"class statistics need integer class labels of shape (n,), got {labels.dtype} "
            f"{labels.shape}: is this a regression dataset?"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}"
        )
    return labels


def class_counts(source: Source, num_classes: int) -> np.ndarray:
    """Examples per class, `(num_classes,)` int64 (read from the targets; no inputs decoded)."""
    return np.bincount(_labels(source, num_classes), minlength=num_classes)


def balanced_class_weights(source: Source, num_classes: int) -> np.ndarray:
    """Inverse-frequency class weights, `(num_classes,)` float32.

    weight_c = n_samples / (n_classes * count_c), scikit-learn's `class_weight="balanced"`
    formula (`sklearn.utils.class_weight.compute_class_weight`), so every class contributes the
    same total weight. A class absent from the split (scikit-learn raises there) gets weight 1:
    it never weighs a training example, and validation losses stay unweighted for it.
    """
    counts = class_counts(source, num_classes)
    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (num_classes * counts[present])
    return weights.astype(np.float32)


def oversample(source: Source, seed: int) -> Subset:
    """Repeats minority-class rows until every class has as many rows as the largest one.

    Each class's rows are repeated whole as often as they fit, and the rest of its quota is a
    random selection without replacement, fixed by `seed`; so rows of one class appear k or k+1
    times. Use on the training split only.

    Returns:
      A view of `source` with every class at the majority count, rows in file order.

    >>> from engine.data.source import ArraySource
    >>> src = ArraySource(np.zeros((4, 1)), np.array([0, 0, 0, 1], np.int32))
    >>> oversample(src, seed=0).indices.tolist()
    [0, 1, 2, 3, 3, 3]
    """
    labels = np.asarray(source.targets)
    if len(labels) == 0:
        raise ValueError("cannot oversample an empty split")
    labels = _labels(source, int(labels.max()) + 1)
    counts = np.bincount(labels)
    target = counts.max()
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.flatnonzero(counts):
        rows = np.flatnonzero(labels == c)
        repeats, extra = divmod(int(target), len(rows))
        picked.append(np.tile(rows, repeats))
        picked.append(rng.choice(rows, extra, replace=False))
    return Subset(source, np.sort(np.concatenate(picked)))


def imbalance_warning(counts, class_names=None) -> str | None:
    """A one-line warning when the largest class has more than 3x the rows of the smallest.

    >>> imbalance_warning(np.array([90, 10]))[:67]
    'class imbalance: largest class 0 has 90 examples, smallest 1 has 10'
    >>> imbalance_warning(np.array([50, 40])) is None
    True
    """
    counts = np.asarray(counts)
    if len(counts) < 2:
        return None
    big, small = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[big] <= 3 * counts[small]:
        return None
    names = class_names if class_names is not None else [str(c) for c in range(len(counts))]
    ratio = f"{counts[big] / counts[small]:.1f}x" if counts[small] else "no examples"
    return (
        f"class imbalance: largest class {names[big]} has {counts[big]} examples, "
        f"smallest {names[small]} has {counts[small]} ({ratio}); "
        "consider --balance=oversample or --class_weights=balanced"
    )
