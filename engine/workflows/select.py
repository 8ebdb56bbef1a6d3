"""K-fold cross-validation: one resumable run per fold, a mean ± std table, cv.json, a refit."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np

from engine import paths
from engine.config import Config, load_json
from engine.runtime import report
from engine.workflows import setup, train

CV_FILE = "cv.json"


def fold_configs(config: Config) -> list[Config]:
    """The configuration of each fold's run: `fold=k` in `WORKDIR/fold-k`."""
    root = config.resolved_workdir()
    return [
        dataclasses.replace(config, workdir=paths.join(root, f"fold-{k}"), fold=k)
        for k in range(1, config.cv_folds + 1)
    ]


def refit_config(config: Config, epochs: int) -> Config:
    """The refit: every non-test row, `epochs` epochs (no early stop), in `WORKDIR/refit`."""
    return dataclasses.replace(
        config,
        workdir=paths.join(config.resolved_workdir(), "refit"),
        fold=-1,
        epochs=epochs,
        early_stopping=0,
    )


def _finished(config: Config) -> dict | None:
    """The saved results of a fold run completed with exactly this configuration, or None."""
    results = paths.join(config.workdir, report.RESULTS_FILE)
    saved = paths.join(config.workdir, "config.json")
    if not (paths.exists(results) and paths.exists(saved)):
        return None
    if load_json(saved) != config.to_dict():
        return None  # other settings (e.g. more --epochs): the fold's run continues
    return json.loads(paths.read_text(results))


def summarize(folds: list[dict]) -> dict:
    """Mean and standard deviation over folds of each validation metric and the best epoch.

    The deviation is the population one (ddof=0), as scikit-learn's cross-validation examples
    report `scores.std()`.
    """
    names = [k for k in folds[0]["val"] if k != "count"]
    columns = {n: [f["val"][n] for f in folds] for n in names}
    columns["best_epoch"] = [f["best_epoch"] for f in folds]
    return {
        "mean": {n: float(np.mean(v)) for n, v in columns.items()},
        "std": {n: float(np.std(v)) for n, v in columns.items()},
    }


def table(folds: list[dict], summary: dict) -> list[str]:
    """The per-fold validation metrics and their mean ± std, as printed lines."""
    names = [k for k in folds[0]["val"] if k != "count"]
    lines = ["fold  best_epoch  " + "  ".join(f"{n:>17}" for n in names)]
    for f in folds:
        values = "  ".join(f"{f['val'][n]:>17.4f}" for n in names)
        lines.append(f"{f['fold']:>4}  {f['best_epoch']:>10}  {values}")
    mean, std = summary["mean"], summary["std"]
    values = "  ".join(f"{mean[n]:>8.4f} ± {std[n]:<6.4f}" for n in names)
    lines.append(f"mean  {mean['best_epoch']:>5.1f} ± {std['best_epoch']:<3.1f}{values}")
    return lines


def _strict(value):
    """`value` with non-finite floats as None (cv.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cross_validate(config: Config, *, callbacks=(), **fit_kwargs) -> dict:
    """Runs every fold of `config.cv_folds` (resuming unfinished ones), then the refit.

    Every fold's workdir is checked against this configuration before any run starts, so a
    conflicting rerun changes nothing. Folds completed with the same settings are read back,
    not retrained; a fold that was killed resumes from its latest checkpoint.

    Args:
      config: the configuration, with `cv_folds` >= 2 and `fold` 0.
      callbacks, fit_kwargs: passed to `engine.workflows.train.train` for each run.

    Returns:
      The content of `WORKDIR/cv.json` (`folds`, `mean`, `std`, `monitor`, and `refit` with
      its test metrics when `config.cv_refit`), or `{"stopped_at_fold": k, ...}` when a fold
      was paused.
    """
    # Resolved once for all folds: every fold and the refit train the same recipe and epoch
    # count (each fold's run then finds nothing left to resolve).
    objects = {k: fit_kwargs.get(k) for k in ("model", "loss", "program")}
    _, config = setup.resolved(config, **objects)
    is_main = jax.process_index() == 0
    say = print if is_main else (lambda *a, **k: None)
    runs = fold_configs(config)
    for run in [*runs, refit_config(config, config.epochs)]:
        setup.check_workdir(run, run.workdir)
    kind = "time-ordered" if config.split == "time" else "stratified/shuffled"
    say(f"cross-validation: {config.cv_folds} {kind} folds of the non-test rows", flush=True)
    folds = []
    for run in runs:
        done = _finished(run)
        if done is not None:
            say(f"fold {run.fold}/{config.cv_folds}: done earlier in {run.workdir}", flush=True)
        else:
            say(f"fold {run.fold}/{config.cv_folds}: training in {run.workdir}", flush=True)
            done = train.train(run, callbacks=callbacks, **fit_kwargs)
            if "stopped_at" in done:
                return {"stopped_at_fold": run.fold, **done}
        folds.append({"fold": run.fold, "best_epoch": done["best_epoch"], "val": done["best_val"]})
    summary = summarize(folds)
    monitor = config.monitor or "val_" + ("accuracy" if "accuracy" in folds[0]["val"] else "r2")
    result = {"folds": folds, **summary, "monitor": monitor, "config": config.to_dict()}
    say(*table(folds, summary), sep="\n", flush=True)
    if config.cv_refit:
        epochs = max(1, round(summary["mean"]["best_epoch"]))
        say(f"refit on all non-test rows for {epochs} epochs (the folds' mean best epoch)")
        refit = train.train(refit_config(config, epochs), callbacks=callbacks, **fit_kwargs)
        if "stopped_at" in refit:
            return {"stopped_at_fold": -1, **refit}
        result["refit"] = {"epochs": epochs, "test": refit["test"]}
    if is_main:
        paths.make_dirs(config.resolved_workdir())
        report.write_json(config.resolved_workdir(), CV_FILE, _strict(result))
    return result


__all__ = ["CV_FILE", "cross_validate", "fold_configs", "refit_config", "summarize", "table"]
