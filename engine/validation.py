"""The checks a configuration passes before any work: one line per user error, naming the fix."""

from __future__ import annotations

import dataclasses
import math
import re

from architectures import conv_lowering
from engine import paths
from engine.config import (
    BALANCE,
    BATCHNORM,
    CLASS_WEIGHTS,
    DTYPES,
    LR_SCALING,
    MODES,
    NORMALIZATIONS,
    ON_NAN,
    OPTIMIZERS,
    PARALLEL_MODES,
    PROGRAMS,
    SCHEDULES,
    SELECT,
    SPLITS,
    STREAMING,
    Config,
    ConfigError,
)


def _validate_selection(config: Config) -> None:
    """The checks of the model-selection settings (plateau, early stopping, folds)."""
    if not 0 < config.plateau_factor < 1:
        raise ConfigError(f"--plateau_factor must be in (0, 1), got {config.plateau_factor}")
    if config.plateau_patience < 1:
        raise ConfigError(f"--plateau_patience must be >= 1, got {config.plateau_patience}")
    if config.plateau_cooldown < 0:
        raise ConfigError(f"--plateau_cooldown must be >= 0, got {config.plateau_cooldown}")
    if not 0 <= config.plateau_min_lr < config.lr:
        raise ConfigError(
            f"--plateau_min_lr must be in [0, --lr={config.lr}), got {config.plateau_min_lr}"
        )
    if config.early_stopping < 0:
        raise ConfigError(f"--early_stopping must be >= 0 (0: off), got {config.early_stopping}")
    if config.select == "last" and config.early_stopping:
        raise ConfigError(
            "--select=last tests the last epoch, but --early_stopping stops past the best one: "
            "use --select=best (or auto) with --early_stopping"
        )
    if config.min_delta < 0:
        raise ConfigError(f"--min_delta must be >= 0, got {config.min_delta}")
    if config.cv_folds == 1 or config.cv_folds < 0:
        raise ConfigError(f"--cv_folds must be >= 2 (0: off), got {config.cv_folds}")
    if config.overfit_batches < 0:
        raise ConfigError(f"--overfit_batches must be >= 0, got {config.overfit_batches}")
    if (config.fold or config.cv_refit) and not config.cv_folds:
        raise ConfigError("--fold and --cv_refit need --cv_folds=K")
    if not -1 <= config.fold <= config.cv_folds:
        raise ConfigError(
            f"--fold must be 1..{config.cv_folds} (or -1: the refit, 0: all), got {config.fold}"
        )


def _validate_names(config: Config, *, custom_arch: bool, custom_loss: bool) -> Config:
    """The checks of named choices; a GAN program first takes its recipe (returned)."""
    import architectures
    import losses
    from engine.data import augment

    _choice("mode", config.mode, MODES)
    _choice("program", config.program, PROGRAMS)
    if config.program == "gan":
        from engine.programs import gan

        config = gan.with_recipe(config)
        gan.check(config)
    elif config.arch == "dcgan":
        raise ConfigError("--arch=dcgan is a GAN; train it with --program=gan")
    elif config.judge:
        raise ConfigError("--judge rates a GAN's samples; use it with --program=gan")
    elif not custom_arch:
        _choice("arch", config.arch, tuple(architectures.names()))
    if not custom_loss:
        _choice("loss", config.loss, tuple(losses.names()))
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("normalize", config.normalize, NORMALIZATIONS)
    _choice("parallel", config.parallel, PARALLEL_MODES)
    _choice("dtype", config.dtype, DTYPES)
    _choice("split", config.split, SPLITS)
    _choice("balance", config.balance, BALANCE)
    _choice("class_weights", config.class_weights, CLASS_WEIGHTS)
    _choice("streaming", config.streaming, STREAMING)
    _choice("lr_scaling", config.lr_scaling, LR_SCALING)
    _choice("batchnorm", config.batchnorm, BATCHNORM)
    _choice("conv", config.conv, conv_lowering.LOWERINGS)
    _choice("augment", config.augment, tuple(augment.names()))
    _choice("on_nan", config.on_nan, ON_NAN)
    _choice("select", config.select, SELECT)
    return config


