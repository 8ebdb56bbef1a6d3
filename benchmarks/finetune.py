"""Fine-tuning from saved parameters vs training from scratch, on few examples (README tables).

LeNet is pretrained on digits 0-4 (`--classes=0,1,2,3,4`, the default 30 epochs), then trained
on digits 5-9 with few training rows (`--classes=5,6,7,8,9 --test_fraction=F`: 0.9 leaves 81
rows, 0.97 leaves 25) for `--epochs` epochs, several ways, each at every `--lrs` rate over
`--seeds` seeds (the seed draws the 5-9 split, so the test rows differ by seed but never
overlap the pretraining classes):

- scratch: nothing loaded;
- frozen features: conv and fc layers loaded and frozen (`--freeze='^(conv|fc)'`), a new
  head (zero-initialised, as `--init_from` does for a fresh head);
- frozen convolutions: conv and fc loaded, only the convolutions frozen (`--freeze='^conv'`);
- all trainable: conv and fc loaded, nothing frozen;
- frozen convolutions only: only the convolutions loaded and frozen (`--init_params=^conv
  --freeze=^conv`), fc and head trained from their initialisation.

The checkpoint tested is chosen on `val_loss` (`--monitor=val_loss`; the few validation rows tie
on accuracy), or the last epoch's with `--select=last`.

Usage:
  python benchmarks/finetune.py [--epochs=3] [--seeds=3] [--data_dir=DIR]
  python benchmarks/finetune.py --test_fraction=0.97 --batch_size=5 --epochs=10 --seeds=5
      --lrs=1e-3,1e-2 --select=last --arms=scratch,convolutions  (one command)
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
LOADED = ("--init_params=^(conv|fc)",)
ARMS = {  # --arms name: (table row, the flags beyond --init_from; None: nothing loaded)
    "scratch": ("scratch", None),
    "features": ("frozen features, new head", (*LOADED, "--freeze=^(conv|fc)")),
    "conv": ("frozen convolutions, new head", (*LOADED, "--freeze=^conv")),
    "all": ("all loaded, all trainable, new head", LOADED),
    "convolutions": (
        "only the convolutions loaded, frozen",
        ("--init_params=^conv", "--freeze=^conv"),
    ),
}


def _run(*flags: str) -> tuple[dict, str]:
    """results.json of one `run.py` invocation, and its printed output."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--noprogress", *flags],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"run.py {' '.join(flags)} failed: {done.stderr[-2000:]}")
    workdir = next(f.split("=", 1)[1] for f in flags if f.startswith("--workdir="))
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f), done.stdout


def main() -> int:
    """Pretrains once, runs every arm at every rate for every seed; prints the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test_fraction", type=float, default=0.9)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lrs", default="1e-3", help="comma-separated Adam learning rates")
    parser.add_argument("--select", default="best", choices=("best", "last"))
    parser.add_argument("--arms", default="scratch,features,conv,all",
                        help=f"comma-separated, of {','.join(ARMS)}")  # fmt: skip
    parser.add_argument("--data_dir", default="")
    args = parser.parse_args()
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}; valid: {', '.join(ARMS)}")
    data = [f"--data_dir={args.data_dir}"] if args.data_dir else []
    target = ["--arch=lenet", "--classes=5,6,7,8,9", f"--test_fraction={args.test_fraction}",
              f"--batch_size={args.batch_size}", f"--epochs={args.epochs}"]  # fmt: skip
    target += ["--monitor=val_loss"] if args.select == "best" else ["--select=last"]
    start, rows = time.perf_counter(), "?"
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "pretrained")
        pre, _ = _run("--arch=lenet", "--classes=0,1,2,3,4", f"--workdir={source}", *data)
        print(f"pretrained on 0-4: test accuracy {pre['test']['accuracy']:.4f}", flush=True)
        scores = {(arm, lr): [] for arm in arms for lr in args.lrs.split(",")}
        for seed in range(args.seeds):
            for i, (arm, lr) in enumerate(scores):
                extra = ARMS[arm][1]
                loaded = () if extra is None else (f"--init_from={source}", *extra)
                workdir = f"--workdir={tmp}/arm{i}-{seed}"
                result, out = _run(*target, *loaded, f"--lr={lr}", f"--seed={seed}", workdir,
                                   *data)  # fmt: skip
                rows = out.split(" split train ", 1)[-1].split(" ", 1)[0] if rows == "?" else rows
                scores[arm, lr].append(result["test"]["accuracy"])
                print(f"seed {seed} {arm} lr {lr}: {scores[arm, lr][-1]:.4f}", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.epochs} epochs on {rows} rows at batch {args.batch_size}, {args.select} "
          f"checkpoint, seeds 0-{args.seeds - 1}, load average {load:.1f}, "
          f"{time.perf_counter() - start:.0f} s in all\n")  # fmt: skip
    print("| start | Adam lr | test accuracy (mean ± std) | per seed |\n|---|---|---|---|")
    for (arm, lr), found in scores.items():
        per_seed = ", ".join(f"{v:.4f}" for v in found)
        print(
            f"| {ARMS[arm][0]} | {lr} | {np.mean(found):.4f} ± {np.std(found):.4f} | {per_seed} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
