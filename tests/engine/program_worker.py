"""Subprocess worker: trains the two-model toy program once per parallel mode through engine.fit.

Run with several simulated CPU devices; it saves every final parameter of both models (read
back from the latest checkpoint with orbax, independently of the engine) and the metrics log.
"""

import dataclasses
import functools
import os
import shutil
import sys

import numpy as np


def main(out_dir: str, data_dir: str, *modes: str) -> None:
    import jax
    import toy_program
    from engine_helpers import read_state

    import engine
    from engine.config import Config

    base = Config(
        data_dir=data_dir,
        epochs=2,
        batch_size=32,
        lr=1e-2,
        test_fraction=0.8,  # a few hundred training rows: 11 steps an epoch, the last padded
        progress=False,
    )
    for name in modes:
        mode, _, broken = name.partition("-")  # "pmap-broken": the per-device-mean variant
        program = functools.partial(toy_program.make, sum_counts=not broken)
        workdir = os.path.join(out_dir, name)
        engine.fit(dataclasses.replace(base, parallel=mode, workdir=workdir), program=program)
        state = read_state(os.path.join(workdir, "checkpoints", "latest", "2", "state"))
        flat = {
            jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        }
        np.savez(os.path.join(out_dir, f"{name}.npz"), **flat)
        shutil.copy(os.path.join(workdir, "metrics.jsonl"), os.path.join(out_dir, f"{name}.jsonl"))
    print("devices", jax.device_count())


if __name__ == "__main__":
    main(*sys.argv[1:])