def _validate_numbers(config: Config) -> None:
    """The checks of numeric settings: finite, positive, fractions and ranges."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            # inf and nan pass every comparison-based range check below, then break training.
            raise ConfigError(f"--{field.name} must be a finite number, got {value}")
    positive = {
        "lr": config.lr,
        "batch_size": config.batch_size,
        "min_updates": config.min_updates,
        "grad_accum_steps": config.grad_accum_steps,
        "max_to_keep": config.max_to_keep,
        "width": config.width,
        "delta": config.delta,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"--{name} must be > 0, got {value}")
    fractions = {"test_fraction": config.test_fraction, "val_fraction": config.val_fraction}
    for name, value in fractions.items():
        if not 0 < value < 1:
            raise ConfigError(f"--{name} must be between 0 and 1 (exclusive), got {value}")
    if not (config.dropout < 1 and (config.dropout >= 0 or config.dropout == -1.0)):
        raise ConfigError(
            f"--dropout must be in [0, 1) (or -1: the family default), got {config.dropout}"
        )
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"--label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.epochs < 0:
        raise ConfigError(f"--epochs must be >= 0 (0: automatic), got {config.epochs}")
    for name in ("weight_decay", "clip_grad_norm", "warmup_epochs", "eval_batch_size"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(config, name)}")
    if config.focal_gamma < 0:
        raise ConfigError(f"--focal_gamma must be >= 0, got {config.focal_gamma}")
    if config.focal_alpha > 1:
        raise ConfigError(
            f"--focal_alpha must be in [0, 1] (or negative for none), got {config.focal_alpha}"
        )
    if config.image_size < 0:
        raise ConfigError(f"--image_size must be >= 0 (0: automatic), got {config.image_size}")
    if config.momentum < 0 or config.momentum >= 1:
        raise ConfigError(f"--momentum must be in [0, 1), got {config.momentum}")
    if any(h <= 0 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"--hidden_sizes must be positive integers, got {config.hidden_sizes}")


def _validate_paths(config: Config) -> None:
    """The checks of where a run reads and writes: which paths may be remote, workdir names."""
    local_only = {"--data_dir": config.data_dir, "--dataset": config.dataset.partition(":")[2]}
    local_only["--workdir (with --profile)"] = config.workdir if config.profile else ""
    local_only["--compile_cache"] = config.compile_cache
    if not config.compile_cache:
        raise ConfigError("--compile_cache must be on, off or a folder")
    for flag, value in local_only.items():
        if paths.is_remote(value):
            # array_record (prepared data), PIL and the profiler read and write local files.
            raise ConfigError(
                f"{flag}={value} is remote; only --workdir, --inputs, --init_from, --teacher and "
                "--judge may be: copy the data to a local disk or mount the bucket (gcsfuse)"
            )
    if any(c in config.workdir for c in "[]*?"):
        # orbax treats checkpoint paths as glob patterns: such a run trains, then fails to
        # find its own checkpoints.
        raise ConfigError(f"--workdir={config.workdir!r} contains one of []*?; choose another path")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"--{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def validate(config: Config, *, custom_arch: bool = False, custom_loss: bool = False) -> Config:
    """Checks everything that can be checked without data; raises ConfigError (one line).

    Registry names (arch, loss, augment) are checked against their registries, so a typo lists
    the valid names (unless the caller supplies its own model or loss: `custom_arch`,
    `custom_loss`). Data-dependent checks (batch size against the split, loss against the task)
    happen in `engine.train` once the dataset's description is known, still before any training.
    """
    from engine import defaults

    config = _validate_names(config, custom_arch=custom_arch, custom_loss=custom_loss)
    config = defaults.with_recipe(config)
    _validate_numbers(config)
    if config.dataset.startswith("csv:") and not config.target:
        raise ConfigError("a csv: dataset needs --target=COLUMN naming the column to predict")
    _validate_paths(config)
    for name in ("checkpoint_every", "checkpoint_minutes"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name} must be >= 0 (0: off), got {getattr(config, name)}")
    for name in ("init_params", "freeze"):
        try:
            re.compile(getattr(config, name))
        except re.error as e:
            raise ConfigError(
                f"--{name}={getattr(config, name)!r} is not a valid regex ({e})"
            ) from None
    if config.init_params and not config.init_from:
        raise ConfigError("--init_params selects what --init_from loads; give --init_from too")
    if config.num_workers < 0:
        raise ConfigError(f"--num_workers must be >= 0, got {config.num_workers}")
    if config.stop_after_epoch < 0:
        raise ConfigError(f"--stop_after_epoch must be >= 0, got {config.stop_after_epoch}")
    _validate_selection(config)
    if config.num_processes < 0:
        raise ConfigError(f"--num_processes must be >= 0, got {config.num_processes}")
    if config.num_processes > 1 and not config.coordinator_address:
        raise ConfigError("--num_processes > 1 needs --coordinator_address=HOST:PORT")
    if config.monitor and not (
        config.monitor.startswith(("val_", "train_")) and len(config.monitor.split("_", 1)[1])
    ):
        raise ConfigError(
            f"--monitor={config.monitor} must name a metric as val_NAME or train_NAME, "
            "e.g. val_loss or val_accuracy"
        )
    from engine import profile

    try:
        profile.parse(config.profile)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.mode == "predict" and not config.inputs:
        raise ConfigError(
            "--mode=predict needs --inputs=folder:PATH, csv:PATH or npy:PATH (what to predict)"
        )
    if config.inputs and not config.inputs.startswith(("folder:", "csv:", "npy:")):
        raise ConfigError(
            f"--inputs={config.inputs} must start with folder:, csv: or npy: (e.g. npy:x.npy)"
        )
    return defaults.with_data(config)  # last: it may load the dataset to count its rows
