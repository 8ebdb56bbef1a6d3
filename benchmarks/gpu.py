"""Engine training throughput on one GPU: img/s, step time and model FLOP utilisation (MFU).

For each (model, dtype, batch) of the grid it builds the engine's own supervised program (the
model from `engine.workflows.model_setup.model_options`, so `--dtype=bfloat16` means exactly
what it means for `run.py`; the optax chain from `engine.programs.optim`; the pure step of
`engine.programs.steps` with the
per-layer gradient sums a real run has, under `loop.accumulating` and `Plan.wrap_train` with
donated state), compiles it, runs `--warmup` steps, then times `--steps` steps on batches
already on the device (one `block_until_ready` at the end). It reports the compile time, ms
per step, img/s, and the model FLOP utilisation: the FLOPs of one compiled step from XLA's
cost analysis (`jit(...).lower(...).compile().cost_analysis()["flops"]`) divided by the step
time and by the device's peak (dense tensor-core TFLOP/s by `device_kind`, or `--peak_tflops`).

Models: ResNet-18 on 32x32x3 (CIFAR stem, 10 classes), batch 256, 512, 1024; ResNet-50 on
224x224x3 (ImageNet stem, 1000 classes), batch 64, 128, 256; in float32 and bfloat16. The
optimizer is the README's GPU recipe (momentum 0.9, lr 0.1, warmup_cosine); labels and uint8
images are random (speed does not depend on their values).

The data-pipeline check (ResNet-18, the largest batch, bfloat16 when measured) feeds the same
step from the engine's in-memory loader (`engine.data.make_loader` over `--pipeline_examples`
random uint8 images, CIFAR-10's training-split size by default): the loader alone with
`jax.device_put` of each batch (the img/s it can deliver), then the engine's loop
`engine.runtime.loop.train_epoch` fed by the loader, against the step's rate on
device-resident data.

Float32 note: JAX's default precision lets XLA use TF32 tensor cores for float32 convolutions
and matmuls (Ampere and later), so float32 MFU is against the TF32 peak; with
`JAX_DEFAULT_MATMUL_PRECISION=highest` it is against the plain FP32 peak.

Goal (issue): >= 30,000 img/s for ResNet-18 at 32x32 in bfloat16 on one H100/H200-class GPU.
The whole default grid is meant to take about 8 minutes on an H200, compiles included.

Usage:
  pip install -e . 'jax[cuda13]'
  python benchmarks/gpu.py --json=gpu.json                    # the default grid
  python benchmarks/gpu.py --models=resnet18 --dtypes=bfloat16 --batches=1024,2048
  python benchmarks/gpu.py --peak_tflops=989,494              # bf16[,float32] peak, unlisted GPU
  python benchmarks/gpu.py --models=resnet18 --batches=8 --steps=2 --dtypes=float32  # CPU smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import architectures
from benchmarks.gpu_flops import flops as _flops
from benchmarks.gpu_flops import peak_tflops
from engine import data
from engine.config import Config
from engine.data import augment as augment_lib
from engine.data.source import CLASSIFICATION, DatasetInfo
from engine.programs import optim, steps, supervised
from engine.runtime import loop, parallel
from engine.workflows.build import loss_task
from engine.workflows.model_setup import model_options

# name: (ResNet depth, image side, classes, default batches)
MODELS = {
    "resnet18": (18, 32, 10, (256, 512, 1024)),
    "resnet50": (50, 224, 1000, (64, 128, 256)),
}
TARGET = ("resnet18", "bfloat16", 30_000)  # the issue's goal, img/s on one H100/H200

DISTINCT_BATCHES = 4  # device-resident batches cycled through, so no step sees one twice in a row


def _random_images(n: int, size: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return x, rng.integers(0, classes, size=n).astype(np.int32)


def build(
    name: str, dtype: str, batch: int, mode: str, augment: str, sharding: str = "replicated"
) -> dict:
    """The engine's compiled ResNet train step for one grid point, with its state and batches.

    Args:
        name: a key of MODELS.
        dtype: the engine's `--dtype` (float32 or bfloat16).
        batch: global batch size.
        mode: the engine's `--parallel` (jit or none).
        augment: the engine's `--augment` (none or standard), applied inside the step.
        sharding: the engine's `--sharding` (replicated or fsdp; jit only).

    Returns:
        A dict with the plan, program, wrapped step, host state, metric zeros, device batches
        and the sample host batch.
    """
    depth, size, classes, _ = MODELS[name]
    # An epoch of CIFAR-10 / ImageNet only sets where the schedule's warm-up ends.
    steps_per_epoch = max(1, (50_000 if size < 64 else 1_281_167) // batch)
    config = Config(
        arch="resnet",
        depth=depth,
        dtype=dtype,
        batch_size=batch,
        optimizer="momentum",
        lr=0.1,
        schedule="warmup_cosine",
        epochs=90,
        augment=augment,
        parallel=mode,
        sharding=sharding,
        progress=False,
    )
    plan = parallel.make_plan(mode, sharding)
    spec = architectures.spec("resnet")
    model = architectures.get(
        "resnet", num_classes=classes, **model_options(config, spec, plan.axis_name)
    )
    info = DatasetInfo("bench", CLASSIFICATION, (size, size, 3), num_classes=classes)
    x, y = _random_images(DISTINCT_BATCHES * batch, size, classes)
    source = data.ArraySource(x, y)
    loader = data.make_loader(source, batch_size=batch, shuffle=True, seed=0)
    shift, scale = data.normalization(source, "standard")
    cfg = steps.StepConfig(
        image_size=size,
        augment=None if augment == "none" else augment_lib.get(augment),
        aux_weight=config.aux_weight,
        has_batchnorm=model.batchnorm,
        on_nan=config.on_nan,
    )
    program = supervised.make(
        model,
        optim.make(optim.settings(config), steps_per_epoch),
        loss_task(config, info),
        cfg,
        plan.axis_name,
        input_shape=(size, size, 3),
        norm={"input_shift": shift, "input_scale": scale},
        lr_schedule=optim.schedule(
            optim.settings(config), steps_per_epoch
        ),  # as a real run: gradient sums on
    )
    host_batches = list(loader.epoch(0))
    host = program.init(jax.random.PRNGKey(0), host_batches[0])
    zeros = loop.metric_zeros(program, plan.abstract_state(host), host_batches[0], plan.axis_name)
    # Batches placed where the wrapped step expects them (sharded over the data mesh under jit),
    # so the timed steps move no input data.
    sharding = NamedSharding(plan.mesh, P(parallel.AXIS)) if mode == "jit" else None
    device_batches = [jax.device_put(b, sharding) for b in host_batches]
    return {
        "plan": plan,
        "program": program,
        "step": plan.wrap_train(loop.accumulating(program.train_step)),
        "host": host,
        "zeros": zeros,
        "batches": device_batches,
        "sharding": sharding,
        "size": size,
        "classes": classes,
    }


def _run(compiled, state, totals, batches, n: int):
    for i in range(n):
        state, totals = compiled(state, batches[i % len(batches)], totals)
    return jax.block_until_ready((state, totals))


def measure(name: str, dtype: str, batch: int, args, peak, pipeline: bool) -> dict:
    """Compiles, warms up and times one grid point; with `pipeline`, also the loader check."""
    start = time.perf_counter()
    parts = build(name, dtype, batch, args.parallel, args.augment, args.sharding)
    plan, program = parts["plan"], parts["program"]
    state = plan.place_state(parts["host"])
    totals = plan.place_state(parts["zeros"])
    built = time.perf_counter()
    lowered = parts["step"].lower(state, parts["batches"][0], totals)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - built
    # The compiled step's count is what ran (after XLA's rewrites); the lowered module's
    # count is the fallback where a backend does not count its library kernels (cuDNN and
    # cuBLAS custom calls): then the compiled count is missing or far below the lowered one.
    flops, source = _flops(compiled), "compiled"
    lowered_flops = _flops(lowered)
    if flops is None or (lowered_flops and flops < 0.5 * lowered_flops):
        flops, source = lowered_flops, "lowered"

    state, _ = _run(compiled, state, totals, parts["batches"], args.warmup)
    totals = plan.place_state(parts["zeros"])
    t0 = time.perf_counter()
    state, totals = _run(compiled, state, totals, parts["batches"], args.steps)
    seconds = time.perf_counter() - t0
    summary = program.summarize(plan.read(totals))
    step_s = seconds / args.steps
    devices = plan.num_devices
    result = {
        "model": name,
        "input": f"{parts['size']}x{parts['size']}x3",
        "classes": parts["classes"],
        "dtype": dtype,
        "batch": batch,
        "devices": devices,
        "build_s": built - start,
        "compile_s": compile_s,
        "steps": args.steps,
        "step_ms": 1e3 * step_s,
        "img_per_s": batch / step_s,
        "loss": summary["loss"],
        "nonfinite_steps": int(summary.get("nonfinite_steps", 0)),
        # Under jit over several devices the compiled module is one device's part.
        "flops_per_step_device": flops,
        "flops_source": source if flops else None,
        "lowered_flops_per_step": lowered_flops,
        "gflop_per_image": flops * devices / batch / 1e9 if flops else None,
        "tflops_per_s_device": flops / step_s / 1e12 if flops else None,
        "peak_tflops": peak[0],
        "peak_kind": peak[1] or None,
        "mfu": flops / step_s / (peak[0] * 1e12) if flops and peak[0] else None,
    }
    if pipeline:
        result["pipeline"] = pipeline_check(parts, compiled, state, args)
    return result


def _endless(loader):
    for epoch in itertools.count():
        yield from loader.epoch(epoch)


def pipeline_check(parts: dict, compiled, state, args) -> dict:
    """Img/s of the engine's in-memory loader (+ device_put), and of its loop fed by it."""
    plan, batch = parts["plan"], parts["batches"][0]["inputs"].shape[0]
    x, y = _random_images(args.pipeline_examples, parts["size"], parts["classes"], seed=1)
    loader = data.make_loader(data.ArraySource(x, y), batch_size=batch, shuffle=True, seed=0)
    stream = _endless(loader)

    def deliver(n: int) -> float:
        placed = []
        t0 = time.perf_counter()
        for host in itertools.islice(stream, n):
            placed.append(jax.device_put(host, parts["sharding"]))
        jax.block_until_ready(placed)
        return n * batch / (time.perf_counter() - t0)

    deliver(args.warmup)
    delivered = deliver(args.steps)

    def fed(n: int, state):
        # The real loop: host batches from the loader, `Plan.place_batch`, the compiled step
        # (which copies each batch to the device), one read-back of the sums at the end.
        t0 = time.perf_counter()
        state, _, _ = loop.train_epoch(
            compiled, state, itertools.islice(stream, n), plan, parts["zeros"]
        )
        jax.block_until_ready(state)
        return n * batch / (time.perf_counter() - t0), state

    _, state = fed(args.warmup, state)
    loop_rate, state = fed(args.steps, state)
    return {
        "examples": args.pipeline_examples,
        "loader_img_per_s": delivered,
        "loop_from_loader_img_per_s": loop_rate,
    }


