"""Callbacks: what happens around the loop's steps (checkpoints, logs, best tracking, stopping).

A callback overrides any of the hooks of `Callback`; the loop calls them in the order the
callbacks are given. `on_step` is called only for callbacks that override it, so it costs
nothing when unused; it runs on the host between dispatches and must not read device values
every step (that would wait for each step to finish). A callback with state worth keeping
across a resume returns it (JSON) from `state_dict`; it is saved in every checkpoint and given
back to `load_state_dict` when the run resumes.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import jax
import numpy as np

from engine import checkpoint, report


class Callback:
    """Base class: every hook does nothing. `name` keys the callback's saved state.

    The loop sets `fit` (the running `engine.loop.Fit`) before `on_fit_start`, so every hook
    can call `self.fit.stop(...)` or `self.fit.say(...)`.
    """

    fit = None

    @property
    def name(self) -> str:
        """The key of this callback's state in checkpoints (its class name by default)."""
        return type(self).__name__

    def on_fit_start(self, fit) -> None:
        """Before the first step (`self.fit` is already set)."""

    def on_step(self, step: int, state: Any, totals: Any) -> None:
        """After each train step's dispatch; `step` counts steps since the run's start."""

    def on_epoch_end(self, epoch: int, record: dict, state: Any) -> None:
        """After each epoch's validation; `record` holds `epoch`, `train`, `val` summaries.

        Callbacks may add entries to `record` (later callbacks see them; `MetricsLog` writes
        what is there when it runs). A callback may return a new state (same tree and
        placement, e.g. from a `plan.wrap_state_update` function) that later callbacks, the
        checkpoint and the next epoch use; None keeps the state.
        """

    def on_fit_end(self, fit, state: Any) -> None:
        """After the loop, whether it ran to the end or was stopped."""

    def state_dict(self) -> dict | None:
        """JSON-able state to save with each checkpoint, or None."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned (on resume)."""


def monitored(record: dict, monitor: str) -> float:
    """The value of `monitor` (`val_accuracy`, `train_loss`, ...) in an epoch record."""
    split, _, metric = monitor.partition("_")
    return float(record[split][metric])


class BestTracker(Callback):
    """Tracks the selected epoch; `improved` says whether this epoch is saved as the best.

    By default the best on the monitored metric. A non-finite value is never best, nor
    is an epoch with any non-finite validation number or one the run stopped as failed (a NaN
    guard ran first). A tie on the monitored metric goes to the lower validation loss, not to
    the earlier (often undertrained) epoch: small validation splits tie often.
    `last=True` (`--select=last`): the last such good epoch. Every good epoch is marked
    improved, so that a run which fails later (NaN) still has its last good epoch to write as
    best; the Checkpointer holds it in memory and writes it only with its next due save.
    """

    def __init__(self, monitor: str, higher_is_better: bool, *, last: bool = False):
        self.monitor, self.higher_is_better, self.last = monitor, higher_is_better, last
        self.best: dict = {"monitor": None, "epoch": 0, "val": None}
        self.improved = False

    def on_epoch_end(self, epoch, record, state):
        value = monitored(record, self.monitor)
        old = self.best["monitor"]
        finite = all(math.isfinite(v) for v in record["val"].values() if isinstance(v, int | float))
        if not (math.isfinite(value) and finite) or (self.fit is not None and self.fit.failed):
            good = False
        elif self.last or old is None:
            good = True
        elif value == old:
            good = record["val"].get("loss", math.inf) < self.best["val"].get("loss", math.inf)
        else:
            good = (value > old) == self.higher_is_better
        if good:
            self.best = {"monitor": value, "epoch": epoch, "val": record["val"]}
        self.improved = good

    def state_dict(self):
        return self.best

    def load_state_dict(self, state):
        self.best = state


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
            from jax.experimental import multihost_utils

            due = bool(multihost_utils.broadcast_one_to_all(due))
        return due

    def on_fit_end(self, fit, state):
        self.ckpt.flush_best()
        self.ckpt.wait()


class MetricsLog(Callback):
    """Appends each epoch's record to `metrics.jsonl` (process 0); a resume drops later ones.

    Every start rewrites the file to the records of the epochs the checkpoint holds, a fresh
    start too: a run killed after appending epoch 1 but before its first checkpoint committed
    restarts from scratch, and keeping that record gave two `"epoch": 1` lines.
    """

    def __init__(self, workdir: str, is_main: bool):
        self.workdir, self.is_main = workdir, is_main

    def on_fit_start(self, fit):
        if not self.is_main:
            return
        records = report.read_metrics(self.workdir)
        kept = [r for r in records if r.get("epoch", math.inf) <= fit.start_epoch]
        if kept != records:
            report.rewrite_metrics(self.workdir, kept)

    def on_epoch_end(self, epoch, record, state):
        if self.is_main:
            report.append_metrics(self.workdir, record)


