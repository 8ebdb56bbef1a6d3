"""The training state: one pytree holding everything a step reads and writes, nothing else."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from architectures.summary import init_program


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as arrays (so it jits, shards and checkpoints).

    Attributes:
      step: number of train steps taken (micro-steps under gradient accumulation), int32 scalar.
      params: the model's `params` collection.
      batch_stats: BatchNorm running statistics (an empty dict for nets without BatchNorm).
      opt_state: the optax state.
      rng: base PRNG key; each step folds in its step number (and device index under pmap), so
        the random stream depends only on (seed, step), never on where a run was resumed.
      norm: normalisation constants computed on the training split (`input_shift`,
        `input_scale`, and for regression `target_shift`, `target_scale`); kept in the state so
        every checkpoint evaluates with exactly the numbers it was trained with.
      frozen: variables a step reads but never updates and the optimizer never sees (a frozen
        model's `params`, `batch_stats` and `norm` beside the trained one); empty for most
        runs. They live in the state so that they are placed, sharded and checkpointed with it.
      ema: the exponential moving average of the trained variables (`--ema_decay`):
        `{"params": ..., "batch_stats": ...}`, debiased (`steps.ema_update`); an empty dict
        when the average is off, so the state's leaves, and old checkpoints, are unchanged.
        Its path holds a key named `params`, so `--sharding=fsdp` splits the averaged
        parameters as it splits the trained ones (`parallel.fsdp_spec`).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    norm: dict
    frozen: Any = flax.struct.field(default_factory=dict)
    ema: Any = flax.struct.field(default_factory=dict)


def create(
    model,
    tx: optax.GradientTransformation,
    *,
    rng: jax.Array,
    sample_input: np.ndarray,
    norm: dict[str, np.ndarray],
    frozen: Any = None,
    ema: bool = False,
) -> TrainState:
    """Initialises parameters and optimizer state for `model` from the key `rng`.

    Args:
      model: a flax.linen module.
      tx: the optax chain.
      rng: the run's key (`jax.random.PRNGKey(seed)`); parameters use one branch of it and
        dropout/augmentation another.
      sample_input: an input batch `(B, ...)` of the shape the model sees (after resizing).
      norm: normalisation constants, each a float32 array.
      frozen: variables kept fixed beside the model (`TrainState.frozen`), or None.
      ema: keep a moving average of the parameters and BatchNorm statistics
        (`TrainState.ema`), started as a copy of them.

    Returns:
      A TrainState on the default device.
    """
    init_key, rng = jax.random.split(rng)
    variables = _init_variables(model, {"params": init_key, "dropout": init_key}, sample_input)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    # Copies, not the same arrays: a donated state must not hold one buffer twice.
    average = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.jit(tx.init)(params),
        rng=rng,
        norm={k: jnp.asarray(v, jnp.float32) for k, v in norm.items()},
        frozen={} if frozen is None else frozen,
        ema=average if ema else {},
    )


def _init_variables(model, rngs: dict, sample_input: np.ndarray) -> dict:
    """`model.init` as one compiled program, built without backend optimisation.

    Run eagerly, a deep net's init dispatches every op on its own (80 s for GoogLeNet on this
    2-core CPU); compiled with the default optimisation, the random-number code of hundreds of
    initialisers took 60 s to compile; at optimisation level 0 it took 14 s. Init runs once, so
    its speed does not matter, only its compile time. The jitted function is the one the
    model summary traced for its shapes (`init_program`), so this lowering reuses that trace.
    """
    init, _ = init_program(model)
    lowered = init.lower(rngs, jnp.asarray(sample_input))
    try:
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # a backend without this option: the default compile is still correct
        compiled = lowered.compile()
    return compiled(rngs, jnp.asarray(sample_input))
