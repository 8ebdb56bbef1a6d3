"""Fine-tuning from saved parameters vs training from scratch, on few examples (README table).

LeNet is pretrained on digits 0-4 (`--classes=0,1,2,3,4`, the default 30 epochs), then trained
on digits 5-9 with 81 training rows (`--classes=5,6,7,8,9 --test_fraction=0.9`: two updates an
epoch) for `--epochs` epochs, four ways, each over `--seeds` seeds (the seed draws the 5-9
split, so the test rows differ by seed but never overlap the pretraining classes):

- scratch: nothing loaded;
- frozen features: conv and fc layers loaded and frozen (`--freeze='^(conv|fc)'`), a new
  head (zero-initialised, as `--init_from` does for a fresh head);
- frozen convolutions: conv and fc loaded, only the convolutions frozen (`--freeze='^conv'`);
- all trainable: conv and fc loaded, nothing frozen.

The checkpoint tested is chosen on `val_loss` (the 9 validation rows tie on accuracy).

Usage: python benchmarks/finetune.py [--epochs=3] [--seeds=3] [--data_dir=DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = ("--arch=lenet", "--classes=5,6,7,8,9", "--test_fraction=0.9", "--monitor=val_loss")
ARMS = {
    "scratch": (),
    "frozen features, new head": ("--freeze=^(conv|fc)",),
    "frozen convolutions, new head": ("--freeze=^conv",),
    "all loaded, all trainable, new head": (),
}


def _run(*flags: str) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--noprogress", *flags],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"run.py {' '.join(flags)} failed: {done.stderr[-2000:]}")
    workdir = next(f.split("=", 1)[1] for f in flags if f.startswith("--workdir="))
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def main() -> int:
    """Pretrains once, runs every arm for every seed; prints the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data_dir", default="")
    args = parser.parse_args()
    data = [f"--data_dir={args.data_dir}"] if args.data_dir else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "pretrained")
        pre = _run("--arch=lenet", "--classes=0,1,2,3,4", f"--workdir={source}", *data)
        print(f"pretrained on 0-4: test accuracy {pre['test']['accuracy']:.4f}", flush=True)
        scores = {arm: [] for arm in ARMS}
        for seed in range(args.seeds):
            for i, (arm, extra) in enumerate(ARMS.items()):
                loaded = () if arm == "scratch" else (f"--init_from={source}",)
                loaded += ("--init_params=^(conv|fc)",) if loaded else ()
                workdir = f"--workdir={tmp}/arm{i}-{seed}"
                result = _run(*TARGET, *loaded, *extra, f"--epochs={args.epochs}",
                              f"--seed={seed}", workdir, *data)  # fmt: skip
                scores[arm].append(result["test"]["accuracy"])
                print(f"seed {seed} {arm}: {scores[arm][-1]:.4f}", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.epochs} epochs on 81 rows, seeds 0-{args.seeds - 1}, load average {load:.1f}, "
          f"{time.perf_counter() - start:.0f} s in all\n")  # fmt: skip
    print("| start | test accuracy (mean ± std) | per seed |\n|---|---|---|")
    for arm, found in scores.items():
        per_seed = ", ".join(f"{v:.4f}" for v in found)
        print(f"| {arm} | {np.mean(found):.4f} ± {np.std(found):.4f} | {per_seed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
