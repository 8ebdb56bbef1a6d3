"""The doctor's rule across runs: a deeper net of the same family doing worse (degradation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.doctor.rules import Finding, _get

# What `--depth=0` means per family (the registry's defaults).
DEFAULT_DEPTH = {"resnet": 18, "vgg": 16}

# A deeper run counts as worse when both its best training (evaluation mode) and best
# validation numbers are at least this much below the shallower run's.
MARGIN = 0.02


def depth(ctx: dict) -> int | None:
    """The run's depth: hidden layers for the MLP, `--depth` (or its default) elsewhere."""
    arch = ctx.get("arch")
    if arch == "mlp":
        return len(ctx.get("hidden_sizes") or [])
    return ctx.get("depth") or DEFAULT_DEPTH.get(arch)


def _best(records: Sequence[dict], split: str, metric: str) -> float | None:
    values = [_get(r, split, metric) for r in records]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def degradation(runs: Mapping[str, tuple[dict, Sequence[dict]]]) -> list[tuple[str, Finding]]:
    """`(workdir, finding)` for each run beaten by a shallower one of the same family.

    Args:
      runs: `{workdir: (context, epoch records)}`.
    """
    found = []
    for deep, (ctx_d, rec_d) in runs.items():
        worst = None
        for shallow, (ctx_s, rec_s) in runs.items():
            family = ("dataset", "arch", "loss")
            if any(ctx_d.get(k) != ctx_s.get(k) for k in family):
                continue
            d_d, d_s = depth(ctx_d), depth(ctx_s)
            if d_d is None or d_s is None or d_d <= d_s:
                continue
            metric = "accuracy" if ctx_d.get("task", "classification") == "classification" else "r2"
            train = "train_eval" if any("train_eval" in r for r in rec_d) else "train"
            nums = [
                _best(rec_d, train, metric),
                _best(rec_s, train, metric),
                _best(rec_d, "val", metric),
                _best(rec_s, "val", metric),
            ]
            if None in nums:
                continue
            td, ts, vd, vs = nums
            if td <= ts - MARGIN and vd <= vs - MARGIN and (worst is None or vs > worst[3]):
                worst = (shallow, d_s, ts, vs, td, vd, d_d, metric)
        if worst is not None:
            shallow, d_s, ts, vs, td, vd, d_d, metric = worst
            found.append(
                (
                    deep,
                    Finding(
                        "degradation",
                        rec_d[-1]["epoch"] if rec_d else 0,
                        f"{ctx_d.get('arch')} at depth {d_d} reaches best training {metric} "
                        f"{td:.4f} and validation {vd:.4f}, below depth {d_s}'s {ts:.4f} and "
                        f"{vs:.4f} ({shallow}); worse on training data too, so not overfitting",
                        "degradation: optimisation gets harder with depth (errors compound "
                        "through the layers), so the deeper net finds a worse solution",
                        "seeds 000 (退化問題; 003 resnet): residual connections "
                        "(--arch=resnet), --batchnorm=on, --init=he, or the shallower depth",
                    ),
                )
            )
    return found
