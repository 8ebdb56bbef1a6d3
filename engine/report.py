"""What the user reads: epoch lines, the metrics log, the learning-curve plot, the final summary."""

from __future__ import annotations

import json
import math
import os

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
RESULTS_FILE = "results.json"


def strict(value):
    """`value` with every non-finite float replaced by None, so it is strict JSON.

    >>> strict({"loss": float("nan"), "acc": [1.0, float("inf")]})
    {'loss': None, 'acc': [1.0, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """Strict JSON text of `value` (non-finite numbers as null)."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


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


def read_metrics(workdir: str) -> list[dict]:
    """The per-epoch records of `metrics.jsonl` (empty when there is none)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rewrite_metrics(workdir: str, records: list[dict]) -> None:
    """Replaces `metrics.jsonl` atomically (a resumed run drops epochs past its checkpoint)."""
    path = os.path.join(workdir, METRICS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_metrics(workdir: str, record: dict) -> None:
    """Appends one record to `metrics.jsonl` (no timings, so equal runs give equal files)."""
    with open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8") as f:
        f.write(dumps(record, sort_keys=True) + "\n")


def write_json(workdir: str, name: str, payload: dict) -> None:
    """Writes `payload` to `<workdir>/<name>` atomically."""
    path = os.path.join(workdir, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(dumps(payload, indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)


def plot_curves(workdir: str, records: list[dict], metric: str) -> str:
    """Draws train vs validation loss and `metric` per epoch into `<workdir>/curves.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records if "epoch" in r]
    records = [r for r in records if "epoch" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", metric)):
        ax.plot(epochs, [r["train"][key] for r in records], "o-", label="train")
        ax.plot(epochs, [r["val"][key] for r in records], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("loss")
    axes[1].set_title(metric)
    fig.tight_layout()
    path = os.path.join(workdir, CURVES_FILE)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
