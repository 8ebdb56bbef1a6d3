"""The optimiser as one optax chain from its settings: clip, decay, optimiser, schedule, freeze."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import optax
from optax.contrib import ReduceLROnPlateauState

from engine.config.recipes import AUTO_FLOOR

# `--on_nan=skip`: non-finite updates in a row that optax.apply_if_finite drops before giving up.
MAX_CONSECUTIVE_SKIPS = 1000
# The learning-rate range test (`--find_lr`): rates swept, and over how many updates.
RANGE_START, RANGE_END, RANGE_STEPS = 1e-7, 10.0, 300


@dataclasses.dataclass(frozen=True)
class Settings:
    """The optimiser's settings, named as the run's flags (`run.py --help` says each)."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    clip_grad_norm: float
    lr_scaling: str
    grad_accum_steps: int
    batch_size: int
    epochs: int
    freeze: str
    on_nan: str
    plateau_factor: float
    plateau_patience: int
    plateau_cooldown: int
    plateau_min_lr: float
    find_lr: bool


def settings(values: Any) -> Settings:
    """The optimiser's settings read from `values` (a run's `Config`), by name."""
    return Settings(**{f.name: getattr(values, f.name) for f in dataclasses.fields(Settings)})


def range_schedule(steps: int = RANGE_STEPS, start: float = RANGE_START, end: float = RANGE_END):
    """`start * (end / start) ** (i / steps)`: the rate of update `i` of the range test."""
    return lambda i: start * (end / start) ** (i / steps)


def effective_lr(settings: Settings) -> float:
    """The peak learning rate after `--lr_scaling` (linear: lr x global_batch / 256)."""
    if settings.lr_scaling == "linear":
        return settings.lr * settings.batch_size * settings.grad_accum_steps / 256.0
    return settings.lr


def schedule(settings: Settings, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer update count.

    The schedule spans the planned run (`--epochs`), so a resumed run follows exactly the same
    rates as an uninterrupted one. `step` decays by 10x at 50% and 75% of training (the classic
    ResNet recipe); `warmup_cosine` warms up linearly for `--warmup_epochs`.
    """
    if settings.find_lr:  # the range test sweeps the rate itself
        return range_schedule()
    lr = effective_lr(settings)
    # Gradient accumulation carries over epoch ends (optax.MultiSteps counts micro-steps), so
    # the run makes epochs * steps // K updates: 18 batches at K=4 are 4.5 updates an epoch,
    # and counting 4 an epoch ended the schedule at a tenth of the run short of its end.
    updates_per_epoch = steps_per_epoch / settings.grad_accum_steps
    # An unresolved automatic count (--epochs=0, before engine.config.recipes.with_epochs) spans
    # the floor, never a single update.
    epochs = settings.epochs or AUTO_FLOOR
    total = max(int(epochs * steps_per_epoch) // settings.grad_accum_steps, 1)
    if settings.schedule in ("constant", "plateau"):  # plateau scales a constant rate
        return optax.constant_schedule(lr)
    if settings.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total)
    if settings.schedule == "warmup_cosine":
        warmup = min(int(settings.warmup_epochs * updates_per_epoch), total - 1)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=max(warmup, 0), decay_steps=total
        )
    if settings.schedule == "step":
        return optax.piecewise_constant_schedule(lr, {total // 2: 0.1, (3 * total) // 4: 0.1})
    raise ValueError(f"unknown schedule {settings.schedule!r}")


def path_name(path) -> str:
    """`dense0/kernel` for a key path of a parameter tree."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def freeze(tx: optax.GradientTransformation, pattern: str) -> optax.GradientTransformation:
    """`tx` for the parameters whose path does not match `pattern`; zero updates for the rest.

    optax.multi_transform with optax.set_to_zero: frozen parameters get no optimizer state
    and stay bit-identical.
    """
    regex = re.compile(pattern)

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if regex.search(path_name(p)) else "trained", params
        )

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def frozen_names(params, pattern: str) -> list[str]:
    """The paths of the parameters `pattern` freezes."""
    regex = re.compile(pattern)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [path_name(p) for p, _ in leaves if regex.search(path_name(p))]


