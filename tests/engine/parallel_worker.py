"""Subprocess worker: trains one config per parallel mode and saves the final parameters.

Run with several simulated CPU devices; it saves params and batch statistics for comparison.
"""

import dataclasses
import os
import sys

import numpy as np


def main(out_dir: str, data_dir: str, arch: str, *modes: str) -> None:
    import jax
    from engine_helpers import read_state

    from engine.config import Config
    from engine.train import train_and_evaluate

    options = {"mlp": dict(hidden_sizes=(32,), dropout=0.0), "resnet": dict(depth=18, width=0.25)}
    base = Config(
        data_dir=data_dir,
        arch=arch,
        epochs=1,
        batch_size=32,
        test_fraction=0.8,  # a few hundred training examples: a few steps, quickly
        progress=False,
        optimizer="momentum",
        lr=0.05,
        **options[arch],
    )
    for mode in modes:
        workdir = os.path.join(out_dir, f"{arch}-{mode}")
        train_and_evaluate(dataclasses.replace(base, parallel=mode, workdir=workdir))
        root = os.path.join(workdir, "checkpoints", "latest", "1", "state")
        state = read_state(root)
        flat = {
            jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(
                {"params": state["params"], "batch_stats": state["batch_stats"]}
            )
        }
        np.savez(os.path.join(out_dir, f"{arch}-{mode}.npz"), **flat)
    print("devices", jax.device_count())


if __name__ == "__main__":
    main(*sys.argv[1:])
