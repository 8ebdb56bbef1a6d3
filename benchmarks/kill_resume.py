"""SIGKILL a training run at random moments (during checkpoint saves too); check it ends equal.

Each kill lands at a random time after the run last committed a checkpoint (half of them the
moment an orbax temporary directory, a save in progress, appears); the run is restarted with
the same command until it completes. The final parameters, optimizer state and
`metrics.jsonl` are compared with an uninterrupted run's, bit for bit.

Usage: python benchmarks/kill_resume.py [--kills=20] [--data_dir=DIR] [--seed=0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small MLP, small batches: many steps per epoch, checkpoints every few steps.
FLAGS = (
    "--hidden_sizes=64",
    "--batch_size=8",
    "--epochs=3",
    "--lr=0.01",
    "--checkpoint_every=7",
    "--max_to_keep=2",
    "--parallel=none",
    "--noprogress",
)


def command(
    workdir: str, data_dir: str, extra: tuple[str, ...] = (), flags: tuple[str, ...] = FLAGS
) -> list[str]:
    """The run's command line, with `extra` flags after `flags` (e.g. a --teacher)."""
    return [sys.executable, os.path.join(ROOT, "run.py"), f"--workdir={workdir}",
            f"--data_dir={data_dir}", *flags, *extra]  # fmt: skip


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu")


def _entries(workdir: str) -> set[str]:
    found = set()
    for sub in ("latest", "best", "mid_epoch"):
        path = os.path.join(workdir, "checkpoints", sub)
        if os.path.isdir(path):
            found.update(f"{sub}/{name}" for name in os.listdir(path))
    return found


def run_to_end(workdir: str, data_dir: str, flags: tuple[str, ...] = FLAGS) -> None:
    """Runs the command once, uninterrupted (or to the end of an interrupted run)."""
    done = subprocess.run(
        command(workdir, data_dir, flags=flags), capture_output=True, text=True, env=_env()
    )
    if done.returncode != 0:
        raise RuntimeError(f"run failed ({done.returncode}): {done.stderr[-2000:]}")


def killed_run(
    workdir: str, data_dir: str, kills: int, rng: random.Random, flags: tuple[str, ...] = FLAGS
) -> list[str]:
    """Starts the run (`flags`), SIGKILLs it `kills` times at random moments, then lets it finish.

    Returns:
      One line per kill saying when it landed (during a save or not).
    """
    log = []
    while len(log) < kills:
        before = _entries(workdir)
        proc = subprocess.Popen(command(workdir, data_dir, flags=flags), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
        during_save = len(log) % 2 == 1
        # Wait until this run committed something new (it is training), or a save is underway.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            now = _entries(workdir)
            tmp = any(e.endswith("orbax-checkpoint-tmp") for e in now)
            committed = {e for e in now - before if not e.endswith("orbax-checkpoint-tmp")}
            if (during_save and tmp) or (not during_save and committed):
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            if proc.returncode != 0:
                raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            break  # finished before this kill
        if not during_save:
            time.sleep(rng.uniform(0.0, 0.3))
        saving = any(e.endswith("orbax-checkpoint-tmp") for e in _entries(workdir))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.append(f"kill {len(log) + 1}: {'during a save' if saving else 'between saves'}")
    run_to_end(workdir, data_dir, flags)
    return log


def final_state(workdir: str) -> dict:
    """The newest epoch checkpoint's state as NumPy leaves keyed by path."""
    import jax
    import orbax.checkpoint as ocp

    root = os.path.join(workdir, "checkpoints", "latest")
    step = max(int(n) for n in os.listdir(root) if n.isdigit())
    path = os.path.join(root, str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = checkpointer.restore(path, target)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves} | {"_epoch": step}


def differences(a: str, b: str) -> list[str]:
    """What differs between two finished workdirs: state leaves and metrics.jsonl records."""
    sa, sb = final_state(a), final_state(b)
    diff = [k for k in sa if k not in sb or not np.array_equal(sa[k], sb[k])]
    if _records(a) != _records(b):
        diff.append("metrics.jsonl")
    return diff


def _records(workdir: str) -> list[dict]:
    """metrics.jsonl without each record's wall-clock `speed`, which no two runs share."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for record in records:
        record.pop("speed", None)
    return records


def main() -> int:
    """Runs the reference and the killed run; prints each kill and the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        start = time.perf_counter()
        run_to_end(os.path.join(tmp, "reference"), data_dir)
        for line in killed_run(os.path.join(tmp, "killed"), data_dir, args.kills,
                               random.Random(args.seed)):  # fmt: skip
            print(line, flush=True)
        diff = differences(os.path.join(tmp, "reference"), os.path.join(tmp, "killed"))
        print(f"{args.kills} SIGKILLs; final state and metrics.jsonl "
              f"{'identical' if not diff else 'DIFFER: ' + ', '.join(diff)} "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
