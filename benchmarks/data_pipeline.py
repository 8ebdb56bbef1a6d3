"""Input pipeline on realistic images: can the streaming loader feed a GPU? One process.

Images are random crops of scikit-learn's two sample photos (`load_sample_images()`: china.jpg
and flower.jpg, 427x640), Inception-style (8-100% of the area, aspect 3/4-4/3, so crops range
from detail to the whole scene), resized with antialiasing to a CIFAR size (32x32) and an
ImageNet-like size (`--large`, default 224) and stored as TFDS array_record datasets, PNG- or
JPEG-encoded (quality 90) as TFDS' own image datasets are. For each (size, encoding) it reports:

* bytes per image (mean encoded size; for scale, CIFAR-10's PNGs average about 2.3 KB, and
  ImageNet-1k's 1.28 M training JPEGs, about 138 GB, about 110 KB at their original sizes);
* delivered images/s of the streaming path (grain workers reading and decoding the record files,
  the engine's loader with its default prefetch of 2), after a warm-up, per `--workers` count;
* the GPU it would have to feed: ResNet-18 at 32x32 trains at about 30,000 images/s on one
  H100-class GPU, ResNet-50 at 224x224 at about 3,000 images/s (stated rates, not measured
  here; other sizes scale ResNet-50's rate by FLOPs, (224 / size)^2), as the share of that rate
  delivered and the worker processes (cores) it would take at the measured per-worker rate.
  The engine's training step is not run: on this CPU it is thousands of times slower than a
  GPU's, so comparing with it says nothing about a GPU run.

On a shared 2-core CPU the workers compete with other processes; the load average is printed.

    python benchmarks/data_pipeline.py [--data_dir=DIR] [--workers 0 1 2] [--large=160]
        [--small_count=10000] [--large_count=2000] [--encodings png jpeg]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.data import make_loader, records

NUM_CLASSES = 10
# Stated consumption rates of one H100-class GPU (images/s, training), by image size.
GPU_RATES = {32: ("ResNet-18", 30_000), 224: ("ResNet-50", 3_000)}


def gpu_rate(size: int) -> tuple[str, float]:
    """The model and images/s a GPU consumes at `size` (ResNet-50 scaled by FLOPs above 32)."""
    if size in GPU_RATES:
        return GPU_RATES[size]
    name, rate = GPU_RATES[224]
    return f"{name} at {size} px (~FLOPs-scaled)", rate * (224 / size) ** 2


def crops(size: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` random crops of the sample photos resized to (size, size, 3) uint8."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        area = rng.uniform(0.08, 1.0) * width * height
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, round(np.sqrt(area * aspect))))
        h = int(min(height, round(np.sqrt(area / aspect))))
        left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        crop = photo.crop((left, top, left + w, top + h))
        out[i] = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3))
    return out


def encoded_bytes(images: np.ndarray, encoding: str, sample: int = 500) -> float:
    """Mean encoded size in bytes over the first `sample` images."""
    return float(np.mean([len(records.encode_image(x, encoding)) for x in images[:sample]]))


def write(data_dir: str, images: np.ndarray, encoding: str):
    """The images as a TFDS array_record dataset (reused when already in `data_dir`)."""
    size, count = images.shape[1], len(images)
    labels = np.random.default_rng(1).integers(0, NUM_CLASSES, count)
    return records.write_arrays(
        f"sample_crops_{encoding}_{size}px_n{count}",
        {"train": (images, labels)},
        data_dir=data_dir,
        num_classes=NUM_CLASSES,
        encoding=encoding,
    )


def streaming_rate(
    source, *, batch_size: int, num_workers: int, prefetch: int = 2, warmup: int = 10
) -> float:
    """Images/s the streaming loader delivers after `warmup` batches (the last one untimed)."""
    loader = make_loader(
        source,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        streaming=True,
        num_workers=num_workers,
        prefetch=prefetch,
    )
    warmup = min(warmup, len(loader) // 4)
    batches = len(loader) - warmup - 1  # the last, partial batch waits for grain's epoch end
    stream = loader.epoch(0)
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - start
    stream.close()
    return batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--large", type=int, default=224, help="the ImageNet-like size")
    parser.add_argument("--small_count", type=int, default=10_000)
    parser.add_argument("--large_count", type=int, default=2_000)
    parser.add_argument("--encodings", nargs="+", default=["png", "jpeg"])
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start "
        "(shared machine: timings are noisy)"
    )
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="sample_crops_")
    rows = []
    for size, count, batch in ((32, args.small_count, 128), (args.large, args.large_count, 64)):
        start = time.perf_counter()
        images = crops(size, count)
        print(f"{count} crops at {size}x{size} in {time.perf_counter() - start:.1f} s")
        model, needed = gpu_rate(size)
        for encoding in args.encodings:
            size_bytes = encoded_bytes(images, encoding)
            source = records.record_source(write(data_dir, images, encoding), "train")
            for workers in args.workers:
                rate = streaming_rate(source, batch_size=batch, num_workers=workers)
                per_worker = rate / max(workers, 1)
                rows.append(
                    f"| {size}x{size} {encoding} | {size_bytes / 1024:.1f} KB | {workers} | "
                    f"{rate:,.0f} | {model}: {needed:,.0f} | {rate / needed:.1%} | "
                    f"{needed / per_worker:.0f} |"
                )
                print(rows[-1], flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; batch 128 at 32 px, 64 above")
    print(
        "| images | bytes/image | workers | delivered img/s | GPU consumes (img/s) | "
        "share delivered | workers to feed it |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
