"""The engine's real training loop on in-memory arrays, for benchmarks that time it.

Builds the supervised program the engine builds (`engine.programs.supervised.make`: task,
optax chain, state, the pure step) and returns a function that runs one epoch through the
loop's own `engine.runtime.loop.train_epoch` (loader, `Plan.place_batch`, the step under
`Plan.wrap_train` with on-device metric sums, one read-back).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

import architectures
from engine import data
from engine.config import Config
from engine.data.source import CLASSIFICATION, DatasetInfo
from engine.programs import optim, steps, supervised
from engine.runtime import loop, parallel
from engine.workflows.build import loss_task


def engine_epoch_fn(
    arch: str,
    options: dict,
    x: np.ndarray,
    y: np.ndarray,
    batch: int,
    mode: str,
    *,
    sharding: str = "replicated",
    optimizer: str = "adam",
) -> Callable[[], dict]:
    """Returns `epoch() -> metrics` training `arch` on (x, y) (10 classes) in parallel `mode`.

    Args:
      arch, options: the architecture and its options.
      x: inputs (N, H, W, C) images or (N, D) tables; y: (N,) int labels in [0, 10).
      batch: global batch size.
      mode: "none", "jit" or "pmap".
      sharding: the state's layout under jit (`--sharding`).
      optimizer: `--optimizer`.

    The function's `state()` returns the current placed state.
    """
    info = DatasetInfo("bench", CLASSIFICATION, x.shape[1:], num_classes=10)
    config = Config(
        arch=arch, batch_size=batch, epochs=1000, progress=False, parallel=mode,
        sharding=sharding, optimizer=optimizer,
    )  # fmt: skip
    plan = parallel.make_plan(mode, sharding)
    spec = architectures.spec(arch)
    model = architectures.get(arch, num_classes=10, bn_axis_name=plan.axis_name, **options)
    size = max(x.shape[1], spec.min_image_size) if x.ndim == 4 else 0
    cfg = steps.StepConfig(image_size=size, has_batchnorm=model.batchnorm)
    source = data.ArraySource(x, y)
    loader = data.make_loader(source, batch_size=batch, shuffle=True, seed=0)
    shift, scale = data.normalization(source, "standard")
    program = supervised.make(
        model,
        optim.make(optim.settings(config), len(loader)),
        loss_task(config, info),
        cfg,
        plan.axis_name,
        input_shape=(size, size, x.shape[-1]) if size else x.shape[1:],
        norm={"input_shift": shift, "input_scale": scale},
    )
    sample = next(loader.epoch(0))
    host = program.init(jax.random.PRNGKey(0), sample)
    abstract = plan.abstract_state(host)
    zeros = loop.metric_zeros(program, abstract, sample, plan.axis_name)
    step = plan.wrap_train(loop.accumulating(program.train_step))
    box = {"state": plan.place_state(host), "epoch": 0}

    def epoch() -> dict:
        box["state"], sums, _ = loop.train_epoch(
            step, box["state"], loader.epoch(box["epoch"]), plan, zeros
        )
        box["epoch"] += 1
        return program.summarize(sums)

    epoch.state = lambda: box["state"]
    return epoch
