"""`--profile=START:STOP`: a `jax.profiler` trace of those train steps and where their time goes.

(The flag's `START:STOP` is read by `engine.config.parse_window`.)

`Profiler` is a callback: it starts a trace before step START (counted from the run's start,
1-based), stops it after step STOP, and writes it under `<workdir>/profile` (TensorBoard's
profile plugin and Perfetto read it). Inside the window it waits for each step, so it can
split the wall time into the device's compute (waiting for the step's results) and the host's
time between steps (reading and placing the next batch, dispatching); compilation is the sum
of JAX's own compile-duration events over the run so far. Waiting per step changes the
asynchronous overlap a little: the split is a profile's, not an unprofiled run's speed.
"""

from __future__ import annotations

import os
import time

import jax

from engine.runtime import report
from engine.runtime.callbacks.base import Callback

PROFILE_DIR = "profile"
PROFILE_FILE = "profile.json"


class Profiler(Callback):
    """Traces train steps `first`..`last` and reports the split of their time (process 0)."""

    def __init__(self, workdir: str, first: int, last: int, is_main: bool):
        self.logdir = os.path.join(workdir, PROFILE_DIR)
        self.first, self.last, self.is_main = first, last, is_main
        self.compile_s, self.device_s, self.host_s = 0.0, 0.0, 0.0
        self.tracing, self.counting, self.mark, self.steps = False, True, 0.0, 0
        self.report: dict | None = None
        self.fit = None

    def _on_duration(self, event: str, seconds: float, **kwargs) -> None:
        # A program loaded from the persistent compilation cache is not compiled: its loading
        # time stands in for the compilation.
        compiled = event.endswith(("backend_compile_duration", "cache_retrieval_time_sec"))
        if self.counting and compiled:
            self.compile_s += seconds

    def on_fit_start(self, fit):
        self.fit = fit
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        if self.first <= fit.start_epoch * fit.steps_per_epoch + 1:
            self._start()

    def _start(self):
        if self.is_main:
            os.makedirs(self.logdir, exist_ok=True)
            jax.profiler.start_trace(self.logdir)
        self.tracing, self.mark = True, time.perf_counter()

    def on_step(self, step, state, totals):
        if not self.tracing:
            if step == self.first - 1:
                jax.block_until_ready((state, totals))
                self._start()
            return
        if step < self.first:
            return
        dispatched = time.perf_counter()
        jax.block_until_ready((state, totals))
        ready = time.perf_counter()
        self.host_s += dispatched - self.mark
        self.device_s += ready - dispatched
        self.steps += 1
        self.mark = time.perf_counter()
        if step >= self.last:
            self._stop()

    def _stop(self):
        if self.is_main:
            jax.profiler.stop_trace()
        self.tracing = False
        n = max(self.steps, 1)
        self.report = {
            "steps": self.steps,
            "compile_s": self.compile_s,
            "device_ms_per_step": 1000.0 * self.device_s / n,
            "host_ms_per_step": 1000.0 * self.host_s / n,
            "trace_dir": self.logdir,
        }
        total = self.device_s + self.host_s
        share = 100.0 * self.host_s / total if total else 0.0
        if self.is_main:
            report.write_json(os.path.dirname(self.logdir), PROFILE_FILE, self.report)
        r = self.report
        self.fit.say(
            f"profile of steps {self.first}-{self.first + self.steps - 1} in {self.logdir}: "
            f"compilation so far {self.compile_s:.2f} s; per step {r['device_ms_per_step']:.2f} "
            f"ms waiting for the device (compute) and {r['host_ms_per_step']:.2f} ms on the "
            f"host between steps (data, batch transfer, dispatch: {share:.0f}%)"
        )

    def on_fit_end(self, fit, state):
        if self.tracing:  # the run ended inside the window: keep what was traced
            self._stop()
        self.counting = False
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
