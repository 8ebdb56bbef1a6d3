"""The doctor's rules on the learning curves: over/underfitting, learning rate, inputs.

Like `engine.doctor.rules`, pure functions of the epoch records and plain context. The
over/underfitting rules compare like with like: the training split measured in evaluation mode
(`train_eval`, a fixed subset) against validation, never the training pass's numbers (taken
with dropout and augmentation on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from engine.doctor.rules import Finding, _get, _num, _settled


def _high(record: dict, ctx: dict, split: str) -> bool:
    """Whether `split`'s numbers are poor: accuracy < 0.9 / R^2 < 0.3 (and no better known)."""
    if ctx.get("task") == "classification":
        acc = _get(record, split, "accuracy")
        return acc is not None and acc < 0.9
    r2 = _get(record, split, "r2")
    return r2 is not None and r2 < 0.3


def overfitting(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Training (eval mode) far better than validation with a widening gap, or val loss rising."""
    if len(records) < 3:
        return None
    r = records[-1]
    t, v = _get(r, "train_eval", "loss"), _get(r, "val", "loss")
    if t is None or v is None:
        return None
    gaps = [
        (_get(x, "val", "loss") or math.nan) - (_get(x, "train_eval", "loss") or math.nan)
        for x in records[-3:]
    ]
    # Widening, and validation no longer improving: a gap that opens while validation still
    # gets better is a model still learning.
    earlier = [x for x in (_get(y, "val", "loss") for y in records[:-1]) if x is not None]
    widening = all(math.isfinite(g) for g in gaps) and gaps[-1] > gaps[0] and v >= min(earlier)
    saw = None
    # The seeds' example is 0.8 vs 2.0: at least twice the training loss and 0.3 above it.
    if v >= 2.0 * t and v - t >= 0.3 and widening:
        saw = (
            f"validation loss {v:.4f} vs training loss {t:.4f} (evaluation mode, same "
            f"measurement), gap widening {gaps[0]:.4f} -> {gaps[-1]:.4f} over 3 epochs"
        )
    ta, va = _get(r, "train_eval", "accuracy"), _get(r, "val", "accuracy")
    if saw is None and ta is not None and va is not None and ta - va >= 0.1 and widening:
        saw = (
            f"training accuracy {ta:.4f} vs validation {va:.4f} (evaluation mode), loss "
            f"gap widening {gaps[0]:.4f} -> {gaps[-1]:.4f}"
        )
    vals = [_get(x, "val", "loss") for x in records]
    best = min((x, i) for i, x in enumerate(vals) if x is not None) if any(vals) else None
    if saw is None and best is not None and best[1] <= len(records) - 3:
        low, at = best
        t_then = _get(records[at], "train_eval", "loss")
        if v >= 1.5 * low and v - low >= 0.1 and t_then is not None and t < t_then:
            saw = (
                f"validation loss rose from {low:.4f} (epoch {records[at]['epoch']}) to "
                f"{v:.4f} while training loss fell {t_then:.4f} -> {t:.4f}"
            )
    if saw is None:
        return None
    return Finding(
        "overfitting",
        r["epoch"],
        saw,
        "the model memorises the training data (too much capacity for the data it has)",
        "seeds 001/004 (过拟合: 权重衰减, 丢弃法; 训练集损失0.8, 验证集损失2.0): "
        "--weight_decay=1e-4, --dropout=0.5, --augment=standard (images), early stopping "
        "on validation (--monitor), more data",
    )


def underfitting(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Training and validation both poor and flat after the loss had dropped."""
    if len(records) < 3 or not _settled(records, ctx):
        return None
    r, old = records[-1], records[-3]
    t, t_old, v = (
        _get(r, "train_eval", "loss"),
        _get(old, "train_eval", "loss"),
        _get(r, "val", "loss"),
    )
    first = _get(records[0], "train", "loss")
    if None in (t, t_old, v, first):
        return None
    flat = abs(t_old - t) <= 0.05 * abs(t_old)
    moved = _get(r, "train", "loss") is not None and _get(r, "train", "loss") < 0.9 * first
    if not (flat and moved and _high(r, ctx, "train_eval") and _high(r, ctx, "val")):
        return None
    metric = "accuracy" if ctx.get("task") == "classification" else "r2"
    ta, va = _get(r, "train_eval", metric), _get(r, "val", metric)
    return Finding(
        "underfitting",
        r["epoch"],
        f"training {metric} {ta:.4f} (evaluation mode) and validation {va:.4f} both poor; "
        f"training loss flat over the last 3 epochs ({t_old:.4f} -> {t:.4f})",
        "too little capacity or training for the task (or too much regularisation)",
        "seeds 003/004 (欠拟合: 增加模型复杂度, 减小正则化系数): a bigger model "
        "(--hidden_sizes, --width, --depth), more --epochs, a higher --lr, less "
        "--weight_decay/--dropout",
    )


def loss_up_accuracy_up(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Validation loss and accuracy rising together over the last epochs."""
    if ctx.get("task") != "classification" or len(records) < 3:
        return None
    window = records[-3:]
    losses = [_get(x, "val", "loss") for x in window]
    accs = [_get(x, "val", "accuracy") for x in window]
    if None in losses or None in accs:
        return None
    rising = all(b > a for a, b in pairwise(losses))
    if not (rising and losses[-1] >= 1.1 * losses[0] and accs[-1] > accs[0]):
        return None
    return Finding(
        "loss_up_accuracy_up",
        window[-1]["epoch"],
        f"validation loss rose {losses[0]:.4f} -> {losses[-1]:.4f} over {len(window) - 1} "
        f"epochs while validation accuracy rose {accs[0]:.4f} -> {accs[-1]:.4f}",
        "over-confident wrong predictions: the few examples it gets wrong, it gets wrong with "
        "ever higher confidence (cross-entropy punishes that; accuracy does not see it)",
        "seeds 000 (損失函數增加但是精度卻在上升: 過擬合, 學習率過高): early stopping on "
        "--monitor=val_loss, --label_smoothing=0.1, --weight_decay, lower --lr",
    )


def lr_too_high(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Training loss jumping up between epochs (oscillating or diverging)."""
    losses = [_get(x, "train", "loss") for x in records]
    if ctx.get("task") == "classification" and ctx.get("num_classes", 0) >= 2 and losses:
        # An untrained classifier's loss is about ln C; far above it, the loss jumped up.
        ln_c = math.log(ctx["num_classes"])
        worst = max((x, i) for i, x in enumerate(losses) if x is not None) if any(losses) else None
        start = ((records[0].get("train") or {}).get("optim") or {}).get("initial_loss")
        started_high = _num(start) is not None and start >= 3 * ln_c  # init, not the steps
        if worst is not None and worst[0] >= 3 * ln_c and not started_high:
            return Finding(
                "lr_too_high",
                records[-1]["epoch"],
                f"training loss {worst[0]:.4g} in epoch {records[worst[1]]['epoch']} is far "
                f"above the untrained level ln {ctx['num_classes']} = {ln_c:.4f}: it jumped up "
                f"(lr {ctx.get('lr', '?')})",
                "steps too large for the loss surface: updates overshoot",
                _LR_HIGH_REMEDY,
            )
    if len(losses) < 3 or None in losses:
        return None
    # A rise to under 1% of where training started is noise around a converged loss (a
    # ResNet-18 on digits wobbling 0.0002 -> 0.0003 in epoch 8), not an overshooting step.
    start = _num(((records[0].get("train") or {}).get("optim") or {}).get("initial_loss"))
    floor = 0.01 * max(losses[0], start or 0.0)
    ups = [
        (b / a, i + 1) for i, (a, b) in enumerate(pairwise(losses)) if b > 1.1 * a and b >= floor
    ]
    big = [u for u in ups if u[0] >= 1.5]
    if len(ups) < 2 and not big:
        return None
    factor, at = max(ups)
    return Finding(
        "lr_too_high",
        records[-1]["epoch"],
        f"training loss went up in {len(ups)} of {len(losses) - 1} epochs, at most "
        f"{factor:.2f}x (epoch {records[at]['epoch']}: {losses[at - 1]:.4f} -> "
        f"{losses[at]:.4f}) at lr {ctx.get('lr', '?')}",
        "steps too large for the loss surface: updates overshoot",
        _LR_HIGH_REMEDY,
    )


_LR_HIGH_REMEDY = (
    "seeds 000/004 (學習率過高, 試著調小一些; 大 batch 用大 lr): lower --lr 3-10x, or "
    "--schedule=warmup_cosine, --clip_grad_norm=1"
)


def lr_too_low(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Training loss barely moving while the results are still poor."""
    if len(records) < 3 or not _settled(records, ctx):
        return None
    losses = [_get(x, "train", "loss") for x in records]
    if None in losses:
        return None
    first, last = losses[0], losses[-1]
    # Barely moving means every epoch, not a loss that jumps around its start (too high).
    if last < 0.95 * first or any(abs(b - a) > 0.05 * a for a, b in pairwise(losses)):
        return None
    split = "train_eval" if "train_eval" in records[-1] else "train"
    if not _high(records[-1], ctx, split):
        return None
    return Finding(
        "lr_too_low",
        records[-1]["epoch"],
        f"training loss barely moved over {len(records)} epochs ({first:.4f} -> {last:.4f}, "
        f"{(first - last) / first:.1%}) at peak lr {ctx.get('lr', '?')}",
        "a learning rate too small for this optimizer: each step changes almost nothing",
        "seeds 004 (learning_rate 至關重要, 多做實驗): raise --lr 10x and compare; Adam "
        "usually starts near 1e-3, SGD with momentum near 1e-2 to 1e-1",
    )


def preprocessing(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Unnormalised inputs, or validation inputs distributed unlike training after normalising."""
    stats = ctx.get("input_stats") or {}
    tr, va = stats.get("train"), stats.get("val")
    if not tr or not va or None in (tr.get("std"), va.get("std")):
        return None
    epoch = records[-1]["epoch"] if records else 0
    if ctx.get("normalize") == "none" and (tr["std"] > 10 or abs(tr["mean"]) > 10):
        return Finding(
            "preprocessing",
            epoch,
            f"inputs are not normalised: training inputs have mean {tr['mean']:.4g} and std "
            f"{tr['std']:.4g} (per feature up to {tr.get('max_std', tr['std']):.4g})",
            "raw feature scales far from 1 make the loss surface badly conditioned",
            "seeds 000 (數據集為什麼要進行歸一化: 幫助模型更快地收斂): --normalize=standard",
        )
    shift = abs(va["mean"] - tr["mean"]) / max(tr["std"], 1e-12)
    ratio = va["std"] / max(tr["std"], 1e-12)
    if shift <= 0.5 and 0.5 <= ratio <= 2.0:
        return None
    return Finding(
        "preprocessing",
        epoch,
        f"after normalisation, validation inputs have mean {va['mean']:.4g} and std "
        f"{va['std']:.4g} vs training {tr['mean']:.4g} and {tr['std']:.4g} (shift "
        f"{shift:.2f} training stds, spread ratio {ratio:.2f})",
        "training and validation inputs are not prepared the same way (one split lacks a "
        "normalisation or scaling step, or comes from another source)",
        "seeds 000 (驗證集的精準度很低: train_transform 未加上最後的那個歸一化處理): prepare "
        "every split with the same steps; check the sources of the splits (--split)",
    )
