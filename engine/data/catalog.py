"""TFDS catalog image-classification datasets by name, read offline from array_record files.

`load("cifar10", data_dir=D)` opens TFDS builder `cifar10` (any catalog name, with TFDS'
`name/config:version` syntax, e.g. `mnist:3.0.1`) over `D` and reads its prepared array_record
files through the builder's random-access data source; TensorFlow is never imported.

- Prepared data in `D` is used as it is, offline. Otherwise the builder downloads and prepares
  it into `D` (array_record). TFDS encodes image arrays with TensorFlow; without it the engine
  encodes them with Pillow instead, which gives the same PNG files. When there is no network (a
  quick connection test, instead of TFDS' three minutes of retries) or the download fails, the
  load stops with one line naming the directory it looked in and how to prepare it there.
- The image feature (`image`, else the only `Image` feature) gives `input_shape = (H, W, C)`,
  the label feature (`label`, else the only `ClassLabel`) the classes. Images whose size varies
  (`imagenet2012`) are fitted to `image_size` (default 224) when decoded: shorter side resized,
  centre crop. Fixed-size images keep their size here; the engine resizes them on the device.
- The dataset's own `train`, `test` and `validation` splits are used as they are.
- Every split is a `RecordSource` decoding records to `(uint8 (H, W, C) image, int label)` on
  demand. Its `targets` (all labels) are read once, images left undecoded (about 25 us a record:
  1 s for CIFAR-10, but a full read of ImageNet's 140 GB), then cached as
  `<version dir>/engine-labels-<split>.npy` beside the records, so later loads take
  milliseconds. A read-only data directory just means no cache. TFDS replaces the whole version
  directory when it re-prepares, so a cache never outlives its records; its length is checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import importlib.resources.abc  # what TFDS reads through the `importlib_resources` alias
import importlib.util
import io
import os
import socket
import sys

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from PIL import Image
from tensorflow_datasets.core.features import image_feature

from engine.data import sources
from engine.data.source import CLASSIFICATION, Dataset, DatasetInfo, RecordSource

VARIABLE_SIZE_DEFAULT = 224  # ImageNet's usual training size
_SPLITS = {"train": ("train",), "test": ("test",), "val": ("validation", "valid", "val")}
_LABEL_CHUNK = 4096  # records per read when collecting labels (bounds memory on big sets)


@contextlib.contextmanager
def quiet():
    """Keeps TFDS' absl warnings that need no action out of the console for the block.

    (A version folder not written yet, a custom builder config, OpenCV not installed.)
    """
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


def fit_image(image, size: tuple[int, int]):
    """A PIL image scaled so it covers `size` = (height, width), then centre-cropped to it.

    Keeps the aspect ratio (no stretching); a same-shape image is returned as it is.
    """
    height, width = size
    if image.size == (width, height):
        return image
    scale = max(height / image.height, width / image.width)
    new = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


@dataclasses.dataclass(frozen=True)
class ImageLabelDecoder:
    """`RecordSource.decode` for TFDS image records: `(uint8 (H, W, C) image, int label)`.

    A module-level dataclass so it pickles into grain's worker processes.

    Attributes:
      image_key: the record's image feature.
      label_key: the record's `ClassLabel` feature.
      size: `(H, W)` to fit images to (variable-size datasets), or None to keep them.
    """

    image_key: str = "image"
    label_key: str = "label"
    size: tuple[int, int] | None = None

    def __call__(self, record) -> tuple[np.ndarray, int]:
        """`(image, label)` of one decoded record."""
        image = np.asarray(record[self.image_key], dtype=np.uint8)
        if self.size is not None and image.shape[:2] != self.size:
            channels = image.shape[-1]
            pil = Image.fromarray(image[..., 0] if channels == 1 else image)
            image = np.asarray(fit_image(pil, self.size)).reshape(*self.size, channels)
        return image, int(record[self.label_key])


def split_labels(builder, split: str, label_key: str) -> np.ndarray:
    """Every label of `split`, in record order, as int32; cached beside the records.

    Args:
      builder: a prepared TFDS builder (array_record).
      split: the split name.
      label_key: the `ClassLabel` feature to read.

    Returns:
      `(N,)` int32 labels.
    """
    cache = os.path.join(os.fspath(builder.data_dir), f"engine-labels-{split}.npy")
    skip = {k: tfds.decode.SkipDecoding() for k in builder.info.features if k != label_key}
    records = builder.as_data_source(split=split, decoders=skip)
    if os.path.exists(cache):
        labels = np.load(cache)
        if len(labels) == len(records):
            return labels
    labels = np.empty(len(records), np.int32)
    for start in range(0, len(records), _LABEL_CHUNK):
        stop = min(len(records), start + _LABEL_CHUNK)
        rows = records.__getitems__(list(range(start, stop)))
        labels[start:stop] = [int(r[label_key]) for r in rows]
    with contextlib.suppress(OSError):  # a read-only data directory: no cache, still correct
        partial = f"{cache}.{os.getpid()}.tmp.npy"
        np.save(partial, labels)
        os.replace(partial, cache)
    return labels


def _pick(features, kind: type, preferred: str, name: str, what: str) -> str:
    keys = [k for k, f in features.items() if isinstance(f, kind)]
    if preferred in keys:
        return preferred
    if len(keys) == 1:
        return keys[0]
    found = ", ".join(f"{k}: {type(f).__name__}" for k, f in features.items())
    raise ValueError(
        f"TFDS dataset {name!r} has {len(keys) or 'no'} {what} features ({found}); only image "
        f"classification datasets (one Image and one ClassLabel) load by name"
    )


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown dataset {name!r}: not an embedded set ({', '.join(sources.dataset_names())}), "
        "not folder:PATH or csv:PATH, and not a TFDS catalog name (tfds.list_builders())"
    )


def _online(timeout: float = 3.0) -> bool:
    """Whether the internet is reachable (TFDS' downloader would retry for minutes if not)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # only the proxy knows; let the download try
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _without_tensorflow():
    """Lets TFDS prepare image datasets without TensorFlow, for the duration of the block.

    - TFDS encodes NumPy images with `tf.image.encode_png`; Pillow writes the same format.
    - TFDS finds a builder's checksum files through the `importlib_resources` backport, which it
      does not declare as a dependency (tensorflow/datasets#11212); the standard library's
      `importlib.resources` has the same `abc.Traversable` it needs.
    """
    encoder = image_feature._ImageEncoder
    original = encoder._encode_image
    alias = importlib.util.find_spec("importlib_resources") is None
    if alias:
        sys.modules["importlib_resources"] = importlib.resources

    def encode_with_pillow(self, np_image: np.ndarray) -> bytes:
        if self.np_dtype != np.uint8:
            return original(self, np_image)
        array = np.asarray(np_image)
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
            buffer, format=self.encoding_format
        )
        return buffer.getvalue()

    if importlib.util.find_spec("tensorflow") is None:
        encoder._encode_image = encode_with_pillow
    try:
        yield
    finally:
        encoder._encode_image = original
        if alias:
            sys.modules.pop("importlib_resources", None)


