"""What every data format produces: a dataset description and random-access example sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known before any example is read.

    Attributes:
      name: the name the user gave (`digits`, `cifar10`, `folder:/photos`, `csv:prices.csv`).
      task: `"classification"` or `"regression"`.
      input_shape: shape of one example, `(H, W, C)` for images, `(D,)` for tables.
      num_classes: number of classes (classification), else 0.
      target_dim: number of regression targets (regression), else 0.
      class_names: one name per class, in label order (classification).
      feature_names: one name per input column (tables), else empty.
      time_ordered: rows are in time order, so a `time` split is meaningful.
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int = 0
    target_dim: int = 0
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    time_ordered: bool = False

    @property
    def is_image(self) -> bool:
        """True when one example is an `(H, W, C)` image."""
        return len(self.input_shape) == 3


class Source(Protocol):
    """Random access to the examples of one split.

    `get(indices)` returns `(inputs, targets)` as NumPy arrays: inputs `(n, *input_shape)` (float32,
    or uint8 for images kept compact) and targets `(n,)` int32 for classification or `(n, d)`
    float32 for regression. `targets` holds every target of the split (needed for stratified
    splits, class counts and balancing without decoding inputs).
    """

    targets: np.ndarray

    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(inputs, targets)` of rows `indices` (`(n,)` ints), in that order."""
        ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Examples held in memory as two aligned arrays."""

    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self):
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"inputs and targets differ in length: {len(self.inputs)} vs {len(self.targets)}"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(inputs, targets)` of rows `indices`, in that order."""
        return self.inputs[indices], self.targets[indices]


@dataclasses.dataclass(frozen=True)
class RecordSource:
    """Examples read on demand from a random-access record store (a `tfds.data_source` split).

    Attributes:
      records: anything with `len()` and `__getitem__(int) -> record` (and ideally
        `__getitems__(list) -> list`), such as tfds' `ArrayRecordDataSource`.
      decode: turns one record into `(input, target)` NumPy values.
      targets: every target of the split, in record order.
    """

    records: Sequence[Any]
    decode: Callable[[Any], tuple[np.ndarray, Any]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(inputs, targets)` of rows `indices`, read and decoded in one batch."""
        idx = [int(i) for i in indices]
        getitems = getattr(self.records, "__getitems__", None)
        rows = getitems(idx) if getitems else [self.records[i] for i in idx]
        pairs = [self.decode(r) for r in rows]
        inputs = np.stack([p[0] for p in pairs])
        targets = np.asarray([p[1] for p in pairs], dtype=self.targets.dtype)
        return inputs, targets


@dataclasses.dataclass(frozen=True)
class FeatureDecoder:
    """A picklable `RecordSource.decode` for records that are dicts of NumPy values.

    Being a plain dataclass of a module that worker processes can import, it travels to grain's
    spawned workers by reference (a lambda or a test-local function would not).

    >>> FeatureDecoder("image", "label")({"image": np.zeros((2, 2, 1)), "label": 3})[1]
    3
    """

    input_key: str = "input"
    target_key: str = "target"

    def __call__(self, record: Any) -> tuple[np.ndarray, Any]:
        """`(input, target)` of one record."""
        return np.asarray(record[self.input_key]), record[self.target_key]


@dataclasses.dataclass(frozen=True)
class Subset:
    """A view of some rows of another source (a split of it), in the given order."""

    source: Source
    indices: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        """The targets of the viewed rows, in view order."""
        return self.source.targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(inputs, targets)` of rows `indices`, in that order."""
        return self.source.get(self.indices[np.asarray(indices)])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its description and the splits it ships with.

    `test` (and `val`) are None when the dataset has no such split of its own; the engine then
    holds out fractions of `train` (see `engine.data.splits`).
    """

    info: DatasetInfo
    train: Source
    test: Source | None = None
    val: Source | None = None


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three splits a run uses: fit on train, pick checkpoints on val, report test once."""

    info: DatasetInfo
    train: Source
    val: Source
    test: Source
