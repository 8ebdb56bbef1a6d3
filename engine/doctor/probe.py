"""What the doctor measures beside the loop: the training split in evaluation mode, dead units.

`Probe` is a callback that adds to each epoch's record, before it is logged:
  * `train_eval`: the program's evaluation metrics on a fixed subset of the training split (the
    same measurement as validation, so over/underfitting compares like with like);
  * `probe`: for a supervised model, the share of units never active on one validation batch
    per sown activation, and the share of the most-predicted class.
`input_stats` summarises normalised inputs of the training subset and of validation once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from architectures.layers import ACTIVATIONS_COLLECTION
from architectures.summary import param_order
from engine.data.preprocess import preprocess
from engine.data.source import Subset
from engine.runtime import loop
from engine.runtime.callbacks import Callback

# Examples of the training split measured in evaluation mode each epoch: at least this many,
# or the validation split's size when larger (so both numbers are equally noisy).
MIN_TRAIN_SUBSET = 256


def train_subset(train, val_size: int, seed: int) -> Subset:
    """A fixed, seeded subset of the training split of about the validation split's size."""
    n = min(len(train), max(val_size, MIN_TRAIN_SUBSET))
    rows = np.sort(np.random.default_rng(seed).choice(len(train), n, replace=False))
    return Subset(train, rows)


def layer_order(model, input_shape) -> list[str]:
    """The model's top-level parameter entries in call order (input side first).

    Read from the same cached init trace as the parameter count and the summary
    (`architectures.summary.param_order`), so the doctor costs no extra trace of the model.
    """
    return list(param_order(model, (1, *input_shape)))


def input_stats(source, norm: dict, *, limit: int = 2048) -> dict:
    """Mean and spread of normalised inputs (`(x - shift) / scale`) of up to `limit` rows.

    Returns:
      `mean`, `std` over every value, and `max_std`, the largest per-feature std.
    """
    rows = np.arange(min(len(source), limit))
    x = source.get(rows)[0].astype(np.float64)
    x = (x - np.asarray(norm["input_shift"])) / np.asarray(norm["input_scale"])
    flat = x.reshape(len(x), -1)
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "max_std": float(flat.std(axis=0).max()),
    }


def make_activation_probe(model, step_config, num_outputs: int):
    """`(state, inputs, mask) -> {"dead": {name: share}, "counts": (C,)}`, pure and jittable.

    `step_config` is the run's step options (its image size and whether the model keeps
    BatchNorm statistics).

    A unit (the last axis of a sown activation) is dead when it is not positive for any
    example and position of the batch.
    """

    def probe(state, inputs, mask):
        x = preprocess(state.norm, inputs, image_size=step_config.image_size)
        variables = {"params": state.params}
        if step_config.has_batchnorm:
            variables["batch_stats"] = state.batch_stats
        out, sown = model.apply(variables, x, train=False, mutable=[ACTIVATIONS_COLLECTION])
        dead = {}
        flat = jax.tree_util.tree_flatten_with_path(sown.get(ACTIVATIONS_COLLECTION, {}))[0]
        for path, a in flat:
            name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            active = (a > 0) & mask.reshape((-1,) + (1,) * (a.ndim - 1))
            alive = jnp.any(active.reshape(-1, a.shape[-1]), axis=0)
            dead[name] = 1.0 - jnp.mean(alive)
        out = out.astype(jnp.float32)
        pred = (out[:, 0] > 0).astype(jnp.int32) if num_outputs == 1 else jnp.argmax(out, -1)
        counts = jnp.zeros(max(num_outputs, 2), jnp.float32).at[pred].add(mask)
        return {"dead": dead, "counts": counts}

    return probe


class Probe(Callback):
    """Adds `train_eval` (and, for a supervised model, `probe`) to each epoch's record.

    Args:
      train_loader: a loader of the fixed training subset in evaluation order.
      eval_zeros: `() -> host zeros` of the program's evaluation totals (called at the first
        epoch's end: their trace is not needed before the first step).
      val_batch: one host validation batch for the activation probe, or None.
      activation_probe: `make_activation_probe(...)`'s function, or None.
    """

    def __init__(self, train_loader, eval_zeros, val_batch=None, activation_probe=None):
        self.loader, self.zeros = train_loader, eval_zeros
        self.val_batch, self.activation_probe = val_batch, activation_probe
        self.fit = self.eval_step = self.probe = None

    def on_fit_start(self, fit):
        self.eval_step = fit.plan.wrap_eval(fit.program.eval_step)
        if self.activation_probe is not None and self.val_batch is not None:
            self.probe = jax.jit(self.activation_probe)

    def on_epoch_end(self, epoch, record, state):
        plan = self.fit.plan
        totals = loop.evaluate(self.eval_step, state, self.loader, plan, self.zeros())
        record["train_eval"] = self.fit.program.summarize(totals)
        if self.probe is None:
            return
        one = plan.read(state) if plan.mode == "pmap" else state
        b = self.val_batch
        found = jax.device_get(self.probe(one, b["inputs"], b["mask"]))
        counts = np.asarray(found["counts"], np.float64)
        record["probe"] = {
            "dead_units": {k: float(v) for k, v in found["dead"].items()},
            "top_prediction": int(counts.argmax()),
            "top_prediction_share": float(counts.max() / max(counts.sum(), 1.0)),
        }
