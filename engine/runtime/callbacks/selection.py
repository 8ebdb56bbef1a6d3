"""Which epoch is kept and when a run stops: best tracking, early stopping, plateaus, a pause."""

from __future__ import annotations

import math

import numpy as np

from engine.runtime.callbacks.base import Callback, monitored


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