class EpochPrinter(Callback):
    """Prints one line per epoch: train and validation side by side, speed, best mark."""

    def __init__(self, tracker: BestTracker):
        self.tracker = tracker

    def on_epoch_end(self, epoch, record, state):
        rate = record["train"].get("count", 0) / max(self.fit.epoch_seconds, 1e-9)
        mark = " *" if self.tracker.improved else ""
        lr = f"lr {record['lr']:.3g}  " if "lr" in record else ""
        extra = f"{lr}{rate:,.0f} ex/s{mark}"
        self.fit.say(
            report.epoch_line(epoch, self.fit.epochs, record["train"], record["val"], extra)
        )


class CurvesPlot(Callback):
    """Draws train vs validation curves of the loss and `metric` into `curves.png` at the end."""

    def __init__(self, workdir: str, metric: str, is_main: bool):
        self.workdir, self.metric, self.is_main = workdir, metric, is_main

    def on_fit_end(self, fit, state):
        if self.is_main:
            records = report.read_metrics(self.workdir)
            if records:
                report.plot_curves(self.workdir, records, self.metric)


class ProgressBar(Callback):
    """One tqdm line for the whole run: steps done of all planned, ETA, epoch, running loss.

    The running loss and speed are read back at most once a second (a per-step read-back
    would wait for every step to finish).
    """

    def __init__(self):
        self.bar = None

    def on_fit_start(self, fit):
        from tqdm import tqdm

        # A run resumed inside an epoch has that epoch's first start_step steps done.
        remaining = max(fit.epochs - fit.start_epoch, 0) * fit.steps_per_epoch - fit.start_step
        self.bar = tqdm(total=remaining, unit="step", leave=False, disable=None, file=sys.stderr)
        self.bar.set_description(f"epoch {fit.start_epoch + 1}/{fit.epochs}")
        self.epoch_started, self.last = time.perf_counter(), time.time()

    def on_step(self, step, state, totals):
        fit = self.fit
        within = (step - 1) % fit.steps_per_epoch
        epoch = (step - 1) // fit.steps_per_epoch + 1
        if within == 0:
            self.bar.set_description(f"epoch {epoch}/{fit.epochs}")
            self.epoch_started = time.perf_counter()
        self.bar.update(1)
        if time.time() - self.last > 1.0:
            self.last = time.time()
            summary = fit.program.summarize(fit.plan.read(totals))
            rate = summary.get("count", 0) / max(time.perf_counter() - self.epoch_started, 1e-9)
            self.bar.set_postfix(loss=f"{summary.get('loss', math.nan):.4f}", ex_s=f"{rate:.0f}")

    def on_fit_end(self, fit, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopAtEpoch(Callback):
    """Pauses the run after `epoch` epochs (rerunning the same command resumes it)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record, state):
        if epoch >= self.epoch:
            self.fit.stop(f"stopped after epoch {epoch}")


class EarlyStopping(Callback):
    """Ends the run when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    The run then counts as finished: the best checkpoint (kept by the tracker) is tested. An
    improvement is `value > best + min_delta` (or `<` and `-` when lower is better, as Keras'
    EarlyStopping); a non-finite value never improves. Resumable: the count is in `state_dict`,
    and a run that had stopped stays stopped when it is run again.
    """

    def __init__(self, monitor: str, higher_is_better: bool, patience: int, min_delta: float):
        self.monitor, self.higher_is_better = monitor, higher_is_better
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, 0, 0, 0

    def on_fit_start(self, fit):
        if self.stopped_epoch:  # rerun of a run that had stopped: it is complete
            fit.stop(self.reason(), finished=True)

    def on_epoch_end(self, epoch, record, state):
        value = monitored(record, self.monitor)
        sign = 1.0 if self.higher_is_better else -1.0
        if math.isfinite(value) and (
            self.best is None or sign * (value - self.best) > self.min_delta
        ):
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.fit.stop(self.reason(), finished=True)

    def reason(self) -> str:
        """The line saying where and why the run stopped."""
        best = "none finite" if self.best is None else f"{self.best:.4f}"
        return (
            f"early stopping at epoch {self.stopped_epoch}: {self.monitor} did not improve by "
            f"more than {self.min_delta:g} for {self.patience} epoch(s) (best {best} at epoch "
            f"{self.best_epoch})"
        )

    def state_dict(self):
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]


class PlateauFeed(Callback):
    """Feeds `monitor` (the validation loss) into the state once per epoch: reduce-on-plateau.

    `feed(state, value) -> state` is pure and compiled for the plan (`plan.wrap_state_update`);
    the plateau's own state lives in the run's state, so every checkpoint holds it and a
    resumed run continues identically. The rate the epoch trained with is added to the
    record as `lr` (logged and printed), and each reduction is announced.
    """

    def __init__(self, feed, lr_of, monitor: str = "val_loss"):
        self.feed, self.lr_of, self.monitor = feed, lr_of, monitor

    def on_epoch_end(self, epoch, record, state):
        lr = self.lr_of(state)
        record["lr"] = lr
        state = self.feed(state, np.float32(monitored(record, self.monitor)))
        new = self.lr_of(state)
        if new != lr:
            self.fit.say(
                f"plateau after epoch {epoch}: {self.monitor} stopped improving; "
                f"lr {lr:.4g} -> {new:.4g} from epoch {epoch + 1}"
            )
        return state
