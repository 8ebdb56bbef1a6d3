"""Pure `train_step` and `eval_step`: one definition for one device, jit-sharded and pmap runs.

The only difference between the parallel modes lives in `axis_name`: with None (plain jit, or
jit with shardings, where arrays are global and XLA inserts the collectives), sums are plain sums;
under `pmap` every sum that must cover the global batch goes through `lax.psum` over the axis.
The loss is the global-batch mean: sum of per-example losses over every device divided by the
global weight sum, so gradients, metrics and BatchNorm statistics are identical in every mode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from engine.data.preprocess import preprocess as data_preprocess
from engine.programs.state import TrainState
from engine.programs.tasks import Task
from engine.runtime.program import psum

Batch = dict[str, jax.Array]  # inputs (B, ...), targets (B,) or (B, d), mask (B,) bool


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static parts of a step.

    Attributes:
      image_size: resize image inputs to (image_size, image_size) on device; 0 keeps them.
      augment: `(rng, images) -> images` applied in training only, or None.
      aux_weight: weight of each auxiliary classifier's loss (GoogLeNet), added in training.
      has_batchnorm: whether the variables carry a `batch_stats` collection.
      takes_mask: whether the model's `__call__` takes `mask=` (the zoo's do): with
        BatchNorm, padded rows are then kept out of the batch statistics.
      on_nan: what a step whose loss, gradients or update are not finite does: "stop" keeps
        the whole state as it was (step count included, so the state's `step` + 1 names the
        first bad step), "skip" keeps the BatchNorm statistics (the optimizer is wrapped in
        optax.apply_if_finite, which drops the update and counts it). Either way the step's
        sums carry `nonfinite` (1 for a bad step), so the host learns of it from the sums it
        reads anyway, without a per-step sync.
      ema_decay: the decay of the moving average of the trained variables kept in the state
        (`TrainState.ema`, `ema_update`); 0: none.
      ema_eval: evaluation (validation, selection, test, predict) uses that average, when the
        state has one (`evaluated`).
    """

    image_size: int = 0
    augment: Callable | None = None
    aux_weight: float = 0.3
    has_batchnorm: bool = False
    takes_mask: bool = True
    on_nan: str = "stop"
    ema_decay: float = 0.0
    ema_eval: bool = True


# A step's "first non-finite step" marker is summed as BAD_BASE - step and combined by maximum
# over an epoch (sums named max_...), so the largest marker is the earliest bad step and zero
# means none (zeros are the sums' starting value).
BAD_BASE = 2**30


def first_bad_step(marker) -> int | None:
    """The step number (1-based) an epoch's max_ marker points to, or None when it is zero."""
    marker = int(marker)
    return BAD_BASE - marker + 1 if marker > 0 else None


def optimizer_sums(grads, loss, step, lr) -> dict:
    """Per-layer squared gradient norms and first non-finite markers of one step, as sums.

    Layers are the top-level entries of the parameter tree (a module and everything in it).
    The norms come from the gradients the step already has: no extra pass.

    Args:
      grads: the gradient tree (global-batch gradients).
      loss: the step's loss (scalar).
      step: the state's step count before this update (0-based).
      lr: the learning rate this update uses.
    """
    layers = {
        name: sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(sub))
        for name, sub in grads.items()
    }

    def marker(bad):
        return jnp.where(bad, BAD_BASE - step, 0).astype(jnp.int32)

    total = sum(layers.values())
    return {
        "grad_sq": layers,
        "steps": jnp.ones((), jnp.float32),
        "lr_sum": jnp.asarray(lr, jnp.float32),
        "max_grad_sq": total,
        "max_bad_grad": {k: marker(~jnp.isfinite(v)) for k, v in layers.items()},
        "max_bad_loss": marker(~jnp.isfinite(loss)),
        # The untrained model's loss: only the run's very first step contributes.
        "start_loss": jnp.where(step == 0, loss, 0.0).astype(jnp.float32),
        "starts": (step == 0).astype(jnp.float32),
    }


