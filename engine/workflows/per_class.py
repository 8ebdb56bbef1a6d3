"""Per-class results of a classifier on the test split: scores, confusion matrix, worst mistakes.

`per_class_report` runs the program's inference over the test split once and returns the
per-class precision / recall / F1 / support (scikit-learn's definitions) and the confusion
matrix for `results.json`; it draws `confusion.png` and, for image data, `mistakes.png`: the
test examples predicted wrong with the highest confidence.
"""

from __future__ import annotations

import jax
import numpy as np

from engine import paths
from engine.runtime import report

CONFUSION_FILE = "confusion.png"
MISTAKES_FILE = "mistakes.png"


def predictions(infer, state, loader) -> dict[str, np.ndarray]:
    """`targets`, `prediction`, `confidence` and raw `inputs` of every (unpadded) example."""
    step = jax.jit(infer)
    parts = {"targets": [], "prediction": [], "confidence": [], "inputs": []}
    for batch in loader.epoch(0):
        out = jax.device_get(step(state, batch["inputs"]))
        keep = np.asarray(batch["mask"], bool)
        parts["targets"].append(np.asarray(batch["targets"])[keep])
        parts["prediction"].append(np.asarray(out["prediction"])[keep])
        parts["confidence"].append(np.asarray(out["confidence"])[keep])
        parts["inputs"].append(np.asarray(batch["inputs"])[keep])
    return {k: np.concatenate(v) for k, v in parts.items()}


def scores(targets: np.ndarray, predicted: np.ndarray, names) -> dict:
    """Per-class precision, recall, F1 and support, and the confusion matrix (rows: truth).

    >>> s = scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"])
    >>> s["per_class"]["b"]["precision"], s["per_class"]["a"]["recall"], s["confusion"]
    (0.6666666666666666, 0.5, [[1, 1], [0, 2]])
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(names)))
    p, r, f, n = precision_recall_fscore_support(targets, predicted, labels=labels, zero_division=0)
    matrix = confusion_matrix(targets, predicted, labels=labels)
    return {
        "per_class": {
            str(name): {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(n[i]),
            }
            for i, name in enumerate(names)
        },
        "macro_f1": float(np.mean(f)),
        "confusion": matrix.astype(int).tolist(),
    }


def plot_confusion(path: str, matrix, names) -> None:
    """Draws the confusion matrix (counts, rows true class) into `path`."""
    plt = report.pyplot()

    matrix = np.asarray(matrix)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), [str(n) for n in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_mistakes(path: str, found: dict, names, limit: int = 16) -> int:
    """Draws the `limit` most confidently wrong images into `path`; returns how many."""
    wrong = np.flatnonzero(found["prediction"] != found["targets"])
    wrong = wrong[np.argsort(-found["confidence"][wrong])][:limit]
    if not len(wrong):
        return 0
    plt = report.pyplot()

    cols = min(4, len(wrong))
    rows = -(-len(wrong) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        image = found["inputs"][i].astype(np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        true, pred = names[found["targets"][i]], names[found["prediction"][i]]
        ax.set_title(f"{true} as {pred}\n{found['confidence'][i]:.0%}", fontsize=8)
    fig.suptitle("most confidently wrong test examples (true as predicted, confidence)")
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return len(wrong)


def per_class_report(setup, state) -> dict:
    """The test split's per-class scores (for `results.json`), drawing the two pictures.

    Args:
      setup: the prepared run (`engine.workflows.setup.Setup`); one process.
      state: the state to test (placed for `setup.plan`).
    """
    run, plan = setup.run, setup.plan
    info = run.splits.info
    names = list(info.class_names or [str(i) for i in range(info.num_classes)])
    one = plan.read(state) if plan.mode == "pmap" else state
    found = predictions(setup.program.infer, one, run.test_loader)
    out = scores(found["targets"], found["prediction"], names)
    plot_confusion(paths.join(setup.workdir, CONFUSION_FILE), out["confusion"], names)
    if info.is_image:
        out["mistakes_shown"] = plot_mistakes(
            paths.join(setup.workdir, MISTAKES_FILE), found, names
        )
    return out
