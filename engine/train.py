"""The one orchestrating function: train, validate, checkpoint, resume, and test once at the end."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

import architectures
from engine import checkpoint, optim, parallel, report, steps, tasks
from engine import state as state_lib
from engine.build import Run, build
from engine.config import Config, ConfigError, validate

CONFIG_FILE = "config.json"


def _say(plan, *lines) -> None:
    if plan.is_main:
        for line in lines:
            print(line, flush=True)


def _check_workdir(config: Config, workdir: str) -> None:
    """Refuses a workdir whose saved model-shaping settings differ (before anything is written)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        if config.mode == "eval":
            raise ConfigError(
                f"--mode=eval needs a trained workdir; {workdir} has no {CONFIG_FILE}"
            )
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    mine = config.model_fields()
    diff = [k for k in mine if saved.get(k) != mine[k]]
    if diff:
        shown = ", ".join(f"--{k}={saved.get(k)!r} (now {mine[k]!r})" for k in diff)
        raise ConfigError(
            f"workdir {workdir} was trained with {shown}; use the same flags to resume, "
            f"or another --workdir for a new run"
        )


def run_epoch_eval(eval_step, state, loader, plan, zeros: dict) -> dict:
    """Evaluates every example of `loader` once (padded rows masked); returns metric sums.

    Args:
      eval_step: the wrapped `eval_step(state, batch, totals)`.
      zeros: host zero totals (`steps.metric_zeros`).
    """
    totals = plan.place_state(zeros)
    for batch in loader.epoch(0):
        totals = eval_step(state, plan.place_batch(batch), totals)
        _bound_in_flight(plan, totals)
    return plan.read(totals)


def _bound_in_flight(plan, outputs) -> None:
    """Waits for each step on several CPU devices; elsewhere dispatch stays asynchronous.

    Simulated CPU devices run every in-flight program's per-device parts on one shared thread
    pool; with several programs in flight, each holding some of the threads at a cross-device
    rendezvous, the pool ran dry and XLA aborted (or hung) waiting for the rest ("expected 4
    threads, only 2 arrived"), seen on this loaded 2-core machine. One program at a time avoids
    it, at no cost on a CPU, where host and devices share the cores anyway.
    """
    if plan.cpu_multi_device:
        jax.block_until_ready(outputs)


def _sample_batch(run: Run) -> dict:
    """A one-row host batch of the dataset's shapes (for shape-only tracing)."""
    info = run.splits.info
    targets = (
        np.zeros((1, info.target_dim), np.float32) if info.target_dim else np.zeros(1, np.int32)
    )
    inputs = np.zeros((1, *info.input_shape), np.float32)
    return {"inputs": inputs, "targets": targets, "mask": np.ones(1, bool)}


def _progress(plan, config, total, epoch):
    if not (plan.is_main and config.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}", leave=False, disable=None, file=sys.stderr)


def _train_one_epoch(train_step, state, run: Run, plan, config, epoch, zeros):
    """One epoch of `train_step(state, batch, totals)`; metric sums stay on device until the end."""
    bar, last = _progress(plan, config, len(run.train_loader), epoch), time.time()
    totals = plan.place_state(zeros)
    start = time.perf_counter()
    for batch in run.train_loader.epoch(epoch):
        state, totals = train_step(state, plan.place_batch(batch), totals)
        _bound_in_flight(plan, totals)
        if bar is not None:
            bar.update(1)
            if time.time() - last > 1.0:  # read back at most once a second: no per-step sync
                last = time.time()
                sums = plan.read(totals)
                rate = float(sums["count"]) / (time.perf_counter() - start)
                bar.set_postfix(
                    loss=f"{sums['loss_sum'] / sums['weight_sum']:.4f}", ex_s=f"{rate:.0f}"
                )
    sums = plan.read(totals)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return state, tasks.summarize(sums), seconds