def preprocess(norm: dict, inputs: jax.Array, cfg: StepConfig, rng=None) -> jax.Array:
    """`engine.data.preprocess` with the step's image size and augmentation (`rng`: training)."""
    return data_preprocess(norm, inputs, image_size=cfg.image_size, augment=cfg.augment, rng=rng)


def _variables(state: TrainState, params, cfg: StepConfig) -> dict:
    if cfg.has_batchnorm:
        return {"params": params, "batch_stats": state.batch_stats}
    return {"params": params}


def summarize_optimizer(sums: dict) -> dict:
    """An epoch's `optimizer_sums` (host NumPy) as the numbers logs and the doctor read.

    Returns:
      `lr` (mean over the epoch's steps), `grad_norm` (root mean square over steps of the global
      gradient norm), `max_grad_norm` (the largest step's), `layers` ({name: RMS norm}),
      `first_nonfinite_step` (1-based, None when every step was finite) and
      `first_nonfinite_layers` (the layers non-finite at that step; empty when only the loss),
      `first_nonfinite_loss_step` (the first step whose loss was not finite, or None),
      `initial_loss` (the first step's loss, before any update: in the run's first epoch only).
    """
    steps = max(float(sums["steps"]), 1.0)
    layers = {k: float(np.sqrt(np.float64(v) / steps)) for k, v in sums["grad_sq"].items()}
    bad = {k: first_bad_step(v) for k, v in sums["max_bad_grad"].items()}
    firsts = [s for s in (*bad.values(), first_bad_step(sums["max_bad_loss"])) if s is not None]
    first = min(firsts) if firsts else None
    return {
        "lr": float(sums["lr_sum"]) / steps,
        "grad_norm": float(np.sqrt(sum(np.float64(v) for v in sums["grad_sq"].values()) / steps)),
        "max_grad_norm": float(np.sqrt(np.float64(sums["max_grad_sq"]))),
        "layers": layers,
        "first_nonfinite_step": first,
        "first_nonfinite_layers": sorted(k for k, v in bad.items() if v is not None and v == first),
        "first_nonfinite_loss_step": first_bad_step(sums["max_bad_loss"]),
        "initial_loss": float(sums["start_loss"]) if float(sums["starts"]) > 0 else None,
    }


def _loss(
    model, task, cfg, axis_name, mutable, companion, state, x, batch, dropout_rng, soft, params
):
    """The step's scalar loss of `params` (the global-batch mean, auxiliary heads weighted in).

    Returns (loss, (loss, outputs, the model's mutable updates)): `jax.grad`'s aux.
    """
    targets, mask = batch["targets"], batch["mask"]
    # The padding rows of a partial batch stay out of BatchNorm's statistics too.
    bn_mask = {"mask": mask} if cfg.has_batchnorm and cfg.takes_mask else {}
    outputs, updates = model.apply(
        _variables(state, params, cfg),
        x,
        train=True,
        rngs={"dropout": dropout_rng},
        mutable=mutable,
        **bn_mask,
    )
    values, weights = task.loss(outputs, targets, mask, state.norm)
    total = psum(jnp.sum(weights), axis_name)
    if companion is not None:
        values = companion.mix(values, weights, outputs, soft)
    loss = jnp.sum(values) / total
    for (aux,) in updates.get("aux_outputs", {}).values():
        aux_values, _ = task.loss(aux, targets, mask, state.norm)
        loss = loss + cfg.aux_weight * jnp.sum(aux_values) / total
    return loss, (loss, outputs, updates)


