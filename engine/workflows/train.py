"""One training run end to end, exactly as `run.py` does it: build, resume, the loop, the test.

`train` is what `engine.fit` runs for one configuration (cross-validation and the learning-rate
range test are built on it, `engine.workflows.fit`). Everything is checked before anything in
the workdir is written: the configuration, the data, the model against the data, and (on
resume) that the saved state fits this configuration.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence

import jax

import architectures
from engine import paths, programs
from engine.config import CONFIG_FILE, Config, ConfigError, parse_window
from engine.data.source import CLASSIFICATION
from engine.programs import optim
from engine.runtime import callbacks as cb
from engine.runtime import checkpoint, lock, loop, parallel, report
from engine.runtime.callbacks import guards, midepoch, trackers
from engine.runtime.callbacks import logs as loggers
from engine.runtime.callbacks import registry as callback_registry
from engine.runtime.callbacks.profiler import Profiler
from engine.runtime.callbacks.sanity import OverfitCheck
from engine.workflows import diagnose, export, finetune, per_class
from engine.workflows.setup import Setup, check_workdir, prepare


def default_callbacks(
    setup: Setup,
    tracker: cb.BestTracker,
    user: Sequence[cb.Callback] = (),
    doctor: tuple[Sequence[cb.Callback], Sequence[cb.Callback]] = ((), ()),
):
    """The callbacks of a `fit`, in call order.

    The NaN guard comes first (it fails the run before anything records a bad epoch), then the
    ones that add to the epoch's record (its speed, the doctor's measurements), so that every
    later callback sees the whole record, as `metrics.jsonl` holds it; then the tracker (later
    callbacks read `improved`), the user's callbacks and the configured model-selection ones
    (so their state is saved and they can stop the run), the doctor's diagnosis, then the log,
    the checkpoints and the prints.
    """
    config, workdir, is_main = setup.config, setup.workdir, setup.plan.is_main
    ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
    metric = setup.monitor.partition("_")[2]
    named = callback_registry.make(config.callbacks, config)
    measures, diagnoses = doctor
    found = [guards.NanGuard(config.on_nan), loggers.Speed(), *measures, tracker]
    found += [*setup.program.callbacks, *user, *named]
    if config.early_stopping:
        found.append(
            cb.EarlyStopping(
                setup.monitor, setup.higher_is_better, config.early_stopping, config.min_delta
            )
        )
    if config.schedule == "plateau":
        found.append(plateau_feed(config, setup.plan))
    if config.overfit_batches:
        found.append(OverfitCheck(config.overfit_batches))
    found += [*diagnoses, *tracker_callbacks(config, workdir, is_main)]
    if config.stop_after_epoch:
        found.append(cb.StopAtEpoch(config.stop_after_epoch))
    found += [
        # The record is appended before the checkpoint is saved: a kill between the two
        # leaves a record past the checkpoint, which the resume drops, never a missing one.
        cb.MetricsLog(workdir, is_main),
        cb.Checkpointer(ckpt, tracker, config.to_dict()),
    ]
    saver = midepoch.StepCheckpointer(
        ckpt, config.to_dict(), config.checkpoint_every, config.checkpoint_minutes
    )
    found += [
        saver,
        midepoch.Preemption(saver),
        cb.EpochPrinter(tracker),
        cb.CurvesPlot(workdir, metric, is_main),
    ]
    if config.progress and is_main:
        found.append(cb.ProgressBar())
    window = parse_window(config.profile)
    if window is not None:
        found.append(Profiler(workdir, *window, is_main))
    return ckpt, found


# The files a tracker keeps of a run at its end, when the workdir has them.
TRACKED_FILES = (
    report.CURVES_FILE,
    per_class.CONFUSION_FILE,
    per_class.MISTAKES_FILE,
    report.RESULTS_FILE,
    *export.ARTIFACTS.values(),
    export.METADATA_FILE,
)


def tracker_callbacks(config: Config, workdir: str, is_main: bool) -> list[cb.Callback]:
    """`--tracker`'s callbacks: TensorBoard's writer, MLflow's and W&B's runs (process 0)."""
    found: list[cb.Callback] = []
    if "tensorboard" in config.tracker:
        found.append(loggers.TensorBoardLog(workdir, is_main))
    if is_main:
        found += trackers.make(config.tracker, workdir, TRACKED_FILES, config.mlflow_uri)
    return found


def plateau_feed(config: Config, plan: parallel.Plan) -> cb.PlateauFeed:
    """The callback feeding the validation loss to `--schedule=plateau` once an epoch."""
    settings = optim.settings(config)
    plateau_tx, lr = optim.plateau(settings), optim.effective_lr(settings)
    feed = plan.wrap_state_update(lambda state, v: optim.feed_plateau(state, v, plateau_tx))

    def lr_of(state) -> float:
        scale = optim.plateau_scale(state)
        if scale is None:
            raise ConfigError(
                "--schedule=plateau: this program's state holds no plateau state (its "
                "optimizer must include engine.programs.optim.plateau's scale)"
            )
        return lr * float(plan.read(scale))

    return cb.PlateauFeed(feed, lr_of)


def train(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: programs.Factory | None = None,
    callbacks: Sequence[cb.Callback] = (),
) -> dict:
    """One run: trains and tests exactly like `python run.py` (workdir layout, resume, results).

    Train mode: resumes from the workdir's latest checkpoint when there is one, trains to
    `config.epochs` (or until a callback stops it) with validation after every epoch, keeps the
    latest and the best (on `config.monitor`) checkpoints, then evaluates the test split once
    with the best checkpoint and writes `results.json`. Eval mode: tests the best checkpoint.
    A fold run (`fold` > 0) validates only and does not test.

    Args:
      config: the run's configuration.
      model, loss, loss_kind, program: see `engine.workflows.setup.prepare`.
      callbacks: `engine.Callback`s called after the best tracker, before the checkpoint of
        each epoch.

    Returns:
      `test` metrics with `best_epoch`, `best_val`, `checkpoint_epoch`; or `stopped_at` when a
      callback paused the run (rerun to resume).
    """
    setup = prepare(config, model=model, loss=loss, loss_kind=loss_kind, program=program)
    config, plan, run, workdir = setup.config, setup.plan, setup.run, setup.workdir
    saved_config = check_workdir(config, workdir)
    say = loop.Fit(setup.program, plan, workdir, config.epochs, 0, 1).say
    say(*run.notes, *setup.program.notes)
    if config.summary:
        if run.model is None:  # a program that builds its own nets said their size above
            return {}
        return {"params": architectures.count_params(run.model, (1, *run.input_shape))}

    sample = run.sample_batch()
    host_state = setup.program.init(jax.random.PRNGKey(config.seed), sample)
    abstract = plan.abstract_state(host_state)
    if plan.fsdp:
        say(plan.describe_sharding(host_state))
    if config.mode != "train":
        ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
        try:
            return test(setup, ckpt, abstract)
        finally:
            ckpt.close()

    held = lock.WorkdirLock(workdir)
    if plan.is_main:  # before anything writes: the checkpoint managers create folders
        paths.make_dirs(workdir)
        note = held.acquire()  # refuses a workdir another run is training in
        if note:
            say(note)
    try:
        return _train(setup, held, callbacks, host_state, abstract, sample, saved_config or {})
    finally:
        held.release()


def _train(setup: Setup, held, callbacks, host_state, abstract, sample, saved_config) -> dict:
    """The train mode of `train`, with the workdir locked (`saved_config`: its config.json)."""
    config, plan, run, program_ = setup.config, setup.plan, setup.run, setup.program
    workdir = setup.workdir
    say = loop.Fit(program_, plan, workdir, config.epochs, 0, 1).say
    tracker = cb.BestTracker(setup.monitor, setup.higher_is_better, last=config.select == "last")
    doctor = diagnose.callbacks(setup, abstract)
    ckpt, found = default_callbacks(setup, tracker, callbacks, doctor)
    try:
        steps = len(run.train_loader)
        batch = plan.abstract_batch(sample, run.train_loader.batch_size)
        zeros = loop.metric_zeros(program_, abstract, batch, plan.axis_name)
        restored, meta, start_epoch, start_step, totals = midepoch.resume_point(
            ckpt, abstract, zeros, steps, say
        )
        state = None
        if restored is not None:
            state = plan.from_global(restored)
            saved = meta.get("callbacks", {})
            for callback in found:
                if callback.name in saved:
                    callback.load_state_dict(saved[callback.name])
            within = f", step {start_step} of {steps}" if start_step else ""
            say(f"resumed from {workdir} at epoch {start_epoch}{within}")
            config = _horizon(config, saved_config, steps, start_epoch, say)
        if restored is None and (config.init_from or config.freeze):
            host_state = _fine_tune_start(host_state, config, say)
        if plan.is_main:  # every check passed: now the workdir may change
            paths.write_text(paths.join(workdir, CONFIG_FILE), config.to_json())
        state = plan.place_state(host_state) if state is None else state
        del host_state
        fit_ = loop.Fit(
            program_,
            plan,
            workdir,
            config.epochs,
            start_epoch,
            steps,
            callbacks=tuple(found),
            start_step=start_step,
            start_totals=totals,
        )
        if restored is not None and meta.get("finished"):  # a callback ended it for good
            fit_.stop(meta["finished"], finished=True)
        loop.run(fit_, state, abstract, run.train_loader, run.val_loader, sample)
        best = {"best_epoch": tracker.best["epoch"], "best_val": tracker.best["val"]}
        if fit_.failed:
            raise guards.Diverged(fit_.stop_reason, fit_.exit_code)
        if fit_.stop_reason is not None and not fit_.finished:
            done = ckpt.latest_epoch() or start_epoch
            if fit_.exit_code:  # the callback's reason says how to resume
                say(fit_.stop_reason)
            else:
                say(f"{fit_.stop_reason}; run the same command again to resume")
            return {"stopped_at": done, "exit_code": fit_.exit_code, **best}
        if fit_.stop_reason is not None:
            say(fit_.stop_reason)
        if config.fold > 0 or not config.final_test:  # validation only (CV folds, trials)
            results = {"checkpoint_epoch": ckpt.latest_epoch(checkpoint.BEST), "workdir": workdir}
        else:  # the refit (fold -1) validated on its training rows: test its last epoch
            results = test(setup, ckpt, abstract, which=checkpoint.LATEST if config.fold else None)
        results.update(best, train_step_compilations=fit_.train_compilations)
        if fit_.stop_reason is not None:
            results["stop_reason"] = fit_.stop_reason
        if plan.is_main:
            report.write_json(workdir, report.RESULTS_FILE, results)
        return results
    finally:
        ckpt.close()
        # After results.json, so that it is among the artifacts; failed: an exception is out.
        trackers.finish(found, failed=sys.exc_info()[0] is not None)


# Schedules whose rates depend on the planned number of epochs (the others are constant).
HORIZON_SCHEDULES = ("cosine", "warmup_cosine", "step")
RESUMED = "resumed_epochs"  # `Config.auto` entry: the planned epochs before a resume changed them


def _horizon(config: Config, saved: dict, steps: int, start_epoch: int, say) -> Config:
    """`config` noting a resume that changes the schedule's length (`--epochs`), if it does.

    The schedule spans the planned run, so a resume with another `--epochs` continues on the
    new plan's curve: said in a start-up line with the rates before and after, and recorded in
    `config.json`'s `auto` (`resumed_epochs=OLD`, kept by later resumes).
    """
    kept = tuple(a for a in saved.get("auto", ()) if a.startswith(f"{RESUMED}="))
    before = saved.get("epochs")
    if before and before != config.epochs and config.schedule in HORIZON_SCHEDULES:
        update = start_epoch * steps // config.grad_accum_steps
        old = optim.schedule(optim.settings(dataclasses.replace(config, epochs=before)), steps)
        new = optim.schedule(optim.settings(config), steps)
        say(
            f"resume: --epochs changed from {before} to {config.epochs}, so the {config.schedule} "
            f"schedule now spans {config.epochs} epochs: the rate at epoch {start_epoch + 1} is "
            f"{float(new(update)):.4g} (the first plan's: {float(old(update)):.4g})"
        )
        kept = (*kept, f"{RESUMED}={before}")
    extra = tuple(a for a in kept if a not in config.auto)
    return dataclasses.replace(config, auto=(*config.auto, *extra)) if extra else config


def _fine_tune_start(host_state, config: Config, say):
    """A fresh start's state with `--init_from` parameters loaded; says what is frozen."""
    if config.init_from:
        host_state = finetune.initialise(host_state, config, say)
    if config.freeze:
        names = optim.frozen_names(host_state.params, config.freeze)
        say(f"frozen ({len(names)}): {', '.join(names) or 'nothing matches --freeze'}")
    return host_state