def train_and_evaluate(config: Config) -> dict:
    """Runs the configured job end to end and returns the final results.

    Train mode: builds everything (failing before work on a bad combination), resumes from the
    workdir's latest checkpoint when there is one, trains to `--epochs` with validation after
    every epoch, keeps the latest and the best checkpoints, then evaluates the test split once
    with the best checkpoint. Eval mode: evaluates the best checkpoint on the test split.

    Returns:
      A dict with `test` (and `best_epoch`, `best_val`, `epochs_run`) metrics.
    """
    config = validate(config)
    plan = parallel.make_plan(config.parallel)
    if plan.num_processes > 1 and plan.mode == "none":
        raise ConfigError(
            "--parallel=none runs on one device; use jit or pmap with several processes"
        )
    run = build(config, plan)
    workdir = config.resolved_workdir()
    _check_workdir(config, workdir)

    model, task = run.model, run.task
    steps_per_epoch = len(run.train_loader)
    tx = optim.make(config, steps_per_epoch)
    sample = np.zeros((1, *run.input_shape), np.float32)
    host_state = state_lib.create(model, tx, seed=config.seed, sample_input=sample, norm=run.norm)
    params = architectures.count_params(model, (1, *run.input_shape))
    _say(plan, *run.notes)
    _say(plan, architectures.summary(model, (1, *run.input_shape)))
    if config.summary:
        return {"params": params}
    _say(
        plan,
        f"{config.arch}: {params:,} parameters; optimizer {config.optimizer}, "
        f"effective lr {optim.effective_lr(config):.4g}, schedule {config.schedule}",
    )

    if plan.is_main and config.mode == "train":
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(config.to_json())
    ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
    abstract = plan.abstract_state(host_state)
    axis = plan.axis_name
    eval_step = plan.wrap_eval(steps.make_eval_step(model, task, run.step_config, axis))
    zeros = steps.metric_zeros(model, task, run.step_config, abstract, _sample_batch(run))
    try:
        if config.mode == "eval":
            return _test(plan, ckpt, abstract, eval_step, zeros, run, workdir)
        state = plan.place_state(host_state)
        del host_state
        start_epoch, best = 0, {"monitor": -np.inf, "epoch": 0, "val": None}
        if ckpt.latest_epoch() is not None:
            restored, meta = ckpt.restore(abstract)
            state = plan.from_global(restored)
            start_epoch, best = meta["epoch"], meta["best"]
            kept = [r for r in report.read_metrics(workdir) if r.get("epoch", 1e9) <= start_epoch]
            if plan.is_main:
                report.rewrite_metrics(workdir, kept)
            _say(plan, f"resumed from {workdir} at epoch {start_epoch}")

        train_step = plan.wrap_train(
            steps.accumulating(steps.make_train_step(model, tx, task, run.step_config, axis))
        )
        # --stop_after_epoch ends this invocation early (resumably); the plan stays --epochs.
        last = min(config.epochs, config.stop_after_epoch or config.epochs)
        done = start_epoch  # epochs completed so far
        for epoch in range(start_epoch, max(last, start_epoch)):
            done = epoch + 1
            state, train_m, seconds = _train_one_epoch(
                train_step, state, run, plan, config, epoch, zeros
            )
            val_m = tasks.summarize(run_epoch_eval(eval_step, state, run.val_loader, plan, zeros))
            monitor = val_m[task.monitor]
            # A tie on the monitored metric goes to the lower validation loss, not to the
            # earlier (often undertrained) epoch: small validation splits tie often.
            tie = best["val"] is not None and monitor == best["monitor"]
            is_best = bool(monitor > best["monitor"]) or (
                tie and val_m["loss"] < best["val"]["loss"]
            )
            if is_best:
                best = {"monitor": monitor, "epoch": done, "val": val_m}
            record = {"epoch": done, "train": train_m, "val": val_m}
            meta = {
                "epoch": done,
                "monitor": monitor,
                "best": best,
                "record": record,
                "config": json.loads(config.to_json()),
                "jax_version": jax.__version__,
            }
            ckpt.save(done, plan.global_state(state), meta, best=is_best)
            rate = train_m["count"] / max(seconds, 1e-9)
            mark = " *" if is_best else ""
            _say(
                plan,
                report.epoch_line(
                    done, config.epochs, train_m, val_m, task.kind, f"{rate:,.0f} ex/s{mark}"
                ),
            )
            if plan.is_main:
                report.append_metrics(workdir, record)
        ckpt.wait()
        if plan.is_main:
            records = report.read_metrics(workdir)
            if records:
                report.plot_curves(workdir, records, task.kind)
        if done < config.epochs:
            _say(plan, f"stopped after epoch {done}; run the same command again to resume")
            return {"stopped_at": done, "best_epoch": best["epoch"], "best_val": best["val"]}
        results = _test(plan, ckpt, abstract, eval_step, zeros, run, workdir)
        results.update(best_epoch=best["epoch"], best_val=best["val"])
        compiles = getattr(train_step, "_cache_size", None)
        results["train_step_compilations"] = compiles() if compiles else None
        if plan.is_main:
            report.write_json(workdir, report.RESULTS_FILE, results)
        return results
    finally:
        ckpt.close()


def _test(plan, ckpt, abstract, eval_step, zeros, run: Run, workdir) -> dict:
    """Evaluates the best checkpoint (the latest if none is marked best) on the test split once."""
    which = checkpoint.BEST if ckpt.latest_epoch(checkpoint.BEST) is not None else checkpoint.LATEST
    if ckpt.latest_epoch(which) is None:
        raise ConfigError(f"no checkpoint in {workdir}; train first (--mode=train)")
    restored, meta = ckpt.restore(abstract, which=which)
    state = plan.from_global(restored)
    test_m = tasks.summarize(run_epoch_eval(eval_step, state, run.test_loader, plan, zeros))
    _say(
        plan,
        f"test ({len(run.splits.test)} examples, {which} checkpoint from epoch {meta['epoch']}): "
        f"{report.format_metrics(test_m, run.task.kind)}",
    )
    return {"test": test_m, "checkpoint_epoch": meta["epoch"], "workdir": workdir}
