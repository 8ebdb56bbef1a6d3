"""CPU convolution lowerings (conv="auto": Winograd or shifted matmuls) against XLA's ("xla").

Two tables, each from alternating trials in this one process:
- layers: forward+backward time of single convolutions at the shapes of ResNet-18 on 8x8 digits
  and on 32x32 CIFAR: `lax.conv_general_dilated`, the matmul forms alone (Winograd off),
  and `architectures.conv_lowering` as the engine uses it (the form it picks is named);
- steps: whole training epochs through the engine's real loop (`benchmarks.engine_loop`), the
  same network built with conv="auto" and with conv="xla" (same parameters: the lowering is not
  part of them), examples/s and the ratio.

Usage:
  python benchmarks/conv_lowering.py                   # both tables
  python benchmarks/conv_lowering.py --table=steps --case=resnet_digits --trials=5
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
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from architectures import conv_lowering
from benchmarks.engine_loop import engine_epoch_fn

# (batch, size, in channels, out channels, kernel, stride): ResNet-18's convolutions with the
# small-image stem on 8x8 digits (batch 64) and on 32x32 CIFAR (batch 128).
LAYERS = [
    (64, 8, 1, 64, 3, 1),
    (64, 8, 64, 64, 3, 1),
    (64, 8, 64, 128, 3, 2),
    (64, 8, 64, 128, 1, 2),
    (64, 4, 128, 128, 3, 1),
    (64, 4, 128, 256, 3, 2),
    (64, 2, 256, 256, 3, 1),
    (64, 2, 256, 512, 3, 2),
    (64, 1, 512, 512, 3, 1),
    (128, 32, 3, 64, 3, 1),
    (128, 32, 64, 64, 3, 1),
    (128, 32, 64, 128, 3, 2),
    (128, 32, 64, 128, 1, 2),
    (128, 16, 128, 128, 3, 1),
    (128, 8, 256, 256, 3, 1),
    (128, 4, 512, 512, 3, 1),
]

# name: (arch, options, input shape, examples, batch)
CASES = {
    "resnet_digits": ("resnet", {"depth": 18}, (8, 8, 1), 640, 64),
    "resnet_cifar": ("resnet", {"depth": 18}, (32, 32, 3), 256, 128),
    "lenet": ("lenet", {}, (8, 8, 1), 1280, 64),
}

NHWC = ("NHWC", "HWIO", "NHWC")


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _matmuls_only(*args, **kwargs):
    """conv_lowering's matmul forms with Winograd switched off (its threshold out of reach)."""
    saved = conv_lowering.WINOGRAD_FLOPS
    conv_lowering.WINOGRAD_FLOPS = float("inf")
    try:
        return conv_lowering.conv_general_dilated(*args, **kwargs)
    finally:
        conv_lowering.WINOGRAD_FLOPS = saved


def layer_table(trials: int) -> None:
    """Prints forward+backward ms of each LAYERS convolution under each lowering."""
    print(
        "| input | kernel/stride | out | xla ms | matmul ms | auto ms | auto's form | xla / auto |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, size, c, f, k, s in LAYERS:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, c, f)) * 0.05, jnp.float32)
        pad = ((k // 2, k // 2),) * 2  # PyTorch's padding k // 2, as the zoo uses

        def grad_fn(conv, strides=(s, s), pad=pad):
            def loss(inputs, kernel):
                return jnp.sum(conv(inputs, kernel, strides, pad, dimension_numbers=NHWC) ** 2)

            return jax.jit(jax.grad(loss, argnums=(0, 1)))

        fns = {
            "xla": grad_fn(lax.conv_general_dilated),
            "matmul": grad_fn(_matmuls_only),
            "auto": grad_fn(conv_lowering.conv_general_dilated),
        }
        tile = conv_lowering.winograd_tile((n, size, size, c), (k, k, c, f), (s, s), pad)
        form = f"F({tile}x{tile}, 3x3)" if tile else "matmuls"
        times = {name: [] for name in fns}
        for fn in fns.values():
            _timed(fn, x, w)
        reps = 2 if size >= 16 else 10
        for _ in range(trials):
            for name, fn in fns.items():
                times[name].append(sum(_timed(fn, x, w) for _ in range(reps)) / reps * 1e3)
        a, b, c_ = (statistics.median(times[name]) for name in ("xla", "matmul", "auto"))
        out = (size + 2 * (k // 2) - k) // s + 1
        print(
            f"| {n}x{size}x{size}x{c} | {k}x{k}/{s} | {out}x{out}x{f} | {a:.2f} | {b:.2f} "
            f"| {c_:.2f} | {form} | {a / c_:.2f} |",
            flush=True,
        )


def _data(shape, n):
    if shape == (8, 8, 1):
        from sklearn.datasets import load_digits

        digits = load_digits()
        reps = -(-n // len(digits.target))
        x = np.tile(digits.images[:, :, :, None], (reps, 1, 1, 1))[:n].astype(np.float32)
        return x, np.tile(digits.target, reps)[:n].astype(np.int32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return x, rng.integers(0, 10, size=n).astype(np.int32)


def step_table(cases: list[str], trials: int) -> None:
    """Prints examples/s of engine epochs with conv="auto" and conv="xla", alternating."""
    print("| case | batch | xla ex/s | auto ex/s | auto / xla |")
    print("|---|---|---|---|---|")
    for case in cases:
        arch, options, shape, n, batch = CASES[case]
        x, y = _data(shape, n)
        fns = {
            lowering: engine_epoch_fn(arch, {**options, "conv": lowering}, x, y, batch, "jit")
            for lowering in ("xla", "auto")
        }
        for fn in fns.values():
            fn()  # compile and warm up
        rates = {name: [] for name in fns}
        for _ in range(trials):
            for name, fn in fns.items():
                start = time.perf_counter()
                count = fn()["count"]
                rates[name].append(count / (time.perf_counter() - start))
        a, b = statistics.median(rates["xla"]), statistics.median(rates["auto"])
        print(f"| {case} | {batch} | {a:.1f} | {b:.1f} | {b / a:.2f} |", flush=True)


def main() -> None:
    """Runs the chosen tables and prints the load average around them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=["layers", "steps", "all"], default="all")
    parser.add_argument("--case", default=",".join(CASES), help="comma-separated step cases")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    cases = args.case.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        sys.exit(f"error: unknown case {unknown[0]!r}; valid: {', '.join(CASES)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; load {os.getloadavg()}")
    if args.table in ("layers", "all"):
        layer_table(args.trials)
    if args.table in ("steps", "all"):
        step_table(cases, args.trials)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
