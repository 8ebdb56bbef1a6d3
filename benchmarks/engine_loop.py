"""The engine's real training loop on in-memory arrays, for benchmarks that time it.

Builds what `engine.train.train_and_evaluate` builds (task, optax chain, state, the pure step
wrapped by `Plan.wrap_train` with on-device metric sums) and returns a function that runs one
epoch through `engine.train._train_one_epoch` (loader, `Plan.place_batch`, one read-back).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np

import architectures
from engine import data, optim, parallel, steps, tasks, train
from engine import state as state_lib
from engine.config import Config
from engine.data.source import CLASSIFICATION, DatasetInfo


def engine_epoch_fn(
    arch: str, options: dict, x: np.ndarray, y: np.ndarray, batch: int, mode: str
) -> Callable[[], dict]:
    """Returns `epoch() -> metrics` training `arch` on (x, y) (10 classes) in parallel `mode`.

    Args:
      arch, options: the architecture and its options.
      x: inputs (N, H, W, C) images or (N, D) tables; y: (N,) int labels in [0, 10).
      batch: global batch size.
      mode: "none", "jit" or "pmap".
    """
    info = DatasetInfo("bench", CLASSIFICATION, x.shape[1:], num_classes=10)
    config = Config(arch=arch, batch_size=batch, epochs=1000, progress=False, parallel=mode)
    plan = parallel.make_plan(mode)
    spec = architectures.spec(arch)
    model = architectures.get(arch, num_classes=10, **options)
    task = tasks.make(config, info)
    size = max(x.shape[1], spec.min_image_size) if x.ndim == 4 else 0
    cfg = steps.StepConfig(image_size=size, has_batchnorm=spec.has_batchnorm)
    source = data.ArraySource(x, y)
    loader = data.make_loader(source, batch_size=batch, shuffle=True, seed=0)
    tx = optim.make(config, len(loader))
    shift, scale = data.normalization(source, "standard")
    sample = np.zeros((1, size, size, x.shape[-1]) if size else (1, *x.shape[1:]), np.float32)
    norm = {"input_shift": shift, "input_scale": scale}
    host = state_lib.create(model, tx, seed=0, sample_input=sample, norm=norm)
    zeros = steps.metric_zeros(model, task, cfg, host, next(loader.epoch(0)))
    step = plan.wrap_train(
        steps.accumulating(steps.make_train_step(model, tx, task, cfg, plan.axis_name))
    )
    run = types.SimpleNamespace(train_loader=loader)
    box = {"state": plan.place_state(host), "epoch": 0}

    def epoch() -> dict:
        box["state"], metrics, _ = train._train_one_epoch(
            step, box["state"], run, plan, config, box["epoch"], zeros
        )
        box["epoch"] += 1
        return metrics

    return epoch
