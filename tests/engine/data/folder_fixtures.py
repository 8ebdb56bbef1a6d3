"""Image folders generated from scikit-learn's digits, for folder-dataset tests (importable)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class DigitsFolder:
    """What `make_digits_folder` wrote.

    Attributes:
      root: the folder (one sub-folder per class).
      class_names: the class folder names in label order (sorted), class i holding digit i.
      counts: images per class, in label order.
      examples: relative path -> (uint8 image (8, 8, C) exactly as written, label).
    """

    root: str
    class_names: tuple[str, ...]
    counts: tuple[int, ...]
    examples: dict[str, tuple[np.ndarray, int]]


def digit_pixels(images: np.ndarray) -> np.ndarray:
    """scikit-learn's digit values 0..16 as uint8 0..255 (x * 255 / 16, rounded)."""
    return np.round(np.asarray(images) * (255 / 16)).astype(np.uint8)


def colourise(grey: np.ndarray) -> np.ndarray:
    """An RGB version of `(..., H, W)` uint8 digits: R = v, G = v // 2, B = 255 - v."""
    return np.stack([grey, grey // 2, 255 - grey], axis=-1).astype(np.uint8)


def make_digits_folder(
    root, *, colour: bool, chinese: bool, n_per_class: int | None = None, offset: int = 0
) -> DigitsFolder:
    """Writes scikit-learn's digits as PNG files, one sub-folder per digit.

    Args:
      root: folder to write into (created).
      colour: RGB images (`colourise`) instead of 8-bit grey ones.
      chinese: class folders `类别_<d>` and every other file `图片_<i>.png` (else `class_<d>`
        and `img_<i>.png` throughout).
      n_per_class: at most this many images per digit (all 1797 images when None).
      offset: skip the first `offset` images of each digit (to make disjoint folders).

    Returns:
      A `DigitsFolder` describing exactly what was written.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = os.fspath(root)
    grey = digit_pixels(digits.images)
    examples: dict[str, tuple[np.ndarray, int]] = {}
    names, counts = [], []
    for digit in range(10):
        name = f"类别_{digit}" if chinese else f"class_{digit}"
        names.append(name)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        indices = np.flatnonzero(digits.target == digit)[offset:]
        if n_per_class is not None:
            indices = indices[:n_per_class]
        for i, index in enumerate(indices):
            stem = "图片" if chinese and i % 2 == 0 else "img"
            rel = os.path.join(name, f"{stem}_{i:04d}.png")
            image = colourise(grey[index]) if colour else grey[index]
            Image.fromarray(image).save(os.path.join(root, rel))
            examples[rel] = (image if colour else image[..., None], digit)
        counts.append(len(indices))
    return DigitsFolder(root, tuple(names), tuple(counts), examples)
