"""An exponential moving average of the weights (`--ema_decay`) against none, on digits.

For each seed the same run (`--arch=resnet`: ResNet-18 and its recipe, automatic epochs unless
`--epochs`) is trained twice, without and with `--ema_decay=D`; each is tested on its selected
checkpoint (the EMA run selects and tests with the average). The EMA run's checkpoint is also
tested with its trained parameters (`engine.load(..., ema_eval="off")`), the same epoch without
the average. Prints each seed, then a Markdown table of test accuracy, mean ± sd over the seeds.

Usage: python benchmarks/ema.py [--arch=resnet] [--decay=0.999] [--seeds=3] [--first_seed=0]
    [--epochs=0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine
from benchmarks import provenance

ARMS = ("without", "with EMA", "with EMA, tested with --ema_eval=off")


def one_seed(args, seed: int, tmp: str) -> dict[str, tuple[float, float]]:
    """{arm: (test accuracy, seconds)} of one seed."""
    out = {}
    for arm, decay in ((ARMS[0], 0.0), (ARMS[1], args.decay)):
        workdir = os.path.join(tmp, f"{seed}-{decay}")
        config = engine.Config(arch=args.arch, epochs=args.epochs, seed=seed, ema_decay=decay,
                               workdir=workdir, progress=False)  # fmt: skip
        start = time.perf_counter()
        test = engine.fit(config)["test"]
        out[arm] = (test["accuracy"], time.perf_counter() - start)
    raw = engine.load(os.path.join(tmp, f"{seed}-{args.decay}"), ema_eval="off").evaluate("test")
    out[ARMS[2]] = (raw["accuracy"], 0.0)
    return out


def main() -> int:
    """Trains both arms for every seed; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet")
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds first_seed, ...")
    parser.add_argument("--epochs", type=int, default=0, help="0: the run's automatic epochs")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(one_seed(args, seed, tmp))
            cells = ", ".join(f"{arm} {acc:.4f}" for arm, (acc, _) in runs[-1].items())
            print(f"seed {seed}: test accuracy {cells}", flush=True)
    load = f"{os.getloadavg()[0]:.2f}"
    cells = provenance.columns(provenance.command("ema.py"), load)
    print(f"\n{args.arch} on digits, --ema_decay={args.decay}, {args.seeds} seeds\n")
    print("| arm | command | date | machine | allocator | test accuracy | per seed | s per run |")
    print("|---|---|---|---|---|---|---|---|")
    for arm in ARMS:
        accs = [r[arm][0] for r in runs]
        seconds = np.mean([r[arm][1] for r in runs])  # 0: an evaluation, no training
        per_seed = ", ".join(f"{a:.4f}" for a in accs)
        print(f"| {arm} | {' | '.join(cells)} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | "
              f"{per_seed} | {seconds:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
