"""The supervised program: one model, one optax chain, a task adapter (classification/regression).

Its pure steps are `engine.steps`'; this module only assembles them into a `Program` with the
state's initialisation, the summary of the metric sums, and inference for `engine.load`.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

from engine import state as state_lib
from engine import steps, tasks
from engine.data.source import CLASSIFICATION
from engine.programs import Program, summing_eval

# Which way each summary number improves (what `--monitor=val_NAME` needs to know).
HIGHER_IS_BETTER = {"loss": False, "accuracy": True, "mae": False, "rmse": False, "r2": True}


def takes_mask(model) -> bool:
    """Whether the module's `__call__` takes `mask=` (the zoo's do; a user's module may not)."""
    try:
        return "mask" in inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        return False


def summarize(sums: dict) -> dict:
    """The task's numbers, the optimizer's ("optim") and `nonfinite_steps` when there were any."""
    sums = dict(sums)
    optim = sums.pop("optim", None)
    out = tasks.summarize(sums)
    if optim is not None:
        out["optim"] = steps.summarize_optimizer(optim)
    bad = int(sums.get("nonfinite", 0))
    if bad:
        out["nonfinite_steps"] = bad
    return out


def _predictions(out: jax.Array, task: tasks.Task, norm: dict) -> dict:
    """What `engine.load(...).predict` returns for the model's (N, K) float32 outputs.

    Regression: the outputs mapped back to target units. Classification: the class and its
    probability (one binary logit: sigmoid; else softmax).
    """
    if task.kind != CLASSIFICATION:
        return {"outputs": out, "prediction": out * norm["target_scale"] + norm["target_shift"]}
    if task.num_outputs == 1:  # one binary logit
        p = jax.nn.sigmoid(out[:, 0])
        pred = (out[:, 0] > 0).astype(jnp.int32)
        return {"outputs": out, "prediction": pred, "confidence": jnp.where(pred == 1, p, 1 - p)}
    probs = jax.nn.softmax(out, axis=-1)
    return {
        "outputs": out,
        "prediction": jnp.argmax(out, axis=-1).astype(jnp.int32),
        "confidence": jnp.max(probs, axis=-1),
    }


def make(
    model,
    tx: optax.GradientTransformation,
    task: tasks.Task,
    cfg: steps.StepConfig,
    axis_name: str | None,
    *,
    input_shape: tuple[int, ...],
    norm: dict[str, np.ndarray],
    notes: tuple[str, ...] = (),
    lr_schedule=None,
    grad_accum_steps: int = 1,
    distill=None,
    frozen=None,
) -> Program:
    """Builds the supervised program.

    Args:
      model: a flax module called as `model.apply(variables, x, train=bool)`.
      tx: the optax chain.
      task: the task adapter (loss and metric sums).
      cfg: the steps' static options.
      axis_name: the pmap axis, or None under jit.
      input_shape: one example as the model sees it (after resizing), for initialisation.
      norm: the training split's normalisation constants, kept in the state.
      notes: lines to print at the start.
      lr_schedule: the chain's learning-rate schedule; given, the train sums also carry the
        learning rate and per-layer gradient norms (`steps.optimizer_sums`), summarized
        under "optim".
      grad_accum_steps: micro-steps per optimizer update (the schedule counts updates).
      distill: an `engine.programs.distill.Distillation` whose teacher's variables are
        `frozen` (kept in the state, outside the optimizer), or None.
    """
    metrics = steps.eval_metrics(model, task, cfg)
    eval_step, eval_zeros = summing_eval(metrics, axis_name)
    sample = np.zeros((1, *input_shape), np.float32)

    def init(rng, batch):
        del batch  # the model is initialised at its own input shape (after resizing)
        return state_lib.create(model, tx, rng=rng, sample_input=sample, norm=norm, frozen=frozen)

    def infer(state, inputs):
        out = steps.outputs(model, cfg, state, inputs).astype(jnp.float32)
        return _predictions(out, task, state.norm)

    names = ("loss", "accuracy") if task.kind == CLASSIFICATION else ("loss", "mae", "rmse", "r2")
    return Program(
        init=init,
        train_step=steps.make_train_step(
            model,
            tx,
            task,
            cfg,
            axis_name,
            lr_schedule=lr_schedule,
            grad_accum_steps=grad_accum_steps,
            distill=distill,
        ),
        eval_step=eval_step,
        eval_zeros=eval_zeros,
        summarize=summarize,
        higher_is_better={n: HIGHER_IS_BETTER[n] for n in names},
        monitor=f"val_{task.monitor}",
        infer=infer,
        notes=notes,
    )
