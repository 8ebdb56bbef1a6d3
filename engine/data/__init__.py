"""Datasets by name, train/val/test splits, training-split statistics and batch loaders.

Typical use (what `engine.workflows.build` does)::

    dataset = data.load("digits", data.Options(data_dir=data_dir))
    splits = data.split(dataset, test_fraction=0.3, val_fraction=0.1, seed=0)
    shift, scale = data.normalization(splits.train, "standard")
    train = data.make_loader(splits.train, batch_size=64, shuffle=True, seed=0)
    for batch in train.epoch(0):  # {"inputs", "targets", "mask"}
        ...
"""

# The built-in sources register themselves (`engine.data.sources`); the fallback comes last.
from engine.data import catalog, embedded, folder, table  # noqa: F401
from engine.data.loader import Loader, make_loader
from engine.data.source import (
    CLASSIFICATION,
    REGRESSION,
    ArraySource,
    Dataset,
    DatasetInfo,
    FeatureDecoder,
    RecordSource,
    Source,
    Splits,
    Subset,
)
from engine.data.sources import DEFAULT, Options, dataset_names, default_data_dir, load
from engine.data.splits import kfold, split
from engine.data.stats import (
    NORMALIZATIONS,
    balanced_class_weights,
    class_counts,
    imbalance_warning,
    normalization,
    oversample,
    target_normalization,
)

__all__ = [
    "CLASSIFICATION",
    "DEFAULT",
    "NORMALIZATIONS",
    "REGRESSION",
    "ArraySource",
    "Dataset",
    "DatasetInfo",
    "FeatureDecoder",
    "Loader",
    "Options",
    "RecordSource",
    "Source",
    "Splits",
    "Subset",
    "balanced_class_weights",
    "class_counts",
    "dataset_names",
    "default_data_dir",
    "imbalance_warning",
    "kfold",
    "load",
    "make_loader",
    "normalization",
    "oversample",
    "split",
    "target_normalization",
]
