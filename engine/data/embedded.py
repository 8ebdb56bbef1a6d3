"""scikit-learn's bundled datasets as TFDS builders, prepared once into a data directory.

The five sets that ship inside scikit-learn (no network needed) are written as array_record
files by ordinary `tfds.core.GeneratorBasedBuilder` subclasses and read back through the
builder's random-access data source (no TensorFlow). They are tiny, so the whole split is then
held in memory as an `ArraySource`.

Builder names carry a `sklearn_` prefix so they never collide with TFDS catalog names (TFDS has
its own `iris` and `wine_quality`). The builders are not added to TFDS' global registry: they are
only reached through `load()`, which keeps `tfds.builder(name)` lookups (the catalog path) clean
and lets the module be imported twice (doctest collection) without a registration clash.

Concurrency: TFDS already writes into a temporary `incomplete.*` directory and renames it into
place, but two processes preparing at once would both generate and the second rename fails. So
preparation holds an exclusive `fcntl` lock on `<data_dir>/sklearn_<name>.lock`; the second
process waits, then finds the data prepared and reuses it.
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from engine.data import sources
from engine.data.locking import exclusive
from engine.data.source import CLASSIFICATION, REGRESSION, ArraySource, Dataset, DatasetInfo

# The sets that ship inside scikit-learn; `digits` (8 x 8 images) is the default dataset.
NAMES = ("digits", "breast_cancer", "diabetes", "iris", "wine")


def _sklearn_bunch(name: str):
    """The scikit-learn `Bunch` of one embedded set (imported lazily: sklearn is slow to import)."""
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,  # scaled=True (sklearn default): centred features
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
    }[name]
    return loader()


def _arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) exactly as the builder stores them, straight from scikit-learn."""
    bunch = _sklearn_bunch(name)
    if name == "digits":
        inputs = bunch.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
    else:
        inputs = bunch.data.astype(np.float32)
    if name == "diabetes":
        targets = bunch.target.astype(np.float32)[:, None]  # raw disease progression, (442, 1)
    else:
        targets = bunch.target.astype(np.int64)
    return inputs, targets


# Static facts, so that reading a prepared set never imports scikit-learn (~1 s); the tests check
# them against scikit-learn. (input shape, class names; () for the regression set).
_SHAPES = {
    "digits": (8, 8, 1),
    "breast_cancer": (30,),
    "diabetes": (10,),
    "iris": (4,),
    "wine": (13,),
}
_CLASS_NAMES = {
    "digits": tuple(str(d) for d in range(10)),
    "breast_cancer": ("malignant", "benign"),
    "diabetes": (),
    "iris": ("setosa", "versicolor", "virginica"),
    "wine": ("class_0", "class_1", "class_2"),
}


class _SklearnBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One scikit-learn set, one `train` split, examples in scikit-learn's row order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First version: scikit-learn's bundled data, row order kept."
    }
    SKLEARN_NAME = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """No source-tree path: there are no checksum files to find next to this module.

        TFDS' default resolves it through `importlib_resources`, which is not installed (and not
        needed) on Python 3.11, and fails for builders defined outside TFDS' own tree.
        """
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        if self.SKLEARN_NAME == "diabetes":
            target = tfds.features.Tensor(shape=(1,), dtype=np.float32)
        else:
            target = tfds.features.ClassLabel(names=_CLASS_NAMES[self.SKLEARN_NAME])
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"scikit-learn's bundled `{self.SKLEARN_NAME}` dataset.",
            features=tfds.features.FeaturesDict(
                {
                    "input": tfds.features.Tensor(
                        shape=_SHAPES[self.SKLEARN_NAME], dtype=np.float32
                    ),
                    "target": target,
                }
            ),
            supervised_keys=("input", "target"),
            # Filled at preparation, saved as metadata.json, restored on every later load.
            metadata=tfds.core.MetadataDict(),
            # Keep scikit-learn's row order so `split(method="time")` and tests see file order.
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships inside scikit-learn
        bunch = _sklearn_bunch(self.SKLEARN_NAME)
        # Images have no named columns (sklearn's digits lists 64 pixel names; not kept).
        names = [] if self.SKLEARN_NAME == "digits" else bunch.feature_names
        self.info.metadata["feature_names"] = [str(n) for n in names]
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        inputs, targets = _arrays(self.SKLEARN_NAME)
        for i, (x, t) in enumerate(zip(inputs, targets)):
            yield i, {"input": x, "target": t if t.ndim else int(t)}


