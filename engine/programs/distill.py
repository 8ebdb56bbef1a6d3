"""Knowledge distillation: a trained, frozen teacher's softened outputs as a second target.

Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network": the student's
per-example loss is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss

The factor T^2 keeps the soft term's gradients at the same scale whatever the temperature (they
shrink as 1/T^2). The teacher is any trained workdir of the same dataset (`--teacher=WORKDIR`);
its variables ride in the state's `frozen` part, outside the optimizer, and its outputs are
computed inside the student's jitted step on the same augmented batch, with the teacher's own
normalisation and image size. The supervised program does the rest: its step calls
`Distillation.outputs` and `.mix` (`engine.programs.steps`, the `companion`).

The program is registered as `distill`; giving `--teacher` selects it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import losses
from engine.config import POSITIVE, Config, ConfigError, setting
from engine.programs import registry, steps, supervised
from engine.runtime.program import Program

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


def load(
    spec: str,
    trained,
    *,
    temperature: float,
    alpha: float,
    dataset: str,
    num_outputs: int,
    augment,
) -> tuple[Distillation, dict, str]:
    """Loads the teacher of `--teacher=WORKDIR[:best|latest]`.

    Args:
      spec: the teacher's workdir, optionally with the checkpoint to use (best by default).
      trained: `Run.trained`, which restores another trained run.
      temperature, alpha: the distillation settings.
      dataset: the student's dataset, which the teacher must have been trained on.
      num_outputs: the student's head size, which the teacher's must equal.
      augment: the student's augmentation (`StepConfig.augment`), applied to the teacher's
        view of each batch with the same key.

    Returns:
      (the distillation, the teacher's variables for `TrainState.frozen`, a note to print).

    Raises:
      ConfigError: one line naming a missing run, another dataset or another head.
    """
    try:
        teacher = trained(spec)
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
        f"distilling from {teacher.setup.workdir} ({teacher.config.arch}, {teacher.which} "
        "checkpoint of epoch "
        f"{teacher.epoch}) at temperature {temperature:g}, alpha {alpha:g}"
    )
    return Distillation(teacher.setup.run.model, step_config, temperature, alpha), frozen, note


def factory(config: Config, run: registry.Run, axis_name: str | None) -> Program:
    """The supervised program of `run` with `--teacher`'s soft targets mixed into its loss."""
    made = supervised.parts(config, run)
    distillation, frozen, note = load(
        config.teacher,
        run.trained,
        temperature=config.distill_temperature,
        alpha=config.distill_alpha,
        dataset=config.dataset,
        num_outputs=run.task.num_outputs,
        augment=run.step_config.augment,
    )
    return supervised.make(
        run.model,
        made.tx,
        run.task,
        run.step_config,
        axis_name,
        notes=(*made.notes, note),
        companion=distillation,
        frozen=frozen,
        **made.common,
    )


SETTINGS = {
    "teacher": setting(
        "",
        "WORKDIR[:best|latest] of a trained run of the same dataset to distil from: the loss "
        "becomes alpha*T^2*KL(teacher/T || student/T) + (1-alpha)*--loss",
        model=True,  # the teacher's variables are part of the state
        remote=True,
    ),
    "distill_temperature": setting(
        DEFAULT_TEMPERATURE,
        "T, the temperature of both nets' softmax in distillation",
        check=POSITIVE,
    ),
    "distill_alpha": setting(
        DEFAULT_ALPHA,
        "weight of the teacher's soft targets in distillation (1-alpha: --loss)",
        check=(lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ),
}

SPEC = registry.register(
    registry.ProgramSpec(
        name="distill",
        help="knowledge distillation: the supervised program with a trained teacher's soft "
        "targets in its loss (selected by --teacher)",
        make=factory,
        settings=SETTINGS,
        claims=lambda config: bool(config.teacher),
    )
)
