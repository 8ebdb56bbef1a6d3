"""Issue 15, item 3 (a): every embedded dataset's default run against scikit-learn baselines.

The default run is `python run.py --dataset=NAME` with nothing else (diabetes with the README's
`--loss=huber`), so it trains with the automatic epoch count (`engine.config.recipes`: at
least 30 epochs and `--min_updates` updates) and its architecture's recipe. The baselines
(LogisticRegression, a tuned SVC, RandomForest, HistGradientBoosting; for regression Linear,
RidgeCV, a tuned SVR, RandomForest, HistGradientBoosting) are fitted on the engine's training +
validation rows and scored on exactly its test rows, seed by seed: this reuses
`benchmarks/baselines.py` (same splits, same models), over 5 seeds by default, and adds each
dataset's automatic epoch count, its updates and the mean wall time of a default run.

The MLP's recipe for tables was chosen on seeds 0-4 (architectures/mlp.py): the held-out seeds
5-9 (`--first_seed=5`, the default) are the headline; `--first_seed=0` measures the seeds it was
chosen on.

Usage: python benchmarks/defaults.py [--data_dir=DIR] [--seeds=5] [--first_seed=5]
       [--datasets iris wine ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import baselines

from benchmarks import provenance
from engine import data
from engine.config import Config
from engine.config import recipes as defaults
from engine.workflows import setup

SEEDS = 5


def epochs_line(name: str, data_dir: str) -> str:
    """The default run's automatic epoch count for `name` (seed 0), as its start-up line says."""
    _, config = setup.resolved(Config(data_dir=data_dir, dataset=name, **baselines.JOBS[name]))
    return defaults.notes(config)[0]


def main() -> None:
    """Prints the table of the default runs against the baselines, mean (sd) over seeds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=data.default_data_dir())
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument(
        "--first_seed", type=int, default=5, help="5: seeds held out from the recipe"
    )
    names = list(baselines.JOBS)
    parser.add_argument("--datasets", nargs="+", default=names, choices=names)
    args = parser.parse_args()
    results, seconds = {}, {}
    for name in args.datasets:
        start = time.perf_counter()
        results.update(baselines.measure(args.data_dir, (name,), args.seeds, args.first_seed))
        seconds[name] = (time.perf_counter() - start) / args.seeds
    seeds = f"{args.first_seed}-{args.first_seed + args.seeds - 1}"
    print()
    print(f"mean (sd) over seeds {seeds}; load average {os.getloadavg()[0]:.1f}")
    print(baselines.table(results, provenance.command("defaults.py"), seeds))
    print()
    for name in args.datasets:
        print(
            f"{name}: {epochs_line(name, args.data_dir)}; {seconds[name]:.1f} s a seed "
            "(engine and baselines)"
        )


if __name__ == "__main__":
    main()
