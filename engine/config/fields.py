"""The engine's settings: one frozen dataclass, each field with its help, choices and checks.

This is the one source of every flag: `run.py` defines its flags from these fields, `--help` and
`docs/flags.md` print their help, and `engine.config.checks` applies their checks. Settings
owned by a program are declared in the program's own files (`engine.config.schema`).
"""

from __future__ import annotations

import dataclasses
import os
import re

import architectures
import losses
from architectures import conv_lowering
from architectures.layers import ACTIVATIONS, INITS
from engine.config.schema import ConfigError, Settings, owners, setting
from engine.data import augment, sources

# Which groups the settings are listed under, in --help and docs/flags.md order.
GROUPS = {
    "run": "What to do and where",
    "data": "Data",
    "model": "Model",
    "loss": "Loss",
    "optimisation": "Optimisation",
    "selection": "Model selection",
    "devices": "Devices and processes",
    "output": "Checkpoints and output",
}


def _at_least(low: float, note: str = ""):
    return (lambda v: v >= low, f"must be >= {low:g}{note}")


_POSITIVE = (lambda v: v > 0, "must be > 0")


def _regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as e:
        return f"is not a valid regex ({e})"
    return None


def _regex_check(name: str):
    def check(value: str) -> str | None:
        problem = _regex(value)
        return None if problem is None else f"--{name}={value!r} {problem}"

    return check


def parse_window(spec: str) -> tuple[int, int] | None:
    """`--profile`'s `"START:STOP"` as two step numbers, or None for an empty spec.

    Raises:
      ConfigError: one line when the spec is not `START:STOP` with 1 <= START <= STOP.

    >>> parse_window("10:20"), parse_window("")
    ((10, 20), None)
    """
    if not spec:
        return None
    start, sep, stop = spec.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first = last = -1
    if not sep or first < 1 or last < first:
        raise ConfigError(
            f"--profile={spec} must be START:STOP, train step numbers with 1 <= START <= STOP "
            "(e.g. --profile=10:20)"
        )
    return first, last


def _window_check(spec: str) -> str | None:
    try:
        parse_window(spec)
    except ConfigError as e:
        return str(e)
    return None


def _monitor_check(value: str) -> str | None:
    if not value or (value.startswith(("val_", "train_")) and len(value.split("_", 1)[1])):
        return None
    return (
        f"--monitor={value} must name a metric as val_NAME or train_NAME, e.g. val_loss or "
        "val_accuracy"
    )


INPUT_KINDS = ("folder:", "csv:", "npy:")


def _inputs_check(value: str) -> str | None:
    if not value or value.startswith(INPUT_KINDS):
        return None
    return f"--inputs={value} must start with folder:, csv: or npy: (e.g. npy:x.npy)"


def _plateau_resume(saved: str, now: str) -> bool:
    """The plateau keeps its state in the optimizer's tree: switching it on or off changes it."""
    return (saved == "plateau") != (now == "plateau")


