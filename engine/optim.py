"""The optimiser as one optax chain built from the config: clip, decay, optimiser, schedule."""

from __future__ import annotations

import jax
import optax

from engine.config import Config

# `--on_nan=skip`: non-finite updates in a row that optax.apply_if_finite drops before giving up.
MAX_CONSECUTIVE_SKIPS = 1000


def effective_lr(config: Config) -> float:
    """The peak learning rate after `--lr_scaling` (linear: lr x global_batch / 256)."""
    if config.lr_scaling == "linear":
        return config.lr * config.batch_size * config.grad_accum_steps / 256.0
    return config.lr


def schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer update count.

    The schedule spans the planned run (`--epochs`), so a resumed run follows exactly the same
    rates as an uninterrupted one. `step` decays by 10x at 50% and 75% of training (the classic
    ResNet recipe); `warmup_cosine` warms up linearly for `--warmup_epochs`.
    """
    lr = effective_lr(config)
    updates_per_epoch = max(steps_per_epoch // config.grad_accum_steps, 1)
    total = max(config.epochs * updates_per_epoch, 1)
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total)
    if config.schedule == "warmup_cosine":
        warmup = min(int(config.warmup_epochs * updates_per_epoch), total - 1)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=max(warmup, 0), decay_steps=total
        )
    if config.schedule == "step":
        return optax.piecewise_constant_schedule(lr, {total // 2: 0.1, (3 * total) // 4: 0.1})
    raise ValueError(f"unknown schedule {config.schedule!r}")


def decay_mask(params):
    """True for the leaves weight decay applies to: kernels (ndim > 1), not biases or BN scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Builds clip -> weight decay (masked) -> optimiser(schedule) [-> gradient accumulation].

    Weight decay is an optax transform, not a term added to the loss. For `adamw` it is
    decoupled (AdamW, decay scaled by the learning rate); for sgd/momentum/adam it is the
    classic L2 form (`add_decayed_weights` before the optimiser, i.e. gradient += wd * w).
    """
    lr = schedule(config, steps_per_epoch)
    parts = []
    if config.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
    if config.optimizer == "adamw":
        parts.append(optax.adamw(lr, weight_decay=config.weight_decay, mask=decay_mask))
    else:
        if config.weight_decay > 0:
            parts.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
        if config.optimizer == "sgd":
            parts.append(optax.sgd(lr))
        elif config.optimizer == "momentum":
            parts.append(optax.sgd(lr, momentum=config.momentum))
        elif config.optimizer == "adam":
            parts.append(optax.adam(lr))
        else:
            raise ValueError(f"unknown optimizer {config.optimizer!r}")
    tx = optax.chain(*parts)
    if config.freeze:
        from engine.finetune import freeze

        tx = freeze(tx, config.freeze)
    if config.on_nan == "skip":
        # Inside MultiSteps, so it judges the averaged update that is applied. It gives up (and
        # applies) after this many non-finite updates in a row; the NaN guard stops a run
        # whose updates all fail, long before.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=MAX_CONSECUTIVE_SKIPS)
    if config.grad_accum_steps > 1:
        # Averages K micro-batch gradients and applies them once: K steps of B = one of K*B.
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx
