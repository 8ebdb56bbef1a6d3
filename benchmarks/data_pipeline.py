"""Input-pipeline throughput: batches/s of the streaming loader on CIFAR-shaped record files.

Generates 50,000 random 32x32x3 uint8 images with 10 classes as a TFDS array_record dataset
(PNG-encoded like TFDS' own cifar10, or raw tensors with --encoding=raw), then times the
streaming path (grain workers reading the record files) at batch 128 after a warm-up, and prints
the data rate. `streaming_rate()` returns the figure so that a training benchmark can compare it
with how fast a model consumes batches.

    python benchmarks/data_pipeline.py [--data_dir=DIR] [--encoding=png|raw] [--workers=2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.data import make_loader, records

NUM_EXAMPLES = 50_000
SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def generate(data_dir: str, encoding: str = "png", num_examples: int = NUM_EXAMPLES):
    """Writes (or reuses) the CIFAR-shaped dataset; returns (builder, seconds spent writing)."""
    rng = np.random.default_rng(0)
    # Smooth random images (a coarse grid upsampled), so PNG compresses them about as well as it
    # does real photos; pure noise would be the worst case for PNG.
    coarse = rng.integers(0, 256, (num_examples, 8, 8, 3), dtype=np.uint8)
    images = coarse.repeat(4, axis=1).repeat(4, axis=2)
    labels = rng.integers(0, NUM_CLASSES, num_examples)
    start = time.perf_counter()
    builder = records.write_arrays(
        f"cifar_shaped_{encoding}_n{num_examples}",
        {"train": (images, labels)},
        data_dir=data_dir,
        num_classes=NUM_CLASSES,
        png=encoding == "png",
    )
    return builder, time.perf_counter() - start


def streaming_rate(
    source,
    *,
    batch_size: int = 128,
    num_workers: int = 2,
    prefetch: int = 4,
    warmup: int = 20,
    batches: int = 200,
) -> float:
    """Batches per second the streaming loader delivers, measured after `warmup` batches."""
    loader = make_loader(
        source,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        streaming=True,
        num_workers=num_workers,
        prefetch=prefetch,
    )
    batches = min(batches, len(loader) - warmup)
    stream = loader.epoch(0)
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(stream)
    elapsed = time.perf_counter() - start
    stream.close()
    assert batch["inputs"].shape == (batch_size, *SHAPE)
    return batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--encoding", default="png", choices=("png", "raw"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="cifar_shaped_")
    builder, seconds = generate(data_dir, args.encoding)
    print(f"generated {NUM_EXAMPLES} {args.encoding} examples in {seconds:.1f} s ({data_dir})")
    start = time.perf_counter()
    source = records.record_source(builder, "train")
    print(f"opened record source (all targets read) in {time.perf_counter() - start:.2f} s")
    for workers in args.workers:
        rate = streaming_rate(source, batch_size=args.batch_size, num_workers=workers)
        print(
            f"streaming, {workers} workers, batch {args.batch_size}: {rate:.1f} batches/s "
            f"({rate * args.batch_size:.0f} examples/s) on {os.cpu_count()} CPU cores"
        )


if __name__ == "__main__":
    main()
