"""Input pipeline against ResNet-18: does streaming keep the training step fed? One process.

Generates 50,000 random 32x32x3 uint8 images with 10 classes as a TFDS array_record dataset
(PNG-encoded like TFDS' own cifar10, or raw tensors with --encoding=raw), then measures:

(a) delivery: batches/s of the streaming path (grain workers reading and decoding the record
    files) at batch 128, after a warm-up, for each `--workers` count;
(b) consumption: ResNet-18 (CIFAR stem) training steps/s at batch 128 with the engine's own
    train step (`engine.steps.make_train_step` under `engine.parallel.make_plan("jit")`), on
    batches already on the device, each step blocked on (after compilation);
    ratio (a) / (b) at `--train_workers` workers: the issue's target is >= 5;
(c) starvation: ResNet-18 trained from the streaming loader (the engine's defaults: 2 workers,
    prefetch 2) for `--train_steps` steps. Each step is blocked on, so a step's time is its
    compute and the time spent in `next(batches)` is time the loop waited for data (with
    asynchronous dispatch, unblocked, that wait would hide inside the next step's dispatch).
    Reported: the share of the loop's wall time spent waiting, after the first batch (target
    < 5%); the first batch's latency (worker start-up, once per epoch) is printed separately.
    The loop's total time is also compared with (b)'s pure-compute time for the same steps.

On a shared 2-core CPU the workers and XLA compete for the same cores: (c) includes that
contention, (a) and (b) measure each side alone. Timings are noisy there; the load average is
printed. `streaming_rate()` returns the figure (a) for other benchmarks.

    python benchmarks/data_pipeline.py [--data_dir=DIR] [--encoding=png|raw] [--workers 0 1 2]
        [--train_steps=20] [--compute_steps=5] [--delivery_only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import architectures
from engine import optim, parallel, steps, tasks
from engine import state as state_lib
from engine.config import Config
from engine.data import make_loader, records
from engine.data.source import CLASSIFICATION, DatasetInfo

NUM_EXAMPLES = 50_000
SHAPE = (32, 32, 3)
NUM_CLASSES = 10
DELIVERY_TARGET = 5.0  # delivery / consumption, at least
WAIT_TARGET = 0.05  # share of the training loop's wall time spent waiting for data, at most


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
    # Small (smoke-test) sets: a quarter of the epoch warms up; the last batch, which may be
    # partial and waits for grain's end of epoch, is never timed.
    warmup = min(warmup, len(loader) // 4)
    batches = min(batches, len(loader) - warmup - 1)
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


class ResNetTrainer:
    """ResNet-18 (CIFAR stem) with the engine's train step, state and batch placement (jit plan).

    The same pieces `engine.train` uses: `tasks.make` (cross-entropy), `optim.make` (adam,
    cosine), `state_lib.create`, `steps.make_train_step` with on-device metric sums
    (`steps.accumulating`) under `Plan.wrap_train` (state and sums donated), and
    `Plan.place_batch`. Inputs are the raw uint8 batches; normalisation runs in the step.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, sample_batch: dict):
        info = DatasetInfo("cifar_shaped", CLASSIFICATION, SHAPE, num_classes=NUM_CLASSES)
        config = Config(arch="resnet", batch_size=batch_size, progress=False, parallel="jit")
        self.plan = parallel.make_plan("jit")
        model = architectures.get("resnet", num_classes=NUM_CLASSES, depth=18)
        task = tasks.make(config, info)
        tx = optim.make(config, steps_per_epoch)
        pixels = sample_batch["inputs"].reshape(-1, SHAPE[-1]).astype(np.float64)
        norm = {"input_shift": pixels.mean(0), "input_scale": pixels.std(0)}
        host = state_lib.create(
            model, tx, seed=0, sample_input=np.zeros((1, *SHAPE), np.float32), norm=norm
        )
        cfg = steps.StepConfig(image_size=SHAPE[0], has_batchnorm=True)
        self.state = self.plan.place_state(host)
        self.totals = self.plan.place_state(
            steps.metric_zeros(model, task, cfg, host, sample_batch)
        )
        self._step = self.plan.wrap_train(
            steps.accumulating(steps.make_train_step(model, tx, task, cfg, self.plan.axis_name))
        )

    def to_device(self, host_batch: dict) -> dict:
        """A host batch placed on the devices as the step's input sharding says."""
        sharding = NamedSharding(self.plan.mesh, P(parallel.AXIS))
        return jax.block_until_ready(jax.device_put(host_batch, sharding))

    def step(self, batch) -> None:
        """One training step, waited for (its metric sums are ready when this returns)."""
        self.state, self.totals = self._step(self.state, batch, self.totals)
        jax.block_until_ready(self.totals)


