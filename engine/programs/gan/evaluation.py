"""What a GAN's numbers mean: the judge classifier, the summary of the sums, the sample grid.

The GAN program (`engine.programs.gan`) computes the sums inside its jitted evaluation step;
this module holds what is not the step: loading the judge (`--judge=WORKDIR`) and its view of
a fake, turning the sums into the numbers users read, and drawing the grid of samples.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from engine import paths
from engine.config import ConfigError
from engine.programs import steps
from engine.runtime import report
from engine.runtime.callbacks import Callback

SAMPLES_DIR = "samples"


@dataclasses.dataclass(frozen=True)
class Judge:
    """A trained classifier of the same dataset that rates generated images.

    Attributes:
      model: the classifier's flax module (evaluation mode).
      step_config: its preprocessing (image size, BatchNorm), no augmentation.
      raw_shape: one example of the dataset as stored (H, W, C): fakes are resized to it and
        put back into the dataset's units before the classifier's own preprocessing.
    """

    model: Any
    step_config: steps.StepConfig
    raw_shape: tuple[int, ...]

    def probabilities(self, frozen: dict, fakes: jax.Array, norm: dict) -> jax.Array:
        """Class probabilities (B, C) of fakes (B, S, S, C) in [-1, 1]."""
        raw = fakes * norm["input_scale"] + norm["input_shift"]  # back to the dataset's units
        if raw.shape[1:] != tuple(self.raw_shape):
            shape = (raw.shape[0], *self.raw_shape)
            raw = jax.image.resize(raw, shape, method="linear", antialias=True)
        x = steps.preprocess(frozen["norm"], raw, self.step_config)
        variables = {"params": frozen["params"]}
        if self.step_config.has_batchnorm:
            variables["batch_stats"] = frozen["batch_stats"]
        logits = self.model.apply(variables, x, train=False).astype(jnp.float32)
        return jax.nn.softmax(logits, axis=-1)


def load_judge(spec: str, trained, *, dataset: str) -> tuple[Judge, dict, str]:
    """The judge of `--judge=WORKDIR[:best|latest]`: (judge, its variables, a note).

    Args:
      spec: the flag's value.
      trained: `Run.trained`, which restores another trained run.
      dataset: the GAN's dataset, which the judge must have been trained on.

    Raises:
      ConfigError: no trained run there, another dataset, or not a classifier.
    """
    try:
        judge = trained(spec)
    except ConfigError as e:
        raise ConfigError(f"--judge={spec}: {e}") from None
    if judge.config.dataset != dataset:
        raise ConfigError(
            f"--judge={spec} was trained on --dataset={judge.config.dataset}, not {dataset}; "
            "judge with a classifier of the same dataset"
        )
    task = judge.setup.run.task
    if task.kind != "classification" or task.num_outputs < 2:
        raise ConfigError(f"--judge={spec} is not a classifier of several classes")
    state = judge.state
    frozen = jax.device_get(
        {"params": state.params, "batch_stats": state.batch_stats, "norm": state.norm}
    )
    step_config = dataclasses.replace(judge.setup.run.step_config, augment=None)
    raw_shape = tuple(judge.setup.run.splits.info.input_shape)
    note = (
        f"judge: {judge.setup.workdir} ({judge.config.arch}, {judge.which} checkpoint of epoch "
        f"{judge.epoch})"
    )
    return Judge(judge.setup.run.model, step_config, raw_shape), frozen, note


def summarize(sums: dict) -> dict:
    """An epoch's (or a split's) GAN numbers from their sums."""
    sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    count = max(float(sums["count"]), 1.0)
    out = {}
    if "batches" not in sums:  # training: both nets' losses and D's view of each batch
        out["d_loss"] = float(sums["d_loss"]) / count
        out["g_loss"] = float(sums["g_loss"]) / count
    out["d_real"] = float(sums["d_real"]) / count
    if "batches" not in sums:
        out["d_fake"] = float(sums["d_fake"]) / count
        out["count"] = int(count)
        bad = int(sums.get("nonfinite", 0))
        if bad:
            out["nonfinite_steps"] = bad
        return out
    samples = max(float(sums["samples"]), 1.0)
    out["d_fake"] = float(sums["d_fake"]) / samples
    real_mean, real_sd = _mean_sd(sums["real_moments"], count)
    fake_mean, fake_sd = _mean_sd(sums["fake_moments"], samples)
    out["diversity"] = float(fake_sd.mean() / max(real_sd.mean(), 1e-12))
    gap = np.mean((fake_mean - real_mean) ** 2 + (fake_sd - real_sd) ** 2)
    out["moment_gap"] = float(gap / max(np.mean(real_sd**2), 1e-12))
    if "class_counts" in sums:
        shares = sums["class_counts"] / samples
        p_y = sums["probabilities"] / samples
        marginal_entropy = -np.sum(p_y * np.log(np.maximum(p_y, 1e-12)))
        out["score"] = float(np.exp(marginal_entropy - float(sums["entropy"]) / samples))
        out["confidence"] = float(sums["confidence"]) / samples
        out["classes_over_5pct"] = int(np.sum(shares >= 0.05))
        out["min_class_share"] = float(shares.min())
        out["class_shares"] = [round(float(s), 4) for s in shares]
    out["count"] = int(count)
    out["samples"] = int(samples)
    return out


def _mean_sd(moments: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    mean = moments[0] / n
    return mean, np.sqrt(np.maximum(moments[1] / n - mean**2, 0.0))


class SampleGrid(Callback):
    """Writes a grid of samples from a fixed noise batch after every epoch (PNG).

    `WORKDIR/samples/epoch_NNN.png` keeps each epoch's grid, `WORKDIR/samples.png` the latest;
    the same noise every epoch shows how the generator's mapping develops.
    """

    def __init__(self, generator, noise: jax.Array):
        self.noise = noise

        def sample(sub, z):
            variables = {"params": sub["params"], "batch_stats": sub["batch_stats"]}
            return generator.apply(variables, z, train=False)

        self._sample = jax.jit(sample)

    def on_epoch_end(self, epoch, record, state):
        """Draws this epoch's grid (main process only).

        Every process reads the generator: reading an fsdp-split state is a collective.
        """
        sub = self.fit.plan.read({k: state["generator"][k] for k in ("params", "batch_stats")})
        if not self.fit.plan.is_main:
            return
        images = np.asarray(self._sample(sub, self.noise))
        folder = paths.join(self.fit.workdir, SAMPLES_DIR)
        paths.make_dirs(folder)
        write_grid(paths.join(folder, f"epoch_{epoch:03d}.png"), images)
        write_grid(paths.join(self.fit.workdir, "samples.png"), images)


def write_grid(path: str, images: np.ndarray) -> str:
    """Tiles images (N, H, W, C) in [-1, 1] into a square PNG grid, enlarged to ~48 px a tile."""
    plt = report.pyplot()

    n, h, w, c = images.shape
    side = math.ceil(math.sqrt(n))
    zoom = max(1, 48 // h)
    pixels = (np.clip(images, -1, 1) + 1) / 2
    pixels = pixels.repeat(zoom, 1).repeat(zoom, 2)
    h, w, gap = h * zoom, w * zoom, 2
    grid = np.ones((side * (h + gap) + gap, side * (w + gap) + gap, c), np.float32)
    for i in range(n):
        r, col = divmod(i, side)
        y, x = gap + r * (h + gap), gap + col * (w + gap)
        grid[y : y + h, x : x + w] = pixels[i]
    buffer = io.BytesIO()
    if c == 1:
        plt.imsave(buffer, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        plt.imsave(buffer, grid, format="png")
    paths.write_bytes(path, buffer.getvalue())  # whole: a reader never sees half a file
    return path