def _csv(kind):
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def _strict(value):
    """The value with non-finite floats as None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write(path: str, report: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_strict(report), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)  # a reader (or a killed run) never sees half a file


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _validate(args, parser) -> None:
    for name in args.models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    for dtype in args.dtypes:
        if dtype not in ("float32", "bfloat16"):
            parser.error(f"unknown dtype {dtype!r}; valid: float32, bfloat16")
    if args.batches and any(b < 1 or b % jax.device_count() for b in args.batches):
        parser.error(f"every batch must be a positive multiple of {jax.device_count()} devices")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    if args.peak_tflops and (len(args.peak_tflops) > 2 or not all(v > 0 for v in args.peak_tflops)):
        parser.error("--peak_tflops takes one or two positive numbers: BF16[,FLOAT32]")


def main() -> None:
    """Runs the grid, prints a table and the pipeline check, writes `--json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_csv(str), default=list(MODELS))
    parser.add_argument("--dtypes", type=_csv(str), default=["float32", "bfloat16"])
    parser.add_argument(
        "--batches", type=_csv(int), default=None, help="for every model (default: per model)"
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps per point")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling")
    parser.add_argument("--parallel", choices=["jit", "none"], default="jit")
    parser.add_argument("--sharding", choices=["replicated", "fsdp"], default="replicated")
    parser.add_argument("--augment", choices=["none", "standard"], default="none")
    parser.add_argument("--peak_tflops", type=_csv(float), default=None, help="BF16[,FLOAT32]")
    parser.add_argument("--pipeline", choices=["on", "off"], default="on")
    parser.add_argument("--pipeline_examples", type=int, default=50_000)
    parser.add_argument("--json", default="", help="write the results here (strict JSON)")
    args = parser.parse_args()
    _validate(args, parser)

    device = jax.devices()[0]
    began = time.perf_counter()
    print(
        f"jax {jax.__version__} on {device.device_kind} ({device.platform}) "
        f"x{jax.device_count()}, --parallel={args.parallel}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per point",
        flush=True,
    )
    if device.platform != "gpu":
        print(
            f"warning: running on {device.platform}: the >= {TARGET[2]:,} img/s target applies "
            "to one H100/H200-class GPU; these numbers only show that the script runs",
            flush=True,
        )
    grid = [
        (name, dtype, batch)
        for name in args.models
        for dtype in args.dtypes
        for batch in (args.batches or MODELS[name][3])
    ]
    # The pipeline check rides on ResNet-18's largest batch, in bfloat16 when measured.
    resnet18 = [p for p in grid if p[0] == "resnet18"]
    pipeline_point = None
    if args.pipeline == "on" and resnet18:
        dtype = "bfloat16" if "bfloat16" in args.dtypes else args.dtypes[-1]
        pipeline_point = ("resnet18", dtype, max(b for _, d, b in resnet18 if d == dtype))
    report = {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "load_average_start": os.getloadavg()[0],
        "results": [],
    }
    for name, dtype, batch in grid:
        peak = peak_tflops(device.device_kind, dtype, args.peak_tflops)
        r = measure(name, dtype, batch, args, peak, (name, dtype, batch) == pipeline_point)
        report["results"].append(r)
        note = " (FLOPs of the lowered step)" if r["flops_source"] == "lowered" else ""
        print(
            f"{name} {r['input']} {dtype} batch {batch}: {r['img_per_s']:,.0f} img/s, "
            f"{r['step_ms']:.2f} ms/step, compile {r['compile_s']:.1f} s, "
            f"{_fmt(r['gflop_per_image'], '.2f')} GFLOP/img, MFU {_fmt(r['mfu'], '.1%')}, "
            f"loss {r['loss']:.3f}{note} [{time.perf_counter() - began:.0f} s elapsed]",
            flush=True,
        )
        if r["nonfinite_steps"]:
            print(f"  warning: {r['nonfinite_steps']} steps had non-finite values", flush=True)
        if args.json:  # after every point, so a run cut short keeps what it measured
            _write(args.json, report)

    print(
        "\n| model | input | dtype | batch | compile s | step ms | img/s | GFLOP/img | "
        "TFLOP/s | MFU (peak) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in report["results"]:
        peak = f"{r['mfu']:.1%} ({r['peak_kind']} {r['peak_tflops']:g})" if r["mfu"] else "-"
        print(
            f"| {r['model']} | {r['input']} | {r['dtype']} | {r['batch']} | "
            f"{r['compile_s']:.1f} | {r['step_ms']:.2f} | {r['img_per_s']:,.0f} | "
            f"{_fmt(r['gflop_per_image'], '.2f')} | {_fmt(r['tflops_per_s_device'], '.3g')} | "
            f"{peak} |"
        )
    for r in report["results"]:
        if "pipeline" in r:
            p = r["pipeline"]
            consumed = r["img_per_s"]
            print(
                f"\ndata pipeline ({r['model']} {r['dtype']} batch {r['batch']}, in-memory "
                f"loader over {p['examples']:,} uint8 images): loader + device_put delivers "
                f"{p['loader_img_per_s']:,.0f} img/s = {p['loader_img_per_s'] / consumed:.2f}x "
                f"what the step consumes ({consumed:,.0f} img/s on device-resident data); the "
                f"engine's loop fed by the loader trains at {p['loop_from_loader_img_per_s']:,.0f}"
                f" img/s = {p['loop_from_loader_img_per_s'] / consumed:.2f}x"
            )
    best = [r for r in report["results"] if (r["model"], r["dtype"]) == TARGET[:2]]
    if best:
        top = max(best, key=lambda r: r["img_per_s"])
        met = top["img_per_s"] >= TARGET[2]
        report["target"] = {
            "img_per_s": TARGET[2],
            "best": top["img_per_s"],
            "batch": top["batch"],
            "met": met,
        }
        note = "" if device.platform == "gpu" else " (not a GPU: the target does not apply)"
        print(
            f"\nResNet-18 32x32 bfloat16: best {top['img_per_s']:,.0f} img/s at batch "
            f"{top['batch']} (target >= {TARGET[2]:,}: {'met' if met else 'NOT met'}){note}"
        )
    report["load_average_end"] = os.getloadavg()[0]
    report["wall_s"] = time.perf_counter() - began
    print(f"\ntotal {report['wall_s']:.0f} s")
    if args.json:
        _write(args.json, report)
        print(f"wrote {args.json}")
    if any(r["nonfinite_steps"] for r in report["results"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
