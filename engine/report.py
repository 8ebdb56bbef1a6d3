"""What the user reads: epoch lines, the metrics log, the learning-curve plot, the final summary."""

from __future__ import annotations

import json
import os

from engine.data.source import CLASSIFICATION

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
RESULTS_FILE = "results.json"


def format_metrics(metrics: dict, kind: str) -> str:
    """`loss 0.1234 acc 0.9650` (classification) or `loss .. mae .. rmse .. r2 ..` (regression)."""
    if kind == CLASSIFICATION:
        return f"loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f}"
    return (
        f"loss {metrics['loss']:.4f} mae {metrics['mae']:.4g} "
        f"rmse {metrics['rmse']:.4g} r2 {metrics['r2']:.4f}"
    )


def epoch_line(epoch: int, epochs: int, train: dict, val: dict, kind: str, extra: str) -> str:
    """One line per epoch with train and validation numbers side by side."""
    width = len(str(epochs))
    return (
        f"epoch {epoch:>{width}}/{epochs}  train {format_metrics(train, kind)}  |  "
        f"val {format_metrics(val, kind)}  |  {extra}"
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
            f.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_metrics(workdir: str, record: dict) -> None:
    """Appends one record to `metrics.jsonl` (no timings, so equal runs give equal files)."""
    with open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def write_json(workdir: str, name: str, payload: dict) -> None:
    """Writes `payload` to `<workdir>/<name>` atomically."""
    path = os.path.join(workdir, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def plot_curves(workdir: str, records: list[dict], kind: str) -> str:
    """Draws train vs validation loss and metric per epoch into `<workdir>/curves.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records if "epoch" in r]
    records = [r for r in records if "epoch" in r]
    metric = "accuracy" if kind == CLASSIFICATION else "r2"
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
