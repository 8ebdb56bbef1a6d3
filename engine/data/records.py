"""Arrays written as a TFDS array_record dataset, and TFDS data sources read as `RecordSource`s.

Used to generate record-file datasets locally (tests, the input-pipeline benchmark) and to turn
any prepared TFDS split with an input and a target feature into a streaming `Source`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import types
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from engine.data.source import FeatureDecoder, RecordSource


class _ArraysBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Splits of given arrays, one record per row, rows in the given order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Arrays written as given."}
    INPUT_SHAPE: ClassVar[tuple[int, ...]] = ()
    INPUT_DTYPE: ClassVar[type] = np.float32
    NUM_CLASSES = 0  # 0: regression targets (float32 vectors)
    TARGET_DIM = 0
    ENCODING = ""  # "png" or "jpeg": images stored encoded; "": raw tensors

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """None: no checksum files (TFDS' lookup needs `importlib_resources`, absent here)."""
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        if self.ENCODING:
            inputs = tfds.features.Image(shape=self.INPUT_SHAPE, encoding_format=self.ENCODING)
        else:
            inputs = tfds.features.Tensor(shape=self.INPUT_SHAPE, dtype=self.INPUT_DTYPE)
        if self.NUM_CLASSES:
            target = tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)
        else:
            target = tfds.features.Tensor(shape=(self.TARGET_DIM,), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"input": inputs, "target": target}),
            supervised_keys=("input", "target"),
            disable_shuffling=True,  # keep row order: record i is row i
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(*arrays) for name, arrays in self._splits.items()}

    def _generate_examples(self, inputs: np.ndarray, targets: np.ndarray) -> Iterable:
        for i, (x, t) in enumerate(zip(inputs, targets)):
            yield (
                i,
                {
                    "input": encode_image(x, self.ENCODING) if self.ENCODING else x,
                    "target": t if self.TARGET_DIM else int(t),
                },
            )


JPEG_QUALITY = 90  # a common storage quality (ImageNet's own files are mostly 75-96)


def encode_image(image: np.ndarray, encoding: str) -> bytes:
    """PNG or JPEG bytes of an `(H, W, C)` uint8 image (TFDS needs TensorFlow to encode arrays).

    Args:
      image: the pixels.
      encoding: "png" (lossless) or "jpeg" (quality `JPEG_QUALITY`, lossy).
    """
    buffer = io.BytesIO()
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if encoding == "jpeg":
        pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif encoding == "png":
        pil.save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown image encoding {encoding!r}; valid: png, jpeg")
    return buffer.getvalue()


def write_arrays(
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    data_dir: str,
    num_classes: int = 0,
    encoding: str = "",
) -> tfds.core.DatasetBuilder:
    """Writes `splits` ({split: (inputs, targets)}) as TFDS dataset `name` in `data_dir`.

    Args:
      name: snake_case dataset name (the directory under `data_dir`).
      splits: per split, inputs `(n, *shape)` and targets `(n,)` class labels or `(n, d)`.
      data_dir: root directory of prepared datasets.
      num_classes: number of classes, 0 for regression targets.
      encoding: store inputs as "png" or "jpeg" encoded uint8 images (as TFDS' image datasets
        do), decoded when read; "" stores raw tensors.

    Returns:
      The prepared builder (an already prepared dataset of that name is reused as it is).
    """
    inputs, targets = next(iter(splits.values()))
    attrs = {
        "INPUT_SHAPE": tuple(inputs.shape[1:]),
        "INPUT_DTYPE": inputs.dtype.type,
        "NUM_CLASSES": num_classes,
        "TARGET_DIM": 0 if num_classes else int(np.shape(targets)[1]),
        "ENCODING": encoding,
        "__module__": __name__,
    }
    cls = types.new_class(
        "".join(p.title() for p in name.split("_")),
        (_ArraysBuilder,),
        {"skip_registration": True},  # a class keyword, not inherited: keep TFDS' registry clean
        lambda ns: ns.update(attrs),
    )
    builder = cls(data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if not builder.is_prepared():
        builder._splits = splits
        builder.download_and_prepare(file_format="array_record")
    return builder


def record_source(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    input_key: str = "input",
    target_key: str = "target",
) -> RecordSource:
    """Split `split` of a prepared TFDS builder as a `RecordSource` (random access on disk).

    Every target is needed up front (splits, class counts, balancing), so they are read once
    (inputs left undecoded where the feature allows) and cached as `<split>.targets.npy` next to
    the records when that directory is writable; inputs are decoded only when a batch asks.
    """
    records = builder.as_data_source(split=split)
    cache = None
    if re.fullmatch(r"\w+", split):  # a plain split name, not a slice like train[:80%]
        cache = os.path.join(os.fspath(builder.data_dir), f"{split}.{target_key}s.npy")
    if cache and os.path.exists(cache):
        targets = np.load(cache)
    else:
        skip = {input_key: tfds.decode.SkipDecoding()}
        raw = builder.as_data_source(split=split, decoders=skip)
        rows = raw.__getitems__(list(range(len(raw))))
        targets = np.asarray([r[target_key] for r in rows])
        targets = targets.astype(np.int32 if targets.ndim == 1 else np.float32)
        if cache:
            _save_atomically(cache, targets)
    if len(targets) != len(records):
        raise ValueError(f"{cache} holds {len(targets)} targets for {len(records)} records")
    return RecordSource(
        records=records, decode=FeatureDecoder(input_key, target_key), targets=targets
    )


def _save_atomically(path: str, array: np.ndarray) -> None:
    """Writes `path` via a temporary file and a rename; skipped where the directory is read-only."""
    try:
        handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(handle, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except OSError:
        pass  # a shared read-only data directory: read the targets again next time
