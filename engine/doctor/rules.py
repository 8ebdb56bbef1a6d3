"""The doctor's rules: pure functions from a run's epoch records and context to findings.

Each rule reads the numbers the run logged (`metrics.jsonl` records: `train` from the training
pass, `train_eval` from an evaluation-mode pass over a fixed training subset, `val`, the
optimizer's `train.optim`, the `probe`) and plain context values, and returns a `Finding` or
None. The causes and remedies are the ones the seed notes give (`shared/seeds/`), quoted by
file. Thresholds were set so that the healthy default jobs stay silent; what set each one, and
how the doctor did on runs that set none, is in docs/doctor.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis: what was seen (with numbers), the likely cause, the seeds' remedy."""

    rule: str
    epoch: int
    saw: str
    cause: str
    remedy: str

    def line(self) -> str:
        """The finding as one line."""
        return (
            f"doctor [{self.rule}] epoch {self.epoch}: {self.saw}; likely cause: {self.cause}; "
            f"remedy: {self.remedy}"
        )

    def to_dict(self) -> dict:
        """The finding as JSON-able values (with its line)."""
        return {**dataclasses.asdict(self), "line": self.line()}


def _num(value) -> float | None:
    """A finite float, or None (JSON null, NaN, inf, missing)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _get(record: dict, split: str, name: str) -> float | None:
    return _num((record.get(split) or {}).get(name))


def _optim(record: dict) -> dict:
    return (record.get("train") or {}).get("optim") or {}


def _settled(records: Sequence[dict], ctx: dict) -> bool:
    """Whether enough epochs ran to judge trends (3, or all planned when fewer)."""
    return len(records) >= min(3, max(int(ctx.get("epochs", 3)), 1))


def non_finite(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Non-finite loss or gradients: the first step, and the layer that blew up first."""
    for i, r in enumerate(records):
        opt = _optim(r)
        step = opt.get("first_nonfinite_step")
        bad_train = "loss" in (r.get("train") or {}) and _get(r, "train", "loss") is None
        bad_val = "loss" in (r.get("val") or {}) and _get(r, "val", "loss") is None
        if step is None and not (bad_train or bad_val):
            continue
        layers = opt.get("first_nonfinite_layers") or []
        loss_first = step is not None and opt.get("first_nonfinite_loss_step") == step
        where = f"from step {step}" if step is not None else "in the validation loss"
        if layers and len(layers) < len(opt.get("layers") or {}):
            first = f"first in the gradient of {', '.join(layers)}"
        elif layers and loss_first:
            first = "in the loss itself, so in every layer's gradient at once"
        elif layers:
            first = "in every layer's gradient at once (the loss was still finite)"
        else:
            first = "in the loss before any gradient"
        before = _optim(records[i - 1]).get("max_grad_norm") if i else None
        growth = f"; the largest gradient norm the epoch before was {before:.3g}" if before else ""
        return Finding(
            "non_finite",
            r["epoch"],
            f"non-finite loss/gradients {where} (epoch {r['epoch']}), {first}{growth}",
            "nan comes from a division by zero (or log 0: a loss given targets it does not "
            "expect); inf from a learning rate or an initialisation that is too large "
            f"(lr {ctx.get('lr', '?')}, init {ctx.get('init', '?')})",
            "seeds 001 (nan的产生:除0; inf的产生:lr太大或者权重初始化太大): lower --lr 10x, "
            "use a smaller initialisation (--init=lecun/he), clip with --clip_grad_norm=1, and "
            "check the loss matches the targets",
        )
    return None


