"""Your own images: a folder with one sub-folder per class, prepared once as a TFDS dataset.

`load("/photos", data_dir=D)` reads `/photos/<class>/**/*.{jpg,jpeg,png}` (any case, any
depth below the class folder), or `/photos/{train,val,test}/<class>/...` when the folder is
already split (`val` may also be called `validation` or `valid`). Hidden entries are ignored;
other files are counted in a warning. File and folder names may be in any language; class
names are the folder names (Unicode NFC), sorted by code point, and label `i` is the `i`-th.

Images are decoded with Pillow (EXIF rotation applied, transparency dropped) and made one size:
- `image_size=S` fits every image to `S x S`: shorter side scaled to `S`, centre crop (no
  stretching);
- `image_size=None` keeps the size when all images share one, else fits them to a square of the
  median shorter side, capped at `MAX_DEFAULT_SIZE` (printed).
Channels: 1 (grey) when every image is grey (by its file's mode, or a grey palette), else 3:
grey images of a colour folder are repeated into RGB. 16-bit grey images are scaled to 8 bits.

A corrupt or unreadable image stops preparation with a one-line `ValueError` naming the file;
with `skip_bad_files=True` it is left out and counted in a warning instead.

Preparation runs once: decoding, fitting and encoding (JPEG files as JPEG quality 95, others as
lossless PNG) go through a thread pool (Pillow releases the GIL in its codecs), then a TFDS
`GeneratorBasedBuilder` writes array_record files to
`D/engine_image_folder/<name>_<fingerprint>/1.0.0`. The fingerprint hashes every image's
relative path, size and modification time plus `image_size` and `skip_bad_files`, so a changed
folder is prepared again (and its older copy removed) while an unchanged one is read back at
once. Prepared sets up to `IN_MEMORY_BYTES` of pixels are loaded into memory as uint8
`ArraySource`s; larger ones stay on disk as `RecordSource`s.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import re
import shutil
import statistics
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from engine.data import sources
from engine.data.catalog import ImageLabelDecoder, fit_image, quiet, split_labels
from engine.data.folder_scan import IMAGE_EXTENSIONS, scan
from engine.data.locking import exclusive
from engine.data.source import ArraySource, Dataset, DatasetInfo, RecordSource

MAX_DEFAULT_SIZE = 224
IN_MEMORY_BYTES = 256 * 2**20
BUILDER_NAME = "engine_image_folder"
_FORMAT = "2"  # bump when the prepared layout changes: old fingerprints then rebuild
_ROLES = {"train": "train", "validation": "val", "test": "test"}
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"})


def _fingerprint(root: str, files: dict[str, list], image_size, skip_bad_files: bool) -> str:
    digest = hashlib.sha256(f"{_FORMAT}|{image_size}|{skip_bad_files}".encode())
    for split in sorted(files):
        for path, size, mtime, label in files[split]:
            rel = os.fsencode(os.path.relpath(path, root))
            digest.update(b"%s\0%s\0%d\0%d\0%d\n" % (split.encode(), rel, size, mtime, label))
    return digest.hexdigest()[:16]


def _header(path: str) -> tuple[tuple[int, int] | None, bool, str | None]:
    """((height, width), is colour, error) from an image's header (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            colour = image.mode not in _GREY_MODES
            if image.mode == "P":
                palette = np.asarray(image.getpalette() or [0, 0, 0]).reshape(-1, 3)
                colour = bool((palette != palette[:, :1]).any())
            return (image.height, image.width), colour, None
    except Exception as err:  # any reader failure is a bad file, reported with its path
        return None, False, f"{type(err).__name__}: {_first_line(err)}"


def _parallel(fn, items, window: int = 512):
    """`map(fn, items)` on a thread pool, in order, at most `window` results ahead.

    The window bounds memory while the TFDS writer consumes the results.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with ThreadPoolExecutor(max_workers=cores or 1) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _first_line(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0]


def _encode(path: str, size: tuple[int, int], channels: int) -> tuple[bytes | None, str | None]:
    """(Encoded image fitted to `size` with `channels`, or None and the error).

    JPEG files are stored as JPEG (quality 95: they were lossy already, and PNG-encoding photos
    costs 15x more time and 6x more space), anything else as lossless PNG.
    """
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as image:
            jpeg = image.format == "JPEG"
            if jpeg:  # decode at 1/2, 1/4 or 1/8 scale when that is still large enough
                image.draft(mode, (size[1], size[0]))
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16-bit grey: convert() would clip at 255
                pixels = np.asarray(image, dtype=np.float64) / 257
                image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
            image = fit_image(image.convert(mode), size)  # convert() decodes every pixel
            buffer = io.BytesIO()
            if jpeg:
                image.save(buffer, format="JPEG", quality=95)
            else:
                image.save(buffer, format="PNG", compress_level=1)
            return buffer.getvalue(), None
    except Exception as err:  # truncated or corrupt data
        return None, f"{type(err).__name__}: {_first_line(err)}"


def read_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as the folder dataset stores it: uint8 (H, W, C), fitted to `size`.

    The same decoding, fitting and (for JPEG) re-encoding as preparation, so an image predicted
    later looks to the model exactly as the training images did.

    Raises:
      ValueError: the file cannot be read as an image (one line naming it).
    """
    data, error = _encode(path, size, channels)
    if data is None:
        raise ValueError(f"cannot read image {path!r}: {error}")
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(size[0], size[1], channels)


