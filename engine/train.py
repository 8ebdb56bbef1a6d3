"""`fit`: one run end to end, exactly as `run.py` does it: build, resume, the loop, the test.

    import engine
    from engine.config import Config
    results = engine.fit(Config(dataset="digits", epochs=5), model=my_module, loss=my_loss)

Everything is checked before anything in the workdir is written: the configuration, the data,
the model against the data, and (on resume) that the saved state fits this configuration.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Sequence

import jax

import architectures
import losses
from engine import callbacks as cb
from engine import checkpoint, loggers, loop, optim, parallel, profile, report
from engine.build import Run, build
from engine.config import Config, ConfigError, load_json, validate
from engine.data.source import CLASSIFICATION
from engine.programs import Program
from engine.programs import supervised as supervised_lib

CONFIG_FILE = "config.json"

# A program factory: `(config, run, axis_name) -> Program`.
ProgramFactory = Callable[[Config, Run, "str | None"], Program]


def supervised(config: Config, run: Run, axis_name: str | None) -> Program:
    """The supervised program of `run` (its model, task and the config's optax chain)."""
    model, shape = run.model, (1, *run.input_shape)
    params = architectures.count_params(model, shape)
    notes = (
        architectures.summary(model, shape),
        f"{config.arch}: {params:,} parameters; optimizer {config.optimizer}, "
        f"effective lr {optim.effective_lr(config):.4g}, schedule {config.schedule}",
    )
    return supervised_lib.make(
        model,
        optim.make(config, len(run.train_loader)),
        run.task,
        run.step_config,
        axis_name,
        input_shape=run.input_shape,
        norm=run.norm,
        notes=notes,
        lr_schedule=optim.schedule(config, len(run.train_loader)),
        grad_accum_steps=config.grad_accum_steps,
    )


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `fit` and `engine.load` build from a configuration before touching the workdir."""

    config: Config
    plan: parallel.Plan
    run: Run
    program: Program
    workdir: str
    monitor: str
    higher_is_better: bool


def import_plugins(names: Sequence[str]) -> None:
    """Imports the `--plugins` modules (which may register architectures and losses)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(
                f"--plugins={name}: cannot import it ({e}); put the module on PYTHONPATH "
                "or in the current directory"
            ) from None


def prepare(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: ProgramFactory | None = None,
) -> Setup:
    """Validates `config`, builds data and the program; writes nothing.

    Args:
      config: the run's configuration.
      model: a flax module to train instead of `config.arch` (its class name is recorded as
        the architecture).
      loss: a loss function to use instead of `config.loss`; `loss_kind` (`losses.KINDS`)
        says which targets it takes (default: class labels, or values for regression). A
        registered function brings its own name and kind.
      program: a program factory `(config, run, axis_name) -> Program` instead of the
        supervised one.
    """
    import_plugins(config.plugins)
    if model is not None and config.arch in architectures.names():
        config = dataclasses.replace(config, arch=type(model).__name__)
    if loss is not None:
        registered = losses.name_of(loss)
        if registered is not None:
            config, loss, loss_kind = dataclasses.replace(config, loss=registered), None, None
        else:
            config = dataclasses.replace(config, loss=getattr(loss, "__name__", "user_loss"))
    config = validate(config, custom_arch=model is not None, custom_loss=loss is not None)
    plan = parallel.make_plan(config.parallel)
    if plan.num_processes > 1 and plan.mode == "none":
        raise ConfigError(
            "--parallel=none runs on one device; use jit or pmap with several processes"
        )
    run = build(config, plan, model=model, loss_fn=loss, loss_kind=loss_kind)
    made = (program or supervised)(config, run, plan.axis_name)
    monitor = config.monitor or made.monitor
    try:
        higher = made.monitor_direction(monitor)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    workdir = config.resolved_workdir()
    return Setup(config, plan, run, made, workdir, monitor, higher)


def _check_workdir(config: Config, workdir: str) -> None:
    """Refuses a workdir whose saved settings the saved state cannot be resumed with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        if config.mode != "train":
            raise ConfigError(
                f"--mode={config.mode} needs a trained workdir; {workdir} has no {CONFIG_FILE}"
            )
        return
    conflicts = config.resume_conflicts(load_json(path))
    if conflicts:
        raise ConfigError(
            f"workdir {workdir} was trained with {', '.join(conflicts)}; use the same flags to "
            "resume, or another --workdir for a new run"
        )


def doctor_callbacks(setup: Setup, abstract, *, supervised_model=None) -> list[cb.Callback]:
    """The doctor's probe (training split in evaluation mode, dead units) and the doctor.

    Args:
      setup: the prepared run.
      abstract: the state's shapes (for the evaluation totals' zeros).
      supervised_model: the flax module of a supervised program (probed for dead units).
    """
    from engine import doctor
    from engine.doctor import probe

    run = setup.run
    zeros = setup.program.eval_zeros(abstract, run.sample_batch())
    the_probe = probe.build(setup, zeros, supervised_model)
    layers = probe.layer_order(supervised_model, run.input_shape) if supervised_model else ()
    stats = {
        "train": probe.input_stats(the_probe.loader.source, run.norm),
        "val": probe.input_stats(run.splits.val, run.norm),
    }
    ctx = doctor.context(setup, layers, stats)
    return [the_probe, doctor.Doctor(setup.workdir, ctx, setup.plan.is_main)]


def default_callbacks(
    setup: Setup,
    tracker: cb.BestTracker,
    user: Sequence[cb.Callback] = (),
    doctor: Sequence[cb.Callback] = (),
):
    """The callbacks of a `fit`, in call order.

    The tracker comes first (later callbacks read `improved`), then the user's callbacks (so
    their state is saved and they can stop the run), the doctor's (they add to the record
    before it is logged), then checkpoints, the log and the prints.
    """
    config, workdir, is_main = setup.config, setup.workdir, setup.plan.is_main
    ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
    metric = setup.monitor.partition("_")[2]
    found = [tracker, *user, *doctor, loggers.Speed(), loggers.TensorBoardLog(workdir, is_main)]
    if config.stop_after_epoch:
        found.append(cb.StopAtEpoch(config.stop_after_epoch))
    found += [
        cb.Checkpointer(ckpt, tracker, config.to_dict()),
        cb.MetricsLog(workdir, is_main),
        cb.EpochPrinter(tracker),
        cb.CurvesPlot(workdir, metric, is_main),
    ]
    if config.progress and is_main:
        found.append(cb.ProgressBar())
    window = profile.parse(config.profile)
    if window is not None:
        found.append(profile.Profiler(workdir, *window, is_main))
    return ckpt, found


def fit(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: ProgramFactory | None = None,
    callbacks: Sequence[cb.Callback] = (),
) -> dict:
    """Trains and tests exactly like `python run.py` (same workdir layout, resume, results).

    Train mode: resumes from the workdir's latest checkpoint when there is one, trains to
    `config.epochs` (or until a callback stops it) with validation after every epoch, keeps the
    latest and the best (on `config.monitor`) checkpoints, then evaluates the test split once
    with the best checkpoint and writes `results.json`. Eval mode: tests the best checkpoint.

    Args:
      config: the run's configuration.
      model, loss, loss_kind, program: see `prepare`.
      callbacks: `engine.callbacks.Callback`s called after the best tracker, before the
        checkpoint of each epoch.

    Returns:
      `test` metrics with `best_epoch`, `best_val`, `checkpoint_epoch`; or `stopped_at` when a
      callback paused the run (rerun to resume).
    """
    setup = prepare(config, model=model, loss=loss, loss_kind=loss_kind, program=program)
    config, plan, run, program_, workdir = (
        setup.config,
        setup.plan,
        setup.run,
        setup.program,
        setup.workdir,
    )
    _check_workdir(config, workdir)
    say = loop.Fit(program_, plan, workdir, config.epochs, 0, 1).say
    say(*run.notes, *program_.notes)
    if config.summary:
        return {"params": architectures.count_params(run.model, (1, *run.input_shape))}

    sample = run.sample_batch()
    host_state = program_.init(jax.random.PRNGKey(config.seed), sample)
    abstract = plan.abstract_state(host_state)
    if config.mode != "train":
        ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
        try:
            return test(setup, ckpt, abstract)
        finally:
            ckpt.close()

    tracker = cb.BestTracker(setup.monitor, setup.higher_is_better)
    doctor = ()
    if config.doctor:
        model = run.model if program is None else None
        doctor = doctor_callbacks(setup, abstract, supervised_model=model)
    ckpt, found = default_callbacks(setup, tracker, callbacks, doctor)
    try:
        start_epoch, state = 0, None
        if ckpt.latest_epoch() is not None:
            restored, meta = ckpt.restore(abstract)  # refuses a state of another shape
            state, start_epoch = plan.from_global(restored), meta["epoch"]
            saved = meta.get("callbacks", {})
            for callback in found:
                if callback.name in saved:
                    callback.load_state_dict(saved[callback.name])
            say(f"resumed from {workdir} at epoch {start_epoch}")
        if plan.is_main:  # every check passed: now the workdir may change
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
                f.write(config.to_json())
        if state is None:
            state = plan.place_state(host_state)
        del host_state
        fit_ = loop.Fit(
            program_,
            plan,
            workdir,
            config.epochs,
            start_epoch,
            len(run.train_loader),
            callbacks=tuple(found),
        )
        loop.run(fit_, state, abstract, run.train_loader, run.val_loader, sample)
        best = {"best_epoch": tracker.best["epoch"], "best_val": tracker.best["val"]}
        if fit_.stop_reason is not None and not fit_.finished:
            done = ckpt.latest_epoch() or start_epoch
            say(f"{fit_.stop_reason}; run the same command again to resume")
            return {"stopped_at": done, **best}
        if fit_.stop_reason is not None:
            say(fit_.stop_reason)
        results = test(setup, ckpt, abstract)
        results.update(best, train_step_compilations=fit_.train_compilations)
        if plan.is_main:
            report.write_json(workdir, report.RESULTS_FILE, results)
        return results
    finally:
        ckpt.close()


def test(setup: Setup, ckpt: checkpoint.Checkpoints, abstract) -> dict:
    """Evaluates the best checkpoint (the latest if none is marked best) on the test split once."""
    plan, run, program_ = setup.plan, setup.run, setup.program
    which = checkpoint.BEST if ckpt.latest_epoch(checkpoint.BEST) is not None else checkpoint.LATEST
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
    classifier = run.splits.info.task == CLASSIFICATION and program_.infer is not None
    if classifier and plan.num_processes == 1:  # one process holds every test row
        from engine import classes

        results["test_per_class"] = classes.per_class_report(setup, state)
    return results


def train_and_evaluate(config: Config) -> dict:
    """`fit(config)`: the name earlier code and tests call."""
    return fit(config)


__all__ = ["Setup", "fit", "prepare", "supervised", "test", "train_and_evaluate"]
