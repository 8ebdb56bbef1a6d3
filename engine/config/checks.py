"""The checks a configuration passes before any work: one line per user error, naming the fix.

Each setting's own rule (its choices, its range) is declared beside it (`engine.config.fields`);
here they are applied, and the rules that tie several settings together. Everything is checked
from the configuration alone, without data: what depends on the data (the batch size against
the training split, the loss against the task) is checked when the run is built.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine import paths
from engine.config.fields import Config
from engine.config.schema import ConfigError, declared
from engine.data import sources


def check_settings(config: Config, names: Iterable[str] | None = None, skip=()) -> None:
    """Each setting's own rule (all, or those in `names`), in declaration order.

    Raises:
      ConfigError: the first setting whose value breaks its rule, in one line.
    """
    wanted = None if names is None else set(names)
    for d in declared(type(config)):
        if d.name in skip or (wanted is not None and d.name not in wanted):
            continue
        problem = d.meta.problem(d.name, getattr(config, d.name))
        if problem is not None:
            raise ConfigError(problem)


def _check_selection(config: Config) -> None:
    """The rules between the model-selection settings (plateau, early stopping, folds)."""
    if not 0 <= config.plateau_min_lr < config.lr:
        raise ConfigError(
            f"--plateau_min_lr must be in [0, --lr={config.lr}), got {config.plateau_min_lr}"
        )
    if config.select == "last" and config.early_stopping:
        raise ConfigError(
            "--select=last tests the last epoch, but --early_stopping stops past the best one: "
            "use --select=best (or auto) with --early_stopping"
        )
    if (config.fold or config.cv_refit) and not config.cv_folds:
        raise ConfigError("--fold and --cv_refit need --cv_folds=K")
    if not -1 <= config.fold <= config.cv_folds:
        raise ConfigError(
            f"--fold must be 1..{config.cv_folds} (or -1: the refit, 0: all), got {config.fold}"
        )


def _check_paths(config: Config) -> None:
    """Which paths may be remote, and workdir names orbax cannot take."""
    may = [f"--{d.name}" for d in declared(type(config)) if d.meta.remote]
    local_only = {"--data_dir": config.data_dir, "--dataset": config.dataset.partition(":")[2]}
    local_only["--workdir (with --profile)"] = config.workdir if config.profile else ""
    local_only["--compile_cache"] = config.compile_cache
    for flag, value in local_only.items():
        if paths.is_remote(value):
            # array_record (prepared data), PIL and the profiler read and write local files.
            raise ConfigError(
                f"{flag}={value} is remote; only {', '.join(may)} may be: copy the data to a "
                "local disk or mount the bucket (gcsfuse)"
            )
    if any(c in config.workdir for c in "[]*?"):
        # orbax treats checkpoint paths as glob patterns: such a run trains, then fails to
        # find its own checkpoints.
        raise ConfigError(f"--workdir={config.workdir!r} contains one of []*?; choose another path")


def validate(config: Config, *, skip: Iterable[str] = ()) -> None:
    """Checks everything that can be checked without data; raises ConfigError (one line).

    Args:
      config: the configuration.
      skip: settings whose choices are not the registry's: `arch` for a user's own model or
        a program's own nets, `loss` for a user's own loss function.
    """
    unknown = config.unknown()
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; valid: see --help (a program's "
            "or plugin's settings need its --plugins)"
        )
    check_settings(config, skip=set(skip))
    try:
        source, _ = sources.of(config.dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if source.needs_target and not config.target:
        raise ConfigError(
            f"a {source.name}: dataset needs --target=COLUMN naming the column to predict"
        )
    _check_paths(config)
    if config.init_params and not config.init_from:
        raise ConfigError("--init_params selects what --init_from loads; give --init_from too")
    _check_selection(config)
    if config.sharding == "fsdp" and config.parallel == "pmap":
        raise ConfigError(
            "--sharding=fsdp lays the state out over a jit mesh; use --parallel=jit "
            "(or --sharding=replicated with pmap)"
        )
    if config.num_processes > 1 and not config.coordinator_address:
        raise ConfigError("--num_processes > 1 needs --coordinator_address=HOST:PORT")
    if config.mode == "predict" and not config.inputs:
        raise ConfigError(
            "--mode=predict needs --inputs=folder:PATH, csv:PATH or npy:PATH (what to predict)"
        )
