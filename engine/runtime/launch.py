"""Starting multi-process JAX: explicit flags, or a cluster's own environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

from engine.config import ConfigError

# What JAX's own SLURM detection (jax/_src/clusters/slurm_cluster.py) reads; it applies only
# when all five are set (inside an `srun` step). It takes the coordinator's host from the first
# node of SLURM_STEP_NODELIST, its port from SLURM_JOB_ID (61440 + id % 4096, or
# JAX_COORDINATOR_PORT), and keeps only device SLURM_LOCALID visible (one process per GPU).
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
# Set by Kubernetes in each pod of a Job with `completionMode: Indexed`: 0 .. completions - 1.
K8S_INDEX = "JOB_COMPLETION_INDEX"
# Read by JAX itself: a coordinator set by hand, Cloud TPU (GKE) workers.
JAX_VARS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES")
K8S_FIX = (
    "pass --num_processes=N (the Job's completions) and "
    "--coordinator_address=JOB-0.SERVICE:PORT (docs/gpus.md#clusters-slurm-and-kubernetes), "
    "or --num_processes=1 for independent one-process runs"
)


def cluster_settings(
    environ: Mapping[str, str],
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
) -> tuple[str, dict] | None:
    """How this process starts multi-process JAX, from the flags and the environment.

    The first that applies: "kubernetes" (JOB_COMPLETION_INDEX, an indexed Job: the process id;
    the flags give the coordinator and the process count), "flags" (`--num_processes` > 1 or a
    coordinator), "slurm" (an `srun` step of several tasks: JAX's own detection), "jax"
    (JAX_COORDINATOR_ADDRESS or TPU_WORKER_HOSTNAMES: JAX's own detection). `--num_processes=1`
    is one process whatever the environment says.

    Returns:
      (the source's name, keyword arguments of `jax.distributed.initialize`), or None for a
      single process (nothing to start).

    Raises:
      ConfigError: a cluster's variable is missing, malformed or disagrees with a flag.
    """
    if K8S_INDEX in environ and num_processes != 1:
        return "kubernetes", _indexed_job(environ, coordinator_address, num_processes, process_id)
    if num_processes > 1 or coordinator_address:
        return "flags", {
            "coordinator_address": coordinator_address or None,
            "num_processes": num_processes or None,
            "process_id": process_id if process_id >= 0 else None,
        }
    if num_processes == 1:
        return None
    if "SLURM_JOB_ID" in environ and (slurm := _slurm(environ)) is not None:
        return slurm
    if any(k in environ for k in JAX_VARS):
        return "jax", {}
    return None


def _integer(environ: Mapping[str, str], name: str, fix: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ConfigError(f"{name}={environ[name]!r} is not an integer; {fix}") from None


def _indexed_job(environ, coordinator_address, num_processes, process_id) -> dict:
    """A Kubernetes indexed Job's settings: its index and the two flags it cannot supply.

    JAX's own Kubernetes detection asks the cluster's API for the Job (the `kubernetes`
    client, a service account allowed to read pods and jobs); an indexed Job's pods already
    know their index, and the Job's name, Service and size are in the manifest the user wrote.
    """
    index = environ[K8S_INDEX]
    if num_processes < 1:
        raise ConfigError(
            f"{K8S_INDEX}={index} (a Kubernetes indexed Job) without a process count: {K8S_FIX}"
        )
    if not coordinator_address:
        raise ConfigError(
            f"{K8S_INDEX}={index} (a Kubernetes indexed Job) without a coordinator: {K8S_FIX}"
        )
    index_id = _integer(environ, K8S_INDEX, K8S_FIX)
    if not 0 <= index_id < num_processes:
        raise ConfigError(
            f"{K8S_INDEX}={index_id} is not below --num_processes={num_processes}: give the "
            "Job's completions as --num_processes"
        )
    if process_id >= 0 and process_id != index_id:
        raise ConfigError(
            f"--process_id={process_id} disagrees with {K8S_INDEX}={index_id}: drop --process_id"
        )
    return {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": index_id,
        # Every pod has KUBERNETES_SERVICE_HOST: left on, JAX's detection would try the API
        # client (or warn that it is missing) for settings that are all given here.
        "cluster_detection_method": "deactivate",
    }


def _slurm(environ: Mapping[str, str]) -> tuple[str, dict] | None:
    """A SLURM job step of several tasks: checked here, detected by JAX itself."""
    if "SLURM_NTASKS" not in environ:
        return None
    fix = "start run.py with srun, one task per GPU (docs/gpus.md#clusters-slurm-and-kubernetes)"
    ntasks = _integer(environ, "SLURM_NTASKS", fix)
    if ntasks <= 1:
        # One task: one process with all the node's devices. JAX's detection would start a
        # one-process distributed run that sees device SLURM_LOCALID only.
        return None
    missing = [k for k in SLURM_VARS if k not in environ]
    if missing:
        raise ConfigError(
            f"a SLURM job of {ntasks} tasks without {', '.join(missing)}: {fix}, "
            "or pass --num_processes=1 for one process"
        )
    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID"):
        _integer(environ, name, fix)
    if not 0 <= int(environ["SLURM_PROCID"]) < ntasks:
        raise ConfigError(
            f"SLURM_PROCID={environ['SLURM_PROCID']} is not below SLURM_NTASKS={ntasks}"
        )
    # Named, so that JAX does not pick another environment it also recognises (Open MPI).
    return "slurm", {"cluster_detection_method": "slurm"}


def start_processes(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Starts multi-process JAX, once, before any device is touched.

    Explicit settings or a cluster's environment (`cluster_settings`) start it; a single
    process does nothing.
    """
    if jax.distributed.is_initialized():
        return
    settings = cluster_settings(os.environ, coordinator_address, num_processes, process_id)
    if settings is None:
        return
    if jax.config.jax_platforms in (None, "", "cpu"):
        # CPU processes need a collectives backend to talk to each other: gloo is JAX 0.10's
        # default, not every version's (nor an environment's that chose another).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings[1])