def make_train_step(
    model,
    tx,
    task: Task,
    cfg: StepConfig,
    axis_name: str | None = None,
    *,
    lr_schedule: Callable | None = None,
    grad_accum_steps: int = 1,
    companion=None,
):
    """Returns the pure `train_step(state, batch) -> (state, metric sums)`.

    With `lr_schedule`, the sums also hold `optimizer_sums` (per-layer gradient norms, the
    learning rate, first non-finite markers) under the key "optim".

    Args:
      model: flax module (built with `bn_axis_name=axis_name` when it has BatchNorm).
      tx: the optax chain.
      task: the task adapter (loss and metrics).
      cfg: static step options.
      axis_name: the pmap axis to sum over, or None when arrays are global (jit).
      lr_schedule: the optax schedule of the chain (a function of the update count).
      grad_accum_steps: micro-steps per update (the schedule counts updates).
      companion: a frozen model beside the trained one, or None: its `outputs(frozen, inputs,
        rng)` sees the same (augmented) batch inside this step, from the state's `frozen`
        variables, and `mix(values, weights, outputs, soft)` mixes its outputs into the
        per-example loss (e.g. soft targets); the reported loss stays the task's.
    """
    mutable = (["batch_stats"] if cfg.has_batchnorm else []) + ["aux_outputs"]

    def train_step(state: TrainState, batch: Batch):
        aug_rng, dropout_rng = _step_rngs(state, axis_name)
        x = preprocess(state.norm, batch["inputs"], cfg, aug_rng)
        targets, mask = batch["targets"], batch["mask"]

        soft = None
        if companion is not None:
            soft = jax.lax.stop_gradient(companion.outputs(state.frozen, batch["inputs"], aug_rng))

        loss_fn = functools.partial(
            _loss,
            model,
            task,
            cfg,
            axis_name,
            mutable,
            companion,
            state,
            x,
            batch,
            dropout_rng,
            soft,
        )
        grads, (loss, outputs, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        grads = psum(grads, axis_name)
        metrics = psum(task.metrics(outputs, targets, mask, state.norm), axis_name)
        grads, finite = _judged(grads, metrics, cfg.on_nan)
        update = functools.partial(
            _apply_update,
            tx,
            grads,
            updates.get("batch_stats", state.batch_stats),
            finite,
            (cfg.ema_decay, grad_accum_steps),
        )
        if cfg.on_nan == "stop":
            new_state = jax.lax.cond(finite, update, lambda state: state, state)
        else:
            new_state = update(state)
        metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.int32)
        if lr_schedule is not None:
            # Gradients are already global here; under pmap each device holds a part of the
            # global-batch loss, whose sum is the loss.
            lr = lr_schedule(state.step // grad_accum_steps)
            metrics["optim"] = optimizer_sums(grads, psum(loss, axis_name), state.step, lr)
        return new_state, metrics

    return train_step


def _step_rngs(state: TrainState, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """(augmentation key, dropout key) of this step, on this device."""
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
        # One replicated key would give every device the same dropout mask.
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    aug_rng, dropout_rng = jax.random.split(rng)
    return aug_rng, dropout_rng


def _judged(grads, metrics: dict, on_nan: str):
    """(gradients, whether the step is finite), from the globally summed gradients and metrics.

    Judged on globally reduced values, so every device and process decides the same. Finite
    loss, metrics and gradients make a finite update (clipping, Adam's moments and the schedules
    are bounded), so the judgement comes before the update, and `--on_nan=stop` can branch
    around it: a select between the new and the old state after the update was one more pass
    over parameters and moments: a ResNet-18 digits step on CPU took 233 ms with it, 165 ms with
    the branch (jax.profiler traces).
    """
    if on_nan == "skip":
        # A non-finite loss can have finite gradients (a `where` that selects NaN): mark them
        # non-finite so optax.apply_if_finite drops (and counts) that update too.
        nan = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), grads)
        grads = keep_if(all_finite(metrics), grads, nan)
    return grads, all_finite((metrics, grads))


