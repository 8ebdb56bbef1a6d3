"""Cost of the per-layer gradient norms (and lr, non-finite markers) in the ResNet-18 train step.

Builds the engine's supervised train step twice for the same ResNet-18, the same optimizer and
batch: once with `lr_schedule` (the step also sums `steps.optimizer_sums`: squared norms per
layer from the gradients it already has, the learning rate, first non-finite markers), once
without. Both run under `loop.accumulating` and `jax.jit` with donated state, as the loop runs
them. Trials alternate (with, without, with, ...), each timing a few steps after a warm-up, and
the medians are compared: machine noise hits both alike. It also prints XLA's cost analysis of
both steps (floating-point operations), which does not move with the machine's load. Issue 12's
target: under 5% of the step time, or the sums behind a flag.

Usage:
  python benchmarks/grad_norms.py                       # 8x8x1 digits-shaped, batch 64
  python benchmarks/grad_norms.py --size=32 --channels=3 --batch=128 --trials=5
  python benchmarks/grad_norms.py --trials=0            # XLA's flop counts only (no timing)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import architectures
from engine.config import Config
from engine.data.source import CLASSIFICATION, DatasetInfo
from engine.programs import state as state_lib
from engine.programs import steps
from engine.runtime import loop
from engine.workflows.build import loss_task


def build(size: int, channels: int, batch: int, with_sums: bool):
    """A jitted `(state, batch, totals) -> (state, totals)` ResNet-18 step and its inputs."""
    model = architectures.get("resnet", num_classes=10, depth=18)
    info = DatasetInfo(
        name="bench", task=CLASSIFICATION, input_shape=(size, size, channels), num_classes=10
    )
    task = loss_task(Config(), info)
    schedule = optax.cosine_decay_schedule(1e-3, 1000)
    tx = optax.adam(schedule)
    cfg = steps.StepConfig(has_batchnorm=True)
    train_step = steps.make_train_step(
        model, tx, task, cfg, lr_schedule=schedule if with_sums else None
    )
    norm = {"input_shift": np.zeros(channels), "input_scale": np.ones(channels)}
    state = state_lib.create(
        model,
        tx,
        rng=jax.random.PRNGKey(0),
        sample_input=np.zeros((1, size, size, channels), np.float32),
        norm=norm,
    )
    rng = np.random.default_rng(0)
    data = {
        "inputs": rng.normal(size=(batch, size, size, channels)).astype(np.float32),
        "targets": rng.integers(0, 10, size=batch).astype(np.int32),
        "mask": np.ones(batch, bool),
    }
    shapes = jax.eval_shape(train_step, state, data)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    step = jax.jit(loop.accumulating(train_step), donate_argnums=(0, 2))
    return step, state, data, zeros


def trial(case, n: int) -> float:
    """Seconds per step over `n` steps (the case's state carried on between trials)."""
    step, state, data, zeros = case["parts"]
    totals = jax.tree.map(jnp.copy, zeros)
    start = time.perf_counter()
    for _ in range(n):
        state, totals = step(state, data, totals)
    jax.block_until_ready((state, totals))
    case["parts"] = (step, state, data, zeros)
    return (time.perf_counter() - start) / n


def main() -> None:
    """Runs the alternating trials and prints the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    cases, flops = {}, {}
    for name, with_sums in (("with sums", True), ("without", False)):
        start = time.perf_counter()
        cases[name] = {"parts": build(args.size, args.channels, args.batch, with_sums)}
        # XLA's own count of the step's floating-point work: independent of the machine's load.
        step, state, data, zeros = cases[name]["parts"]
        flops[name] = step.lower(state, data, zeros).cost_analysis().get("flops", float("nan"))
        print(f"{name}: {flops[name]:.4g} flops per step (XLA cost analysis)", flush=True)
        if args.trials:
            trial(cases[name], 1)  # compile and warm up
            print(f"{name}: compiled in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"flops with the sums / without = {flops['with sums'] / flops['without']:.5f}")
    if not args.trials:
        return
    times = {name: [] for name in cases}
    for _ in range(args.trials):
        for name, case in cases.items():
            times[name].append(trial(case, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        shown = ", ".join(f"{1000 * x:.0f}" for x in t)
        print(f"{name}: median {1000 * med[name]:.1f} ms/step ({shown})")
    ratio = med["with sums"] / med["without"]
    print(
        f"ResNet-18 {args.size}x{args.size}x{args.channels} batch {args.batch}: step time with "
        f"the sums / without = {ratio:.4f} ({100 * (ratio - 1):+.2f}%; target < +5%)"
    )


if __name__ == "__main__":
    main()
