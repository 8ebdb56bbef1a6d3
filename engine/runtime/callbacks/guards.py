"""The NaN guard: stops a run whose loss, gradients or updates stop being finite (`--on_nan`)."""

from __future__ import annotations

import time

from engine.runtime.callbacks.base import Callback

# What the seeds of this project found behind a diverging run, and what to try for each.
LIKELY_CAUSES = (
    "likely causes: a learning rate too high (try --lr 10x lower, or --clip_grad_norm=1), "
    "a bad initialisation scale (try --init=he or lecun), or a division by zero or log of "
    "zero in the data or the loss (check the inputs for inf/nan); --on_nan=skip skips such "
    "updates instead"
)
# Exit status of a run stopped by non-finite values (2 is a usage error).
EXIT_NONFINITE = 3


class NanGuard(Callback):
    """Watches the `nonfinite` count the train step adds to its metric sums.

    The sums are read at most once every `interval` seconds between steps (a read waits for
    the step in flight, so never every step) and at each epoch end. With `on_nan="stop"` the
    steps keep the last finite state (`engine.programs.steps`), so the guard stops the run as
    failed: the bad state is never saved, the last good checkpoint stays. With `"skip"` the bad
    updates were dropped by optax.apply_if_finite; the count is reported in the epoch record
    (`train.nonfinite_steps`), and a run whose every step of an epoch failed is stopped.

    Attributes:
      message: the one-line report once the guard stopped the run, else None.
    """

    def __init__(self, on_nan: str, interval: float = 1.0):
        self.on_nan, self.interval = on_nan, interval
        self.message, self.last = None, 0.0

    def on_fit_start(self, fit):
        self.last = time.monotonic()

    def on_step(self, step, state, totals):
        # A program whose step does not count non-finite values (a user's own) is not watched.
        if self.on_nan != "stop" or "nonfinite" not in totals:
            return
        if time.monotonic() - self.last < self.interval:
            return
        self.last = time.monotonic()
        if int(self.fit.plan.read(totals["nonfinite"])):
            self._stop(state)

    def on_epoch_end(self, epoch, record, state):
        bad = record["train"].get("nonfinite_steps", 0)
        if not bad:
            return
        if self.on_nan == "stop" or bad >= self.fit.steps_per_epoch:
            self._stop(state)
        else:
            self.fit.say(f"epoch {epoch}: skipped {bad} non-finite update(s) (--on_nan=skip)")

    def _stop(self, state) -> None:
        fit = self.fit
        # Under "stop" a bad step keeps the state, step count included: the next is the bad one.
        step = int(fit.plan.read(state.step)) + 1 if hasattr(state, "step") else None
        where = f"at step {step} (epoch {(step - 1) // fit.steps_per_epoch + 1})" if step else ""
        if self.on_nan == "skip":
            where = f"in every step of an epoch, up to step {step}"
        self.message = (
            f"non-finite loss, gradients or update {where}; the run stopped without saving "
            f"it (the last good checkpoint is kept); {LIKELY_CAUSES}"
        )
        fit.stop(self.message, failed=True, exit_code=EXIT_NONFINITE)


class Diverged(RuntimeError):
    """Raised by `engine.fit` when the NaN guard stopped the run; `exit_code` for run.py."""

    def __init__(self, message: str, exit_code: int = EXIT_NONFINITE):
        super().__init__(message)
        self.exit_code = exit_code