def chance(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Validation accuracy at chance after a few epochs: one class, or at random."""
    if ctx.get("task") != "classification" or not records or not _settled(records, ctx):
        return None
    r = records[-1]
    acc, loss = _get(r, "val", "accuracy"), _get(r, "val", "loss")
    c = int(ctx.get("num_classes", 0))
    if acc is None or c < 2:
        return None
    majority = float(ctx.get("majority_share", 1.0 / c))
    level = max(1.0 / c, majority)
    n = max(int((r.get("val") or {}).get("count", 100)), 1)
    margin = max(0.02, 2.0 * math.sqrt(level * (1.0 - level) / n))
    learned = _get(r, "train_eval", "accuracy")
    if acc > level + margin or (learned is not None and learned > level + margin):
        return None
    probe = r.get("probe") or {}
    top_share, top = probe.get("top_prediction_share"), probe.get("top_prediction")
    names = ctx.get("class_names") or []
    ln_c = math.log(c)
    near = f", loss {loss:.4f} vs ln {c} = {ln_c:.4f}" if loss is not None else ""
    saw = (
        f"validation accuracy {acc:.4f} is within {margin:.3f} of chance {level:.4f} "
        f"(1/{c} = {1.0 / c:.4f}, majority class share {majority:.4f}) after {r['epoch']} "
        f"epochs{near}"
    )
    if top_share is not None and top_share >= 0.9:
        label = names[top] if top is not None and top < len(names) else top
        saw += f"; it predicts one class ({label}) for {top_share:.0%} of validation examples"
        if majority >= 0.7:
            return Finding(
                "chance",
                r["epoch"],
                saw,
                f"class imbalance: the majority class is {majority:.0%} of the data, so "
                "predicting it alone scores its share",
                "seeds 003 (不平衡 9:1: 提高1的比例, 复制8遍让其1:1): --balance=oversample or "
                "--class_weights=balanced",
            )
        return Finding(
            "chance",
            r["epoch"],
            saw,
            "the network collapsed onto one class: a learning rate that is too high or "
            "a bad initialisation",
            "seeds 000 (準確率只有0.1左右: 權重沒有初始化, 或者學習率設置的太大了): lower --lr "
            "10x, use --init=he or --batchnorm=on",
        )
    return Finding(
        "chance",
        r["epoch"],
        saw + "; predictions are spread over the classes (at random)",
        "nothing is being learned: a learning rate that is too high (or far too low), or "
        "weights without a proper initialisation",
        "seeds 000 (準確率只有0.1左右: 權重沒有初始化, 或者學習率設置的太大了): lower --lr 10x "
        f"(now {ctx.get('lr', '?')}; raise it if the loss barely moves), use --init=he, add "
        "--batchnorm=on for deep nets",
    )


def _ordered_layers(record: dict, ctx: dict) -> list[tuple[str, float]]:
    norms = _optim(record).get("layers") or {}
    order = [n for n in ctx.get("layers") or [] if n in norms] or sorted(norms)
    return [(n, norms[n]) for n in order if _num(norms[n]) is not None]


def gradients(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Exploding or vanishing gradients, across layers (input vs output) or across epochs."""
    if not records:
        return None
    r = records[-1]
    layers = _ordered_layers(r, ctx)
    if len(layers) >= 2:
        (first, g_in), (last, g_out) = layers[0], layers[-1]
        ratio = g_in / g_out if g_out > 0 else math.inf
        numbers = (
            f"gradient norm {g_in:.3g} at the first layer ({first}) vs {g_out:.3g} at the "
            f"last ({last})"
        )
        if g_out > 0 and ratio <= 1e-3:
            return _vanishing(r, f"{numbers}: {ratio:.2g}x across {len(layers)} layers")
        if g_out > 0 and ratio >= 1e3:
            return _exploding(r, f"{numbers}: {ratio:.3g}x across {len(layers)} layers")
    if layers:
        name, top = max(layers, key=lambda kv: kv[1])
        if top >= HUGE_GRADIENT:
            return _exploding(
                r, f"gradient norms up to {top:.4g} ({name}; every layer: {_shown(layers)})"
            )
    if len(records) >= 3:
        g0, g1 = _optim(records[0]).get("grad_norm"), _optim(r).get("grad_norm")
        l0, l1 = _get(records[0], "train", "loss"), _get(r, "train", "loss")
        if _num(g0) and _num(g1) is not None and l0 is not None and l1 is not None:
            if g1 >= 10 * g0 and l1 >= l0:
                return _exploding(
                    r,
                    f"global gradient norm grew {g1 / g0:.3g}x since epoch 1 ({g0:.3g} -> "
                    f"{g1:.3g}) while the loss did not fall",
                )
            if g1 <= 1e-3 * g0 and l1 >= 0.5 * l0:
                return _vanishing(
                    r,
                    f"global gradient norm collapsed to {g1 / g0:.2g}x of epoch 1's ({g0:.3g} "
                    f"-> {g1:.3g}) while the loss stayed at {l1:.4f}",
                )
    return None


# A layer's gradient norm (root mean square over an epoch's steps) this large is exploding
# whatever the model: healthy runs here stay near 0.01-10 (the raw breast_cancer features
# gave 470-560 per layer).
HUGE_GRADIENT = 1e3


def _shown(layers, limit: int = 4) -> str:
    shown = ", ".join(f"{k} {v:.3g}" for k, v in layers[:limit])
    return shown + (", ..." if len(layers) > limit else "")


def initialisation(records: Sequence[dict], ctx: dict) -> Finding | None:
    """The untrained model's loss far above a classifier's chance level ln C."""
    if ctx.get("task") != "classification" or not records or ctx.get("num_classes", 0) < 2:
        return None
    start = _num(_optim(records[0]).get("initial_loss"))
    ln_c = math.log(ctx["num_classes"])
    if start is None or start < 3 * ln_c:
        return None
    return Finding(
        "initialisation",
        records[0]["epoch"],
        f"the loss before any update was {start:.4g}, far above ln {ctx['num_classes']} = "
        f"{ln_c:.4f} (what small initial weights give)",
        "initial weights too large (or inputs far from unit scale): huge logits, huge gradients",
        "seeds 000/001 (為什麼要權重初始化: 避免梯度消失或爆炸; inf: 权重初始化太大): "
        "--init=lecun or he (variance scaled by fan-in), --normalize=standard",
    )


def _vanishing(r: dict, saw: str) -> Finding:
    return Finding(
        "vanishing_gradients",
        r["epoch"],
        saw,
        "products of small derivatives through many layers (saturating sigmoid/tanh, zero or "
        "tiny initialisation)",
        "seeds 001 (梯度消失: 随机初始化, 更换成合适的激活函数; resnet 让乘法变成加法): "
        "--activation=relu, --init=he, --batchnorm=on, or residual connections (--arch=resnet)",
    )


def _exploding(r: dict, saw: str) -> Finding:
    return Finding(
        "exploding_gradients",
        r["epoch"],
        saw,
        "products of large weights through many layers (an initialisation or learning rate "
        "that is too large)",
        "seeds 001 (梯度爆炸; inf的产生:lr太大或者权重初始化太大): a smaller --init, lower "
        "--lr, --clip_grad_norm=1, --batchnorm=on",
    )


def dead_relus(records: Sequence[dict], ctx: dict) -> Finding | None:
    """Most units of a ReLU layer never active on a validation batch."""
    if ctx.get("activation") != "relu" or not records:
        return None
    r = records[-1]
    dead = (r.get("probe") or {}).get("dead_units") or {}
    worst = sorted(((v, k) for k, v in dead.items() if _num(v) is not None), reverse=True)
    if not worst or worst[0][0] < 0.5:
        return None
    shown = ", ".join(f"{k} {v:.0%}" for v, k in worst[:3] if v >= 0.5)
    n = sum(v >= 0.5 for v, _ in worst)
    return Finding(
        "dead_relus",
        r["epoch"],
        f"{n} of {len(worst)} ReLU layers have at least half their units never active on a "
        f"validation batch ({shown})",
        "ReLUs pushed into their flat negative side by a learning rate that is too high or a "
        "bad initialisation; a dead unit gets no gradient and never recovers",
        "seeds 000 (LeakyReLU 可以保留一定的梯度信息): --activation=leaky_relu, lower --lr, "
        "--init=he, --batchnorm=on",
    )
