"""fsdp against replicated on 8 simulated CPU devices: per-device state bytes and step time.

For ResNet-18 and VGG-16 on 32x32x3 inputs (the digits, upscaled 4x and repeated over three
channels), Adam, a global batch of 64: each layout's bytes of parameters plus optimizer state
on each device, summed from every array's addressable shards (what the device really holds),
and the wall time of a training step through the engine's own loop (`engine_loop`), the two
layouts alternating over the trials. On a CPU, fsdp only adds work (the gathers and
reduce-scatters are copies between simulated devices of one memory), so its step is expected
to be slower there; the bytes are what it is for.

VGG-16 at full width (134M parameters: Adam's state makes 1.6 GB a copy) is measured for bytes
only: trained replicated on 8 simulated devices it ran this 24 GiB machine out of memory. Its
step time is measured at half width (34M parameters).

Usage: python benchmarks/fsdp.py [--trials=3] [--steps=4] [--bytes_cases=resnet18,vgg16]
         [--time_cases=resnet18,vgg16-half]
"""

from __future__ import annotations

import os
import sys

DEVICES = 8
# The simulated devices must be set before JAX starts.
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    + [
        f"--xla_force_host_platform_device_count={DEVICES}",
        # Slow simulated devices on 2 cores: let collectives wait for stragglers.
        "--xla_cpu_collective_call_terminate_timeout_seconds=900",
    ]
)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from benchmarks.engine_loop import engine_epoch_fn  # noqa: E402

BATCH = 64
CASES = {
    "resnet18": ("resnet", {"depth": 18}),
    "vgg16": ("vgg", {"depth": 16}),  # 134M parameters (fc6 alone: 7x7x512x4096)
    "vgg16-half": ("vgg", {"depth": 16, "width": 0.5}),  # 34M: trains replicated in 24 GiB
}
LAYOUTS = ("replicated", "fsdp")


def images(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` digits as 32x32x3 images, and their labels."""
    digits = load_digits()
    reps = -(-rows // len(digits.target))
    x = np.tile(digits.images.astype(np.float32), (reps, 1, 1))[:rows]
    x = np.repeat(np.kron(x, np.ones((4, 4), np.float32))[..., None], 3, axis=-1)
    return x, np.tile(digits.target.astype(np.int32), reps)[:rows]


def device_bytes(state) -> list[int]:
    """Bytes of parameters plus optimizer state held by each device, from the shards."""
    held = {d: 0 for d in jax.devices()}
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return [held[d] for d in jax.devices()]


def trainer(case: str, layout: str, steps: int):
    """The engine's epoch function for `case` in `layout` (its state placed, nothing compiled)."""
    arch, options = CASES[case]
    x, y = images(BATCH * steps)
    return engine_epoch_fn(arch, options, x, y, BATCH, "jit", sharding=layout)


def measure_bytes(case: str) -> dict:
    """Bytes per device of the placed state in each layout (one layout in memory at a time)."""
    found = {}
    for layout in LAYOUTS:
        fn = trainer(case, layout, 1)
        found[layout] = device_bytes(fn.state())
        del fn
        gc.collect()
    return found


def measure_time(case: str, trials: int, steps: int) -> dict:
    """Median seconds per step of both layouts, alternating which runs first."""
    fns = {layout: trainer(case, layout, steps) for layout in LAYOUTS}
    for fn in fns.values():  # compile, then one epoch to settle the allocator
        fn(), fn()
    seconds = {layout: [] for layout in LAYOUTS}
    for t in range(trials):
        for layout in LAYOUTS[t % 2 :] + LAYOUTS[: t % 2]:
            start = time.perf_counter()
            fns[layout]()
            seconds[layout].append((time.perf_counter() - start) / steps)
    return {layout: statistics.median(s) for layout, s in seconds.items()}


def main() -> None:
    """Prints the bytes table and the step-time table, with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed epoch")
    parser.add_argument("--bytes_cases", default="resnet18,vgg16")
    parser.add_argument("--time_cases", default="resnet18,vgg16-half")
    args = parser.parse_args()
    assert jax.device_count() == DEVICES, jax.devices()
    print(f"{DEVICES} simulated {jax.devices()[0].platform} devices, jax {jax.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}, batch {BATCH}, Adam, 32x32x3")  # fmt: skip
    print(
        f"{'case':11} {'replicated MiB':>15} {'fsdp MiB':>9} {'fsdp/replicated':>16}"
        "  (per device, max)"
    )
    for case in filter(None, args.bytes_cases.split(",")):
        found = {k: max(v) / 2**20 for k, v in measure_bytes(case).items()}
        share = found["fsdp"] / found["replicated"]
        print(f"{case:11} {found['replicated']:15.2f} {found['fsdp']:9.2f} {share:16.4f}")
    print(f"{'case':11} {'replicated s':>13} {'fsdp s':>8} {'fsdp/replicated':>16}  (per step)")
    for case in filter(None, args.time_cases.split(",")):
        found = measure_time(case, args.trials, args.steps)
        ratio = found["fsdp"] / found["replicated"]
        print(f"{case:11} {found['replicated']:13.3f} {found['fsdp']:8.3f} {ratio:16.2f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
