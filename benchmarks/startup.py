"""Time to the first training step, first start (empty compilation cache) vs second start.

Each trial is a fresh process (`python DRIVER`) that notes the time before importing
anything, restarts itself with the host-memory settings as run.py does
(`engine/runtime/host_memory.py`; the restart is counted in the start), notes how long `import jax`
takes (reported apart: the issue's 3 s excludes it), runs
`engine.fit` with the run.py defaults plus the case's flags (resnet: the README's
`--arch=resnet --loss=huber`), and stops after the first training step has finished on the
device (a callback blocks on it once). "first start" gets an
empty cache folder (`XDG_CACHE_HOME` of its own), "second start" the folder a run filled;
trials alternate between the two so load changes hit both. `--compile_cache=off` is the
third column: what every start cost before the cache.

Usage: python benchmarks/startup.py [--archs=mlp,resnet] [--trials=3] [--data_dir=DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run as a script file, so it restarts itself (allocator, huge pages) as run.py does; the
# clock starts in the first process (CLOCK_MONOTONIC is the machine's, the same on both sides
# of the exec).
DRIVER = r"""
import time
start = time.monotonic()
import json, os, sys
start = float(os.environ.setdefault("STARTUP_CLOCK_START", repr(start)))
sys.path.insert(0, sys.argv[1])
from engine.runtime import host_memory
host_memory.restart()
restarted = time.monotonic()
import jax
jax_import = time.monotonic() - restarted
import engine
from engine.runtime.callbacks import Callback

class FirstStep(Callback):
    seconds = None
    def on_step(self, step, state, totals):
        if self.seconds is None:
            jax.block_until_ready(totals)
            self.seconds = time.monotonic() - start
            self.fit.stop("first step done")

first = FirstStep()
settings = json.loads(sys.argv[2])
engine.fit(engine.Config(**settings), callbacks=[first])
print(json.dumps({"first_step": first.seconds, "jax_import": jax_import}))
"""


# The commands measured: run.py's defaults plus these flags.
CASES = {"mlp": {}, "resnet": {"arch": "resnet", "loss": "huber"}}


def _driver(folder: str) -> str:
    """DRIVER as a script file in `folder` (written at the first trial, then reused)."""
    path = os.path.join(folder, "startup_driver.py")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(DRIVER)
    return path


def _trial(case: str, cache: str, data_dir: str, workdir: str) -> tuple[float, float]:
    settings = {**CASES[case], "workdir": workdir, "progress": False}
    if data_dir:
        settings["data_dir"] = data_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    if cache == "off":
        settings["compile_cache"] = "off"
    else:
        env["XDG_CACHE_HOME"] = cache
    done = subprocess.run(
        [sys.executable, _driver(os.path.dirname(workdir)), ROOT, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise SystemExit(f"trial failed: {done.stderr[-2000:]}")
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return times["first_step"], times["jax_import"]


def main() -> int:
    """Alternates first / second / uncached starts per architecture; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(CASES), help=f"cases: {', '.join(CASES)}")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--data_dir", default="")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            warm = os.path.join(tmp, f"warm-{arch}")
            _trial(arch, warm, args.data_dir, os.path.join(tmp, f"fill-{arch}"))  # fills it
            times = {"first": [], "second": [], "off": []}
            imports = []
            for t in range(args.trials):
                for kind in times:
                    cache = {"first": os.path.join(tmp, f"cold-{arch}-{t}"), "second": warm}
                    workdir = os.path.join(tmp, f"{arch}-{kind}-{t}")
                    seconds, jax_import = _trial(
                        arch, cache.get(kind, "off"), args.data_dir, workdir
                    )
                    times[kind].append(seconds)
                    imports.append(jax_import)
                    print(
                        f"{arch} {kind} start: {seconds:.2f} s (import jax {jax_import:.2f} s)",
                        flush=True,
                    )
            medians = {k: statistics.median(v) for k, v in times.items()}
            rows.append((arch, medians, statistics.median(imports)))
    print(f"\nload average {os.getloadavg()[0]:.1f}; medians of {args.trials} trials\n")
    print("| case | first start | second start | cache off | second / first | import jax | "
          "second start less import jax |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for arch, m, jax_import in rows:
        print(f"| {arch} | {m['first']:.2f} s | {m['second']:.2f} s | {m['off']:.2f} s | "
              f"{m['second'] / m['first']:.2f} | {jax_import:.2f} s | "
              f"{m['second'] - jax_import:.2f} s |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
