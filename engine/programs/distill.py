"""Knowledge distillation: a trained, frozen teacher's softened outputs as a second target.

Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network": the student's
per-example loss is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss

The factor T^2 keeps the soft term's gradients at the same scale whatever the temperature (they
shrink as 1/T^2). The teacher is any trained workdir of the same dataset (`--teacher=WORKDIR`);
its variables ride in the state's `frozen` part, outside the optimizer, and its outputs are
computed inside the student's jitted step on the same augmented batch, with the teacher's own
normalisation and image size. The supervised program does the rest (`engine.steps` calls
`Distillation.outputs` and `.mix`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import losses
from engine import steps
from engine.config import ConfigError

# Hinton et al.'s range of temperatures, and the usual weight on the soft term.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9


@dataclasses.dataclass(frozen=True)
class Distillation:
    """A frozen teacher and how its soft targets enter the student's loss.

    Attributes:
      teacher: the teacher's flax module (evaluation mode only).
      step_config: the teacher's preprocessing (its image size and BatchNorm) with the
        student's augmentation, so both see the same random crop and flip of each example.
      temperature: T, dividing both nets' logits before the softmax.
      alpha: the soft term's weight (1 - alpha weighs the task's loss).
    """

    teacher: Any
    step_config: steps.StepConfig
    temperature: float
    alpha: float

    def outputs(self, frozen: dict, inputs: jax.Array, rng: jax.Array) -> jax.Array:
        """The teacher's logits (B, C) for raw `inputs`, from `TrainState.frozen`."""
        x = steps.preprocess(frozen["norm"], inputs, self.step_config, rng)
        variables = {"params": frozen["params"]}
        if self.step_config.has_batchnorm:
            variables["batch_stats"] = frozen["batch_stats"]
        return self.teacher.apply(variables, x, train=False)

    def mix(self, values, weights, outputs, soft) -> jax.Array:
        """Per-example loss (B,): the task's `values` mixed with the soft-target KL.

        Args:
          values: the task's per-example losses (B,), already weighted.
          weights: the per-example weights (B,) (0 on padding, class weights if any), which
            weigh the KL term too, so the batch loss stays `sum / sum(weights)`.
          outputs: the student's logits (B, C).
          soft: the teacher's logits (B, C).
        """
        t = self.temperature
        kl = losses.kl_divergence(
            _two_class(outputs) / t,
            jax.nn.softmax(_two_class(soft) / t, axis=-1),
            reduction="none",
        )
        return (1 - self.alpha) * values + self.alpha * t**2 * kl * weights


def _two_class(logits: jax.Array) -> jax.Array:
    """Float32 logits; one binary logit z becomes (0, z), whose softmax is (1 - p, p)."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
    return logits


def check(teacher: str, temperature: float, alpha: float) -> None:
    """Refuses distillation settings that make no sense, before any work.

    Raises:
      ConfigError: one line naming the setting and its valid range.
    """
    if not teacher and (temperature != DEFAULT_TEMPERATURE or alpha != DEFAULT_ALPHA):
        raise ConfigError(
            "--distill_temperature and --distill_alpha set how a teacher is distilled; "
            "give --teacher=WORKDIR of a trained run too"
        )
    if not temperature > 0:
        raise ConfigError(f"--distill_temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--distill_alpha must be in [0, 1], got {alpha}")


def load(
    spec: str,
    *,
    temperature: float,
    alpha: float,
    dataset: str,
    num_outputs: int,
    augment,
    data_dir: str,
) -> tuple[Distillation, dict, str]:
    """Loads the teacher of `--teacher=WORKDIR[:best|latest]`.

    Args:
      spec: the teacher's workdir, optionally with the checkpoint to use (best by default).
      temperature, alpha: the distillation settings (`check`ed by the caller).
      dataset: the student's dataset, which the teacher must have been trained on.
      num_outputs: the student's head size, which the teacher's must equal.
      augment: the student's augmentation (`StepConfig.augment`), applied to the teacher's
        view of each batch with the same key.
      data_dir: where the datasets are.

    Returns:
      (the distillation, the teacher's variables for `TrainState.frozen`, a note to print).

    Raises:
      ConfigError: one line naming a missing run, another dataset or another head.
    """
    from engine import predict
    from engine.finetune import parse_source

    workdir, which = parse_source(spec)
    try:
        teacher = predict.load(workdir, which, data_dir=data_dir)
    except ConfigError as e:
        raise ConfigError(f"--teacher={spec}: {e}") from None
    task = teacher.setup.run.task
    if teacher.config.dataset != dataset:
        raise ConfigError(
            f"--teacher={spec} was trained on --dataset={teacher.config.dataset}, not "
            f"{dataset}; distil from a run of the same dataset"
        )
    if task.kind != "classification" or task.num_outputs != num_outputs:
        raise ConfigError(
            f"--teacher={spec} has {task.num_outputs} {task.kind} outputs, the student "
            f"{num_outputs}; distillation needs the same classes (same --dataset and --classes)"
        )
    state = teacher.state
    frozen = {"params": state.params, "batch_stats": state.batch_stats, "norm": state.norm}
    frozen = jax.device_get(frozen)  # host arrays: the plan places them with the state
    step_config = dataclasses.replace(teacher.setup.run.step_config, augment=augment)
    note = (
        f"distilling from {workdir} ({teacher.config.arch}, {which} checkpoint of epoch "
        f"{teacher.epoch}) at temperature {temperature:g}, alpha {alpha:g}"
    )
    return Distillation(teacher.setup.run.model, step_config, temperature, alpha), frozen, note
