"""What `fit` and `engine.load` build from a configuration before touching the workdir.

`prepare` validates the configuration, imports `--plugins`, builds the data and the program and
picks the monitored metric; `check_workdir` refuses a workdir whose saved state the
configuration cannot resume. Nothing here writes.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Sequence

import architectures
import losses
from engine import compile_cache, metric_learning, optim, parallel, paths
from engine.build import Run, build
from engine.config import Config, ConfigError, load_json
from engine.programs import Program
from engine.programs import distill as distill_lib
from engine.programs import supervised as supervised_lib
from engine.validation import validate

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
    distill_lib.check(config.teacher, config.distill_temperature, config.distill_alpha)
    steps = len(run.train_loader)
    tx = optim.make(config, steps)
    common = dict(
        input_shape=run.input_shape,
        lr_schedule=optim.schedule(config, steps),
        grad_accum_steps=config.grad_accum_steps,
        norm=run.norm,
    )
    if run.task.kind == metric_learning.EMBEDDING:
        if config.teacher:
            raise ConfigError("--teacher distils class outputs; --loss=triplet_margin has none")
        capacity = _gallery_capacity(config, run)
        cfg = run.step_config
        return metric_learning.make(
            model, tx, cfg, run.task, axis_name, capacity=capacity, notes=notes, **common
        )
    distillation = frozen = None
    if config.teacher:
        distillation, frozen, note = distill_lib.load(
            config.teacher,
            temperature=config.distill_temperature,
            alpha=config.distill_alpha,
            dataset=config.dataset,
            num_outputs=run.task.num_outputs,
            augment=run.step_config.augment,
            data_dir=config.data_dir,
        )
        notes = (*notes, note)
    return supervised_lib.make(
        model,
        tx,
        run.task,
        run.step_config,
        axis_name,
        notes=notes,
        distill=distillation,
        frozen=frozen,
        **common,
    )


def _gallery_capacity(config: Config, run: Run) -> int:
    """Rows of the metric-learning evaluation buffer, padded to whole global batches.

    The largest split evaluated each epoch or at the end: validation, test, the doctor's subset
    of the training split.
    """
    from engine.doctor.probe import MIN_TRAIN_SUBSET

    batch = config.eval_batch_size or config.batch_size
    val, train = len(run.splits.val), len(run.splits.train)
    largest = max(val, len(run.splits.test), min(train, max(val, MIN_TRAIN_SUBSET)))
    return -(-largest // batch) * batch


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
    """Imports the `--plugins` modules (which may register architectures and losses).

    They are looked up on `sys.path` and then in the current directory (`python run.py` puts
    only run.py's own directory on the path).
    """
    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
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
    compile_cache.enable(config.compile_cache)  # before anything compiles
    import_plugins(config.plugins)
    if model is not None and config.arch in architectures.names():
        config = dataclasses.replace(config, arch=type(model).__name__)
    if loss is not None:
        registered = losses.name_of(loss)
        if registered is not None:
            config, loss, loss_kind = dataclasses.replace(config, loss=registered), None, None
        else:
            config = dataclasses.replace(config, loss=getattr(loss, "__name__", "user_loss"))
    if config.program == "gan" and program is None:
        from engine.programs import gan

        program = gan.make
    config = validate(config, custom_arch=model is not None, custom_loss=loss is not None)
    if config.overfit_batches:
        from engine.sanity import overfit_config

        config = overfit_config(config)
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


def check_workdir(config: Config, workdir: str) -> None:
    """Refuses a workdir whose saved settings the saved state cannot be resumed with."""
    if paths.exists(workdir) and not paths.is_dir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a folder; choose another path")
    if config.init_from and config.mode == "train":
        from engine.finetune import source_checkpoint

        source_checkpoint(config.init_from)  # before anything is written
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path):
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
