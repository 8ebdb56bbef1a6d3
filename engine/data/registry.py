"""Dataset names to loaders: embedded scikit-learn sets, `folder:PATH`, `csv:PATH`, TFDS catalog."""

from __future__ import annotations

import os

from engine.data.source import Dataset

# The sets that ship inside scikit-learn (engine.data.embedded.NAMES; repeated here so that
# listing names for --help does not import TFDS). `digits` is the default dataset.
EMBEDDED = ("digits", "breast_cancer", "diabetes", "iris", "wine")
DEFAULT = "digits"
# The embedded sets whose rows are feature vectors (digits is 8 x 8 images).
EMBEDDED_TABLES = ("breast_cancer", "diabetes", "iris", "wine")


def default_data_dir() -> str:
    """Where prepared datasets live when no directory is given.

    `$TFDS_DATA_DIR`, else TFDS' own default `~/tensorflow_datasets`, so catalog datasets
    prepared by other tools are found there.
    """
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def dataset_names() -> tuple[str, ...]:
    """The embedded dataset names (for --help and error messages).

    >>> dataset_names()
    ('digits', 'breast_cancer', 'diabetes', 'iris', 'wine')
    """
    return EMBEDDED


def is_table(name: str) -> bool:
    """Whether dataset `name`'s inputs are feature vectors (N, D), known from the name alone.

    The embedded tables and `csv:` files are; folders and TFDS catalog sets (image
    classification) are images. Read before any data is loaded, so an architecture's recipe
    for tables (`ArchSpec.table_recipe`) can apply while the flags are validated.

    >>> is_table("wine"), is_table("csv:/data/x.csv"), is_table("digits"), is_table("cifar10")
    (True, True, False, False)
    """
    return name in EMBEDDED_TABLES or name.startswith("csv:")


def load(
    name: str,
    *,
    data_dir: str | None,
    target: str | None = None,
    image_size: int | None = None,
    skip_bad_files: bool = False,
) -> Dataset:
    """Loads dataset `name`, preparing it into `data_dir` the first time.

    Args:
      name: an embedded set (`dataset_names()`), `folder:PATH` (one sub-folder per class),
        `csv:PATH` (a table; needs `target`), or any TFDS builder name with an optional
        `:version` and config (`cifar10`, `mnist:3.0.1`).
      data_dir: root directory of prepared datasets; None means `default_data_dir()`.
      target: the target column of a CSV table.
      image_size: side length images of a folder (or catalog) dataset are resized to.
      skip_bad_files: skip (and count) unreadable images of a folder dataset instead of stopping.

    Returns:
      The dataset's description and its own splits (test/val None when it has none).
    """
    if not name:
        raise ValueError(f"empty dataset name; give one of {', '.join(EMBEDDED)}, or a TFDS name")
    if data_dir is None:
        data_dir = default_data_dir()
    kind, _, path = name.partition(":")
    if kind == "folder" and path:
        from engine.data import folder

        return folder.load(
            path, data_dir=data_dir, image_size=image_size, skip_bad_files=skip_bad_files
        )
    if kind == "csv" and path:
        from engine.data import table

        return table.load(path, target=target, data_dir=data_dir)
    if kind in ("folder", "csv"):
        raise ValueError(f"dataset {name!r} needs a path after the colon, e.g. {kind}:/data/x")
    if name in EMBEDDED:
        from engine.data import embedded

        return embedded.load(name, data_dir=data_dir)
    from engine.data import catalog

    return catalog.load(name, data_dir=data_dir, image_size=image_size)
