"""Subprocess worker: trains one config per parallel mode and saves the final parameters.

Run with several simulated CPU devices; it saves params and batch statistics for comparison.
A mode is `none`, `jit`, `pmap` or `fsdp` (jit with `--sharding=fsdp`), optionally with a
deliberate bug after a `+` that the comparison must catch: `+unsynced` builds the model without
the BatchNorm axis name (each device normalises with its own rows' statistics), `+unmasked`
hides the padding mask from BatchNorm, `+oneshard` places every device's shard of a split leaf
from the first block of the host array (a placement that forgets where each shard belongs).
"""

import contextlib
import dataclasses
import os
import sys

import jax
import numpy as np

COMPARED = ("params", "batch_stats", "ema")  # of each net's state (a missing one is left out)


class _IgnoresMask:
    """A model whose BatchNorm layers never see the padding mask (the bug before issue 16)."""

    def __init__(self, model):
        self.model = model

    def apply(self, *args, mask=None, **kwargs):
        del mask
        return self.model.apply(*args, **kwargs)


@contextlib.contextmanager
def _mutation(name: str):
    """Patches the engine with the bug `name` ("" for none) while the block runs."""
    from engine.programs import steps
    from engine.runtime import parallel
    from engine.workflows import model_setup

    if name == "oneshard":
        target, attr = parallel, "_put_global"
        original = parallel._put_global

        def patched(a, sharding):
            first = sharding.addressable_devices_indices_map(a.shape)
            block = next(iter(first.values()))  # the first device's slice, given to every device
            return (
                original(a, sharding)
                if sharding.is_fully_replicated
                else (jax.make_array_from_callback(a.shape, sharding, lambda idx: a[block]))
            )
    elif name == "unsynced":
        target, attr = model_setup, "model_options"
        original = model_setup.model_options
        patched = lambda config, spec, axis_name: original(config, spec, None)  # noqa: E731
    elif name == "unmasked":
        target, attr = steps, "make_train_step"
        original = steps.make_train_step
        patched = lambda model, *a, **k: original(_IgnoresMask(model), *a, **k)  # noqa: E731
    else:
        assert not name, name
        yield
        return
    setattr(target, attr, patched)
    try:
        yield
    finally:
        setattr(target, attr, original)


def main(out_dir: str, data_dir: str, arch: str, *modes: str) -> None:
    from engine_helpers import read_state

    from engine.config import Config
    from engine.workflows.fit import fit

    options = {"mlp": dict(hidden_sizes=(32,), dropout=0.0), "resnet": dict(depth=18, width=0.25)}
    # BatchNorm's cross-device statistics and padding mask, at an MLP's compile time.
    options["mlp-bn"] = dict(options["mlp"], arch="mlp", batchnorm="on")
    # The same with a moving average of its parameters and statistics (compared too).
    options["mlp-bn-ema"] = dict(options["mlp-bn"], ema_decay=0.9)
    # An MLP embedding, its triplets mined over the global batch (all-gathered under pmap).
    options["triplet"] = dict(options["mlp"], arch="mlp", loss="triplet_margin")
    if arch == "distill":
        # An MLP student of an MLP teacher with BatchNorm (frozen statistics in the step), the
        # teacher trained once on one device.
        teacher = os.path.join(out_dir, "teacher")
        options["distill"] = dict(options["mlp"], arch="mlp", teacher=teacher)
        fit(
            Config(
                data_dir=data_dir,
                workdir=teacher,
                epochs=1,
                test_fraction=0.8,
                progress=False,
                parallel="none",
                **options["mlp-bn"],
            )
        )
    # The DCGAN program: two nets with BatchNorm, each step's noise drawn for the global batch.
    options["gan"] = dict(program="gan", arch="dcgan", width=0.25, optimizer="adam", lr=2e-4)
    settings = dict(
        data_dir=data_dir,
        arch=arch,
        epochs=1,
        batch_size=32,
        # A few hundred training examples: a few steps, quickly. The training split has 323
        # rows, so the last batch holds 3 real rows, all on the first of 4 devices.
        test_fraction=0.8,
        progress=False,
        optimizer="momentum",
        lr=0.05,
    )
    base = Config(**{**settings, **options[arch]})
    for mode in modes:
        parallel, _, bug = mode.partition("+")
        sharding = "fsdp" if parallel == "fsdp" else "replicated"
        parallel = "jit" if parallel == "fsdp" else parallel
        workdir = os.path.join(out_dir, f"{arch}-{mode}")
        with _mutation(bug):
            fit(dataclasses.replace(base, parallel=parallel, sharding=sharding, workdir=workdir))
        root = os.path.join(workdir, "checkpoints", "latest", "1", "state")
        state = read_state(root)
        nets = {"generator", "discriminator"} & set(state) or {None}
        compared = {
            net: {k: v for k, v in (state[net] if net else state).items() if k in COMPARED}
            for net in nets
        }
        flat = {
            jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(compared)
        }
        np.savez(os.path.join(out_dir, f"{arch}-{mode}.npz"), **flat)
    print("devices", jax.device_count())


if __name__ == "__main__":
    main(*sys.argv[1:])