def _toggle(saved: float, now: float) -> bool:
    """Whether a transform is in the optimizer's chain depends on the value being > 0."""
    return (saved > 0) != (now > 0)


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Config(Settings):
    """Everything a run needs. `run.py` builds it from flags; notebooks and tests directly."""

    # What to do and where.
    mode: str = setting(
        "train",
        "what to do: eval tests the best checkpoint; eval and predict take the training "
        "settings from the workdir's config.json; doctor diagnoses trained workdirs from their "
        "files (--workdir=W1,W2 compares several)",
        choices=("train", "eval", "predict", "doctor"),
        evaluation=True,
    )
    program: str = setting(
        "supervised",
        "what is trained (a registered program; flags that belong to another program select "
        "it, or a loss only one program trains with)",
        choices=lambda: tuple(owners()),
        model=True,
    )
    workdir: str = setting(
        "",
        "directory for config, checkpoints, metrics.jsonl and curves.png (default "
        "runs/<dataset>-<arch>-<loss>); rerunning resumes from it",
        evaluation=True,
        remote=True,
    )
    seed: int = setting(0, "seed for splits, shuffling, initialisation and dropout")
    plugins: tuple[str, ...] = setting(
        (),
        "comma-separated Python modules to import first (they may register architectures, "
        "losses, programs and data sources)",
    )
    monitor: str = setting(
        "",
        "the metric that picks the best checkpoint, e.g. val_loss, val_accuracy, val_r2 (its "
        "direction is known); empty: the program's default",
        check=_monitor_check,
    )
    inputs: str = setting(
        "",
        "--mode=predict: what to predict, folder:PATH (images), csv:PATH (table rows) or "
        "npy:PATH (an array of raw inputs)",
        check=_inputs_check,
        evaluation=True,
        remote=True,
    )
    output: str = setting(
        "",
        "--mode=predict: the CSV to write (default WORKDIR/predictions.csv)",
        evaluation=True,
    )

    # Data.
    dataset: str = setting(
        sources.DEFAULT,
        lambda: f"the dataset: {sources.describe()}",
        group="data",
        model=True,
    )
    data_dir: str = setting(
        "",
        "where datasets are prepared and read (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
        group="data",
        evaluation=True,
    )
    target: str = setting("", "the column to predict for a csv: dataset", group="data", model=True)
    classes: tuple[int, ...] = setting(
        (),
        "classification: keep only these comma-separated labels, renumbered 0..k-1 in the "
        "order given (e.g. --classes=5,6,7,8,9); empty: all",
        group="data",
        model=True,
    )
    test_fraction: float = setting(
        0.3,
        "fraction held out for testing when the dataset has no test split",
        group="data",
        check=(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    )
    val_fraction: float = setting(
        0.1,
        "fraction of the remaining rows held out for validation",
        group="data",
        check=(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    )
    split: str = setting(
        "random",
        "how to hold out rows (time: the last rows)",
        group="data",
        choices=("random", "time"),
    )
    normalize: str = setting(
        "standard",
        "input normalisation from training statistics",
        group="data",
        choices=("standard", "minmax", "symmetric", "none"),
        model=True,
    )
    balance: str = setting(
        "none",
        "class balancing of the training split",
        group="data",
        choices=("none", "oversample"),
    )
    class_weights: str = setting(
        "none", "loss weights per class", group="data", choices=("none", "balanced")
    )
    augment: str = setting(
        "none", "training-time augmentation on device", group="data", choices=augment.names
    )
    image_size: int = setting(
        0,
        "resize images to this size (0: the architecture's minimum or the data's size)",
        group="data",
        check=_at_least(0, " (0: automatic)"),
        model=True,
    )
    skip_bad_files: bool = setting(
        False, "skip unreadable images in folder: datasets (counted in a warning)", group="data"
    )
    streaming: str = setting(
        "auto",
        "input pipeline (stream: grain workers)",
        group="data",
        choices=("auto", "memory", "stream"),
        evaluation=True,
    )
    num_workers: int = setting(
        2,
        "grain worker processes for the streaming pipeline",
        group="data",
        check=_at_least(0),
        evaluation=True,
    )

    # Model.
    arch: str = setting(
        "mlp",
        "architecture (a registered one; a program may train nets of its own)",
        group="model",
        choices=architectures.names,
        model=True,
    )
    depth: int = setting(
        0,
        "depth for resnet (18/34/50/101/152) and vgg (11/13/16/19); 0: family default",
        group="model",
        model=True,
    )
    width: float = setting(
        1.0,
        "channel width multiplier for convolutional nets",
        group="model",
        check=_POSITIVE,
        model=True,
    )
    hidden_sizes: tuple[int, ...] = setting(
        (256, 128),
        "hidden layer sizes of the mlp",
        group="model",
        check=(lambda v: bool(v) and all(h > 0 for h in v), "must be positive integers"),
        model=True,
    )
    activation: str = setting("relu", "activation", group="model", choices=ACTIVATIONS, model=True)
    leaky_slope: float = setting(0.01, "negative slope of leaky_relu", group="model")
    init: str = setting("lecun", "kernel initialiser", group="model", choices=INITS)
    batchnorm: str = setting(
        "auto",
        "BatchNorm (auto: the family's default)",
        group="model",
        choices=("auto", "on", "off"),
        model=True,
    )
    dropout: float = setting(
        -1.0,
        "dropout rate, for every architecture (-1: the family's default, e.g. 0.5 in "
        "AlexNet/VGG, 0 in the MLP)",
        group="model",
        check=(
            lambda v: v < 1 and (v >= 0 or v == -1.0),
            "must be in [0, 1) (or -1: the family default)",
        ),
    )
    aux_heads: bool = setting(
        True, "GoogLeNet's auxiliary classifiers (training only)", group="model", model=True
    )
    aux_weight: float = setting(0.3, "weight of each auxiliary classifier's loss", group="model")
    dtype: str = setting(
        "float32",
        "compute dtype (parameters stay float32)",
        group="model",
        choices=("float32", "bfloat16"),
    )
    conv: str = setting(
        "auto",
        "convolution lowering: auto (matmuls on CPU, XLA's convolution on GPU/TPU) or xla "
        "(XLA's everywhere); parameters and results are the same",
        group="model",
        choices=conv_lowering.LOWERINGS,
        evaluation=True,
    )

    # Loss.
    loss: str = setting(
        "cross_entropy", "loss (a registered one)", group="loss", choices=losses.names, model=True
    )
    label_smoothing: float = setting(
        0.0,
        "label smoothing of the losses that take class distributions (cross_entropy, "
        "kl_divergence)",
        group="loss",
        check=(lambda v: 0 <= v < 1, "must be in [0, 1)"),
    )
    delta: float = setting(1.0, "huber's delta and smooth_l1's beta", group="loss", check=_POSITIVE)
    focal_gamma: float = setting(2.0, "focal loss gamma", group="loss", check=_at_least(0))
    focal_alpha: float = setting(
        -1.0,
        "focal loss alpha (negative: none)",
        group="loss",
        check=(lambda v: v <= 1, "must be in [0, 1] (or negative for none)"),
    )

    # Optimisation.
    optimizer: str = setting(
        "adam", "optimizer", group="optimisation", choices=("sgd", "momentum", "adam", "adamw"),
        model=True,
    )  # fmt: skip
    lr: float = setting(1e-3, "peak learning rate", group="optimisation", check=_POSITIVE)
    momentum: float = setting(
        0.9,
        "momentum of --optimizer=momentum",
        group="optimisation",
        check=(lambda v: 0 <= v < 1, "must be in [0, 1)"),
    )
    weight_decay: float = setting(
        0.0,
        "weight decay (masked: not on biases or normalisation parameters)",
        group="optimisation",
        check=_at_least(0),
        resume=_toggle,
    )
    schedule: str = setting(
        "cosine",
        "learning-rate schedule (plateau: constant --lr, reduced when val_loss stops improving)",
        group="optimisation",
        choices=("constant", "cosine", "warmup_cosine", "step", "plateau"),
        resume=_plateau_resume,
    )
    warmup_epochs: float = setting(
        1.0, "warm-up length for warmup_cosine", group="optimisation", check=_at_least(0)
    )
    clip_grad_norm: float = setting(
        0.0,
        "clip gradients to this global norm (0: off)",
        group="optimisation",
        check=_at_least(0),
        resume=_toggle,
    )
    lr_scaling: str = setting(
        "none",
        "linear: lr x global_batch / 256",
        group="optimisation",
        choices=("none", "linear"),
    )
    grad_accum_steps: int = setting(
        1,
        "accumulate gradients over this many batches per update",
        group="optimisation",
        check=_POSITIVE,
        model=True,
    )
    batch_size: int = setting(
        64,
        "global batch size (split over all devices and processes)",
        group="optimisation",
        check=_POSITIVE,
        evaluation=True,
    )
    eval_batch_size: int = setting(
        0,
        "batch size for validation and test (0: --batch_size)",
        group="optimisation",
        check=_at_least(0),
        evaluation=True,
    )
    epochs: int = setting(
        0,
        "number of epochs of the planned run (0: automatic, at least 30 epochs and "
        "--min_updates optimizer updates, at most 1000 epochs)",
        group="optimisation",
        check=_at_least(0, " (0: automatic)"),
    )
    min_updates: int = setting(
        300,
        "--epochs=0: the fewest optimizer updates the run makes (small datasets train for "
        "more epochs)",
        group="optimisation",
        check=_POSITIVE,
    )
    init_from: str = setting(
        "",
        "WORKDIR[:best|latest]: start from that run's parameters and BatchNorm statistics "
        "(those whose path and shape match; the rest, e.g. a new head, start fresh)",
        group="optimisation",
        remote=True,
    )
    init_params: str = setting(
        "",
        "regex of the parameter paths --init_from loads, e.g. '^(conv|dense0)' (empty: all "
        "that match by path and shape)",
        group="optimisation",
        check=_regex_check("init_params"),
    )
    freeze: str = setting(
        "",
        "regex of the parameter paths to keep fixed, e.g. '^conv' (optax set_to_zero)",
        group="optimisation",
        check=_regex_check("freeze"),
        model=True,  # frozen parameters have no optimizer state: another state tree
    )
    on_nan: str = setting(
        "stop",
        "a non-finite loss, gradient or update: stop (keep the last good checkpoint, exit 3) "
        "or skip (optax.apply_if_finite drops the update; skipped steps are counted)",
        group="optimisation",
        choices=("stop", "skip"),
        model=True,  # skip wraps the optimizer in optax.apply_if_finite: another state tree
    )
    plateau_factor: float = setting(
        0.1,
        "--schedule=plateau: multiply the rate by this on each plateau",
        group="optimisation",
        check=(lambda v: 0 < v < 1, "must be in (0, 1)"),
    )
    plateau_patience: int = setting(
        5,
        "--schedule=plateau: epochs without val_loss improvement before the rate is reduced",
        group="optimisation",
        check=_at_least(1),
    )
    plateau_cooldown: int = setting(
        0,
        "--schedule=plateau: epochs after a reduction before counting again",
        group="optimisation",
        check=_at_least(0),
    )
    plateau_min_lr: float = setting(
        0.0, "--schedule=plateau: the rate is never reduced below this", group="optimisation"
    )

    # Model selection.
    select: str = setting(
        "auto",
        "the epoch the test uses: best (on --monitor), last, or auto: last for a classifier "
        "whose validation split has fewer than 100 rows (too few to choose an epoch by "
        "accuracy), with no --monitor or --early_stopping given; else best",
        group="selection",
        choices=("auto", "best", "last"),
    )
    early_stopping: int = setting(
        0,
        "stop after this many epochs without improvement of --monitor (by more than "
        "--min_delta), keep the best checkpoint and test it; 0: off",
        group="selection",
        check=_at_least(0, " (0: off)"),
    )
    min_delta: float = setting(
        0.0,
        "the smallest change of --monitor that counts as an improvement (--early_stopping)",
        group="selection",
        check=_at_least(0),
    )
    cv_folds: int = setting(
        0,
        "K-fold cross-validation on the non-test rows (stratified; --split=time: expanding "
        "windows): one resumable run per fold in WORKDIR/fold-k, mean ± std, cv.json; 0: off",
        group="selection",
        check=(lambda v: v == 0 or v >= 2, "must be >= 2 (0: off)"),
    )
    fold: int = setting(
        0,
        "with --cv_folds: train only fold k (1..K), or -1: the refit on all non-test rows; "
        "0: every fold in turn",
        group="selection",
    )
    cv_refit: bool = setting(
        False,
        "after cross-validation, train on all non-test rows for the folds' mean best epoch "
        "count (WORKDIR/refit) and test once",
        group="selection",
    )
    find_lr: bool = setting(
        False,
        "learning-rate range test instead of training: the rate grows from 1e-7 to 10 over "
        "300 steps (stopping when the loss explodes); writes lr_find.png and suggests --lr",
        group="selection",
    )
    overfit_batches: int = setting(
        0,
        "sanity check: train on the same N batches every epoch with dropout, weight decay and "
        "augmentation off, and report whether it overfits them (train accuracy >= 99%, or "
        "loss <= 0.01 for regression)",
        group="selection",
        check=_at_least(0),
    )

    # Devices and processes.
    parallel: str = setting(
        "jit",
        "device parallelism",
        group="devices",
        choices=("jit", "pmap", "none"),
        evaluation=True,
    )
    coordinator_address: str = setting(
        "",
        "HOST:PORT of process 0 for multi-process runs (Cloud TPU: automatic)",
        group="devices",
        evaluation=True,
    )
    num_processes: int = setting(
        0,
        "number of processes in a multi-process run (0: automatic/one)",
        group="devices",
        check=_at_least(0),
        evaluation=True,
    )
    process_id: int = setting(
        -1,
        "this process's index in a multi-process run (-1: automatic)",
        group="devices",
        evaluation=True,
    )

    # Checkpoints and output.
    max_to_keep: int = setting(
        2, "how many latest checkpoints to keep", group="output", check=_POSITIVE
    )
    checkpoint_every: int = setting(
        0,
        "also checkpoint inside an epoch every N train steps (0: off); a resumed run "
        "continues the epoch at the next batch",
        group="output",
        check=_at_least(0, " (0: off)"),
    )
    checkpoint_minutes: float = setting(
        5.0,
        "also checkpoint inside an epoch every M minutes of training (0: off), so a kill "
        "loses at most that much work",
        group="output",
        check=_at_least(0, " (0: off)"),
    )
    stop_after_epoch: int = setting(
        0,
        "stop after this epoch (resumable by rerunning); 0: train to --epochs",
        group="output",
        check=_at_least(0),
    )
    callbacks: tuple[str, ...] = setting(
        (),
        "comma-separated names of registered callbacks to add to the run (a --plugins module "
        "registers them: engine.runtime.callbacks.registry.register)",
        group="output",
    )
    summary: bool = setting(False, "print the model summary and exit", group="output")
    final_test: bool = setting(
        True,
        "test the best checkpoint on the test split at the end of training (off: validate "
        "only, e.g. for search trials; test later with --mode=eval)",
        group="output",
    )
    progress: bool = setting(
        True, "show a progress line for the whole run (with ETA)", group="output", evaluation=True
    )
    doctor: bool = setting(
        True,
        "diagnose the run after every epoch and at the end (doctor.json); costs one "
        "evaluation pass over a training subset per epoch",
        group="output",
    )
    profile: str = setting(
        "",
        "START:STOP: write a jax.profiler trace of those train steps to WORKDIR/profile "
        "(TensorBoard or Perfetto) and print where their time goes (compile, host, device)",
        group="output",
        check=_window_check,
    )
    compile_cache: str = setting(
        "on",
        "JAX's persistent compilation cache, so a second start skips compiles: on "
        "(~/.cache/jaxtrain/xla, or under $XDG_CACHE_HOME), off, or a folder",
        group="output",
        check=(bool, "must be on, off or a folder"),
        evaluation=True,
    )

    # Bookkeeping of the defaults (not flags). `given`: the settings the user set (run.py
    # fills it from the command line; empty: a setting that differs from its default counts
    # as given). `auto`: "name=value" for each setting engine.config.recipes filled in (the
    # epoch count, the recipes), saved so that resume, eval and the start-up lines agree.
    given: tuple[str, ...] = setting((), "the settings the user set", internal=True)
    auto: tuple[str, ...] = setting((), "the settings filled in automatically", internal=True)
    # The registered settings of programs that differ from their defaults (schema.Settings).
    extra: tuple = ()

    def resolved_workdir(self) -> str:
        """The workdir, defaulting to runs/<dataset>-<arch>-<loss> (path-safe)."""
        if self.workdir:
            return self.workdir
        name = f"{self.dataset}-{self.arch}-{self.loss}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join("runs", safe)
