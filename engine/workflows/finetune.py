"""Fine-tuning: starting from another run's parameters (`--init_from`, `--init_params`)."""

from __future__ import annotations

import re

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from architectures.layers import HEAD
from engine import paths
from engine.config import ConfigError
from engine.programs.optim import path_name


def merge(fresh, source, pattern: str = ""):
    """`fresh` with each leaf taken from `source` where the path matches and the shape is equal.

    Args:
      fresh: the new run's initialised tree (params or batch_stats).
      source: the other run's tree, as nested dicts of arrays.
      pattern: a regex selecting the paths to load (empty: all).

    Returns:
      `(tree, loaded, reinitialised)`: the merged tree, the loaded paths, and a
      `path (why)` line for each path kept at its fresh value.
    """
    regex = re.compile(pattern) if pattern else None
    flat = {path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    loaded, kept = [], []

    def pick(path, value):
        name = path_name(path)
        if regex is not None and not regex.search(name):
            kept.append(f"{name} (not selected by --init_params)")
            return value
        if name not in flat:
            kept.append(f"{name} (not in the source)")
            return value
        if flat[name].shape != np.shape(value):
            kept.append(f"{name} (shape {np.shape(value)}, source {flat[name].shape})")
            return value
        loaded.append(name)
        return flat[name].astype(np.asarray(value).dtype)

    tree = jax.tree_util.tree_map_with_path(pick, fresh)
    return tree, loaded, kept


def parse_source(spec: str) -> tuple[str, str]:
    """`(workdir, "best"|"latest")` of `--init_from=WORKDIR[:best|latest]` (default best)."""
    workdir, _, which = spec.rpartition(":")
    if which not in ("best", "latest") or not workdir:
        workdir, which = spec, "best"
    return workdir, which


def source_checkpoint(spec: str) -> tuple[str, str]:
    """The state folder `--init_from=spec` names, and a description of it for messages.

    Raises:
      ConfigError: no such run or checkpoint, naming what was looked for.
    """
    workdir, which = parse_source(spec)
    root = paths.join(paths.absolute(workdir), "checkpoints", which)
    steps = [int(n) for n in paths.list_dir(root) if n.isdigit()]
    if not steps:
        raise ConfigError(
            f"--init_from={spec}: no {which} checkpoint in {root}; give WORKDIR[:best|latest] "
            "of a trained run"
        )
    where = f"{workdir} ({which} checkpoint, epoch {max(steps)})"
    return paths.join(root, str(max(steps)), "state"), where


def load_source(spec: str) -> tuple[dict, str]:
    """The `params` and `batch_stats` of another run's checkpoint, as host arrays.

    Raises:
      ConfigError: no such run or checkpoint, naming what was looked for.
    """
    path, where = source_checkpoint(spec)
    # The item's handler, not a Checkpointer: a Checkpointer looks for the step's metadata file
    # inside the item folder and logs a warning that it is missing (the step folder has it).
    handler = ocp.StandardCheckpointHandler()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    try:
        tree = handler.metadata(epath.Path(path)).tree
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree
        )
        state = handler.restore(epath.Path(path), args=ocp.args.StandardRestore(target))
    except Exception as e:  # any unreadable checkpoint is the same user error
        raise ConfigError(f"--init_from={spec}: cannot read {path} ({type(e).__name__})") from None
    finally:
        handler.close()
    state = jax.tree.map(np.asarray, state)
    return {"params": state.get("params", {}), "batch_stats": state.get("batch_stats", {})}, where


def initialise(host_state, config, say):
    """`host_state` with parameters (and BatchNorm statistics) from `config.init_from`."""
    source, where = load_source(config.init_from)
    params, loaded, kept = merge(host_state.params, source["params"], config.init_params)
    stats, stats_loaded, stats_kept = merge(
        host_state.batch_stats, source["batch_stats"], config.init_params
    )
    params, zeroed = zero_fresh_head(params, loaded) if loaded else (params, [])
    say(
        f"init from {where}: loaded {len(loaded)} parameter tensors"
        + (f" and {len(stats_loaded)} BatchNorm statistics" if stats_loaded else "")
        + (f"; re-initialised: {', '.join(kept + stats_kept)}" if kept or stats_kept else "")
        + (f"; zero-initialised: {', '.join(zeroed)}" if zeroed else "")
    )
    return host_state.replace(params=params, batch_stats=stats)


def zero_fresh_head(params, loaded: list[str]):
    """`params` with the classifier head set to zeros where `merge` did not load it.

    A new head on loaded features starts at zero, as Big Transfer does (Kolesnikov et al.
    2020, s3.3): its first logits are all 0 (loss ln C) instead of a random projection of
    large features. Measured here: LeNet features frozen, a random (lecun) head barely moved
    in 100 Adam steps at lr 1e-3 (mean |w| 0.087 -> 0.082, training accuracy 0.25 on 81 rows,
    where a logistic regression on the same features fits them all), because undoing the
    random logits takes weight changes of about 1/sqrt(fan_in) and Adam moves a weight by at
    most about lr a step. Only the zoo's `head` layer is zeroed: a zero hidden layer would
    never break its symmetry.

    Returns:
      `(params, zeroed)`: the tree and the paths set to zero.
    """
    loaded, zeroed = set(loaded), []

    def pick(path, value):
        name = path_name(path)
        if name not in loaded and name.split("/")[0] == HEAD:
            zeroed.append(name)
            return np.zeros_like(np.asarray(value))
        return value

    return jax.tree_util.tree_map_with_path(pick, params), zeroed
