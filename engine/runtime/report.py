"""What the user reads: epoch lines, the metrics log, the learning-curve plot, the final summary."""

from __future__ import annotations

import json
import math

from engine import paths

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
RESULTS_FILE = "results.json"


# Short names users know from the progress lines of other frameworks.
_SHORT = {"accuracy": "acc"}


def format_metrics(metrics: dict) -> str:
    """`loss 0.1234 acc 0.9650`, `loss .. mae .. rmse .. r2 ..`: every number but the count.

    >>> format_metrics({"loss": 0.5, "accuracy": 0.25, "count": 4})
    'loss 0.5000 acc 0.2500'
    """
    parts = []
    for key, value in metrics.items():
        if key == "count" or not isinstance(value, int | float):
            continue
        if isinstance(value, int):  # counts (nonfinite_steps)
            shown = str(value)
        else:
            shown = f"{value:.4g}" if key in ("mae", "rmse") else f"{value:.4f}"
        parts.append(f"{_SHORT.get(key, key)} {shown}")
    return " ".join(parts)


def epoch_line(epoch: int, epochs: int, train: dict, val: dict, extra: str) -> str:
    """One line per epoch with train and validation numbers side by side."""
    width = len(str(epochs))
    return (
        f"epoch {epoch:>{width}}/{epochs}  train {format_metrics(train)}  |  "
        f"val {format_metrics(val)}  |  {extra}"
    )


# The key a strict record lists its non-finite values under (they are written as null).
NONFINITE_KEY = "nonfinite_values"


def strict(payload: dict) -> dict:
    """`payload` made strict JSON: each non-finite float becomes None (JSON null).

    The dotted paths of the replaced values are listed under `NONFINITE_KEY`, so a reader can
    tell a NaN from a missing value.

    >>> strict({"val": {"loss": float("nan"), "accuracy": 0.5}})
    {'val': {'loss': None, 'accuracy': 0.5}, 'nonfinite_values': ['val.loss']}
    """
    found: list[str] = []

    def clean(value, path):
        if isinstance(value, float) and not math.isfinite(value):
            found.append(path)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    out = clean(payload, "")
    if found and isinstance(out, dict):
        out[NONFINITE_KEY] = found
    return out


def dumps(payload: dict, **kwargs) -> str:
    """Strict JSON text of `payload` (`strict`; json refuses anything non-finite left over)."""
    kwargs.setdefault("sort_keys", True)
    return json.dumps(strict(payload), allow_nan=False, **kwargs)


def read_metrics(workdir: str) -> list[dict]:
    """The per-epoch records of `metrics.jsonl` (empty when there is none).

    A last line cut short by a killed process is dropped (the resume rewrites the file).
    """
    path = paths.join(workdir, METRICS_FILE)
    if not paths.exists(path):
        return []
    text = paths.read_text(path)
    records = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # not the last line: the file is damaged, say so
                raise
    return records


def rewrite_metrics(workdir: str, records: list[dict]) -> None:
    """Replaces `metrics.jsonl` atomically (a resumed run drops epochs past its checkpoint)."""
    text = "".join(dumps(record, sort_keys=True) + "\n" for record in records)
    paths.write_text(paths.join(workdir, METRICS_FILE), text)


def append_metrics(workdir: str, record: dict) -> None:
    """Appends one record to `metrics.jsonl` (no timings, so equal runs give equal files)."""
    path, line = paths.join(workdir, METRICS_FILE), dumps(record, sort_keys=True) + "\n"
    if paths.is_remote(path):  # an object cannot be appended to: rewrite the (small) file
        paths.write_text(path, (paths.read_text(path) if paths.exists(path) else "") + line)
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def write_json(workdir: str, name: str, payload: dict) -> None:
    """Writes `payload` to `<workdir>/<name>` atomically."""
    paths.write_text(paths.join(workdir, name), dumps(payload, indent=2, sort_keys=True))


def pyplot():
    """Matplotlib's pyplot on the Agg backend (files only), imported on first use.

    matplotlib takes about half a second to import; a run draws only at its end.
    """
    import matplotlib  # heavy: imported when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(workdir: str, records: list[dict], metric: str) -> str:
    """Draws train vs validation loss and `metric` per epoch into `<workdir>/curves.png`."""
    plt = pyplot()

    records = [r for r in records if "epoch" in r]
    epochs = [r["epoch"] for r in records]
    # The loss and the monitored metric, where the program reports them (a metric may exist
    # for validation only).
    keys = [k for k in dict.fromkeys(("loss", metric)) if k in records[0]["val"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split, style, label in (("train", "o-", "train"), ("val", "s-", "validation")):
            if key in records[0][split]:
                ax.plot(epochs, [_number(r[split].get(key)) for r in records], style, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = paths.save_figure(fig, paths.join(workdir, CURVES_FILE), dpi=100)
    plt.close(fig)
    return path


def _number(value) -> float:
    """A plotted value: a strict record's null (a non-finite value) is drawn as a gap."""
    return math.nan if value is None else float(value)


def plot_xy(path: str, x, y, *, xlabel: str, ylabel: str, logx: bool = False, mark=None) -> str:
    """Draws `y` against `x` (points and line) into the PNG `path`; `mark` draws a vertical line.

    Used for the learning-rate range test (loss vs lr) and a search's objective vs parameter.
    """
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, ".-" if len(x) > 1 and sorted(x) == list(x) else "o")
    if logx:
        ax.set_xscale("log")
    if mark is not None:
        ax.axvline(mark, color="tab:red", linestyle="--", label=f"{xlabel} = {mark:.3g}")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
