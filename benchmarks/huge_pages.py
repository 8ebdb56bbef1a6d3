"""Engine training speed and page faults with 4 KiB pages vs 2 MiB pages for host buffers.

The page size is a process's setting (glibc reads `GLIBC_TUNABLES` at start, see
`engine/huge_pages.py`), so each trial is a fresh process running a few epochs of the engine's
real loop (`benchmarks.engine_loop.engine_epoch_fn`, cases of `benchmarks/vs_torch.py`) with
`glibc.malloc.hugetlb=0` or `=1`; trials alternate the two so machine noise hits both. Each
trial reports the median img/s of its timed epochs and their minor page faults.

Usage: python benchmarks/huge_pages.py [--case=resnet_cifar,resnet_digits] [--trials=3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(case_name: str, epochs: int) -> None:
    import resource
    import time

    sys.path.insert(0, ROOT)
    from benchmarks.engine_loop import engine_epoch_fn
    from benchmarks.vs_torch import CASES, _data

    case = CASES[case_name]
    x, y = _data(case.data, case.steps * case.batch)
    epoch = engine_epoch_fn(case.arch, case.options, x, y, case.batch, "jit")
    float(epoch()["loss"])  # compile and first allocations, not timed
    rates, faults = [], []
    for _ in range(epochs):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        metrics = epoch()
        float(metrics["loss"])
        rates.append(int(metrics["count"]) / (time.perf_counter() - start))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"rate": statistics.median(rates), "faults": statistics.median(faults)}))


def main() -> int:
    """Alternates 4 KiB / 2 MiB trials per case; prints the medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="resnet_cifar,resnet_digits,lenet,mlp")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs a trial")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child, args.epochs)
        return 0
    load_start = os.getloadavg()[0]
    rows = []
    for name in args.case.split(","):
        results: dict[str, list[dict]] = {"0": [], "1": []}
        for _ in range(args.trials):
            for setting in results:
                env = dict(os.environ, GLIBC_TUNABLES=f"glibc.malloc.hugetlb={setting}")
                done = subprocess.run(
                    [sys.executable, __file__, f"--_child={name}", f"--epochs={args.epochs}"],
                    capture_output=True, text=True, env=env,
                )  # fmt: skip
                if done.returncode:
                    raise SystemExit(f"{name} trial failed: {done.stderr[-2000:]}")
                results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{name} hugetlb={setting}: {results[setting][-1]}", flush=True)
        med = {
            k: {m: statistics.median(r[m] for r in v) for m in ("rate", "faults")}
            for k, v in results.items()
        }
        rows.append((name, med))
    print(
        f"\nmedians of {args.trials} alternating trials ({args.epochs} epochs each); load "
        f"average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
    )
    print("| case | img/s 4 KiB | img/s 2 MiB | 2 MiB / 4 KiB | faults an epoch 4 KiB | 2 MiB |")
    print("|---|---|---|---|---|---|")
    for name, m in rows:
        small, huge = m["0"], m["1"]
        print(f"| {name} | {small['rate']:,.1f} | {huge['rate']:,.1f} | "
              f"{huge['rate'] / small['rate']:.3f} | {small['faults']:,.0f} | "
              f"{huge['faults']:,.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
