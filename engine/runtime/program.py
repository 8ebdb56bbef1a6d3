"""The program interface: the pure part of a training job (init, steps, summary) the loop runs.

A program knows nothing of epochs, files or devices; the loop (`engine.runtime.loop`) feeds it
batches and `engine.runtime.parallel.Plan` compiles its steps for the parallel mode. Its state is
any pytree of arrays, so one program may hold several models and optimizers as named sub-states
(a generator and a discriminator, a frozen model beside a trained one) and still run in every
parallel mode and checkpoint as one tree.

A program whose steps sum over devices must be built knowing the pmap axis (`axis_name`, None
under jit, where arrays are global): programs are made by factories `(config, run, axis_name)
-> Program` (`engine.programs.registry`), and `psum` sums over that axis when there is one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, Any]  # inputs (B, ...), targets (B,) or (B, d), mask (B,) bool


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure functions of one kind of training, and what their numbers mean.

    Attributes:
      init: `(rng, sample_batch) -> state`: a fresh state (a pytree of arrays) from a PRNG key
        and a one-row host batch of the data's shapes.
      train_step: `(state, batch) -> (state, sums)`: one update; `sums` is a dict of arrays
        summed over the batch (global-batch sums under every parallel mode), added up by the
        loop over an epoch.
      eval_step: `(state, batch, totals) -> totals`: adds one batch's evaluation sums.
      eval_zeros: `(state, sample_batch) -> totals`: host zeros shaped like `eval_step`'s
        totals (shapes only; `state` may be abstract).
      summarize: `sums -> {name: number}`: host NumPy sums of an epoch to the numbers users
        read (train sums and evaluation totals alike).
      higher_is_better: for each summary name that can be monitored, whether higher is better
        (`--monitor=val_NAME` reads the direction here).
      monitor: the default monitored metric, e.g. "val_accuracy".
      infer: optional `(state, inputs) -> {"outputs": ..., "prediction": ..., ...}` for
        `engine.load(...).predict`; pure and jittable.
      notes: lines to print at the start (a model summary, parameter counts).
      callbacks: the program's own host callbacks (`engine.runtime.callbacks.Callback`), run after
        the best tracker in every fit of the program (a grid of generated samples).
    """

    init: Callable[[jax.Array, Batch], Any]
    train_step: Callable[[Any, Batch], tuple[Any, dict]]
    eval_step: Callable[[Any, Batch, Any], Any]
    eval_zeros: Callable[[Any, Batch], Any]
    summarize: Callable[[dict], dict]
    higher_is_better: Mapping[str, bool]
    monitor: str
    infer: Callable[[Any, jax.Array], dict] | None = None
    notes: tuple[str, ...] = ()
    callbacks: tuple[Any, ...] = ()

    def monitor_direction(self, name: str) -> bool:
        """Whether higher is better for a monitor name `train_X` or `val_X`.

        Raises:
          ValueError: one line listing the names this program can monitor.
        """
        split, _, metric = name.partition("_")
        if split not in ("train", "val") or metric not in self.higher_is_better:
            valid = [f"{s}_{m}" for s in ("val", "train") for m in self.higher_is_better]
            raise ValueError(
                f"--monitor={name} is not a metric of this run; valid: {', '.join(valid)}"
            )
        return self.higher_is_better[metric]


def psum(tree, axis_name: str | None):
    """`tree` summed over the pmap axis `axis_name`; unchanged under jit (arrays are global)."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def signature(tree) -> tuple:
    """A hashable key of a tree's structure, leaf shapes and dtypes (arrays or shape structs)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves)


def host_zeros(fn: Callable, axis_name: str | None, *args):
    """Host zeros shaped like `fn(*args)`'s outputs (shapes only: nothing is compiled or run).

    A function that sums over the pmap axis cannot be traced outside pmap; a one-entry `vmap`
    binds `axis_name` for it (and its leading axis is dropped again).
    """
    if axis_name is not None:
        one = jax.vmap(fn, in_axes=None, axis_size=1, axis_name=axis_name)
        shapes = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), jax.eval_shape(one, *args)
        )
    else:
        shapes = jax.eval_shape(fn, *args)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def summing_eval(metrics: Callable[[Any, Batch], dict], axis_name: str | None):
    """`(eval_step, eval_zeros)` for evaluation sums that are plain sums of per-batch sums.

    Args:
      metrics: `(state, batch) -> dict of sums` over this device's rows of one batch.
      axis_name: the pmap axis to sum over, or None when arrays are global (jit).
    """

    def eval_step(state, batch, totals):
        sums = psum(metrics(state, batch), axis_name)
        return jax.tree.map(jnp.add, totals, sums)

    # The last answer is kept: the doctor's probe and the loop both ask at the start, and the
    # shapes only depend on those of the state and of one row.
    last: list = []

    def eval_zeros(state, batch):
        row = jax.tree.map(lambda v: v[:1], batch)
        key = signature((state, row))
        if not (last and last[0][0] == key):
            last[:] = [(key, jax.eval_shape(metrics, state, row))]
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), last[0][1])

    return eval_step, eval_zeros
