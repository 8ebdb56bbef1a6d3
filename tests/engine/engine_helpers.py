"""Small helpers for engine tests: a fast default config and reading a workdir's results."""

import dataclasses
import json
import os

from engine.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def device_env(devices: int, environ=None) -> dict:
    """An environment for a subprocess on `devices` simulated CPU devices (`environ`'s rest)."""
    env = dict(os.environ if environ is None else environ)
    env.update(
        # XLA:CPU aborts a collective whose simulated devices do not all arrive within 40 s;
        # on a loaded 2-core machine (parallel test workers) that happened, so wait longer.
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
        "--xla_cpu_collective_call_terminate_timeout_seconds=900",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([ROOT, HERE]),
    )
    return env


def fast_config(data_dir: str, workdir: str, **overrides) -> Config:
    """A config that trains in seconds on digits: small MLP, few epochs, no progress bar."""
    base = Config(
        data_dir=data_dir,
        workdir=workdir,
        hidden_sizes=(32,),
        epochs=2,
        lr=1e-2,
        batch_size=64,
        progress=False,
        parallel="none",
    )
    return dataclasses.replace(base, **overrides)


def read_lines(workdir: str, name: str = "metrics.jsonl") -> list[str]:
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return f.read().splitlines()


def read_json(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return json.load(f)


def read_state(state_dir: str) -> dict:
    """A checkpointed state read with orbax directly onto this process's first device.

    Restoring with an explicit target works whatever device layout the checkpoint was saved from.
    """
    import jax
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = checkpointer.metadata(state_dir).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return checkpointer.restore(state_dir, target)


def records_without_timings(workdir: str) -> list[dict]:
    """metrics.jsonl records without `speed` (wall-clock timings differ between runs)."""
    records = [json.loads(line) for line in read_lines(workdir)]
    for r in records:
        assert r.pop("speed")["step_ms"] > 0
    return records