def test(setup: Setup, ckpt: checkpoint.Checkpoints, abstract, which: str | None = None) -> dict:
    """Evaluates a checkpoint on the test split once.

    `which` is `checkpoint.BEST` or `LATEST`; None: the best (the latest if none is marked).
    """
    plan, run, program_ = setup.plan, setup.run, setup.program
    if which is None:
        best = ckpt.latest_epoch(checkpoint.BEST) is not None
        which = checkpoint.BEST if best else checkpoint.LATEST
    if ckpt.latest_epoch(which) is None:
        raise ConfigError(f"no checkpoint in {setup.workdir}; train first (--mode=train)")
    restored, meta = ckpt.restore(abstract, which=which)
    state = plan.from_global(restored)
    eval_step = plan.wrap_eval(program_.eval_step)
    zeros = program_.eval_zeros(abstract, run.sample_batch())
    test_m = program_.summarize(loop.evaluate(eval_step, state, run.test_loader, plan, zeros))
    if plan.is_main:
        print(
            f"test ({len(run.splits.test)} examples, {which} checkpoint from epoch "
            f"{meta['epoch']}): {report.format_metrics(test_m)}",
            flush=True,
        )
    results = {"test": test_m, "checkpoint_epoch": meta["epoch"], "workdir": setup.workdir}
    classifier = run.splits.info.task == CLASSIFICATION and "accuracy" in program_.higher_is_better
    classifier = classifier and program_.infer is not None
    if classifier and plan.num_processes == 1:  # one process holds every test row
        results["test_per_class"] = per_class.per_class_report(setup, state)
    return results
