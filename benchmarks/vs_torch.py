"""Engine training throughput against PyTorch at its strongest on the CPU, in one process.

Each case trains one network on identical data, shapes, batch size and optimizer (Adam, lr
1e-3, softmax cross-entropy): with the engine's real training loop
(`benchmarks.engine_loop.engine_epoch_fn`: loader, batch placement, the jitted pure step with
on-device metric sums) and with a PyTorch model written here layer for layer like the engine's
(`nn.CrossEntropyLoss`, `model.train()`, PyTorch's default thread count), in each of its
configurations (`--torch`): `eager` (`torch.optim.Adam`, its default multi-tensor form),
`fused` (`Adam(fused=True)`), `channels_last` (NHWC convolutions, fused Adam; convnets only)
and `compile` (`torch.compile` of the model, fused Adam). Parameter counts are printed and must
be equal. A trial is `--steps` batches (the same examples for all); after one warm-up trial
each (the engine's compile, PyTorch's compile and first allocations), trials alternate engine,
then each PyTorch configuration, so machine noise hits all alike; the medians are compared,
and the engine's ratio is given against the fastest PyTorch configuration of each case.

Cases:
  resnet_digits  ResNet-18 (CIFAR stem) on 8x8x1 scikit-learn digits, batch 64
  resnet_cifar   ResNet-18 (CIFAR stem) on random 32x32x3 uint8 images, batch 128
  lenet          LeNet-5 on digits resized to 32x32x1 (LeNet's input size) once, batch 64
  mlp            the engine's default MLP (256, 128) on the 64 digit pixels, batch 64

PyTorch is an optional benchmark extra, never a dependency of the engine or its tests.

Usage:
  pip install -e '.[bench]'   # or: pip install torch --index-url https://download.pytorch.org/whl/cpu
  python benchmarks/vs_torch.py                        # all cases, 5 trials each
  python benchmarks/vs_torch.py --case=lenet,mlp --trials=7
  python benchmarks/vs_torch.py --case=resnet_cifar --steps=2 --torch=eager,compile
  python benchmarks/vs_torch.py --torch_threads=1        # PyTorch on one thread (default: its own)

PyTorch's OpenMP threads slow down far more than XLA's when another process takes a core (on
the 2-core machine one MLP trial fell from 41,785 to 738 img/s while a test run used a core):
run it on an otherwise idle machine and quote the load averages it prints.

Like `run.py`, the script restarts itself once with jemalloc preloaded (where installed) and
2 MiB pages for large host buffers where the system allows (`engine/runtime/host_memory.py`;
it prints the allocator loaded and the `GLIBC_TUNABLES` in use): both sides share the process
and the settings, as PyTorch's CPU tuning guide recommends for it. The headline figures are the
README install's, without jemalloc (`JAXTRAIN_MALLOC=system` measures so where it is
installed); `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` measures with 4 KiB pages.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.runtime import host_memory

if __name__ == "__main__":  # as run.py does, before JAX loads (engine/runtime/host_memory.py)
    host_memory.restart()

import jax
import numpy as np

import architectures
from benchmarks import provenance
from benchmarks.engine_loop import engine_epoch_fn
from engine import data
from engine.config import Config

try:
    import torch
    from torch import nn
except ImportError:  # optional: checked in main() with a one-line message
    torch = nn = None

INSTALL_HINT = (
    "benchmarks/vs_torch.py needs PyTorch (an optional benchmark extra): "
    "pip install -e '.[bench]', or the CPU wheel: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison.

    Attributes:
        arch: engine architecture name.
        options: engine architecture options.
        data: "digits" (8x8x1), "digits32" (32x32x1), "digits_flat" (64,), "random32" (32x32x3).
        batch: batch size of both frameworks.
        steps: default batches per trial (`--steps` overrides).
        label: the network, for the table.
    """

    arch: str
    options: dict
    data: str
    batch: int
    steps: int
    label: str


