"""Catalog datasets (cifar10, mnist, ...) prepared offline from generated images (importable).

The real TFDS builders run their real preparation (features, writer, array_record files) through
the engine's own prepare path; only the download-and-parse step (`_split_generators`) is
replaced by generated images in the builder's own format.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import tensorflow_datasets as tfds

from engine.data import catalog

NUM_CLASSES = {"cifar10": 10, "mnist": 10, "cats_vs_dogs": 2}
CIFAR10_NAMES = (  # CIFAR-10's batches.meta.txt, which TFDS' cifar10 builder reads the names from
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def examples(name: str, n: int, shape, seed: int, learnable: bool = False) -> dict[int, dict]:
    """`n` random examples of catalog dataset `name` in its feature format, keyed 0..n-1.

    Args:
      name: one of `NUM_CLASSES`.
      n: number of examples.
      shape: `(H, W, C)` of every image (ignored for cats_vs_dogs: random sizes 20..60).
      seed: fixes images and labels.
      learnable: images that show their label (noise in 0..127, and rows `2 * label` and
        `2 * label + 1` at 255), so a model can only learn them if every image reaches it with
        its own label; else pixels and labels are independent uniform draws.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        if name == "cats_vs_dogs":  # photos of any size: 20..60 x 20..60
            shape = (*rng.integers(20, 61, size=2), 3)
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        label = int(rng.integers(0, NUM_CLASSES[name]))
        if learnable:
            image //= 2
            image[2 * label : 2 * label + 2] = 255
        example = {"image": image, "label": label}
        if name == "cifar10":
            example["id"] = f"train_{i:05d}"
        if name == "cats_vs_dogs":
            example["image/filename"] = f"{i}.jpg"
        out[i] = example
    return out


def prepare(
    name: str, data_dir: str, shape, sizes: dict[str, int], learnable: bool = False
) -> dict[str, dict]:
    """Prepares `name` into `data_dir` through catalog.load, generated examples for the download.

    Args:
      name: one of `NUM_CLASSES`.
      data_dir: the prepared-datasets directory.
      shape: image shape (see `examples`).
      sizes: examples per split, e.g. {"train": 40, "test": 12}; split i uses seed i.
      learnable: images show their label (see `examples`).

    Returns:
      {split: {image bytes: label}}: what was written, to match loaded examples by content.
    """
    splits = {
        split: examples(name, n, shape, seed, learnable)
        for seed, (split, n) in enumerate(sizes.items())
    }

    def split_generators(self, dl_manager):
        del dl_manager
        if name == "cifar10":  # the real one reads these from the archive's batches.meta.txt
            self.info.features["label"].names = list(CIFAR10_NAMES)
        return {split: iter(split_examples.items()) for split, split_examples in splits.items()}

    with (
        mock.patch.object(tfds.builder_cls(name), "_split_generators", split_generators),
        mock.patch.object(catalog, "_online", return_value=True),
    ):
        catalog.load(name, data_dir=data_dir)
    return {
        split: {e["image"].tobytes(): e["label"] for e in split_examples.values()}
        for split, split_examples in splits.items()
    }
