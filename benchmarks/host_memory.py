"""Engine training speed and page faults by how host memory is served: 4 KiB, 2 MiB, jemalloc.

The allocator and the page size are a process's settings (the loader reads `LD_PRELOAD` and
glibc its `GLIBC_TUNABLES` at start, see `engine/runtime/host_memory.py`), so each trial is a fresh
process running a few epochs of the engine's real loop (`benchmarks.engine_loop`, cases of
`benchmarks/vs_torch.py`) with one setting: glibc's malloc with `glibc.malloc.hugetlb=0` (4 KiB
pages), with `=1` (2 MiB pages), jemalloc preloaded with the engine's `MALLOC_CONF` (where
installed: `apt-get install libjemalloc2`), and, where installed, TCMalloc
(`libtcmalloc-minimal4`), measured as the alternative. Trials alternate the settings so machine
noise hits all alike. Each trial reports the median img/s of its timed epochs and their minor
page faults.

Usage: python benchmarks/host_memory.py [--case=resnet_cifar,resnet_digits] [--trials=3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.runtime import host_memory  # noqa: E402


def _child(case_name: str, epochs: int) -> None:
    import resource
    import time

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
    """Alternates the settings' trials per case; prints the medians and the ratios to 4 KiB."""
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
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF", host_memory.ALLOCATOR_CHOICE)
    }
    settings = {
        "4 KiB": {**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
        "2 MiB": {**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    }
    jemalloc = host_memory.find_jemalloc()
    if jemalloc:
        conf = {"LD_PRELOAD": jemalloc, "MALLOC_CONF": host_memory.JEMALLOC_CONF}
        settings["jemalloc"] = {**settings["4 KiB"], **conf}
    else:
        print("jemalloc not found (apt-get install libjemalloc2): no jemalloc column")
    tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    if os.path.isfile(tcmalloc):
        settings["TCMalloc"] = {**settings["4 KiB"], "LD_PRELOAD": tcmalloc}
    rows = []
    for name in args.case.split(","):
        results: dict[str, list[dict]] = {setting: [] for setting in settings}
        for _ in range(args.trials):
            for setting, env in settings.items():
                done = subprocess.run(
                    [sys.executable, __file__, f"--_child={name}", f"--epochs={args.epochs}"],
                    capture_output=True, text=True, env=env,
                )  # fmt: skip
                if done.returncode:
                    raise SystemExit(f"{name} trial failed: {done.stderr[-2000:]}")
                results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{name} {setting}: {results[setting][-1]}", flush=True)
        med = {
            k: {m: statistics.median(r[m] for r in v) for m in ("rate", "faults")}
            for k, v in results.items()
        }
        rows.append((name, med))
    print(
        f"\nmedians of {args.trials} alternating trials ({args.epochs} epochs each); load "
        f"average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
    )
    names = list(settings)
    print("| case | " + " | ".join(f"img/s {s}" for s in names) + " | "
          + " | ".join(f"{s} / 4 KiB" for s in names[1:]) + " | "
          + " | ".join(f"faults an epoch {s}" for s in names) + " |")  # fmt: skip
    print("|---" * (3 * len(names)) + "|")
    for name, m in rows:
        rates = [f"{m[s]['rate']:,.1f}" for s in names]
        ratios = [f"{m[s]['rate'] / m['4 KiB']['rate']:.3f}" for s in names[1:]]
        faults = [f"{m[s]['faults']:,.0f}" for s in names]
        print(f"| {name} | " + " | ".join(rates + ratios + faults) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
