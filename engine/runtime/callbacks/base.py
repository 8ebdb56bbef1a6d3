"""The callback interface: what happens around the loop's steps, and when it is called.

A callback overrides any of the hooks of `Callback`; the loop calls them in the order the
callbacks are given. `on_step` is called only for callbacks that override it, so it costs
nothing when unused; it runs on the host between dispatches and must not read device values
every step (that would wait for each step to finish). A callback with state worth keeping
across a resume returns it (JSON) from `state_dict`; it is saved in every checkpoint and given
back to `load_state_dict` when the run resumes.
"""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class: every hook does nothing. `name` keys the callback's saved state.

    The loop sets `fit` (the running `engine.runtime.loop.Fit`) before `on_fit_start`, so every
    hook can end the run (`self.fit.finish(reason)`: then it is tested), pause it
    (`self.fit.stop(reason)`: running the same command again resumes it) or print
    (`self.fit.say(...)`).
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
