"""The data settings: the dataset, its split, preprocessing, augmentation and the loader."""

from __future__ import annotations

import dataclasses

from engine.config.fields.rules import at_least
from engine.config.schema import setting
from engine.data import augment, sources


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Data:
    """The dataset and how it is read (the "data" group)."""

    dataset: str = setting(
        sources.DEFAULT,
        lambda: f"the dataset: {sources.describe()}",
        group="data",
        model=True,
    )
    data_dir: str = setting(
        "",
        "where datasets are prepared and read (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
        group="data",
        evaluation=True,
    )
    target: str = setting("", "the column to predict for a csv: dataset", group="data", model=True)
    classes: tuple[int, ...] = setting(
        (),
        "classification: keep only these comma-separated labels, renumbered 0..k-1 in the "
        "order given (e.g. --classes=5,6,7,8,9); empty: all",
        group="data",
        model=True,
    )
    test_fraction: float = setting(
        0.3,
        "fraction held out for testing when the dataset has no test split",
        group="data",
        check=(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    )
    val_fraction: float = setting(
        0.1,
        "fraction of the remaining rows held out for validation",
        group="data",
        check=(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    )
    split: str = setting(
        "random",
        "how to hold out rows (time: the last rows)",
        group="data",
        choices=("random", "time"),
    )
    normalize: str = setting(
        "standard",
        "input normalisation from training statistics",
        group="data",
        choices=("standard", "minmax", "symmetric", "none"),
        model=True,
    )
    balance: str = setting(
        "none",
        "class balancing of the training split",
        group="data",
        choices=("none", "oversample"),
    )
    class_weights: str = setting(
        "none", "loss weights per class", group="data", choices=("none", "balanced")
    )
    augment: str = setting(
        "none", "training-time augmentation on device", group="data", choices=augment.names
    )
    image_size: int = setting(
        0,
        "resize images to this size (0: the architecture's minimum or the data's size)",
        group="data",
        check=at_least(0, " (0: automatic)"),
        model=True,
    )
    skip_bad_files: bool = setting(
        False, "skip unreadable images in folder: datasets (counted in a warning)", group="data"
    )
    streaming: str = setting(
        "auto",
        "input pipeline (stream: grain workers)",
        group="data",
        choices=("auto", "memory", "stream"),
        evaluation=True,
    )
    num_workers: int = setting(
        2,
        "grain worker processes for the streaming pipeline",
        group="data",
        check=at_least(0),
        evaluation=True,
    )
