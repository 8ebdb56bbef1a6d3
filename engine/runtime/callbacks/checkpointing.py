"""Epoch-end checkpoints: the latest state, and the best one the tracker picked."""

from __future__ import annotations

import time

import jax
from jax.experimental import multihost_utils

from engine.runtime import checkpoint, report
from engine.runtime.callbacks.base import Callback
from engine.runtime.callbacks.selection import BestTracker

# An epoch-end save blocks training for its fixed cost (~0.1 s on an idle 2-core CPU, more on
# remote storage). Epochs shorter than that (the default digits job: 0.25 s) spent as long
# saving as training, so the latest is saved once the time since the last save reaches
# SAVE_RATIO times the last save's cost: saving then costs at most 1/SAVE_RATIO of the run and
# a kill loses at most that much work (the resume recomputes it bit-identically). Epochs
# longer than that are all saved, as before.
SAVE_RATIO = 20


class Checkpointer(Callback):
    """Saves the latest state at epoch ends and the best when `tracker` says it improved.

    The latest is saved at the last epoch, when the run is stopping, and otherwise when the
    time since the last save is at least `SAVE_RATIO` times the last save's cost. An improved
    epoch that is not saved is held (a device copy) and written before any later save, so the
    best checkpoint always matches the tracker state the newest checkpoint holds. A run that
    fails (NaN) writes a held best as its latest too: the last good state stays on disk.
    Each checkpoint's meta record holds the epoch, its metrics record, every callback's
    state, the configuration and the JAX version.
    """

    def __init__(self, ckpt: checkpoint.Checkpoints, tracker: BestTracker, config_json: dict):
        self.ckpt, self.tracker, self.config_json = ckpt, tracker, config_json
        self.cost = None  # seconds the last epoch-end save blocked the loop

    def on_epoch_end(self, epoch, record, state):
        if self.fit.failed:  # a diverged state is never saved: the last good one stays
            self.ckpt.flush_best(as_latest=True)
            return
        due = self._due(epoch)  # on every process: with several, it is a collective
        if not (due or self.tracker.improved):
            return  # nothing to write: no global copy of the state (pmap reads it to host)
        states = {cb.name: cb.state_dict() for cb in self.fit.callbacks}
        meta = {
            "epoch": epoch,
            "record": record,
            "callbacks": {k: v for k, v in states.items() if v is not None},
            "config": self.config_json,
            "jax_version": jax.__version__,
        }
        if self.fit.finished and self.fit.stop_reason is not None:
            meta["finished"] = self.fit.stop_reason  # ended for good: a rerun stays ended
        state = self.fit.plan.global_state(state)
        if not due:
            self.ckpt.hold_best(epoch, state, report.strict(meta))
            return
        start = time.perf_counter()
        self.ckpt.save(epoch, state, report.strict(meta), best=self.tracker.improved)
        self.cost = time.perf_counter() - start

    def _due(self, epoch: int) -> bool:
        fit = self.fit
        if epoch == fit.epochs or fit.stop_reason is not None or self.cost is None:
            return True
        due = time.monotonic() - self.ckpt.saved_at >= SAVE_RATIO * self.cost
        if fit.plan.num_processes > 1:  # every process must save together: process 0 decides
            due = bool(multihost_utils.broadcast_one_to_all(due))
        return due

    def on_fit_end(self, fit, state):
        self.ckpt.flush_best()
        self.ckpt.wait()
