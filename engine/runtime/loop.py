"""The training loop: epochs of a program's pure steps, with callbacks doing everything else.

Checkpoints, logs, best tracking, early stopping and the like are callbacks
(`engine.runtime.callbacks`); the loop only runs steps, evaluates, and tells the callbacks. It is
the same for every program (supervised, several models) and every parallel mode.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from engine.runtime.callbacks.base import Callback
from engine.runtime.parallel import Plan
from engine.runtime.program import Batch, Program, host_zeros, signature


@dataclasses.dataclass
class Fit:
    """What callbacks see of the running fit, and how they ask it to stop.

    Attributes:
      program, plan: what runs and how.
      workdir: where the run's files go.
      epochs: the planned number of epochs.
      start_epoch: epochs completed before this invocation (a resumed run starts later).
      start_step: train steps of epoch `start_epoch` + 1 already done (a mid-epoch resume);
        `start_totals` holds their host sums, which that epoch's sums continue.
      steps_per_epoch: train steps in one epoch.
      callbacks: every callback of the fit, in call order.
      epoch_seconds: wall time of the last epoch's training pass.
      stop_reason: set by `stop`; the loop ends after the current step or epoch.
      finished: whether the stop completes the run (early stopping: test it) rather than
        pausing it (rerun the same command to resume).
      failed: whether the stop is a failure (a diverged run): nothing more is saved.
      exit_code: the process exit status the stop asks for (0: none; 143 after SIGTERM).
      train_compilations: how often the train step was compiled (1 when nothing recompiled).
      partial: when a stop came inside an epoch, that epoch's record so far
        (`{"epoch", "step", "train"}`: the run's step count at the stop and the summarized
        sums of the epoch's steps, the stopping one included), for `on_fit_end` (the doctor
        reads a diverged run's first bad step there); None after a whole epoch.
    """

    program: Program
    plan: Plan
    workdir: str
    epochs: int
    start_epoch: int
    steps_per_epoch: int
    callbacks: Sequence[Any] = ()
    start_step: int = 0
    start_totals: Any = None
    epoch_seconds: float = 0.0
    stop_reason: str | None = None
    finished: bool = False
    failed: bool = False
    exit_code: int = 0
    train_compilations: int | None = None
    partial: dict | None = None

    def stop(
        self, reason: str, *, finished: bool = False, failed: bool = False, exit_code: int = 0
    ) -> None:
        """Asks the loop to stop at the next step boundary (keeps the first reason given).

        A plain `stop(reason)` pauses the run: nothing is tested, and running the same command
        again resumes it. `finished=True` (or `finish(reason)`) ends it for good: the selected
        checkpoint is tested as after the last epoch, and a rerun finds it complete (when the
        stop came at an epoch's end, which the checkpoint then records).
        """
        if self.stop_reason is None:
            self.stop_reason, self.finished = reason, finished
            self.failed, self.exit_code = failed, exit_code

    def finish(self, reason: str) -> None:
        """Ends the run for good at the next step boundary, then tests it."""
        self.stop(reason, finished=True)

    def say(self, *lines: str) -> None:
        """Prints on the main process only."""
        if self.plan.is_main:
            for line in lines:
                print(line, flush=True)


def _overrides(callback, hook: str) -> bool:
    method = getattr(type(callback), hook, None)
    return method is not None and method is not getattr(Callback, hook, None)


def run(fit: Fit, state, abstract, train_loader, val_loader, sample: Batch):
    """Trains `fit.program` from `fit.start_epoch` to `fit.epochs`, or until a callback stops it.

    Args:
      fit: the fit's description; its callbacks are called in order.
      state: the program's state, placed for `fit.plan`.
      abstract: the state's shapes and dtypes, without any device axis.
      train_loader, val_loader: loaders with `epoch(e)` iterating host batches.
      sample: a one-row host batch of the data's shapes (for the metric sums' zeros).

    Returns:
      The final state.
    """
    program, plan = fit.program, fit.plan
    train_step = plan.wrap_train(accumulating(program.train_step))
    eval_step = plan.wrap_eval(program.eval_step)
    batch = plan.abstract_batch(sample, train_loader.batch_size)
    train_zeros = metric_zeros(program, abstract, batch, plan.axis_name)
    # The evaluation sums' shapes are traced at the first evaluation: nothing before it needs
    # them, and the first step comes sooner (their trace is ~0.1 s of a ResNet-18 start).
    eval_zeros = functools.cache(lambda: program.eval_zeros(abstract, sample))
    for cb in fit.callbacks:
        cb.fit = fit  # every callback can reach the fit (to stop it, print, read the plan)
        cb.on_fit_start(fit)
    per_step = [cb for cb in fit.callbacks if _overrides(cb, "on_step")]
    step = fit.start_epoch * fit.steps_per_epoch + fit.start_step

    def after_step(state, totals) -> bool:
        nonlocal step
        step += 1
        for cb in per_step:
            cb.on_step(step, state, totals)
        return fit.stop_reason is not None

    epoch, skip, zeros = fit.start_epoch, fit.start_step, fit.start_totals
    while epoch < fit.epochs and fit.stop_reason is None:
        start = time.perf_counter()
        state, sums, done = train_epoch(
            train_step,
            state,
            train_loader.epoch(epoch, skip),  # a mid-epoch resume continues its epoch
            plan,
            train_zeros if zeros is None else zeros,
            after_step=after_step if per_step else None,  # none: nothing runs between steps
        )
        skip, zeros = 0, None
        if not done:  # stopped inside an epoch: it does not count, but it can be read
            fit.partial = {"epoch": epoch + 1, "step": step, "train": program.summarize(sums)}
            break
        fit.epoch_seconds = time.perf_counter() - start
        epoch += 1
        record = {
            "epoch": epoch,
            "train": program.summarize(sums),
            "val": program.summarize(evaluate(eval_step, state, val_loader, plan, eval_zeros())),
        }
        for cb in fit.callbacks:
            replaced = cb.on_epoch_end(epoch, record, state)
            if replaced is not None:  # a callback fed a value into the state (plateau lr)
                state = replaced
    compiles = getattr(train_step, "_cache_size", None)
    fit.train_compilations = compiles() if compiles else None
    for cb in fit.callbacks:
        cb.on_fit_end(fit, state)
    return state


def train_epoch(train_step, state, batches, plan: Plan, zeros, *, after_step=None):
    """Runs the wrapped `train_step(state, batch, totals)` over `batches` (one epoch).

    Args:
      train_step: `plan.wrap_train(accumulating(program.train_step))`.
      batches: host batches (`loader.epoch(e)`).
      zeros: host zeros of the sums (`metric_zeros`).
      after_step: optional `(state, totals) -> stop?` called after each dispatch.

    Returns:
      `(state, host sums, complete)`: `complete` is False when `after_step` stopped the
      epoch early (the sums then cover its steps so far). The sums stay on the devices until
      the end: one read-back an epoch.
    """
    totals = plan.place_state(zeros)
    for batch in batches:
        state, totals = train_step(state, plan.place_batch(batch), totals)
        bound_in_flight(plan, totals)
        if after_step is not None and after_step(state, totals):
            return state, plan.read(totals), False
    return state, plan.read(totals), True


def evaluate(eval_step, state, loader, plan: Plan, zeros) -> dict:
    """Runs the wrapped `eval_step` over every example of `loader` once; returns host totals."""
    totals = plan.place_state(zeros)
    for batch in loader.epoch(0):
        totals = eval_step(state, plan.place_batch(batch), totals)
        bound_in_flight(plan, totals)
    return plan.read(totals)


def bound_in_flight(plan: Plan, outputs) -> None:
    """Waits for each step on several CPU devices; elsewhere dispatch stays asynchronous.

    Simulated CPU devices run every in-flight program's per-device parts on one shared thread
    pool; with several programs in flight, each holding some of the threads at a cross-device
    rendezvous, the pool ran dry and XLA aborted (or hung) waiting for the rest ("expected 4
    threads, only 2 arrived"), seen on this loaded 2-core machine. One program at a time avoids
    it, at no cost on a CPU, where host and devices share the cores anyway.
    """
    if plan.cpu_multi_device:
        jax.block_until_ready(outputs)


def accumulating(train_step):
    """Wraps `train_step` to `(state, batch, totals) -> (state, totals + sums)`.

    Compiled together, the step and the running sums are one dispatch per batch (a separate
    add was a second dispatch, ~4% of a small MLP's step on this CPU). A sum under a key
    starting with `max_` is combined by maximum instead (a peak, or a first-event marker).
    """

    def combine(path, total, new):
        peak = any(str(getattr(k, "key", "")).startswith("max_") for k in path)
        return jnp.maximum(total, new) if peak else total + new

    inner = _jitted(train_step)

    def step(state, batch, totals):
        state, sums = inner(state, batch)
        return state, jax.tree_util.tree_map_with_path(combine, totals, sums)

    return step


# One `jax.jit` of the program's train step, nested inside the compiled step and traced by
# `metric_zeros`: a jitted function is traced once per argument shapes, so the shape pass and
# the compiled step share one trace of the model's Python and its gradient (a ResNet-18 second
# start went from 7.53 to 6.93 s after `import jax` on this CPU; the nested jit is inlined).
# One entry, so no program is kept alive beyond the next call.
_LAST_JIT: list = []


def _jitted(train_step):
    if not (_LAST_JIT and _LAST_JIT[0][0] is train_step):
        _LAST_JIT[:] = [(train_step, jax.jit(train_step))]
    return _LAST_JIT[0][1]


# The last metric_zeros answer: `fit` needs the zeros for the resume point and `run` again for
# the loop; tracing a ResNet-18 train step for its shapes takes a second or more on CPU, so the
# second call reuses the first. One entry, so no program is kept alive beyond the next call.
_LAST_ZEROS: list = []


def metric_zeros(program: Program, abstract, batch, axis_name: str | None):
    """Host zeros shaped like `program.train_step`'s sums (shapes only: nothing is compiled).

    Under pmap the step sums over `axis_name`; a one-entry `vmap` binds that axis name so the
    step can be traced outside pmap. Fresh arrays on every call (callers may fill them).

    Args:
      program: the program whose train step is traced.
      abstract: the state's shape structs (`Plan.abstract_state`).
      batch: a batch's shape structs, `Plan.abstract_batch(sample, loader.batch_size)`: at
        the real calls' shapes and placement the compiled step reuses this trace
        (`_jitted`); any batch of the data's shapes (the one-row sample) gives the same zeros
        at the cost of a second trace.
    """
    key = (program.train_step, axis_name, signature(abstract), signature(batch))
    if not (_LAST_ZEROS and _LAST_ZEROS[0][0] == key):
        inner = _jitted(program.train_step)

        def sums(state, batch):
            return inner(state, batch)[1]

        _LAST_ZEROS[:] = [(key, host_zeros(sums, axis_name, abstract, batch))]
    return jax.tree.map(np.copy, _LAST_ZEROS[0][1])