def decay_mask(params):
    """True for the leaves weight decay applies to: kernels (ndim > 1), not biases or BN scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make(settings: Settings, steps_per_epoch: int) -> optax.GradientTransformation:
    """Builds clip -> weight decay (masked) -> optimiser(schedule) [-> gradient accumulation].

    Weight decay is an optax transform, not a term added to the loss. For `adamw` it is
    decoupled (AdamW, decay scaled by the learning rate); for sgd/momentum/adam it is the
    classic L2 form (`add_decayed_weights` before the optimiser, i.e. gradient += wd * w).
    """
    lr = schedule(settings, steps_per_epoch)
    parts = []
    if settings.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(settings.clip_grad_norm))
    if settings.optimizer == "adamw":
        parts.append(optax.adamw(lr, weight_decay=settings.weight_decay, mask=decay_mask))
    else:
        if settings.weight_decay > 0:
            parts.append(optax.add_decayed_weights(settings.weight_decay, mask=decay_mask))
        if settings.optimizer == "sgd":
            parts.append(optax.sgd(lr))
        elif settings.optimizer == "momentum":
            parts.append(optax.sgd(lr, momentum=settings.momentum))
        elif settings.optimizer == "adam":
            parts.append(optax.adam(lr))
        else:
            raise ValueError(f"unknown optimizer {settings.optimizer!r}")
    if settings.schedule == "plateau":
        parts.append(_scaled_by_plateau(plateau(settings)))
    tx = optax.chain(*parts)
    if settings.freeze:
        tx = freeze(tx, settings.freeze)
    if settings.on_nan == "skip":
        # Inside MultiSteps, so it judges the averaged update that is applied. It gives up (and
        # applies) after this many non-finite updates in a row; the NaN guard stops a run
        # whose updates all fail, long before.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=MAX_CONSECUTIVE_SKIPS)
    if settings.grad_accum_steps > 1:
        # Averages K micro-batch gradients and applies them once: K steps of B = one of K*B.
        tx = optax.MultiSteps(tx, every_k_schedule=settings.grad_accum_steps)
    return tx


def plateau(settings: Settings) -> optax.GradientTransformationExtraArgs:
    """The optax `contrib.reduce_on_plateau` with the `--plateau_*` settings, fed once an epoch.

    Its `value` is the epoch's validation loss (so `accumulation_size=1`); `min_scale` is
    `--plateau_min_lr` relative to the effective rate.
    """
    return optax.contrib.reduce_on_plateau(
        factor=settings.plateau_factor,
        patience=settings.plateau_patience,
        cooldown=settings.plateau_cooldown,
        accumulation_size=1,
        min_scale=settings.plateau_min_lr / effective_lr(settings),
    )


def _scaled_by_plateau(plateau_tx) -> optax.GradientTransformation:
    """Scales updates by the plateau state's current `scale` without advancing it.

    optax's transform advances when given a value; a train step has no validation loss, so
    the chain only applies the scale and `feed_plateau` advances the state once an epoch.
    """

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: (state.scale * g).astype(g.dtype), updates), state

    return optax.GradientTransformation(plateau_tx.init, update)


def _is_plateau(node) -> bool:
    return isinstance(node, ReduceLROnPlateauState)


def feed_plateau(tree, value, plateau_tx):
    """`tree` (any state) with every plateau state advanced by one observed `value`. Pure."""

    def one(node):
        return plateau_tx.update((), node, value=value)[1] if _is_plateau(node) else node

    return jax.tree.map(one, tree, is_leaf=_is_plateau)


def plateau_scale(tree):
    """The `scale` of the (first) plateau state in `tree`, or None when there is none."""
    found = [n.scale for n in jax.tree.leaves(tree, is_leaf=_is_plateau) if _is_plateau(n)]
    return found[0] if found else None
