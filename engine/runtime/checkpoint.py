"""Checkpoints with orbax: the latest epochs (resume) and the best on validation (test, eval)."""

from __future__ import annotations

import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from engine import paths
from engine.config import ConfigError

LATEST = "latest"
BEST = "best"
MID = "mid_epoch"


class Checkpoints:
    """Two orbax CheckpointManagers in `<workdir>/checkpoints/{latest,best}`.

    Each checkpoint holds the state (global arrays, saved by all processes together) and a JSON
    `meta` record (epoch, step, metrics, best value so far, config, versions). The step number of
    a checkpoint is the number of completed epochs. orbax writes into a temporary directory and
    renames it when complete, so a killed run leaves at most an unfinished temporary directory,
    which restore ignores.
    """

    def __init__(self, workdir: str, *, max_to_keep: int):
        root = self._root = paths.join(paths.absolute(workdir), "checkpoints")
        # Asynchronous saves overlap writing with training on one process. With two CPU
        # processes, an asynchronous save failed here in orbax's commit-time validation
        # ("metadata from just one process"), so multi-process runs save synchronously.
        single = jax.process_count() == 1
        self._latest = ocp.CheckpointManager(
            paths.join(root, LATEST),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                enable_async_checkpointing=single,
                # A killed save leaves `<step>.orbax-checkpoint-tmp`; a resumed run may save
                # that step again. The workdir lock makes this run the only writer.
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "meta"),
        )
        # The loop's best tracker decides what is best (direction, ties, non-finite values);
        # this manager keeps only the newest state it was given.
        self._best = ocp.CheckpointManager(
            paths.join(root, BEST),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                create=True,
                enable_async_checkpointing=single,
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "meta"),
        )

        # Mid-epoch saves (`engine.runtime.callbacks.midepoch`), numbered by global step, with the
        # epoch's running metric sums beside the state; made on first use (eval writes nothing).
        self._mid_dir, self._mid_keep, self._async = paths.join(root, MID), max_to_keep, single
        self._mid: ocp.CheckpointManager | None = None
        # A best state not yet on disk (`hold_best`): written before any later save, so the
        # best folder always holds the best of the epochs the newest checkpoint has seen.
        self._held: tuple[int, Any, dict] | None = None
        self.saved_at = time.monotonic()  # when the last save (of any kind) was made

    def _mid_manager(self) -> ocp.CheckpointManager:
        if self._mid is None:
            self._mid = ocp.CheckpointManager(
                self._mid_dir,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self._mid_keep,
                    create=True,
                    enable_async_checkpointing=self._async,
                    cleanup_tmp_directories=True,
                ),
                item_names=("state", "totals", "meta"),
            )
        return self._mid

    def directory(self, which: str) -> str:
        """The folder of `which` (LATEST, BEST or MID) checkpoints."""
        return self._mid_dir if which == MID else str(self._manager(which).directory)

    def latest_step(self) -> int | None:
        """The global step of the newest complete mid-epoch checkpoint, or None."""
        if self._mid is None and not paths.is_dir(self._mid_dir):
            return None
        return self._mid_manager().latest_step()

    def _manager(self, which: str) -> ocp.CheckpointManager:
        return {LATEST: self._latest, BEST: self._best}[which]

    def save_step(self, step: int, state: Any, totals: Any, meta: dict) -> None:
        """Saves a mid-epoch checkpoint after global step `step` (host `totals`: the sums)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            totals=ocp.args.StandardSave(totals),
            meta=ocp.args.JsonSave(meta),
        )
        self.flush_best()
        self._mid_manager().save(step, args=args)
        self.saved_at = time.monotonic()

    def restore_step(self, abstract_state: Any, zeros: Any, step: int):
        """Restores `(state, totals, meta)` of the mid-epoch checkpoint after `step`."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            totals=ocp.args.StandardRestore(zeros),
            meta=ocp.args.JsonRestore(),
        )
        restored = self._mid_manager().restore(step, args=args)
        return restored["state"], restored["totals"], restored["meta"]

    def latest_epoch(self, which: str = LATEST) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        return self._manager(which).latest_step()

    def steps(self, which: str = LATEST) -> list[int]:
        """The numbers of the complete checkpoints of `which` (LATEST, BEST, MID), newest first."""
        if which == MID:
            if self._mid is None and not paths.is_dir(self._mid_dir):
                return []
            return sorted(self._mid_manager().all_steps(), reverse=True)
        return sorted(self._manager(which).all_steps(), reverse=True)

    def set_aside(self, which: str, number: int) -> str:
        """Moves a damaged checkpoint to `checkpoints/damaged/` (kept for inspection).

        Orbax would refuse to save that step again while its folder exists.
        """
        manager = self._mid_manager() if which == MID else self._manager(which)
        source = paths.join(self.directory(which), str(number))
        folder = paths.join(self._root, "damaged")
        target = paths.join(folder, f"{which}-{number}")
        suffix = 0
        while paths.exists(target + (f".{suffix}" if suffix else "")):
            suffix += 1
        target += f".{suffix}" if suffix else ""
        paths.make_dirs(folder)
        paths.move(source, target)
        manager.reload()
        return target

    def save(self, epoch: int, state: Any, meta: dict, *, best: bool) -> None:
        """Saves `state` (global arrays) and `meta` as the latest, and also as best if `best`."""
        args = _args(state, meta)
        if best:
            self._held = None  # superseded by this epoch
        self.flush_best()
        self._latest.save(epoch, args=args)
        if best:
            self._best.save(epoch, args=args)
        self.saved_at = time.monotonic()

    def hold_best(self, epoch: int, state: Any, meta: dict) -> None:
        """Keeps a device copy of `state` as the best, written with the next save or flush.

        The copy is needed because the train step donates the state's buffers.
        """
        self._held = (epoch, jax.tree.map(lambda a: a.copy(), state), meta)

    def flush_best(self, *, as_latest: bool = False) -> None:
        """Writes a held best state (`hold_best`), also as the latest if `as_latest`."""
        if self._held is None:
            return
        epoch, state, meta = self._held
        self._held = None
        args = _args(state, meta)
        self._best.save(epoch, args=args)
        if as_latest:
            self._latest.save(epoch, args=args)
        self.saved_at = time.monotonic()

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
        for manager in (self._latest, self._best, self._mid):
            if manager is not None:
                manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the managers."""
        for manager in (self._latest, self._best, self._mid):
            if manager is not None:
                manager.close()


def _args(state: Any, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
