"""The supervised program: one model, one optax chain, a task adapter (classification/regression).

Its pure steps are `engine.programs.steps`'; this module assembles them into a `Program` with
the state's initialisation, the summary of the metric sums, and inference for `engine.load`
(`make`, from plain values), builds it from a run's configuration (`factory`), and registers
it: the default program.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

import architectures
from engine.config import Config
from engine.data.source import CLASSIFICATION
from engine.programs import optim, registry, steps, tasks
from engine.programs import state as state_lib
from engine.runtime.program import Program, summing_eval

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
    companion=None,
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
      companion: a frozen model whose outputs enter the loss (`steps.make_train_step`), its
        variables `frozen` (kept in the state, outside the optimizer), or None.
    """
    metrics = steps.eval_metrics(model, task, cfg)
    eval_step, eval_zeros = summing_eval(metrics, axis_name)
    sample = np.zeros((1, *input_shape), np.float32)

    def init(rng, batch):
        del batch  # the model is initialised at its own input shape (after resizing)
        return state_lib.create(
            model, tx, rng=rng, sample_input=sample, norm=norm, frozen=frozen,
            ema=cfg.ema_decay > 0,
        )  # fmt: skip

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
            companion=companion,
        ),
        eval_step=eval_step,
        eval_zeros=eval_zeros,
        summarize=summarize,
        higher_is_better={n: HIGHER_IS_BETTER[n] for n in names},
        monitor=f"val_{task.monitor}",
        infer=infer,
        notes=notes,
    )


@dataclasses.dataclass(frozen=True)
class Parts:
    """What every program of one zoo model builds from its configuration the same way."""

    tx: optax.GradientTransformation
    notes: tuple[str, ...]
    common: dict  # input_shape, lr_schedule, grad_accum_steps, norm: `make`'s keywords


def parts(config: Config, run: registry.Run) -> Parts:
    """The optax chain, the start-up lines (summary, parameters) and `make`'s shared keywords."""
    model, shape = run.model, (1, *run.input_shape)
    params = architectures.count_params(model, shape)
    settings = optim.settings(config)
    notes = (
        architectures.summary(model, shape),
        f"{config.arch}: {params:,} parameters; optimizer {config.optimizer}, "
        f"effective lr {optim.effective_lr(settings):.4g}, schedule {config.schedule}",
    )
    if config.ema_decay > 0:
        used = "evaluated with it" if config.ema_eval == "on" else "kept; --ema_eval=off"
        notes += (
            f"moving average of the parameters and BatchNorm statistics: decay "
            f"{config.ema_decay:g}, debiased; {used}",
        )
    steps_per_epoch = len(run.train_loader)
    common = dict(
        input_shape=run.input_shape,
        lr_schedule=optim.schedule(settings, steps_per_epoch),
        grad_accum_steps=config.grad_accum_steps,
        norm=run.norm,
    )
    return Parts(optim.make(settings, steps_per_epoch), notes, common)


def factory(config: Config, run: registry.Run, axis_name: str | None) -> Program:
    """The supervised program of `run`: its model, task and the configuration's optax chain."""
    made = parts(config, run)
    return make(run.model, made.tx, run.task, run.step_config, axis_name, notes=made.notes,
                **made.common)  # fmt: skip


SPEC = registry.register(
    registry.ProgramSpec(
        name=registry.DEFAULT,
        help="one model of the zoo (or your own) trained on the dataset's labels: "
        "classification or regression, with the loss's task",
        make=factory,
    )
)
