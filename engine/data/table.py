"""A CSV table as a dataset: numeric and one-hot features, a target column, rows in file order.

Rules (all printed or warned when they change the data, never applied silently):

- The first row names the columns. The delimiter is sniffed among `,` `;` tab and `|`.
- Missing values: empty cells and `NA`, `N/A`, `NaN`, `null`, `None`, `?` (any case), and
  infinite numbers. A feature column's missing cells are imputed with the column mean (numeric)
  or its most frequent value (categorical), computed over the whole file, and a warning names
  every such column with its count. Rows whose target is missing are dropped, with a warning.
  A column with no value at all is dropped, with a warning.
- A column is numeric when every non-missing cell parses as a number, else categorical.
  Categorical feature columns are one-hot encoded, one 0/1 column per distinct value in sorted
  order, named `column=value`. A categorical column with more than `MAX_CATEGORIES` distinct
  values (an id, a free-text or a date column) is dropped with a warning: encode it as numbers
  to use it.
- The target decides the task: a non-numeric target, or an integer-valued numeric target with
  at most `MAX_INTEGER_CLASSES` distinct values that repeat (at most half as many distinct
  values as rows), is classification (classes in sorted order); anything else is regression
  (`(N, 1)` float32 targets). `task=` overrides the rule; the decision is printed.
- Rows keep their file order (`time_ordered=True`), so `split(method="time")` holds out the last
  rows. Tables are small and parsed on every load, so `data_dir` is not used.
"""

from __future__ import annotations

import csv
import os
import warnings

import numpy as np

from engine.data import sources
from engine.data.source import CLASSIFICATION, REGRESSION, ArraySource, Dataset, DatasetInfo

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MAX_CATEGORIES = 50
MAX_INTEGER_CLASSES = 20


