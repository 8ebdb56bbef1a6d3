"""The settings of where it runs and what it leaves: devices, processes, checkpoints, output."""

from __future__ import annotations

import dataclasses

from engine.config.fields.rules import POSITIVE, at_least
from engine.config.schema import ConfigError, setting


def parse_window(spec: str) -> tuple[int, int] | None:
    """`--profile`'s `"START:STOP"` as two step numbers, or None for an empty spec.

    Raises:
      ConfigError: one line when the spec is not `START:STOP` with 1 <= START <= STOP.

    >>> parse_window("10:20"), parse_window("")
    ((10, 20), None)
    """
    if not spec:
        return None
    start, sep, stop = spec.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first = last = -1
    if not sep or first < 1 or last < first:
        raise ConfigError(
            f"--profile={spec} must be START:STOP, train step numbers with 1 <= START <= STOP "
            "(e.g. --profile=10:20)"
        )
    return first, last


# The experiment trackers `--tracker` may name (engine.runtime.callbacks.trackers, logs).
TRACKERS = ("tensorboard", "mlflow", "wandb")


def _tracker_check(names: tuple[str, ...]) -> str | None:
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        return (
            f"--tracker={','.join(unknown)} is not a tracker; choose among: "
            f"{', '.join(TRACKERS)} (comma-separated; empty: none)"
        )
    return None


def _window_check(spec: str) -> str | None:
    try:
        parse_window(spec)
    except ConfigError as e:
        return str(e)
    return None


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Output:
    """Devices and processes (the "devices" group), checkpoints and output ("output")."""

    parallel: str = setting(
        "jit",
        "device parallelism",
        group="devices",
        choices=("jit", "pmap", "none"),
        evaluation=True,
    )
    sharding: str = setting(
        "replicated",
        "how --parallel=jit lays out parameters and optimizer state over the devices: "
        "replicated (a whole copy on each) or fsdp (each large leaf split over the devices "
        "along one dimension, ZeRO-3 style; XLA gathers it for each layer)",
        group="devices",
        choices=("replicated", "fsdp"),
        evaluation=True,
    )
    coordinator_address: str = setting(
        "",
        "HOST:PORT of process 0 for multi-process runs (Cloud TPU, SLURM srun: automatic)",
        group="devices",
        evaluation=True,
    )
    num_processes: int = setting(
        0,
        "number of processes in a multi-process run (0: automatic/one)",
        group="devices",
        check=at_least(0),
        evaluation=True,
    )
    process_id: int = setting(
        -1,
        "this process's index in a multi-process run (-1: automatic)",
        group="devices",
        evaluation=True,
    )

    # Checkpoints and output.
    max_to_keep: int = setting(
        2, "how many latest checkpoints to keep", group="output", check=POSITIVE
    )
    checkpoint_every: int = setting(
        0,
        "also checkpoint inside an epoch every N train steps (0: off); a resumed run "
        "continues the epoch at the next batch",
        group="output",
        check=at_least(0, " (0: off)"),
    )
    checkpoint_minutes: float = setting(
        5.0,
        "also checkpoint inside an epoch every M minutes of training (0: off), so a kill "
        "loses at most that much work",
        group="output",
        check=at_least(0, " (0: off)"),
    )
    stop_after_epoch: int = setting(
        0,
        "stop after this epoch (resumable by rerunning); 0: train to --epochs",
        group="output",
        check=at_least(0),
    )
    callbacks: tuple[str, ...] = setting(
        (),
        "comma-separated names of registered callbacks to add to the run (a --plugins module "
        "registers them: engine.runtime.callbacks.registry.register)",
        group="output",
    )
    tracker: tuple[str, ...] = setting(
        ("tensorboard",),
        "comma-separated experiment trackers, each logging the settings, every epoch's metrics "
        "and the workdir's artifacts: tensorboard (WORKDIR/tensorboard), mlflow, wandb (the "
        "last two are pip extras: jaxtrain[mlflow], jaxtrain[wandb]); empty: none",
        group="output",
        check=_tracker_check,
    )
    mlflow_uri: str = setting(
        "",
        "--tracker=mlflow's tracking URI (a server's http://HOST:PORT, a database); empty: a "
        "sqlite store in the workdir (sqlite:///WORKDIR/mlflow.db)",
        group="output",
    )
    summary: bool = setting(False, "print the model summary and exit", group="output")
    final_test: bool = setting(
        True,
        "test the best checkpoint on the test split at the end of training (off: validate "
        "only, e.g. for search trials; test later with --mode=eval)",
        group="output",
    )
    progress: bool = setting(
        True, "show a progress line for the whole run (with ETA)", group="output", evaluation=True
    )
    doctor: bool = setting(
        True,
        "diagnose the run after every epoch and at the end (doctor.json); costs one "
        "evaluation pass over a training subset per epoch",
        group="output",
    )
    profile: str = setting(
        "",
        "START:STOP: write a jax.profiler trace of those train steps to WORKDIR/profile "
        "(TensorBoard or Perfetto) and print where their time goes (compile, host, device)",
        group="output",
        check=_window_check,
    )
    compile_cache: str = setting(
        "on",
        "JAX's persistent compilation cache, so a second start skips compiles: on "
        "(~/.cache/jaxtrain/xla, or under $XDG_CACHE_HOME), off, or a folder",
        group="output",
        check=(bool, "must be on, off or a folder"),
        evaluation=True,
    )
