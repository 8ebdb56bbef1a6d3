"""The learning-rate range test (--find_lr): loss vs an exponentially increasing rate."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from engine import paths
from engine.config import Config
from engine.programs.optim import RANGE_START, RANGE_STEPS, range_schedule
from engine.runtime import loop, report
from engine.workflows.setup import prepare

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
EXPLODED = 4.0  # stop once the smoothed loss exceeds this many times its minimum
PLOT, RESULT = "lr_find.png", "lr_find.json"


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate at the minimum of the smoothed loss divided by 10.

    At the minimum the rate is already about to diverge; a tenth of it is the usual pick
    (Smith, "Cyclical Learning Rates", 2017; fastai's `lr_min / 10`).
    """
    return float(lrs[int(np.nanargmin(smoothed))] / 10)


def find_lr(config: Config, **fit_kwargs) -> dict:
    """Trains from a fresh state while the rate grows from 1e-7 to 10, one step per rate.

    Writes `lr_find.png` (loss vs lr) and `lr_find.json` in the workdir, and no checkpoint.

    Returns:
      `{"suggested_lr", "min_loss_lr", "lrs", "losses", "smoothed", "stopped"}`.
    """
    config = dataclasses.replace(config, find_lr=True)
    setup = prepare(config, **fit_kwargs)
    program, plan, run = setup.program, setup.plan, setup.run
    sample = run.sample_batch()
    host_state = program.init(jax.random.PRNGKey(config.seed), sample)
    abstract = plan.abstract_state(host_state)
    state = plan.place_state(host_state)
    train_step = plan.wrap_train(loop.accumulating(program.train_step))
    batch = plan.abstract_batch(sample, run.train_loader.batch_size)
    zeros = loop.metric_zeros(program, abstract, batch, plan.axis_name)
    rate = range_schedule()
    lrs, losses, smoothed = [], [], []
    previous = {"sums": zeros, "avg": 0.0}

    def after_step(state, totals) -> bool:  # reads each step's loss: the test is that small
        sums = plan.read(totals)
        step = jax.tree.map(lambda a, b: a - b, sums, previous["sums"])
        previous["sums"] = sums
        loss = program.summarize(step)["loss"]
        previous["avg"] = SMOOTHING * previous["avg"] + (1 - SMOOTHING) * loss
        lrs.append(rate(len(losses) // config.grad_accum_steps))  # the update count
        losses.append(loss)
        smoothed.append(previous["avg"] / (1 - SMOOTHING ** len(losses)))
        best = min(smoothed)
        return (
            len(losses) >= RANGE_STEPS
            or not math.isfinite(smoothed[-1])
            or (smoothed[-1] > EXPLODED * best)
        )

    epoch = 0
    while len(losses) < RANGE_STEPS:
        previous["sums"] = zeros
        state, _, complete = loop.train_epoch(
            train_step, state, run.train_loader.epoch(epoch), plan, zeros, after_step=after_step
        )
        if not complete:  # after_step ended it
            break
        epoch += 1
    finite = [s if math.isfinite(s) else np.nan for s in smoothed]
    result = {
        "suggested_lr": suggest(lrs, finite),
        "min_loss_lr": float(lrs[int(np.nanargmin(finite))]),
        "lrs": lrs,
        "losses": [v if math.isfinite(v) else None for v in losses],
        "smoothed": [v if math.isfinite(v) else None for v in smoothed],
        "stopped": f"after {len(losses)} steps at lr {lrs[-1]:.3g}",
    }
    if plan.is_main:
        paths.make_dirs(setup.workdir)
        report.plot_xy(
            paths.join(setup.workdir, PLOT),
            lrs,
            finite,
            xlabel="lr",
            ylabel="training loss (smoothed)",
            logx=True,
            mark=result["suggested_lr"],
        )
        report.write_json(setup.workdir, RESULT, result)
        print(
            f"lr range test: {len(losses)} steps from {RANGE_START:g}; lowest smoothed loss at lr "
            f"{result['min_loss_lr']:.3g}; suggested --lr={result['suggested_lr']:.3g} "
            f"(plot: {paths.join(setup.workdir, PLOT)})",
            flush=True,
        )
    return result


__all__ = ["find_lr", "suggest"]