class _FolderConfig(tfds.core.BuilderConfig):
    """One prepared folder: what to read and how to fit it (not saved; only for generation)."""

    def __init__(self, *, name, files, class_names, size, channels, skip_bad_files):
        super().__init__(name=name, version="1.0.0", description="Images from a folder.")
        self.files, self.class_names = files, class_names
        self.size, self.channels, self.skip_bad_files = size, channels, skip_bad_files
        self.skipped: list[str] = []


class EngineImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A class-per-folder image collection as a TFDS dataset (built by `load`, not by name)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Images and class labels."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """None: no checksum files (TFDS' lookup needs the undeclared `importlib_resources`)."""
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    # PNG or JPEG bytes per image (see `_encode`); decoders detect which.
                    "image": tfds.features.Image(shape=(*config.size, config.channels)),
                    "label": tfds.features.ClassLabel(names=config.class_names),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # records in sorted file order
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            split: self._generate_examples(files)
            for split, files in self.builder_config.files.items()
            if files
        }

    def _generate_examples(self, files):
        config = self.builder_config
        encoded = _parallel(lambda f: _encode(f[0], config.size, config.channels), files)
        for index, ((path, _, _, label), (image, error)) in enumerate(zip(files, encoded)):
            if error is not None:
                if not config.skip_bad_files:
                    raise _BadImage(path, error)
                config.skipped.append(path)
                continue
            yield index, {"image": image, "label": label}


class _BadImage(Exception):
    def __init__(self, path: str, error: str):
        super().__init__(path, error)
        self.message = (
            f"cannot read image {path!r} ({error}); fix or remove it, or pass --skip_bad_files"
        )


def _fit(root: str, files: dict[str, list], image_size: int | None, skip_bad_files: bool):
    """((height, width), channels, bad paths) decided from every image's header."""
    flat = [f for split in files.values() for f in split]
    headers = list(_parallel(lambda f: _header(f[0]), flat))
    bad = [(f[0], error) for f, (_, _, error) in zip(flat, headers) if error is not None]
    if bad and not skip_bad_files:
        raise ValueError(_BadImage(*bad[0]).message)
    good = [(hw, colour) for hw, colour, error in headers if error is None]
    if not good:
        raise ValueError(f"image folder {root!r} has no readable image")
    channels = 3 if any(colour for _, colour in good) else 1
    sizes = {hw for hw, _ in good}
    if image_size is not None:
        size = (image_size, image_size)
    elif len(sizes) == 1:
        size = sizes.pop()
    else:
        side = min(MAX_DEFAULT_SIZE, int(statistics.median(min(hw) for hw, _ in good)))
        size = (side, side)
        print(f"{root}: images differ in size; fitted to {side}x{side} (set --image_size)")
    return size, channels, [path for path, _ in bad]


def _config_name(root: str, fingerprint: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root).lower()).strip("_")[:40]
    return f"{slug or 'folder'}_{fingerprint}"


def _remove_stale(base: str, keep: str, root: str) -> None:
    """Deletes older preparations of the same source folder (they can never be reused)."""
    for entry in os.scandir(base):
        marker = os.path.join(entry.path, "source.txt")
        if entry.is_dir() and entry.name != keep and os.path.exists(marker):
            with open(marker, encoding="utf-8", errors="surrogateescape") as handle:
                if handle.read() == root:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        os.remove(entry.path + ".lock")


