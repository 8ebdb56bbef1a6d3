"""Starting multi-process JAX: explicit flags, or a cluster's own environment."""

from __future__ import annotations

import os

import jax


def start_processes(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Starts multi-process JAX, once, before any device is touched.

    Explicit settings (`num_processes` > 1 or a coordinator address) or a cluster's environment
    (Cloud TPU, `JAX_COORDINATOR_ADDRESS`) start it; a single process does nothing.
    """
    explicit = num_processes > 1 or bool(coordinator_address)
    cluster_env = any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES"))
    if not (explicit or cluster_env) or jax.distributed.is_initialized():
        return
    if jax.config.jax_platforms in (None, "", "cpu") and explicit:
        # CPU processes need a collectives backend to talk to each other.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if explicit:
        kwargs = {
            "coordinator_address": coordinator_address,
            "num_processes": num_processes,
            "process_id": process_id if process_id >= 0 else None,
        }
    jax.distributed.initialize(**kwargs)