def _prepare(builder, name: str, data_dir: str) -> None:
    """Downloads and prepares `builder` into `data_dir`, or stops with one line saying how."""
    where = os.fspath(builder.data_dir)
    how = (
        f"prepare it there on a machine with network access (run this once with "
        f"--data_dir={data_dir}, or `tfds build {name} --data_dir={data_dir} "
        "--file_format=array_record`) and copy it here"
    )
    if not _online():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {where} and there is no "
            f"network to download it; {how}"
        )
    try:
        with _without_tensorflow():
            builder.download_and_prepare(file_format="array_record")
    except Exception as err:  # any download or preparation failure: the same advice applies
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {where} and preparing it failed "
            f"({type(err).__name__}: {_first_line(err)}); {how}"
        ) from err


def load(name: str, *, data_dir: str, image_size: int | None = None) -> Dataset:
    """Loads TFDS catalog dataset `name` (`cifar10`, `mnist:3.0.1`, `name/config:version`).

    Args:
      name: a TFDS builder name in TFDS' syntax.
      data_dir: root of prepared TFDS datasets (TFDS' own layout: `name/config/version`).
      image_size: side length variable-size images are fitted to (None:
        `VARIABLE_SIZE_DEFAULT`); fixed-size datasets keep their size (resized on device).

    Returns:
      A `Dataset` whose splits are `RecordSource`s of `(uint8 (H, W, C), int)` examples.

    Raises:
      ValueError: unknown name, not an image-classification dataset, not prepared and not
        downloadable (each one line).
    """
    data_dir = os.path.expanduser(data_dir)
    try:
        with quiet():
            builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _unknown(name) from None
    except (ValueError, AssertionError, TypeError) as err:
        raise ValueError(f"TFDS dataset {name!r} cannot be opened: {_first_line(err)}") from None
    features = builder.info.features
    image_key = _pick(features, tfds.features.Image, "image", name, "Image")
    label_key = _pick(features, tfds.features.ClassLabel, "label", name, "ClassLabel")
    if not builder.is_prepared():
        _prepare(builder, name, data_dir)
        with quiet():
            builder = tfds.builder(name, data_dir=data_dir)  # the info written by preparation

    height, width, channels = builder.info.features[image_key].shape
    size = None
    if height is None or width is None:  # one shape is needed to batch: fit on the host
        side = image_size or VARIABLE_SIZE_DEFAULT
        size, (height, width) = (side, side), (side, side)
        print(f"{name}: images vary in size; fitted to {side}x{side} (shorter side, centre crop)")
    decode = ImageLabelDecoder(image_key, label_key, size)

    available = set(builder.info.splits.keys())
    sources = {}
    for role, candidates in _SPLITS.items():
        split = next((s for s in candidates if s in available), None)
        if split is None:
            continue
        try:
            with quiet():
                records = builder.as_data_source(split=split)
                labels = split_labels(builder, split, label_key)
        except (NotImplementedError, ValueError) as err:
            raise ValueError(
                f"TFDS dataset {name!r} in {builder.data_dir} cannot be read by random access "
                f"({_first_line(err)}); prepare it with file_format='array_record'"
            ) from None
        sources[role] = RecordSource(records, decode, labels)
    if "train" not in sources:
        raise ValueError(
            f"TFDS dataset {name!r} has no 'train' split (it has: {', '.join(sorted(available))})"
        )
    labels = builder.info.features[label_key]
    info = DatasetInfo(
        name=name,
        task=CLASSIFICATION,
        input_shape=(height, width, channels),
        num_classes=labels.num_classes,
        class_names=tuple(labels.names),
    )
    counts = ", ".join(f"{role} {len(src)}" for role, src in sources.items())
    print(
        f"{name} ({builder.info.full_name} in {data_dir}): {counts}; "
        f"{info.num_classes} classes; images {height}x{width}x{channels}"
    )
    return Dataset(info=info, **sources)


sources.register(
    sources.Source(
        "tfds",
        "any TFDS catalog name (cifar10, mnist:3.0.1), prepared in --data_dir",
        lambda name, options: load(name, data_dir=options.data_dir, image_size=options.image_size),
        fallback=True,
    )
)
