"""The settings of what to do and where: mode, program, workdir, seed, plugins, files in and out."""

from __future__ import annotations

import dataclasses

from engine.config.schema import owners, setting


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


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Run:
    """What to do and where (the "run" group)."""

    mode: str = setting(
        "train",
        "what to do: eval tests the best checkpoint; eval, predict and export take the "
        "training settings from the workdir's config.json; export writes the workdir's "
        "inference for serving (--format, --output); doctor diagnoses trained workdirs from "
        "their files (--workdir=W1,W2 compares several)",
        choices=("train", "eval", "predict", "export", "doctor"),
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
        "--mode=predict: the CSV to write (default WORKDIR/predictions.csv); --mode=export: "
        "the folder to write, new or empty (default WORKDIR/export)",
        evaluation=True,
    )
    format: str = setting(
        "stablehlo",
        "--mode=export: stablehlo (jax.export, loaded with jax and numpy alone) or onnx "
        "(jax2onnx, checked with onnxruntime; pip install -e '.[export]')",
        choices=("stablehlo", "onnx"),
        evaluation=True,
    )