def _read(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file (cells stripped), with a one-line error for bad files."""
    if not os.path.isfile(path):
        raise ValueError(f"CSV file {path!r} does not exist; give csv:PATH to an existing file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(65536)
            handle.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel  # one column, or nothing to sniff: plain commas
            rows = [[cell.strip() for cell in row] for row in csv.reader(handle, dialect)]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"CSV file {path!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save it as UTF-8"
        ) from None
    rows = [row for row in rows if any(row)]  # blank lines
    if len(rows) < 2:
        raise ValueError(f"CSV file {path!r} needs a header row and at least one data row")
    header = [name or f"column_{i}" for i, name in enumerate(rows[0])]
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise ValueError(f"CSV file {path!r} repeats column names {duplicates}; rename them")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(
                f"CSV file {path!r}: data row {line} has {len(row)} cells, "
                f"the header has {len(header)}"
            )
    return header, rows[1:]


def _column(cells: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(missing mask, float64 values or None when the column is not numeric)."""
    raw = np.asarray(cells, dtype=str)
    missing = np.isin(np.char.lower(raw), list(MISSING))
    try:
        values = np.full(len(raw), np.nan)
        values[~missing] = raw[~missing].astype(np.float64)
    except ValueError:
        return missing, None
    missing |= ~np.isfinite(values)
    return missing, values


def _target(
    name: str, cells: np.ndarray, values: np.ndarray | None, task: str | None
) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """(task, targets, class names) of the target column, by the rule in the module docstring."""
    integer = values is not None and bool(np.all(values == np.round(values)))
    if task is None:
        few = integer and len(np.unique(values)) <= min(MAX_INTEGER_CLASSES, len(values) // 2)
        task = CLASSIFICATION if values is None or few else REGRESSION
    if task == REGRESSION:
        if values is None:
            raise ValueError(f"target column {name!r} is not numeric; it cannot be regressed")
        return task, values.astype(np.float32)[:, None], ()
    if task != CLASSIFICATION:
        raise ValueError(f"unknown task {task!r}; valid: {CLASSIFICATION}, {REGRESSION}")
    if values is not None and integer:
        classes, labels = np.unique(values, return_inverse=True)
        names = tuple(str(int(c)) for c in classes)
    elif values is not None:
        classes, labels = np.unique(values, return_inverse=True)
        names = tuple(str(c) for c in classes)
    else:
        classes, labels = np.unique(cells, return_inverse=True)
        names = tuple(str(c) for c in classes)
    return task, labels.astype(np.int32), names


def _features(header: list[str], columns: dict, target: str, keep: np.ndarray):
    """The feature columns of the rows `keep`: numbers as they are, text one-hot encoded.

    Returns `(blocks, feature_names, imputed, dropped)`: `(N, d)` float64 blocks, a name for
    each of their columns, and the notes on imputed and dropped columns for the warnings.
    """
    blocks, feature_names, imputed, dropped = [], [], [], []
    for name in header:
        if name == target:
            continue
        missing, values = _column(columns[name])
        missing, cells = missing[keep], np.asarray(columns[name], dtype=str)[keep]
        if missing.all():
            dropped.append(f"{name} (empty)")
            continue
        if values is not None:
            values = values[keep]
            if missing.any():
                values[missing] = values[~missing].mean()
                imputed.append(f"{name}: {int(missing.sum())} (mean)")
            blocks.append(values[:, None])
            feature_names.append(name)
            continue
        categories, counts = np.unique(cells[~missing], return_counts=True)
        if len(categories) > MAX_CATEGORIES:
            dropped.append(f"{name} ({len(categories)} distinct text values)")
            continue
        if missing.any():
            cells = cells.copy()
            cells[missing] = categories[np.argmax(counts)]  # the first of the most frequent
            imputed.append(f"{name}: {int(missing.sum())} (most frequent)")
        blocks.append((cells[:, None] == categories[None, :]).astype(np.float64))
        feature_names.extend(f"{name}={c}" for c in categories)
    return blocks, feature_names, imputed, dropped


def load(
    path: str, *, target: str | None, data_dir: str | None = None, task: str | None = None
) -> Dataset:
    """Loads the CSV table at `path` with `target` as the target column.

    Args:
      path: a CSV file with a header row.
      target: the target column's name (as in the header).
      data_dir: unused (tables are parsed on every load); accepted so every format shares
        `load`'s signature.
      task: `"classification"` or `"regression"` to override the rule in the module docstring.

    Returns:
      A `Dataset` with one in-memory `train` split: inputs `(N, D)` float32, targets `(N,)` int32
      class indices or `(N, 1)` float32; `info.feature_names` names the `D` columns.

    Raises:
      ValueError: missing file or target column (the message lists the columns), ragged rows,
        no usable feature column.
    """
    del data_dir
    header, rows = _read(path)
    if not target or target not in header:
        what = "no --target column given" if not target else f"no column {target!r}"
        raise ValueError(f"CSV file {path!r} has {what}; its columns are: {', '.join(header)}")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}

    target_missing, target_values = _column(columns[target])
    keep = ~target_missing
    if not keep.any():
        raise ValueError(f"target column {target!r} of {path!r} has no values")
    if target_missing.any():
        warnings.warn(
            f"{path}: dropped {int(target_missing.sum())} of {len(rows)} rows whose target "
            f"{target!r} is missing",
            stacklevel=2,
        )
    target_cells = np.asarray(columns[target], dtype=str)[keep]
    task, targets, class_names = _target(
        target, target_cells, None if target_values is None else target_values[keep], task
    )

    blocks, feature_names, imputed, dropped = _features(header, columns, target, keep)
    if imputed:
        warnings.warn(
            f"{path}: missing values imputed over the whole file in {len(imputed)} column(s): "
            + "; ".join(imputed),
            stacklevel=2,
        )
    if dropped:
        warnings.warn(
            f"{path}: dropped column(s) {', '.join(dropped)}; text columns with more than "
            f"{MAX_CATEGORIES} values are not one-hot encoded (convert them to numbers)",
            stacklevel=2,
        )
    if not blocks:
        raise ValueError(f"CSV file {path!r} has no usable feature column besides {target!r}")
    inputs = np.concatenate(blocks, axis=1).astype(np.float32)

    if task == CLASSIFICATION:
        what = f"classification, {len(class_names)} classes ({', '.join(class_names[:10])}"
        what += ", ...)" if len(class_names) > 10 else ")"
    else:
        what = "regression"
    print(
        f"{path}: {len(inputs)} rows, {inputs.shape[1]} features; target {target!r}: {what} "
        f"(rule: text, or integers with at most {MAX_INTEGER_CLASSES} repeated values -> "
        "classification)"
    )
    info = DatasetInfo(
        name=f"csv:{path}",
        task=task,
        input_shape=(inputs.shape[1],),
        num_classes=len(class_names),
        target_dim=1 if task == REGRESSION else 0,
        class_names=class_names,
        feature_names=tuple(feature_names),
        time_ordered=True,
    )
    return Dataset(info=info, train=ArraySource(inputs, targets))


sources.register(
    sources.Source(
        "csv",
        "csv:PATH with --target=COLUMN (a table)",
        lambda path, options: load(path, target=options.target or None, data_dir=options.data_dir),
        prefix=True,
        needs_target=True,
    )
)
