"""The DCGAN on digits, rated by an engine-trained LeNet (the README's GAN table and grid).

Trains the judge once (`python run.py --arch=lenet`, its defaults), then for each seed the GAN
with its recipe (`python run.py --program=gan --judge=JUDGE --seed=S`: DCGAN at 16 x 16, Adam
2e-4 / beta1 0.5, 200 epochs), and reports the test split's numbers (ceil(1000 / 126) = 8 fakes
per test image, 4,312 samples): the classes the judge finds in >= 5% of the samples, the
smallest class share, the mean confidence, the Inception-like score and the pixel diversity,
with the wall time and the load average. The last seed's grid is copied to `--grid`.

Usage: python benchmarks/gan.py [--data_dir=DIR] [--seeds=3] [--grid=docs/gan_samples.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags: str) -> None:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--noprogress", *flags])
    if done.returncode:
        raise SystemExit(f"run.py {' '.join(flags)} failed ({done.returncode})")


def main() -> int:
    """Trains the judge and the seeds' GANs; prints the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--grid", default=os.path.join(ROOT, "docs", "gan_samples.png"))
    args = parser.parse_args()
    data = [f"--data_dir={args.data_dir}"] if args.data_dir else []
    keys = ("classes_over_5pct", "min_class_share", "confidence", "score", "diversity")
    found = {k: [] for k in keys}
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        judge = os.path.join(tmp, "judge")
        _run("--arch=lenet", f"--workdir={judge}", *data)
        for seed in range(args.seeds):
            workdir = os.path.join(tmp, f"gan-{seed}")
            start = time.perf_counter()
            _run(
                "--program=gan", f"--judge={judge}", f"--seed={seed}", f"--workdir={workdir}", *data
            )
            seconds.append(time.perf_counter() - start)
            with open(os.path.join(workdir, "results.json")) as f:
                test = json.load(f)["test"]
            print(f"seed {seed}: {test}", flush=True)
            for k in keys:
                found[k].append(test[k])
        if args.grid:
            os.makedirs(os.path.dirname(args.grid), exist_ok=True)
            shutil.copy(os.path.join(workdir, "samples.png"), args.grid)
    load = os.getloadavg()[0]
    print(f"\n{args.seeds} seeds, load average {load:.1f}, {np.mean(seconds):.0f} s a GAN run\n")
    print("| seed | classes >= 5% | smallest share | mean confidence | score | diversity |")
    print("|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        row = [found[k][seed] for k in keys]
        print(f"| {seed} | {row[0]} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.3f} | {row[4]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
