"""Pure `train_step` and `eval_step`: one definition for one device, jit-sharded and pmap runs.

The only difference between the parallel modes lives in `axis_name`: with None (plain jit, or
jit with shardings, where arrays are global and XLA inserts the collectives), sums are plain sums;
under `pmap` every sum that must cover the global batch goes through `lax.psum` over the axis.
The loss is the global-batch mean: sum of per-example losses over every device divided by the
global weight sum, so gradients, metrics and BatchNorm statistics are identical in every mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from engine.state import TrainState
from engine.tasks import Task

Batch = dict[str, jax.Array]  # inputs (B, ...), targets (B,) or (B, d), mask (B,) bool


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static parts of a step.

    Attributes:
      image_size: resize image inputs to (image_size, image_size) on device; 0 keeps them.
      augment: `(rng, images) -> images` applied in training only, or None.
      aux_weight: weight of each auxiliary classifier's loss (GoogLeNet), added in training.
      has_batchnorm: whether the variables carry a `batch_stats` collection.
      on_nan: what a step whose loss, gradients or update are not finite does: "stop" keeps
        the whole state as it was (step count included, so the state's `step` + 1 names the
        first bad step), "skip" keeps the BatchNorm statistics (the optimizer is wrapped in
        optax.apply_if_finite, which drops the update and counts it). Either way the step's
        sums carry `nonfinite` (1 for a bad step), so the host learns of it from the sums it
        reads anyway, without a per-step sync.
    """

    image_size: int = 0
    augment: Callable | None = None
    aux_weight: float = 0.3
    has_batchnorm: bool = False
    on_nan: str = "stop"


def _psum(tree, axis_name):
    if axis_name is None:
        return tree
    return jax.lax.psum(tree, axis_name)


def preprocess(state: TrainState, inputs: jax.Array, cfg: StepConfig, rng=None) -> jax.Array:
    """Normalises with training statistics, resizes images and (with `rng`) augments, on device."""
    x = (inputs.astype(jnp.float32) - state.norm["input_shift"]) / state.norm["input_scale"]
    if cfg.image_size and x.ndim == 4 and x.shape[1:3] != (cfg.image_size, cfg.image_size):
        shape = (x.shape[0], cfg.image_size, cfg.image_size, x.shape[3])
        x = jax.image.resize(x, shape, method="bilinear")
    if rng is not None and cfg.augment is not None:
        x = cfg.augment(rng, x)
    return x


def _variables(state: TrainState, params, cfg: StepConfig) -> dict:
    if cfg.has_batchnorm:
        return {"params": params, "batch_stats": state.batch_stats}
    return {"params": params}


def make_train_step(model, tx, task: Task, cfg: StepConfig, axis_name: str | None = None):
    """Returns the pure `train_step(state, batch) -> (state, metric sums)`.

    Args:
      model: flax module (built with `bn_axis_name=axis_name` when it has BatchNorm).
      tx: the optax chain.
      task: the task adapter (loss and metrics).
      cfg: static step options.
      axis_name: the pmap axis to sum over, or None when arrays are global (jit).
    """
    mutable = (["batch_stats"] if cfg.has_batchnorm else []) + ["aux_outputs"]

    def train_step(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            # One replicated key would give every device the same dropout mask.
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        aug_rng, dropout_rng = jax.random.split(rng)
        x = preprocess(state, batch["inputs"], cfg, aug_rng)
        targets, mask = batch["targets"], batch["mask"]

        def loss_fn(params):
            outputs, updates = model.apply(
                _variables(state, params, cfg),
                x,
                train=True,
                rngs={"dropout": dropout_rng},
                mutable=mutable,
            )
            values, weights = task.loss(outputs, targets, mask, state.norm)
            total = _psum(jnp.sum(weights), axis_name)
            loss = jnp.sum(values) / total
            for (aux,) in updates.get("aux_outputs", {}).values():
                aux_values, _ = task.loss(aux, targets, mask, state.norm)
                loss = loss + cfg.aux_weight * jnp.sum(aux_values) / total
            return loss, (outputs, updates)

        grads, (outputs, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        grads = _psum(grads, axis_name)
        metrics = _psum(task.metrics(outputs, targets, mask, state.norm), axis_name)
        if cfg.on_nan == "skip":
            # A non-finite loss can have finite gradients (a `where` that selects NaN): mark
            # them non-finite so optax.apply_if_finite drops (and counts) that update too.
            nan = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), grads)
            grads = keep_if(all_finite(metrics), grads, nan)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)
        # Judged on globally reduced values, so every device and process decides the same.
        finite = all_finite((metrics, grads, param_updates))
        batch_stats = updates.get("batch_stats", state.batch_stats)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            batch_stats=keep_if(finite, batch_stats, state.batch_stats),
        )
        if cfg.on_nan == "stop":
            new_state = keep_if(finite, new_state, state)
        metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.int32)
        return new_state, metrics

    return train_step


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
    x = preprocess(state, inputs, cfg)
    return model.apply(_variables(state, state.params, cfg), x, train=False)


def accumulating(train_step):
    """Wraps `train_step` to `(state, batch, totals) -> (state, totals + metrics)`.

    Compiled together, the step and the running metric sums are one dispatch per batch (a
    separate add was a second dispatch, ~4% of a small MLP's step on this CPU).
    """

    def step(state, batch, totals):
        state, metrics = train_step(state, batch)
        return state, jax.tree.map(jnp.add, totals, metrics)

    return step
