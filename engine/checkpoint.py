"""Checkpoints with orbax: the latest epochs (resume) and the best on validation (test, eval)."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from engine.config import ConfigError

LATEST = "latest"
BEST = "best"


class Checkpoints:
    """Two orbax CheckpointManagers in `<workdir>/checkpoints/{latest,best}`.

    Each checkpoint holds the state (global arrays, saved by all processes together) and a JSON
    `meta` record (epoch, step, metrics, best value so far, config, versions). The step number of
    a checkpoint is the number of completed epochs. orbax writes into a temporary directory and
    renames it when complete, so a killed run leaves at most an unfinished temporary directory,
    which restore ignores.
    """

    def __init__(self, workdir: str, *, max_to_keep: int):
        root = os.path.join(os.path.abspath(workdir), "checkpoints")
        # Asynchronous saves overlap writing with training on one process. With two CPU
        # processes, an asynchronous save failed here in orbax's commit-time validation
        # ("metadata from just one process"), so multi-process runs save synchronously.
        single = jax.process_count() == 1
        self._latest = ocp.CheckpointManager(
            os.path.join(root, LATEST),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=single
            ),
            item_names=("state", "meta"),
        )
        # The loop's best tracker decides what is best (direction, ties, non-finite values);
        # this manager keeps only the newest state it was given.
        self._best = ocp.CheckpointManager(
            os.path.join(root, BEST),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=single
            ),
            item_names=("state", "meta"),
        )

    def _manager(self, which: str) -> ocp.CheckpointManager:
        return self._latest if which == LATEST else self._best

    def latest_epoch(self, which: str = LATEST) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        return self._manager(which).latest_step()

    def save(self, epoch: int, state: Any, meta: dict, *, best: bool) -> None:
        """Saves `state` (global arrays) and `meta` as the latest, and also as best if `best`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._latest.save(epoch, args=args)
        if best:
            self._best.save(epoch, args=args)

    def restore(self, abstract_state: Any, which: str = LATEST, epoch: int | None = None):
        """Restores `(state, meta)` into the layout of `abstract_state` (ShapeDtypeStructs)."""
        manager = self._manager(which)
        epoch = manager.latest_step() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        )
        try:
            restored = manager.restore(epoch, args=args)
        except (ValueError, KeyError, TypeError) as e:  # orbax: the saved tree differs
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"the {which} checkpoint in {manager.directory} does not match this run's state "
                f"({first[:160]}); use the flags it was trained with, or another --workdir"
            ) from None
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk (call before reading them or exiting)."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the managers."""
        self._latest.close()
        self._best.close()
