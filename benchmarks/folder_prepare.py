"""Time to prepare (and to reload) a 10,000-image folder dataset with `engine.data.folder`.

The issue's target: preparing a 10,000-image folder takes under a minute on 2 cores. Images are
generated first (not timed) into a temporary folder of 10 classes:

- `photo`: 500x375 colour JPEGs (about ImageNet's average photo size), smooth gradients with
  noise so they compress like photos, fitted to `--image_size` (default 64);
- `digits`: scikit-learn's 8x8 digits as grey PNGs, repeated to the count, kept at 8x8.

Preparation (header pass, decode, fit, PNG encode, TFDS array_record write, label cache) is
timed from `folder.load` on a fresh data directory; the reload is a second `load` of the same,
unchanged folder (fingerprint check and read back). Wall and CPU (all threads) seconds are
printed with the load average: on a shared machine wall time is noisy, CPU time less so.

Usage:
  python benchmarks/folder_prepare.py                    # photo, 10,000 images
  python benchmarks/folder_prepare.py --kind=digits --count=10000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.data import folder


def _photo(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    slope = rng.uniform(-0.4, 0.4, size=(2, 3))
    image = base + y[..., None] * slope[0] + x[..., None] * slope[1]
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_folder(root: str, kind: str, count: int) -> None:
    """Writes `count` images of `kind` into 10 class folders under `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    if kind == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    else:
        # A pool of distinct photos, re-encoded with different quality so files differ.
        pool = [_photo(rng) for _ in range(50)]
    for i in range(count):
        label = i % 10
        directory = os.path.join(root, f"class_{label}")
        os.makedirs(directory, exist_ok=True)
        if kind == "digits":
            Image.fromarray(pixels[i % len(pixels)]).save(os.path.join(directory, f"{i:05d}.png"))
        else:
            buffer = io.BytesIO()
            Image.fromarray(pool[i % len(pool)]).save(buffer, "JPEG", quality=80 + i % 15)
            with open(os.path.join(directory, f"{i:05d}.jpg"), "wb") as handle:
                handle.write(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("photo", "digits"), default="photo")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--image_size", type=int, default=None)
    args = parser.parse_args()
    image_size = args.image_size or (64 if args.kind == "photo" else None)
    with tempfile.TemporaryDirectory() as tmp:
        root, data_dir = os.path.join(tmp, "images"), os.path.join(tmp, "prepared")
        start = time.perf_counter()
        make_folder(root, args.kind, args.count)
        print(f"generated {args.count} {args.kind} images in {time.perf_counter() - start:.1f} s")
        timings, cpu = [], []
        for _ in range(2):
            start, start_cpu = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):  # the class table, twice
                dataset = folder.load(root, data_dir=data_dir, image_size=image_size)
            timings.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    shape = "x".join(map(str, dataset.info.input_shape))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{args.count} {args.kind} images -> {shape}, {cores} cores: prepare {timings[0]:.1f} s "
        f"wall, {cpu[0]:.1f} s CPU ({args.count / timings[0]:.0f} images/s); reload "
        f"{timings[1]:.2f} s wall, {cpu[1]:.2f} s CPU; {type(dataset.train).__name__}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