# Default steps keep one trial at a few seconds on a 2-core CPU (ResNet-18 at 32x32x3 trains at
# about 10 img/s there, so two batches of 128 already take ~25 s per trial and framework).
CASES = {
    "resnet_digits": Case("resnet", {"depth": 18}, "digits", 64, 10, "ResNet-18"),
    "resnet_cifar": Case("resnet", {"depth": 18}, "random32", 128, 2, "ResNet-18"),
    "lenet": Case("lenet", {}, "digits32", 64, 20, "LeNet-5"),
    "mlp": Case("mlp", {}, "digits_flat", 64, 100, "MLP (256, 128)"),
}


def _data(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` examples (channels-last images or tables) and int32 labels for a case's data kind."""
    rng = np.random.default_rng(seed)
    if kind == "random32":
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return x, rng.integers(0, 10, size=n).astype(np.int32)
    from sklearn.datasets import load_digits

    digits = load_digits()
    # A trial is exactly steps x batch examples: the 1,797 digits are repeated (in a shuffled
    # order) when a trial needs more, so both loops run whole batches with no padding.
    rows = np.resize(rng.permutation(len(digits.target)), n)
    y = digits.target[rows].astype(np.int32)
    if kind == "digits_flat":
        return digits.data[rows].astype(np.float32), y
    x = digits.images[rows, :, :, None].astype(np.float32)
    if kind == "digits32":
        size = architectures.spec("lenet").min_image_size
        # Resized once here, with the engine's own on-device method (bilinear), so both
        # frameworks get identical 32x32 inputs and the engine's step does not resize.
        x = np.array(jax.image.resize(x, (n, size, size, 1), method="bilinear"))
    return x, y


# --- the PyTorch models ---------------------------------------------------------------------


def _torch_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """ResNet-18 in torchvision's layout with the engine's small-image (CIFAR) stem.

    BasicBlocks (3x3, 3x3), no conv bias, BatchNorm momentum 0.1 / eps 1e-5 (the engine's flax
    momentum 0.9), 1x1 projection + BatchNorm where the shape changes, stem = one 3x3/1 conv
    without max-pool (the engine's stem below 64 px), global average pool, linear head. The
    last BatchNorm scale of each block starts at zero, as the engine's `zero_init_residual`.
    """

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            nn.init.zeros_(self.bn2.weight)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False),
                    nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    layers = [
        nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64, eps=1e-5, momentum=0.1),
        nn.ReLU(inplace=True),
    ]
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(cin, width, stride))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def _torch_lenet(in_channels: int, num_classes: int) -> nn.Module:
    """The engine's LeNet-5: 5x5 VALID convs with bias, ReLU, 2x2 average pools, 120, 84."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _torch_mlp(features: int, num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    """The engine's MLP: flatten, then Linear + ReLU per hidden size, then the linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden:
        layers += [nn.Linear(features, size), nn.ReLU()]
        features = size
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _torch_model(case: Case, x: np.ndarray) -> nn.Module:
    if case.arch == "resnet":
        return _torch_resnet18(x.shape[-1], 10)
    if case.arch == "lenet":
        return _torch_lenet(x.shape[-1], 10)
    return _torch_mlp(x.shape[-1], 10, tuple(Config().hidden_sizes))


# PyTorch's configurations: (channels_last, fused Adam, torch.compile).
TORCH_SETUPS = {
    "eager": (False, False, False),
    "fused": (False, True, False),
    "channels_last": (True, True, False),
    "compile": (False, True, True),
}


def _torch_epoch_fn(case: Case, x, y, shift, scale, setup: str):
    """PyTorch side: `(epoch() -> (examples, mean loss, accuracy), parameter count)`."""
    channels_last, fused, compiled = TORCH_SETUPS[setup]
    torch.manual_seed(0)
    model = _torch_model(case, x)
    image = x.ndim == 4
    memory_format = torch.channels_last if channels_last and image else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    params = sum(p.numel() for p in model.parameters())
    # NCHW is PyTorch's layout; the transposition is data preparation, done once, not timed.
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if image else x))
    yt = torch.from_numpy(y.astype(np.int64))  # CrossEntropyLoss takes int64 class indices
    view = (1, -1, 1, 1) if image else (1, -1)
    shift_t = torch.from_numpy(shift.astype(np.float32)).reshape(view)
    scale_t = torch.from_numpy(scale.astype(np.float32)).reshape(view)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    if compiled:
        model = torch.compile(model)
    steps = len(x) // case.batch
    box = {"epoch": 0}

    def epoch():
        order = torch.from_numpy(np.random.default_rng(box["epoch"]).permutation(len(x)))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for i in range(steps):
            idx = order[i * case.batch : (i + 1) * case.batch]
            # Normalised per batch with the same training statistics, as the engine's step does.
            xb = (xt[idx].float() - shift_t) / scale_t
            xb = xb.contiguous(memory_format=memory_format)
            yb = yt[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            # The engine's step sums the loss and the correct predictions of every batch.
            with torch.no_grad():
                loss_sum += loss
                correct += (logits.argmax(1) == yb).sum()
        box["epoch"] += 1
        # One read-back per trial, as the engine reads its sums once per epoch.
        return steps * case.batch, float(loss_sum) / steps, int(correct) / (steps * case.batch)

    return epoch, params


def _engine_epoch_fn(case: Case, x, y, mode: str):
    """Engine side: `(epoch() -> (examples, mean loss, accuracy), parameter count)`."""
    fn = engine_epoch_fn(case.arch, case.options, x, y, case.batch, mode)

    def epoch():
        metrics = fn()
        return int(metrics["count"]), float(metrics["loss"]), float(metrics["accuracy"])

    model = architectures.get(case.arch, num_classes=10, **case.options)
    return epoch, architectures.count_params(model, (1, *x.shape[1:]))


def measure(
    name: str, trials: int, steps: int | None, mode: str, setups: list[str]
) -> dict[str, object]:
    """Warms every side up, then alternates `trials` timed trials of each; returns the medians."""
    case = CASES[name]
    steps = steps or case.steps
    x, y = _data(case.data, steps * case.batch)
    if x.ndim != 4:  # NHWC means nothing to an MLP: its channels_last is its fused run
        setups = [s for s in setups if s != "channels_last"]
    # All normalise with the engine's statistics of this data (per channel, or per feature).
    shift, scale = data.normalization(data.ArraySource(x, y), "standard")
    engine_epoch, engine_params = _engine_epoch_fn(case, x, y, mode)
    runners = {"engine": engine_epoch}
    for setup in setups:
        epoch, params = _torch_epoch_fn(case, x, y, shift, scale, setup)
        if params != engine_params:
            raise SystemExit(
                f"{name}: the PyTorch model has {params:,} parameters, the engine's "
                f"{engine_params:,}: the models differ, the comparison would be meaningless"
            )
        runners[f"torch {setup}"] = epoch
    print(
        f"{name}: {case.label} on {'x'.join(map(str, x.shape[1:]))} {x.dtype}, batch "
        f"{case.batch}, {steps} steps a trial; {engine_params:,} parameters in each",
        flush=True,
    )
    for fn in runners.values():  # compiles (engine, torch.compile), first allocations: untimed
        fn()
    rates: dict[str, list[float]] = {side: [] for side in runners}
    last: dict[str, tuple[float, float]] = {}  # the last trial's (loss, accuracy) per side
    for _ in range(trials):
        for side, fn in runners.items():
            start = time.perf_counter()
            count, loss, accuracy = fn()
            rates[side].append(count / (time.perf_counter() - start))
            last[side] = (loss, accuracy)
    for side, (loss, _) in last.items():
        if not np.isfinite(loss):
            raise SystemExit(f"{name}: the {side} loss is not finite ({loss}); no result")
    medians = {side: statistics.median(r) for side, r in rates.items()}
    fastest = max((s for s in medians if s != "engine"), key=medians.get)
    for side, rate in medians.items():
        loss, accuracy = last[side]
        print(
            f"  {side:20} {rate:10,.1f} img/s ({', '.join(f'{r:,.0f}' for r in rates[side])}); "
            f"last trial's loss / accuracy {loss:.4f} / {accuracy:.3f}",
            flush=True,
        )
    ratio = medians["engine"] / medians[fastest]
    print(f"  engine / fastest PyTorch ({fastest}): {ratio:.3f}", flush=True)
    return {
        "case": name,
        "network": case.label,
        "input": "x".join(map(str, x.shape[1:])),
        "batch": case.batch,
        "steps": steps,
        "params": engine_params,
        "rates": medians,
        "fastest": fastest,
        "ratio": ratio,
    }


def _cases(text: str) -> list[str]:
    names = list(CASES) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown) or text!r}; valid: {', '.join(CASES)}, all"
        )
    return names


def _setups(text: str) -> list[str]:
    names = list(TORCH_SETUPS) if text == "all" else [n.strip() for n in text.split(",") if n]
    unknown = [n for n in names if n not in TORCH_SETUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown configuration(s) {', '.join(unknown) or text!r}; valid: "
            f"{', '.join(TORCH_SETUPS)}, all"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main() -> None:
    """Prints img/s of the engine and of PyTorch per case, their ratio and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=_cases, default="all", help="name[,name] or all")
    parser.add_argument("--trials", type=_positive, default=5)
    parser.add_argument("--steps", type=_positive, default=None, help="batches per trial")
    parser.add_argument("--parallel", choices=["jit", "none", "pmap"], default="jit")
    parser.add_argument(
        "--torch",
        type=_setups,
        default="all",
        help=f"PyTorch configurations, name[,name] of {', '.join(TORCH_SETUPS)}, or all",
    )
    parser.add_argument(
        "--torch_threads", type=_positive, default=None, help="default: PyTorch's own choice"
    )
    args = parser.parse_args()
    if isinstance(args.case, str):  # argparse does not convert the default
        args.case = _cases(args.case)
    if isinstance(args.torch, str):
        args.torch = _setups(args.torch)
    if torch is None:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(2)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    load_start = os.getloadavg()[0]
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"engine --parallel={args.parallel}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads ({', '.join(args.torch)}); {os.cpu_count()} CPUs, "
        f"load average {load_start:.2f}; allocator {host_memory.loaded_allocator()}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}",
        flush=True,
    )
    results = [
        measure(name, args.trials, args.steps, args.parallel, args.torch) for name in args.case
    ]
    load_end = os.getloadavg()[0]
    print(
        f"\nmedians of {args.trials} alternating trials; load average {load_start:.2f} at "
        f"start, {load_end:.2f} at end\n"
    )
    columns = ["engine", *(f"torch {s}" for s in args.torch)]
    loads = f"{load_start:.2f}-{load_end:.2f}"
    where = " | ".join(provenance.columns(provenance.command("vs_torch.py"), loads))
    print(f"| case | network | input | batch | command | date | machine | allocator | "
          f"{' | '.join(f'{c} img/s' for c in columns)} | fastest PyTorch | "
          "engine / fastest |")  # fmt: skip
    print("|---" * (len(columns) + 10) + "|")
    for r in results:
        rates = " | ".join(f"{r['rates'][c]:,.1f}" if c in r["rates"] else "-" for c in columns)
        print(
            f"| {r['case']} | {r['network']} | {r['input']} | {r['batch']} | {where} | {rates} "
            f"| {r['fastest'].removeprefix('torch ')} | {r['ratio']:.3f} |"
        )


if __name__ == "__main__":
    main()