def _prepare(root, files, names, config_dir, config_name, image_size, skip_bad_files):
    size, channels, bad = _fit(root, files, image_size, skip_bad_files)
    bad_set = set(bad)
    files = {s: [f for f in fs if f[0] not in bad_set] for s, fs in files.items()}
    config = _FolderConfig(
        name=config_name,
        files=files,
        class_names=list(names),
        size=size,
        channels=channels,
        skip_bad_files=skip_bad_files,
    )
    with quiet():  # "using custom data configuration": that is the point
        builder = EngineImageFolder(
            config=config,
            data_dir=os.path.dirname(os.path.dirname(config_dir)),
            file_format="array_record",
        )
    try:
        builder.download_and_prepare(file_format="array_record")
    except _BadImage as err:
        with contextlib.suppress(OSError):  # TFDS removed its incomplete.* copy; drop the rest
            os.rmdir(config_dir)
        raise ValueError(err.message) from None
    skipped = bad + config.skipped
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]!r}",
            stacklevel=3,
        )
    with open(
        os.path.join(config_dir, "source.txt"), "w", encoding="utf-8", errors="surrogateescape"
    ) as handle:
        handle.write(root)
    _remove_stale(os.path.dirname(config_dir), config_name, root)


def _read(version_dir: str, name: str) -> Dataset:
    builder = tfds.builder_from_directory(version_dir)
    features = builder.info.features
    height, width, channels = features["image"].shape
    sources = {}
    for split in builder.info.splits:
        records = builder.as_data_source(split=split)
        labels = split_labels(builder, split, "label")
        if len(records) * height * width * channels <= IN_MEMORY_BYTES:
            rows = records.__getitems__(list(range(len(records))))
            images = np.stack([r["image"] for r in rows]).astype(np.uint8)
            sources[_ROLES[split]] = ArraySource(images, labels)
        else:
            sources[_ROLES[split]] = RecordSource(records, ImageLabelDecoder(), labels)
    info = DatasetInfo(
        name=name,
        task="classification",
        input_shape=(height, width, channels),
        num_classes=features["label"].num_classes,
        class_names=tuple(features["label"].names),
    )
    return Dataset(info=info, **sources)


def describe(dataset: Dataset) -> str:
    """The class list with per-split example counts, as printed by `load`.

    Args:
      dataset: a loaded classification dataset.

    Returns:
      A multi-line table: one row per class, one column per split the dataset has.
    """
    splits = {
        n: s
        for n, s in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))
        if s is not None
    }
    info = dataset.info
    counts = {n: np.bincount(s.targets, minlength=info.num_classes) for n, s in splits.items()}
    width = max(len("class"), *(len(c) for c in info.class_names))
    shape = "x".join(str(d) for d in info.input_shape)
    lines = [
        f"{info.name}: {info.num_classes} classes, images {shape}",
        "  " + "class".ljust(width) + "".join(f"{n:>8}" for n in splits),
    ]
    for label, cls in enumerate(info.class_names):
        lines.append("  " + cls.ljust(width) + "".join(f"{counts[n][label]:>8}" for n in splits))
    lines.append("  " + "total".ljust(width) + "".join(f"{len(s):>8}" for s in splits.values()))
    return "\n".join(lines)


def load(
    path: str, *, data_dir: str, image_size: int | None = None, skip_bad_files: bool = False
) -> Dataset:
    """Loads the image folder at `path`, preparing it into `data_dir` if it changed.

    Args:
      path: a folder of class sub-folders (optionally inside train/ val/ test/).
      data_dir: root of prepared datasets.
      image_size: side length images are fitted to; None: see the module docstring.
      skip_bad_files: leave unreadable images out (counted in a warning) instead of stopping.

    Returns:
      A classification `Dataset` of uint8 `(H, W, C)` images; `val`/`test` only when the folder
      has them. Its class counts are printed (`describe`).

    Raises:
      ValueError: not a folder, no classes, a corrupt image (naming the file), etc.
    """
    root = os.path.abspath(os.path.expanduser(path))
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    files, names, ignored = scan(root)
    if ignored:
        warnings.warn(
            f"{root}: ignored {len(ignored)} file(s) that are not "
            f"{'/'.join(IMAGE_EXTENSIONS)} or lie outside class folders, e.g. {ignored[0]!r}",
            stacklevel=2,
        )
    config_name = _config_name(root, _fingerprint(root, files, image_size, skip_bad_files))
    config_dir = os.path.join(os.path.expanduser(data_dir), BUILDER_NAME, config_name)
    version_dir = os.path.join(config_dir, "1.0.0")
    info_file = os.path.join(version_dir, "dataset_info.json")
    if not os.path.exists(info_file):
        with exclusive(config_dir + ".lock"):
            if not os.path.exists(info_file):
                _prepare(root, files, names, config_dir, config_name, image_size, skip_bad_files)
    with quiet():
        dataset = _read(version_dir, f"folder:{path}")
    print(describe(dataset))
    return dataset


sources.register(
    sources.Source(
        "folder",
        "folder:PATH (your images, one sub-folder per class)",
        lambda path, options: load(
            path,
            data_dir=options.data_dir,
            image_size=options.image_size,
            skip_bad_files=options.skip_bad_files,
        ),
        prefix=True,
    )
)
