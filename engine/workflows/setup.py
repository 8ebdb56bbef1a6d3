"""What `fit` and `engine.load` build from a configuration before touching the workdir.

`prepare` runs the one path every run takes: the plugins, the program and the checks of the
configuration (pure: no data), the data (loaded once), the values that depend on it, the model
and loaders, and the program; then the monitored metric. `check_workdir` refuses a workdir
whose saved state the configuration cannot resume. Nothing here writes.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Sequence

import jax

import architectures
import losses
from engine import paths, programs
from engine.config import CONFIG_FILE, Config, ConfigError, checks, for_workdir, load_json, recipes
from engine.programs import ProgramSpec, Run, steps
from engine.runtime import checkpoint, compile_cache, launch, parallel
from engine.runtime.callbacks import registry as callback_registry
from engine.runtime.callbacks import trackers
from engine.runtime.program import Program
from engine.workflows import build, finetune


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `fit` and `engine.load` build from a configuration before touching the workdir."""

    config: Config
    spec: ProgramSpec
    plan: parallel.Plan
    run: Run
    program: Program
    workdir: str
    monitor: str
    higher_is_better: bool
    custom_program: bool = False  # the Python API's `program=` factory built it


def import_plugins(names: Sequence[str]) -> None:
    """Imports the `--plugins` modules (they may register models, losses, programs, sources).

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


def configure(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    program: programs.Factory | None = None,
) -> tuple[ProgramSpec, Config]:
    """The run's program and its checked configuration, from the configuration alone.

    Imports `--plugins`, names a user's model or loss in the configuration, resolves the
    program (its recipe filled in) and checks every setting: usage errors end here, before
    any data is read.

    Returns:
      `(the program's registry entry, the configuration)`.
    """
    import_plugins(config.plugins)
    if model is not None and config.arch in architectures.names():
        config = dataclasses.replace(config, arch=type(model).__name__)
    if loss is not None:
        name = losses.name_of(loss) or getattr(loss, "__name__", "user_loss")
        config = dataclasses.replace(config, loss=name)
    spec, config = programs.resolve(config, factory=program)
    skip = set()
    if model is not None or not spec.zoo:
        skip.add("arch")  # a user's module, or nets the program builds itself
    if loss is not None and losses.name_of(loss) is None:
        skip.add("loss")
    checks.validate(config, skip=skip)
    unknown = [name for name in config.callbacks if name not in callback_registry.names()]
    if unknown:
        raise ConfigError(
            f"--callbacks={','.join(unknown)} is not registered (registered: "
            f"{', '.join(callback_registry.names()) or 'none'}); register it in a --plugins "
            "module with engine.runtime.callbacks.registry.register"
        )
    if config.mode == "train":  # only training tracks
        trackers.check_installed(config.tracker)
    return spec, config


def resolved(config: Config, **objects) -> tuple[ProgramSpec, Config]:
    """The program and the configuration as its run trains: checked, automatic values filled.

    The data is read to count its rows, not decoded into memory.

    Args:
      config: the configuration.
      **objects: the Python API's `model`, `loss` and `program`, as `configure` takes them.
    """
    spec, config = configure(config, **objects)
    splits = build.load_splits(config, materialize=False)
    return spec, recipes.resolve(config, build.facts(config, splits), zoo=spec.zoo)


def prepare(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: programs.Factory | None = None,
) -> Setup:
    """Checks `config`, loads the data once and builds the program; writes nothing.

    Args:
      config: the run's configuration.
      model: a flax module to train instead of `config.arch` (its class name is recorded as
        the architecture).
      loss: a loss function to use instead of `config.loss`; `loss_kind` (`losses.KINDS`)
        says which targets it takes (default: class labels, or values for regression). A
        registered function brings its own name and kind.
      program: a program factory `(config, run, axis_name) -> Program` instead of the
        registered program's.
    """
    compile_cache.enable(config.compile_cache)  # before anything compiles
    spec, config = configure(config, model=model, loss=loss, program=program)
    if losses.name_of(loss) is not None:
        loss, loss_kind = None, None  # registered: its name says everything
    launch.start_processes(config.coordinator_address, config.num_processes, config.process_id)
    plan = parallel.make_plan(config.parallel, config.sharding)
    if plan.num_processes > 1 and plan.mode == "none":
        raise ConfigError(
            "--parallel=none runs on one device; use jit or pmap with several processes"
        )
    splits = build.load_splits(config)
    config = recipes.resolve(config, build.facts(config, splits), zoo=spec.zoo)
    run = build.build(
        config, plan, splits, spec, model=model, loss_fn=loss, loss_kind=loss_kind,
        trained=trained_run(config.data_dir),
    )  # fmt: skip
    made = spec.make(config, run, plan.axis_name)
    monitor = config.monitor or made.monitor
    try:
        higher = made.monitor_direction(monitor)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    workdir = config.resolved_workdir()
    return Setup(config, spec, plan, run, made, workdir, monitor, higher, program is not None)


@dataclasses.dataclass
class Trained:
    """A trained workdir restored: its rebuilt run and the state of one of its checkpoints.

    Attributes:
      setup: the rebuilt run (configuration, data, program).
      state: the restored state.
      epoch: the epoch of the restored checkpoint.
      which: "best" or "latest".
    """

    setup: Setup
    state: object
    epoch: int
    which: str

    @property
    def config(self) -> Config:
        """The configuration the model was trained with."""
        return self.setup.config


def restore(
    workdir: str,
    which: str = "best",
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: programs.Factory | None = None,
    **overrides,
) -> Trained:
    """Rebuilds a trained workdir's run from its `config.json` and restores a checkpoint.

    Args:
      workdir: a workdir written by `fit` / `run.py`.
      which: "best" (falls back to the latest when none is marked best) or "latest".
      model, loss, loss_kind, program: the same user objects the run was trained with, when it
        used its own (registered names and `--plugins` need nothing).
      **overrides: settings that may differ from training (`evaluation_settings()`, e.g.
        `data_dir`, `batch_size`).

    Raises:
      ConfigError: no trained run in `workdir`, or it needs a user object not given.
    """
    if which not in (checkpoint.BEST, checkpoint.LATEST):
        raise ConfigError(f"which={which!r} is not valid; choose best or latest")
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path):
        raise ConfigError(f"{workdir} has no {CONFIG_FILE}; give the workdir of a trained run")
    settings = {"mode": "eval", "workdir": workdir, "parallel": "none", "progress": False}
    config = for_workdir(load_json(path), {**settings, **overrides}, source=path)
    try:
        setup = prepare(config, model=model, loss=loss, loss_kind=loss_kind, program=program)
    except ConfigError as e:
        if model is None and "--arch=" in str(e):
            raise ConfigError(
                f"{e}; a run trained with its own model needs it again: "
                "engine.load(workdir, model=...), or register it (architectures.register)"
            ) from None
        if loss is None and "--loss=" in str(e):
            raise ConfigError(
                f"{e}; a run trained with its own loss needs it again: "
                "engine.load(workdir, loss=...), or register it (losses.register)"
            ) from None
        raise
    abstract = setup.plan.abstract_state(
        setup.program.init(jax.random.PRNGKey(config.seed), setup.run.sample_batch())
    )
    ckpt = checkpoint.Checkpoints(workdir, max_to_keep=config.max_to_keep)
    try:
        if which == checkpoint.BEST and ckpt.latest_epoch(checkpoint.BEST) is None:
            which = checkpoint.LATEST
        if ckpt.latest_epoch(which) is None:
            raise ConfigError(f"no checkpoint in {workdir}; train first")
        restored, meta = ckpt.restore(abstract, which=which)
    finally:
        ckpt.close()
    # The model the run evaluated and selected: with --ema_decay (and --ema_eval=on) the
    # average's variables, so predict, export, a teacher and --init_from all read that one.
    state = steps.evaluated(setup.plan.from_global(restored), setup.run.step_config.ema_eval)
    return Trained(setup, state, meta["epoch"], which)


def trained_run(data_dir: str) -> Callable[[str], Trained]:
    """`Run.trained`: `WORKDIR[:best|latest] -> Trained` of another trained run."""

    def load(spec: str) -> Trained:
        workdir, which = finetune.parse_source(spec)
        return restore(workdir, which, data_dir=data_dir)

    return load


def check_workdir(config: Config, workdir: str) -> dict | None:
    """Refuses a workdir whose saved settings the saved state cannot be resumed with.

    Returns the saved settings (`config.json`), or None for a new workdir.
    """
    if paths.exists(workdir) and not paths.is_dir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a folder; choose another path")
    if config.init_from and config.mode == "train":
        finetune.source_checkpoint(config.init_from)  # before anything is written
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path):
        if config.mode != "train":
            raise ConfigError(
                f"--mode={config.mode} needs a trained workdir; {workdir} has no {CONFIG_FILE}"
            )
        return None
    saved = load_json(path)
    conflicts = config.resume_conflicts(saved)
    if conflicts:
        raise ConfigError(
            f"workdir {workdir} was trained with {', '.join(conflicts)}; use the same flags to "
            "resume, or another --workdir for a new run"
        )
    return saved
