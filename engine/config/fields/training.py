"""The settings of how it is trained: the optimizer and its schedule, and model selection."""

from __future__ import annotations

import dataclasses

from engine.config.fields.rules import POSITIVE, at_least, plateau_resume, regex_check, toggle
from engine.config.schema import setting


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Training:
    """The optimisation (the "optimisation" group) and model selection ("selection")."""

    optimizer: str = setting(
        "adam", "optimizer", group="optimisation", choices=("sgd", "momentum", "adam", "adamw"),
        model=True,
    )  # fmt: skip
    lr: float = setting(1e-3, "peak learning rate", group="optimisation", check=POSITIVE)
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
        check=at_least(0),
        resume=toggle,
    )
    schedule: str = setting(
        "cosine",
        "learning-rate schedule (plateau: constant --lr, reduced when val_loss stops improving)",
        group="optimisation",
        choices=("constant", "cosine", "warmup_cosine", "step", "plateau"),
        resume=plateau_resume,
    )
    warmup_epochs: float = setting(
        1.0, "warm-up length for warmup_cosine", group="optimisation", check=at_least(0)
    )
    clip_grad_norm: float = setting(
        0.0,
        "clip gradients to this global norm (0: off)",
        group="optimisation",
        check=at_least(0),
        resume=toggle,
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
        check=POSITIVE,
        model=True,
    )
    batch_size: int = setting(
        64,
        "global batch size (split over all devices and processes)",
        group="optimisation",
        check=POSITIVE,
        evaluation=True,
    )
    eval_batch_size: int = setting(
        0,
        "batch size for validation and test (0: --batch_size)",
        group="optimisation",
        check=at_least(0),
        evaluation=True,
    )
    epochs: int = setting(
        0,
        "number of epochs of the planned run (0: automatic, at least 30 epochs and "
        "--min_updates optimizer updates, at most 1000 epochs)",
        group="optimisation",
        check=at_least(0, " (0: automatic)"),
    )
    min_updates: int = setting(
        300,
        "--epochs=0: the fewest optimizer updates the run makes (small datasets train for "
        "more epochs)",
        group="optimisation",
        check=POSITIVE,
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
        check=regex_check("init_params"),
    )
    freeze: str = setting(
        "",
        "regex of the parameter paths to keep fixed, e.g. '^conv' (optax set_to_zero)",
        group="optimisation",
        check=regex_check("freeze"),
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
    ema_decay: float = setting(
        0.0,
        "keep an exponential moving average of the parameters and BatchNorm statistics with "
        "this decay (debiased; e.g. 0.999), used for validation, selection, test and predict "
        "(--ema_eval); 0: off",
        group="optimisation",
        check=(lambda v: 0 <= v < 1, "must be in [0, 1) (0: off)"),
        resume=toggle,  # on or off is another state tree; another decay resumes
    )
    ema_eval: str = setting(
        "on",
        "--ema_decay: evaluate (validate, select, test, predict) with the moving average (on) "
        "or with the trained parameters (off); both are kept",
        group="optimisation",
        choices=("on", "off"),
        evaluation=True,
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
        check=at_least(1),
    )
    plateau_cooldown: int = setting(
        0,
        "--schedule=plateau: epochs after a reduction before counting again",
        group="optimisation",
        check=at_least(0),
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
        check=at_least(0, " (0: off)"),
    )
    min_delta: float = setting(
        0.0,
        "the smallest change of --monitor that counts as an improvement (--early_stopping)",
        group="selection",
        check=at_least(0),
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
        check=at_least(0),
    )
