"""Checkpoints inside an epoch (`--checkpoint_every`, `--checkpoint_minutes`) and preemption.

Both are callbacks whose `on_step` saves the state at a step boundary together with the
epoch's running metric sums, so a resumed run continues the epoch at the next batch (the
loader's order is a pure function of seed and epoch) with the same sums: its parameters and
its `metrics.jsonl` equal an uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils

from engine.config import ConfigError
from engine.runtime import checkpoint, report
from engine.runtime.callbacks.base import Callback

# With several processes the time trigger is decided by process 0 and broadcast, every this
# many steps only (a collective per step would wait for every step).
TIME_CHECK_STRIDE = 10


class StepCheckpointer(Callback):
    """Saves a mid-epoch checkpoint every `every` steps and/or `minutes` minutes after any save.

    Saves only inside an epoch (the epoch's end has its own checkpoint), never a step whose
    epoch already had a non-finite step under `--on_nan=stop` (the NaN guard stops the run).
    """

    def __init__(self, ckpt: checkpoint.Checkpoints, config_json: dict, every: int, minutes):
        self.ckpt, self.config_json = ckpt, config_json
        self.every, self.minutes = every, minutes
        self.fit = None

    def on_fit_start(self, fit):
        self.fit = fit
        self.ckpt.saved_at = time.monotonic()  # the clock starts with the run

    def _due(self, step: int) -> bool:
        if self.every and step % self.every == 0:
            return True
        if not self.minutes:
            return False
        if self.fit.plan.num_processes == 1:
            return time.monotonic() - self.ckpt.saved_at >= 60 * self.minutes
        if step % TIME_CHECK_STRIDE:
            return False
        late = time.monotonic() - self.ckpt.saved_at >= 60 * self.minutes
        return bool(multihost_utils.broadcast_one_to_all(late))  # process 0 decides for all

    def on_step(self, step, state, totals):
        if step % self.fit.steps_per_epoch and self._due(step):
            self.save(step, state, totals)

    def save(self, step: int, state, totals) -> bool:
        """Saves `state` and the epoch's `totals` after global step `step`; False if refused."""
        fit = self.fit
        sums = fit.plan.read(totals)
        if int(sums.get("nonfinite", 0)) and fit.program is not None and _stops_on_nan(fit):
            return False
        # The last step of an epoch is saved as that epoch's step `steps_per_epoch`: the resume
        # then finishes the epoch (validation, its record and checkpoint) with no batch left.
        epoch = (step - 1) // fit.steps_per_epoch
        within = step - epoch * fit.steps_per_epoch
        states = {cb.name: cb.state_dict() for cb in fit.callbacks}
        meta = {
            "epoch": epoch,
            "step_in_epoch": within,
            "steps_per_epoch": fit.steps_per_epoch,
            "callbacks": {k: v for k, v in states.items() if v is not None},
            "config": self.config_json,
            "jax_version": jax.__version__,
        }
        self.ckpt.save_step(step, fit.plan.global_state(state), sums, report.strict(meta))
        return True


def _stops_on_nan(fit) -> bool:
    return any(getattr(cb, "on_nan", None) == "stop" for cb in fit.callbacks)


class Preemption(Callback):
    """SIGTERM or SIGINT: save at the next step boundary, then exit 143 or 130.

    One process: Python handlers note the signal; a second one exits at once (status
    128 + signal), without waiting for the step or the save. Several processes: JAX's
    preemption service (on by default with `jax.distributed`) catches SIGTERM and agrees with
    every process on the step to save at (`multihost_utils.reached_preemption_sync_point`,
    called every step); a SIGINT is turned into a SIGTERM to use the same agreement.
    """

    def __init__(self, saver: StepCheckpointer):
        self.saver = saver
        self.fit, self.signum, self.previous = None, None, {}

    def on_fit_start(self, fit):
        self.fit = fit
        self.multi = fit.plan.num_processes > 1
        if not _main_thread():
            return  # signals reach the main thread only; a fit in a thread is not preemptible
        caught = (signal.SIGINT,) if self.multi else (signal.SIGTERM, signal.SIGINT)
        for signum in caught:
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:  # the second one: exit now
            print(f"{signal.Signals(signum).name} again: exiting at once", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum
        print(
            f"{signal.Signals(signum).name}: saving at the next step boundary (send it again "
            "to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        if self.multi:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption service takes it from here

    def on_step(self, step, state, totals):
        if self.multi:
            if not multihost_utils.reached_preemption_sync_point(step):
                return
            signum = self.signum or signal.SIGTERM
        elif self.signum is None:
            return
        else:
            signum = self.signum
        fit = self.fit
        self.saver.save(step, state, totals)
        self.saver.ckpt.wait()
        epoch = (step - 1) // fit.steps_per_epoch
        within = step - epoch * fit.steps_per_epoch
        fit.stop(
            f"stopped by {signal.Signals(signum).name} after step {step} (epoch {epoch + 1}, "
            f"step {within} of {fit.steps_per_epoch}); checkpoint saved: run the same command "
            "again to resume",
            exit_code=128 + signum,
        )

    def on_fit_end(self, fit, state):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def resume_point(ckpt: checkpoint.Checkpoints, abstract, zeros, steps_per_epoch: int, say):
    """Where a run resumes: the newest checkpoint that reads back, epoch-end or mid-epoch.

    A checkpoint that fails to restore (files truncated or deleted after orbax committed it)
    is passed over with a warning naming it, for the next newest; when none restores, the
    newest one's error is raised: never a silent start from scratch while checkpoints exist.
    A mid-epoch checkpoint made with another number of steps per epoch (another
    `--batch_size`) cannot continue its epoch and is passed over too.

    Returns:
      `(global state or None, meta or None, start_epoch, start_step, start_totals or None)`.
    """
    candidates = [(s, checkpoint.MID, s) for s in ckpt.steps(checkpoint.MID)]
    candidates += [(e * steps_per_epoch, checkpoint.LATEST, e) for e in ckpt.steps()]
    # Newest first; at equal steps the epoch's own checkpoint (it has its record) wins.
    candidates.sort(key=lambda c: (c[0], c[1] == checkpoint.LATEST), reverse=True)
    first_error, damaged = None, []

    def set_aside_damaged():
        for which, number, where, reason in damaged:
            moved = ckpt.set_aside(which, number)
            say(f"warning: checkpoint {where} does not restore ({reason}); moved to {moved}")

    for _, which, number in candidates:
        where = f"{ckpt.directory(which)}/{number}"
        try:
            if which == checkpoint.MID:
                state, totals, meta = ckpt.restore_step(abstract, zeros, number)
                if meta.get("steps_per_epoch") != steps_per_epoch:
                    say(
                        f"warning: {where} has {meta.get('steps_per_epoch')} steps per epoch, "
                        f"this run {steps_per_epoch}; it cannot continue its epoch, skipped"
                    )
                    continue
                set_aside_damaged()
                return state, meta, meta["epoch"], meta["step_in_epoch"], totals
            state, meta = ckpt.restore(abstract, epoch=number)
            set_aside_damaged()
            return state, meta, meta["epoch"], 0, None
        except Exception as e:
            first_error = first_error or e
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            damaged.append((which, number, where, reason))
    if first_error is not None:
        reason = str(first_error).strip().splitlines()[0][:300]
        raise ConfigError(
            f"no checkpoint in {os.path.dirname(ckpt.directory(checkpoint.LATEST))} restores "
            f"(the newest: {reason}); with the flags it was trained with, they are damaged: "
            "move them away to train from scratch"
        ) from None
    return None, None, 0, 0, None