def consumption_rate(trainer: ResNetTrainer, host_batches: list, num_steps: int) -> float:
    """Training steps/s on batches already on the device (compiles first, not timed)."""
    device_batches = [trainer.to_device(b) for b in host_batches]
    trainer.step(device_batches[0])  # compile
    start = time.perf_counter()
    for i in range(num_steps):
        trainer.step(device_batches[i % len(device_batches)])
    return num_steps / (time.perf_counter() - start)


def starvation(trainer: ResNetTrainer, source, *, batch_size, num_steps, num_workers) -> dict:
    """Trains `num_steps` steps from the streaming loader; returns where the wall time went.

    Returns:
      {"first": seconds to the first batch (worker start-up), "wait": seconds in next() after
      it, "total": wall seconds of the steps after the first batch's arrival, "steps": steps
      timed}.
    """
    loader = make_loader(
        source,
        batch_size=batch_size,
        shuffle=True,
        seed=1,  # another order than (a) read: no page-cache head start
        streaming=True,
        num_workers=num_workers,
    )
    batches = loader.epoch(0)
    start = time.perf_counter()
    batch = next(batches)
    first = time.perf_counter() - start
    wait, loop_start = 0.0, time.perf_counter()
    for i in range(num_steps):
        trainer.step(trainer.plan.place_batch(batch))
        if i + 1 < num_steps:
            t = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t
    total = time.perf_counter() - loop_start
    batches.close()
    return {"first": first, "wait": wait, "total": total, "steps": num_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--encoding", default="png", choices=("png", "raw"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_examples", type=int, default=NUM_EXAMPLES, help="(smoke tests)")
    parser.add_argument("--train_workers", type=int, default=2, help="workers in (c)")
    parser.add_argument("--compute_steps", type=int, default=5, help="timed steps in (b)")
    parser.add_argument("--train_steps", type=int, default=20, help="timed steps in (c)")
    parser.add_argument("--delivery_only", action="store_true", help="only (a)")
    args = parser.parse_args()
    batch = args.batch_size
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f} (shared machine: timings are noisy)"
    )
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="cifar_shaped_")
    name = f"cifar_shaped_{args.encoding}_n{args.num_examples}"
    reused = os.path.exists(os.path.join(data_dir, name, "1.0.0", "dataset_info.json"))
    builder, seconds = generate(data_dir, args.encoding, args.num_examples)
    done = "reused" if reused else f"generated in {seconds:.1f} s"
    print(f"{args.num_examples} {args.encoding} examples {done} ({data_dir})")
    start = time.perf_counter()
    source = records.record_source(builder, "train")
    print(f"opened record source (all targets read) in {time.perf_counter() - start:.2f} s")

    delivery = {}
    counts = set(args.workers) if args.delivery_only else {*args.workers, args.train_workers}
    for workers in sorted(counts):
        # prefetch 2: the engine's loader default (what a training run streams with).
        delivery[workers] = streaming_rate(
            source, batch_size=batch, num_workers=workers, prefetch=2
        )
        print(
            f"(a) delivery, {workers} workers, batch {batch}: {delivery[workers]:.1f} batches/s "
            f"({delivery[workers] * batch:.0f} images/s)",
            flush=True,
        )
    if args.delivery_only:
        return

    in_order = make_loader(source, batch_size=batch, shuffle=False, seed=0).epoch(0)
    host_batches = [next(in_order) for _ in range(2)]
    trainer = ResNetTrainer(batch, -(-len(source) // batch), host_batches[0])
    consume = consumption_rate(trainer, host_batches, args.compute_steps)
    ratio = delivery[args.train_workers] / consume
    verdict = "ok" if ratio >= DELIVERY_TARGET else "BELOW TARGET"
    print(
        f"(b) ResNet-18 consumption, batch {batch}: {consume:.3f} steps/s "
        f"({consume * batch:.1f} images/s)\n"
        f"    delivery / consumption at {args.train_workers} workers: {ratio:.0f}x "
        f"(target >= {DELIVERY_TARGET:.0f}x) {verdict}",
        flush=True,
    )

    r = starvation(
        trainer,
        source,
        batch_size=batch,
        num_steps=args.train_steps,
        num_workers=args.train_workers,
    )
    share = r["wait"] / r["total"]
    compute = r["steps"] / consume
    print(
        f"(c) ResNet-18 from the stream, {r['steps']} steps, {args.train_workers} workers: "
        f"waited {r['wait']:.2f} s of {r['total']:.1f} s = {share:.2%} "
        f"(target < {WAIT_TARGET:.0%}) {'ok' if share < WAIT_TARGET else 'ABOVE TARGET'}\n"
        f"    first batch (worker start-up, once per epoch) {r['first']:.1f} s; "
        f"loop {r['total']:.1f} s vs {compute:.1f} s of pure compute in (b) "
        f"({r['total'] / compute - 1:+.1%}); load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