def _apply_update(tx, grads, batch_stats, finite, ema, state: TrainState) -> TrainState:
    """`state` after one optimizer update with `grads` and the step's new BatchNorm statistics.

    `--on_nan=skip` drops a bad update inside the chain (optax.apply_if_finite); the batch
    statistics of that step are dropped here (`finite` False keeps the old ones), and so is
    the moving average's move. `ema` is (decay, micro-steps per update) for `ema_update`.
    """
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        opt_state=opt_state,
        batch_stats=keep_if(finite, batch_stats, state.batch_stats),
    )
    return ema_update(new, *ema, finite)


def ema_update(state: TrainState, decay: float, every: int = 1, finite=True) -> TrainState:
    """`state`, just updated, with its moving average (`state.ema`) moved toward the new values.

    The average is debiased (Adam's correction, `optax.ema(debias=True)`): after t updates it
    is sum_i w_i v_i over the values v_1..v_t the updates produced, with w_i proportional to
    decay**(t - i) and summing to 1. It is kept in that corrected form, so evaluation reads it
    as it is, by moving it with the per-update decay d_t = decay (1 - decay**(t-1)) /
    (1 - decay**t): d_1 = 0 (the first update's values; the starting copy never counts), then
    d_t -> decay. A plain decay from the initial copy (timm's) would keep decay**t of the random
    initialisation: 58% after digits' 540 updates at 0.999.

    Both the parameters and the BatchNorm statistics are averaged (timm's ModelEmaV2/V3 default
    averages every float buffer of the model). Under gradient accumulation the average moves
    only on the micro-steps that apply an update (state.step a multiple of `every`), and not on
    a step `finite` is False for.
    """
    if not state.ema:
        return state
    # At least 1: a micro-step before the first update is not applied, and must not divide by 0.
    updates = jnp.maximum(state.step // every, 1).astype(jnp.float32)
    decay = jnp.float32(decay)
    rate = decay * (1.0 - decay ** (updates - 1.0)) / (1.0 - decay**updates)
    values = {"params": state.params, "batch_stats": state.batch_stats}
    moved = jax.tree.map(
        lambda e, v: (rate * e + (1.0 - rate) * v).astype(e.dtype), state.ema, values
    )
    applied = jnp.logical_and(state.step % every == 0, finite)
    return state.replace(ema=keep_if(applied, moved, state.ema))


def evaluated(state, ema_eval: bool = True):
    """The state evaluation reads: with the moving average's variables when there is one.

    The average's parameters and BatchNorm statistics take the trained ones' places when the
    state keeps an average and `ema_eval`; any other state (a program's own dict of nets) is
    returned as it is.
    """
    if not ema_eval or not isinstance(state, TrainState) or not state.ema:
        return state
    return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def all_finite(tree) -> jax.Array:
    """Whether every floating-point value in `tree` is finite (one boolean scalar)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def keep_if(ok: jax.Array, new, old):
    """`new` where `ok`, else `old`, leaf by leaf (a select: no branch inside the step)."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def eval_metrics(model, task: Task, cfg: StepConfig):
    """`(state, batch) -> metric sums` of one batch in evaluation mode (this device's rows).

    Evaluation uses no dropout and BatchNorm's running statistics. `programs.summing_eval`
    turns it into the chained `eval_step(state, batch, totals)`: independent steps could be
    run in a different order on different processes, and their cross-device sums would then
    deadlock (seen with two CPU processes); the chain also saves one dispatch per batch.
    """

    def metrics(state: TrainState, batch: Batch) -> dict:
        return task.metrics(
            outputs(model, cfg, state, batch["inputs"]), batch["targets"], batch["mask"], state.norm
        )

    return metrics


def outputs(model, cfg: StepConfig, state: TrainState, inputs: jax.Array) -> jax.Array:
    """The model's evaluation-mode outputs on raw `inputs` (normalised and resized here)."""
    x = preprocess(state.norm, inputs, cfg)
    state = evaluated(state, cfg.ema_eval)
    return model.apply(_variables(state, state.params, cfg), x, train=False)
