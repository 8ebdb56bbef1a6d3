"""Triplet embeddings on digits: the three mining modes side by side (the README's table).

Each mode runs `python run.py --loss=triplet_margin --mining=MODE --epochs=E` (the default MLP,
embedding 64, margin 0.2, P x K = 10 x 4) for each seed, and reports the test split's
recall@1 and mAP (leave-one-out retrieval inside the test split) and the share of active
triplets in the last training epoch, as mean ± sd over the seeds, with the wall time and the
load average.

Usage: python benchmarks/triplet.py [--data_dir=DIR] [--seeds=3] [--epochs=10] [--arch=mlp]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine
from engine.config import Config
from engine.programs.metric_learning import MINING


def main() -> int:
    """Runs every mining mode for every seed; prints the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--arch", default="mlp")
    args = parser.parse_args()
    base = Config(
        data_dir=args.data_dir,
        arch=args.arch,
        loss="triplet_margin",
        epochs=args.epochs,
        progress=False,
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mining in MINING:
            scores = {"recall_at_1": [], "map": [], "active": [], "seconds": []}
            for seed in range(args.seeds):
                workdir = os.path.join(tmp, f"{mining}-{seed}")
                start = time.perf_counter()
                config = dataclasses.replace(base, mining=mining, seed=seed, workdir=workdir)
                test = engine.fit(config)["test"]
                scores["seconds"].append(time.perf_counter() - start)
                with open(os.path.join(workdir, "metrics.jsonl")) as f:
                    last = json.loads(f.read().splitlines()[-1])
                scores["recall_at_1"].append(test["recall_at_1"])
                scores["map"].append(test["map"])
                scores["active"].append(last["train"]["active_triplets"])
                line = f"recall@1 {test['recall_at_1']:.4f} map {test['map']:.4f}"
                print(f"{mining} seed {seed}: {line} active {scores['active'][-1]:.3f}", flush=True)
            rows[mining] = scores
    print(f"\n{args.arch}, {args.epochs} epochs, {args.seeds} seeds; load average "
          f"{os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("| --mining | test recall@1 | test mAP | active triplets, last epoch | s per run |")
    print("|---|---|---|---|---|")
    for mining, s in rows.items():
        cells = [f"{np.mean(s[k]):.4f} ± {np.std(s[k]):.4f}" for k in ("recall_at_1", "map")]
        print(f"| {mining} | {' | '.join(cells)} | {np.mean(s['active']):.3f} | "
              f"{np.mean(s['seconds']):.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
