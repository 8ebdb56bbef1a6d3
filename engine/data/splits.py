"""Train / validation / test splits (random stratified or by time) and k-fold folds (scikit-learn).

All splits are index views (`Subset`) of the loaded sources: nothing is copied or decoded, so they
work the same for in-memory arrays and for record files streamed from disk.
"""

from __future__ import annotations

import numpy as np

from engine.data.source import CLASSIFICATION, Dataset, Source, Splits, Subset

METHODS = ("random", "time")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def holdout_size(n: int, fraction: float, what: str) -> int:
    """round(n * fraction), checked to leave at least one row on each side.

    >>> holdout_size(1797, 0.3, "test")
    539
    """
    size = round(n * fraction)
    if size < 1 or size >= n:
        raise ValueError(
            f"{what} fraction {fraction} of {n} examples leaves an empty split; "
            f"use a fraction between {1 / n:.3g} and {1 - 1 / n:.3g} or more data"
        )
    return size


def _allocate(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Splits `size` over classes in proportion to `counts` (largest remainder; ties random).

    Every class gets floor or ceil of its exact share `counts * size / counts.sum()`, so class
    proportions are kept to within one example and the total is exactly `size`.
    """
    exact = counts * size / counts.sum()
    share = np.floor(exact).astype(np.int64)
    remainder = exact - share
    # Largest fractional parts first; a random key breaks ties without favouring low labels.
    order = np.lexsort((rng.random(len(counts)), -remainder))
    share[order[: size - share.sum()]] += 1
    return share


def holdout(
    targets: np.ndarray, size: int, rng: np.random.Generator, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Picks `size` rows to hold out, stratified by class when `stratify`.

    Args:
      targets: `(n,)` class labels (used only when `stratify`) or any `(n, ...)` array.
      size: number of rows to hold out, 0 < size < n.
      rng: the random generator (the only source of randomness).
      stratify: keep each class's proportion in both parts (within one example).

    Returns:
      `(kept, held)`: sorted row indices (file order) of the two parts.
    """
    n = len(targets)
    if stratify:
        classes, labels = np.unique(targets, return_inverse=True)
        counts = np.bincount(labels, minlength=len(classes))
        shares = _allocate(counts, size, rng)
        held = np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), shares[c], replace=False)
                for c in range(len(classes))
            ]
        )
    else:
        held = rng.choice(n, size, replace=False)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _holdout_source(
    source: Source,
    fraction: float,
    what: str,
    method: str,
    rng: np.random.Generator,
    stratify: bool,
) -> tuple[Source, Source]:
    """(rest, held) views of `source` with `fraction` of its rows held out."""
    n = len(source)
    size = holdout_size(n, fraction, what)
    if method == "time":  # the last rows in file order: nothing from the future leaks back
        return Subset(source, np.arange(n - size)), Subset(source, np.arange(n - size, n))
    kept, held = holdout(source.targets, size, rng, stratify)
    return Subset(source, kept), Subset(source, held)


def split(
    dataset: Dataset,
    *,
    test_fraction: float = 0.3,
    val_fraction: float = 0.1,
    seed: int = 0,
    method: str = "random",
    cv_folds: int = 0,
    fold: int = 0,
) -> Splits:
    """Train, validation and test splits of `dataset`.

    The dataset's own test (and validation) split is used when it has one. Otherwise
    `test_fraction` of the rows is held out as test, then `val_fraction` of the rest as
    validation. `method="random"` picks the rows at random, fixed by `seed`, stratified by class
    for classification (each class keeps its proportion within one example); `method="time"`
    takes the LAST rows in file order (test = the last `test_fraction`, validation = the
    `val_fraction` before it) so that no future row leaks into training.

    Args:
      dataset: a loaded dataset.
      test_fraction: share of all rows held out for test (when there is no own test split).
      val_fraction: share of the remaining rows held out for validation (no own val split).
      seed: fixes the random split.
      method: `"random"` or `"time"`.
      cv_folds, fold: with `cv_folds` > 0, fold `fold` (1-based) of `kfold` over the
        non-test rows gives train and validation (`val_fraction` is unused); `fold=-1` trains
        on all non-test rows and validates on those same rows (the refit after CV).

    Returns:
      The three splits as `Subset` views (or the dataset's own sources).
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; valid: {', '.join(METHODS)}")
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    stratify = dataset.info.task == CLASSIFICATION
    rest, test = dataset.train, dataset.test
    if test is None:
        rest, test = _holdout_source(rest, test_fraction, "test", method, rng, stratify)
    train, val = rest, dataset.val
    if cv_folds and fold:
        if val is not None:
            raise ValueError(
                f"{dataset.info.name} has its own validation split; --cv_folds folds the "
                "training rows of datasets without one"
            )
        if fold == -1:
            return Splits(info=dataset.info, train=rest, val=rest, test=test)
        fit, held = kfold(rest.targets, cv_folds, seed=seed, stratify=stratify, method=method)[
            fold - 1
        ]
        return Splits(info=dataset.info, train=Subset(rest, fit), val=Subset(rest, held), test=test)
    if val is None:
        train, val = _holdout_source(rest, val_fraction, "validation", method, rng, stratify)
    return Splits(info=dataset.info, train=train, val=val, test=test)


def kfold(
    targets: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    stratify: bool = True,
    method: str = "random",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) row indices of each of `k` folds, from scikit-learn's splitters.

    `method="random"`: `StratifiedKFold(k, shuffle=True, random_state=seed)` when
    `stratify` (classification), else `KFold` with the same arguments; every row is in
    exactly one validation fold. `method="time"`: `TimeSeriesSplit(k)`, expanding windows in
    row order: fold i trains on everything before its validation block, never on the future.

    >>> folds = kfold(np.array([0, 0, 0, 1, 1, 1]), 3)
    >>> [np.bincount(np.array([0, 0, 0, 1, 1, 1])[val]).tolist() for _, val in folds]
    [[1, 1], [1, 1], [1, 1]]
    """
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    n = len(targets)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= number of examples ({n}), got k={k}")
    if method == "time":
        splitter = TimeSeriesSplit(n_splits=k)
    elif stratify:  # a class with fewer than k rows is missing from some folds (as sklearn)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        return list(splitter.split(np.zeros((n, 1)), targets if stratify else None))
    except ValueError as e:  # e.g. TimeSeriesSplit with too few rows for k + 1 blocks
        raise ValueError(f"{k} folds of {n} rows: {str(e).splitlines()[0]}") from None
