"""Knowledge distillation on digits: MLP students of a ResNet-18 teacher against MLPs alone.

The teacher is `python run.py --arch=resnet --epochs=E` (seed 0). Each student is the default
MLP job (`--arch=mlp`, and a small one with `--hidden_sizes=32`) once alone and once with
`--teacher=TEACHER` (temperature 4, alpha 0.9: the engine's defaults), for each seed; the split
is the same for every run (it depends on the seed only), so the test rows are shared. Prints
the teacher's test accuracy and a Markdown table of mean and standard deviation of the
students' test accuracy, with the load average (the figures are accuracies, not speeds, but the
wall times printed beside them are).

Usage: python benchmarks/distill.py [--data_dir=DIR] [--seeds=3] [--teacher_epochs=10]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine
from engine.config import Config

STUDENTS = {"mlp (default, 256-128)": {}, "mlp --hidden_sizes=32": {"hidden_sizes": (32,)}}


def _fit(config: Config) -> tuple[float, float]:
    start = time.perf_counter()
    result = engine.fit(config)
    return result["test"]["accuracy"], time.perf_counter() - start


def main() -> int:
    """Trains the teacher, then every student alone and distilled; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--teacher_epochs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Config(data_dir=args.data_dir, progress=False)
        teacher = os.path.join(tmp, "teacher")
        accuracy, seconds = _fit(
            dataclasses.replace(base, arch="resnet", epochs=args.teacher_epochs, workdir=teacher)
        )
        print(f"teacher resnet-18, {args.teacher_epochs} epochs: test accuracy {accuracy:.4f} "
              f"({seconds:.0f} s)", flush=True)  # fmt: skip
        rows = []
        for name, options in STUDENTS.items():
            scores = {"alone": [], "distilled": []}
            for seed in range(args.seeds):
                for how in scores:
                    config = dataclasses.replace(
                        base,
                        arch="mlp",
                        seed=seed,
                        workdir=os.path.join(tmp, f"{name}-{how}-{seed}".replace(" ", "_")),
                        teacher=teacher if how == "distilled" else "",
                        **options,
                    )
                    accuracy, seconds = _fit(config)
                    scores[how].append(accuracy)
                    print(f"{name} seed {seed} {how}: {accuracy:.4f} ({seconds:.0f} s)", flush=True)
            rows.append((name, scores))
    print(f"\nload average {os.getloadavg()[0]:.2f}; test accuracy, mean ± sd of {args.seeds} "
          "seeds\n")  # fmt: skip
    print("| student | alone | distilled (T=4, alpha=0.9) |")
    print("|---|---|---|")
    for name, scores in rows:
        cells = [f"{np.mean(v):.4f} ± {np.std(v):.4f}" for v in scores.values()]
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
