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
import numpy as np
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
    """

    image_size: int = 0
    augment: Callable | None = None
    aux_weight: float = 0.3
    has_batchnorm: bool = False


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

        # The padding rows of a partial batch stay out of BatchNorm's statistics too.
        bn_mask = {"mask": mask} if cfg.has_batchnorm else {}

        def loss_fn(params):
            outputs, updates = model.apply(
                _variables(state, params, cfg),
                x,
                train=True,
                rngs={"dropout": dropout_rng},
                mutable=mutable,
                **bn_mask,
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
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            batch_stats=updates.get("batch_stats", state.batch_stats),
        )
        metrics = _psum(task.metrics(outputs, targets, mask, state.norm), axis_name)
        return new_state, metrics

    return train_step


def _eval_metrics(model, task: Task, cfg: StepConfig, state: TrainState, batch: Batch) -> dict:
    """One batch's metric sums in evaluation mode (no dropout, running BatchNorm statistics)."""
    x = preprocess(state, batch["inputs"], cfg)
    outputs = model.apply(_variables(state, state.params, cfg), x, train=False)
    return task.metrics(outputs, batch["targets"], batch["mask"], state.norm)


def make_eval_step(model, task: Task, cfg: StepConfig, axis_name: str | None = None):
    """Returns the pure `eval_step(state, batch, totals) -> totals + this batch's metric sums`.

    Evaluation uses no dropout and BatchNorm's running statistics. The running totals are an
    argument so that successive evaluation steps form a chain: independent steps could be run
    in a different order on different processes, and their cross-device sums would then
    deadlock (seen with two CPU processes); the chain also saves one dispatch per batch.
    """

    def eval_step(state: TrainState, batch: Batch, totals):
        metrics = _eval_metrics(model, task, cfg, state, batch)
        return jax.tree.map(jnp.add, totals, _psum(metrics, axis_name))

    return eval_step


def metric_zeros(model, task: Task, cfg: StepConfig, abstract_state, batch: Batch):
    """Zero metric sums shaped like `eval_step`'s totals (shapes only: nothing is compiled).

    Args:
      abstract_state: the state's ShapeDtypeStructs (or arrays).
      batch: a host batch (one row is enough).
    """
    row = jax.tree.map(lambda v: v[:1], batch)
    shapes = jax.eval_shape(
        lambda state, b: _eval_metrics(model, task, cfg, state, b), abstract_state, row
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def accumulating(train_step):
    """Wraps `train_step` to `(state, batch, totals) -> (state, totals + metrics)`.

    Compiled together, the step and the running metric sums are one dispatch per batch (a
    separate add was a second dispatch, ~4% of a small MLP's step on this CPU).
    """

    def step(state, batch, totals):
        state, metrics = train_step(state, batch)
        return state, jax.tree.map(jnp.add, totals, metrics)

    return step
