"""Resident memory over a long run: the default job (MLP on digits) for 200 epochs.

Reads the process's RSS (/proc/self/status, VmRSS) after each epoch through a callback and
prints it after epochs 1, 10, 50, 100, 200 and the growth from epoch 10 to the end (the
first epochs include compilation and the allocator's warm-up).

Usage: python benchmarks/memory.py [--epochs=200] [--data_dir=DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine
from engine.config import Config


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssProbe(engine.Callback):
    """Records the RSS after every epoch."""

    def __init__(self):
        self.rss: dict[int, float] = {}

    def on_epoch_end(self, epoch, record, state):
        """Notes the RSS after `epoch`."""
        self.rss[epoch] = rss_mib()


def main() -> int:
    """Runs the job and prints the RSS figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--data_dir", default="")
    args = parser.parse_args()
    probe = RssProbe()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(
            epochs=args.epochs,
            workdir=os.path.join(tmp, "run"),
            data_dir=args.data_dir or os.path.join(tmp, "data"),
            progress=False,
        )
        before = rss_mib()
        engine.fit(config, callbacks=[probe])
    marks = [e for e in (1, 10, 50, 100, 200, args.epochs) if e in probe.rss]
    print(f"RSS before the run {before:.1f} MiB")
    for epoch in sorted(set(marks)):
        print(f"RSS after epoch {epoch:>3}: {probe.rss[epoch]:.1f} MiB")
    start = probe.rss[min(10, args.epochs)]
    end = probe.rss[args.epochs]
    print(
        f"growth from epoch {min(10, args.epochs)} to {args.epochs}: {end - start:+.1f} MiB "
        f"({(end - start) / max(args.epochs - 10, 1) * 1024:+.1f} KiB per epoch); "
        f"max {max(probe.rss.values()):.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
