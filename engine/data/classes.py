"""Keeping a subset of the classes (`--classes`), renumbered 0..k-1 in the order given."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Relabeled:
    """The rows of `source` whose class `mapping` keeps, labels renumbered by `mapping`."""

    source: Any
    indices: np.ndarray
    mapping: np.ndarray  # old label -> new label (-1: dropped)

    @property
    def targets(self) -> np.ndarray:
        """The new labels of the kept rows."""
        return self.mapping[np.asarray(self.source.targets)[self.indices]]

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, indices: np.ndarray):
        """`(inputs, new labels)` of rows `indices`."""
        inputs, targets = self.source.get(self.indices[np.asarray(indices)])
        return inputs, self.mapping[targets].astype(np.int32)


def filter_classes(splits, classes: tuple[int, ...]):
    """`splits` restricted to `classes` (`--classes`), renumbered 0..k-1 in the order given.

    Raises:
      ValueError: a regression dataset, or a class the dataset does not have (one line).
    """
    info = splits.info
    if info.task != "classification":
        raise ValueError(f"--classes filters classes; {info.name} is a regression dataset")
    bad = [c for c in classes if not 0 <= c < info.num_classes]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(
            f"--classes={','.join(map(str, classes))} must list at least 2 distinct labels of "
            f"{info.name}'s 0..{info.num_classes - 1}"
        )
    mapping = np.full(info.num_classes, -1, np.int32)
    mapping[list(classes)] = np.arange(len(classes), dtype=np.int32)

    def keep(source):
        rows = np.flatnonzero(mapping[np.asarray(source.targets)] >= 0)
        return Relabeled(source, rows, mapping)

    names = info.class_names or tuple(str(i) for i in range(info.num_classes))
    new_info = dataclasses.replace(
        info, num_classes=len(classes), class_names=tuple(names[c] for c in classes)
    )
    return dataclasses.replace(
        splits,
        info=new_info,
        train=keep(splits.train),
        val=keep(splits.val),
        test=keep(splits.test),
    )