def _builder_class(name: str) -> type[_SklearnBuilder]:
    cls_name = "Sklearn" + "".join(p.title() for p in name.split("_"))
    # The TFDS builder name is the snake_case class name: e.g. SklearnBreastCancer ->
    # sklearn_breast_cancer.
    attrs = {"SKLEARN_NAME": name, "__module__": __name__}
    # skip_registration is a class keyword, not inherited: kept out of TFDS' global registry.
    return types.new_class(
        cls_name, (_SklearnBuilder,), {"skip_registration": True}, lambda ns: ns.update(attrs)
    )


BUILDERS: dict[str, type[_SklearnBuilder]] = {name: _builder_class(name) for name in NAMES}


@contextlib.contextmanager
def _quiet():
    """Silences TFDS' progress bars and absl warnings while a tiny set is prepared.

    The warnings are about the version folder not written yet; TFDS' own two lines (preparing /
    prepared to DIR) still print.
    """
    verbosity = absl_logging.get_verbosity()
    bars = tfds.core.utils.tqdm_utils._active
    absl_logging.set_verbosity(absl_logging.ERROR)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)
        tfds.display_progress_bar(bars)


def builder(name: str, data_dir: str | None = None) -> _SklearnBuilder:
    """The prepared TFDS builder of embedded set `name` (prepared on first use, reused after).

    Args:
      name: one of `NAMES`.
      data_dir: root of prepared datasets; `sources.default_data_dir()` when None.

    Returns:
      A builder whose `as_data_source("train")` reads the array_record files.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown embedded dataset {name!r}; valid: {', '.join(NAMES)}")
    data_dir = os.path.expanduser(data_dir or sources.default_data_dir())
    cls = BUILDERS[name]
    with _quiet():
        b = cls(data_dir=data_dir, file_format="array_record")
        if b.is_prepared():
            return b
    with exclusive(os.path.join(data_dir, f"{cls.name}.lock")), _quiet():
        # Re-create after taking the lock: another process may have prepared it meanwhile, and a
        # builder made before preparation holds the info computed from code, not from disk.
        b = cls(data_dir=data_dir, file_format="array_record")
        if not b.is_prepared():
            b.download_and_prepare(file_format="array_record")
    return b


def load(name: str, *, data_dir: str | None = None) -> Dataset:
    """Embedded set `name` as a `Dataset` with one in-memory `train` split and no test split.

    Inputs are float32 (`digits`: `(N, 8, 8, 1)` pixel values 0..16; the others `(N, D)`
    features). Targets are int32 class indices, or for `diabetes` float32 `(N, 1)` raw
    disease progression (features are scikit-learn's default scaled ones).

    Example: `load("iris", data_dir=d).train.inputs.shape == (150, 4)`.
    """
    b = builder(name, data_dir)
    records = b.as_data_source(split="train")
    rows = records.__getitems__(list(range(len(records))))
    inputs = np.stack([r["input"] for r in rows]).astype(np.float32)
    feature_names = tuple(b.info.metadata.get("feature_names", ()))
    if name == "diabetes":
        targets = np.stack([r["target"] for r in rows]).astype(np.float32).reshape(-1, 1)
        info = DatasetInfo(
            name=name,
            task=REGRESSION,
            input_shape=inputs.shape[1:],
            target_dim=1,
            feature_names=feature_names,
        )
    else:
        targets = np.asarray([r["target"] for r in rows], dtype=np.int32)
        labels = b.info.features["target"]
        info = DatasetInfo(
            name=name,
            task=CLASSIFICATION,
            input_shape=inputs.shape[1:],
            num_classes=labels.num_classes,
            class_names=tuple(labels.names),
            feature_names=feature_names,
        )
    return Dataset(info=info, train=ArraySource(inputs, targets))


sources.register(
    sources.Source(
        "embedded",
        f"embedded (offline, from scikit-learn): {'|'.join(NAMES)}",
        lambda name, options: load(name, data_dir=options.data_dir),
        names=NAMES,
    )
)
