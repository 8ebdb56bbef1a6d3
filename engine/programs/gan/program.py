"""The DCGAN program: a generator and a discriminator, two Adam optimizers, one pure step.

Goodfellow et al. (2014) with the DCGAN recipe (Radford et al., 2016): the discriminator D
minimises the binary cross-entropy of real images against 1 and generated ones against 0; the
generator G minimises the non-saturating loss -log D(G(z)) (Goodfellow et al.'s section 3: the
minimax form's gradient vanishes exactly when D is winning). Each step updates D on a real
batch and a batch of fakes, then G through the updated D on the same fakes, as PyTorch's DCGAN
example does; G's forward pass runs once (`jax.vjp`), its pullback serves G's update.

The state is a plain dict of named sub-states: `generator` and `discriminator` (each `params`,
`batch_stats`, `opt_state`), the step count, the base key, the normalisation constants and
`frozen` (the judge's variables, see below), so it checkpoints, resumes and runs in every
parallel mode like any program. Noise is drawn for the whole global batch from (seed, step) and
each pmap device takes its rows, so jit, pmap and one device draw the same fakes.

Evaluation reports, on a split's real images and `fakes_per_row` fakes for each of them (about
`EVAL_SAMPLES` fakes a split, drawn from a fixed stream): D's mean probability on held-out real
images and on fakes; the fakes' pixel diversity (mean per-pixel standard deviation over the
real images', 1 when they vary as much; near 0 is mode collapse) and moment gap (squared
distance of the fakes' per-pixel means and deviations from the real ones', over the real
variance: 0 is a match). With `--judge=WORKDIR` (a classifier the engine trained on the same
dataset, e.g. a LeNet on digits) the fakes, brought back to the dataset's own size and units,
are classified by it inside the same step: the share of each class, the mean confidence, and
an Inception-score-like `score` = exp(E KL(p(y|x) || p(y))) (Salimans et al., 2016), from 1
(one class, or unsure) to the number of classes (confident and balanced).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import architectures
from architectures import dcgan
from engine.config import Config, ConfigError
from engine.programs import optim, steps
from engine.programs.gan.evaluation import (
    Judge,
    SampleGrid,
    load_judge,
    summarize,
)
from engine.runtime.program import Program, host_zeros, psum

# DCGAN's optimizer: Adam with lr 2e-4 and beta1 0.5 ("0.9 resulted in training oscillation").
ADAM_B1 = 0.5
# What `--program=gan` changes among the flags left at the engine's defaults.
RECIPE = {
    "arch": "dcgan",
    "lr": 2e-4,
    "schedule": "constant",
    "normalize": "symmetric",
    "epochs": 200,
}
EVAL_SAMPLES = 1000  # fakes per evaluated split, at least
GRID = 8  # the sample grid is GRID x GRID images from a fixed noise batch
_EVAL_STREAM = 2**31 - 1  # fold_in data of the evaluation noise (train steps use 0, 1, ...)

# Which way each summary number improves (what `--monitor=val_NAME` needs to know).
HIGHER_IS_BETTER = {
    "score": True,
    "confidence": True,
    "classes_over_5pct": True,
    "min_class_share": True,
    "diversity": True,
    "moment_gap": False,
    "d_loss": False,
    "g_loss": False,
}


def check(config: Config) -> None:
    """Refuses settings the GAN program does not use or cannot honour, before any work.

    Raises:
      ConfigError: one line naming the setting and what to do.
    """
    if config.arch != "dcgan":
        raise ConfigError(f"--program=gan trains --arch=dcgan, not --arch={config.arch}")
    defaults = Config()
    unused = [
        name
        for name in (
            "loss",
            "init_from",
            "freeze",
            "class_weights",
            "balance",
            "cv_folds",
            "find_lr",
            "overfit_batches",
            "grad_accum_steps",
            "weight_decay",
            "clip_grad_norm",
            "dtype",
            "batchnorm",
            "dropout",
            "hidden_sizes",
            "depth",
        )
        if getattr(config, name) != getattr(defaults, name)
    ]
    if unused:
        raise ConfigError(
            f"--program=gan trains with its own losses and recipe; drop "
            f"{', '.join('--' + n for n in unused)}"
        )
    if config.optimizer != "adam":
        raise ConfigError(
            f"--program=gan uses Adam (beta1 {ADAM_B1}), not --optimizer={config.optimizer}"
        )
    if config.normalize != "symmetric":
        raise ConfigError(
            f"--program=gan needs images in [-1, 1] (the generator's tanh): --normalize=symmetric, "
            f"not {config.normalize}"
        )


def _noise(key, rows: int, latent: int, axis_name: str | None) -> jax.Array:
    """Latent vectors (rows, latent) for this device's rows of the global batch.

    The whole global batch's noise is drawn from `key` and each pmap device slices its rows,
    so every parallel mode gives each global row the same vector.
    """
    if axis_name is None:
        return jax.random.normal(key, (rows, latent))
    devices = jax.lax.psum(1, axis_name)
    z = jax.random.normal(key, (rows * devices, latent))
    return jax.lax.dynamic_slice_in_dim(z, jax.lax.axis_index(axis_name) * rows, rows)


def _bce_real(logits):  # -log sigmoid(l): the loss of calling an image real
    return jax.nn.softplus(-logits[:, 0])


def _bce_fake(logits):  # -log(1 - sigmoid(l)): the loss of calling an image fake
    return jax.nn.softplus(logits[:, 0])


@dataclasses.dataclass(frozen=True)
class _Gan:
    """What the GAN's pure functions close over: the two nets, the optimizer and the shapes."""

    generator: dcgan.Generator
    discriminator: dcgan.Discriminator
    tx: optax.GradientTransformation
    cfg: steps.StepConfig
    latent: int
    input_shape: tuple[int, ...]
    axis_name: str | None
    judge: Judge | None
    fakes_per_row: int


def _apply(net, sub, x, mask, **kwargs):
    variables = {"params": sub["params"], "batch_stats": sub["batch_stats"]}
    return net.apply(variables, x, mask=mask, **kwargs)


def _init(gan: _Gan, norm, frozen, rng, batch):
    """The state: each net initialised at its own input shape, with its optimizer state."""
    del batch
    g_key, d_key, rng = jax.random.split(rng, 3)
    z = jnp.zeros((1, gan.latent), jnp.float32)
    x = jnp.zeros((1, *gan.input_shape), jnp.float32)
    state = {"step": jnp.zeros((), jnp.int32), "rng": rng, "norm": norm, "frozen": frozen}
    for name, net, key, sample in (
        ("generator", gan.generator, g_key, z),
        ("discriminator", gan.discriminator, d_key, x),
    ):
        variables = jax.jit(lambda k, s, net=net: net.init(k, s, train=False))(key, sample)
        state[name] = {
            "params": variables["params"],
            "batch_stats": variables["batch_stats"],
            "opt_state": gan.tx.init(variables["params"]),
        }
    return state


def _update(gan: _Gan, sub, grads, batch_stats):
    """`sub` (params, batch_stats, opt_state) after one Adam step on the summed `grads`."""
    grads = psum(grads, gan.axis_name)
    updates, opt_state = gan.tx.update(grads, sub["opt_state"], sub["params"])
    return {
        "params": optax.apply_updates(sub["params"], updates),
        "batch_stats": batch_stats,
        "opt_state": opt_state,
    }


def _discriminator_step(gan: _Gan, d, real, fake, mask, w, n):
    """D updated on `real` (label 1) and `fake` (label 0); its per-row losses and logits."""

    def loss_fn(params):
        sub = {**d, "params": params}
        train = {"train": True, "mutable": ["batch_stats"]}
        on_real, new = _apply(gan.discriminator, sub, real, mask, **train)
        sub = {**sub, "batch_stats": new["batch_stats"]}
        on_fake, new = _apply(gan.discriminator, sub, jax.lax.stop_gradient(fake), mask, **train)
        per_row = _bce_real(on_real) + _bce_fake(on_fake)
        return jnp.sum(per_row * w) / n, (new["batch_stats"], on_real, on_fake, per_row)

    (_, (stats, on_real, on_fake, rows)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        d["params"]
    )
    return _update(gan, d, grads, stats), rows, on_real, on_fake


def _train_step(gan: _Gan, state, batch):
    """One step: D on the real batch and fresh fakes, then G through the updated D."""
    mask = batch["mask"]
    w = mask.astype(jnp.float32)
    n = jnp.maximum(psum(jnp.sum(w), gan.axis_name), 1.0)
    key = jax.random.fold_in(state["rng"], state["step"])
    noise_key, augment_key = jax.random.split(key)
    real = steps.preprocess(state["norm"], batch["inputs"], gan.cfg, augment_key)
    z = _noise(noise_key, mask.shape[0], gan.latent, gan.axis_name)
    g = state["generator"]

    def generate(params):
        sub = {**g, "params": params}
        fake, new = _apply(gan.generator, sub, z, mask, train=True, mutable=["batch_stats"])
        return fake, new["batch_stats"]

    fake, pullback, g_stats = jax.vjp(generate, g["params"], has_aux=True)
    d_new, d_rows, on_real, on_fake = _discriminator_step(
        gan, state["discriminator"], real, fake, mask, w, n
    )

    def g_loss_fn(images):
        # D's statistics from this pass are not kept: D was updated on this batch already.
        logits, _ = _apply(
            gan.discriminator, d_new, images, mask, train=True, mutable=["batch_stats"]
        )
        per_row = _bce_real(logits)
        return jnp.sum(per_row * w) / n, per_row

    (_, g_rows), fake_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = pullback(fake_grads)
    g_new = _update(gan, g, g_grads, g_stats)
    sums = psum(
        {
            "d_loss": jnp.sum(d_rows * w),
            "g_loss": jnp.sum(g_rows * w),
            "d_real": jnp.sum(jax.nn.sigmoid(on_real[:, 0]) * w),
            "d_fake": jnp.sum(jax.nn.sigmoid(on_fake[:, 0]) * w),
            "count": jnp.sum(w),
        },
        gan.axis_name,
    )
    finite = jnp.isfinite(sums["d_loss"]) & jnp.isfinite(sums["g_loss"])
    new = {**state, "step": state["step"] + 1, "generator": g_new, "discriminator": d_new}
    # A non-finite step keeps the state as it was (both --on_nan modes): the guard stops
    # the run (stop) or counts the skipped step (skip).
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    sums["nonfinite"] = (~finite).astype(jnp.int32)
    return new, sums


def _moments(x, weights):
    x = x * weights[:, None, None, None]
    return jnp.sum(x, 0), jnp.sum(x * x, 0)


def _metrics(gan: _Gan, state, batch, counter):
    """This device's evaluation sums for one batch (`counter`: batches evaluated so far)."""
    mask = batch["mask"]
    w = mask.astype(jnp.float32)
    key = jax.random.fold_in(jax.random.fold_in(state["rng"], _EVAL_STREAM), counter)
    real = steps.preprocess(state["norm"], batch["inputs"], gan.cfg)
    fake_mask = jnp.repeat(mask, gan.fakes_per_row)
    fw = fake_mask.astype(jnp.float32)
    z = _noise(key, fake_mask.shape[0], gan.latent, gan.axis_name)
    fake = _apply(gan.generator, state["generator"], z, fake_mask, train=False)
    on_real = _apply(gan.discriminator, state["discriminator"], real, mask, train=False)
    on_fake = _apply(gan.discriminator, state["discriminator"], fake, fake_mask, train=False)
    sums = {
        "d_real": jnp.sum(jax.nn.sigmoid(on_real[:, 0]) * w),
        "d_fake": jnp.sum(jax.nn.sigmoid(on_fake[:, 0]) * fw),
        "count": jnp.sum(w),
        "samples": jnp.sum(fw),
        "real_moments": jnp.stack(_moments(real, w)),
        "fake_moments": jnp.stack(_moments(fake, fw)),
    }
    if gan.judge is not None:
        p = gan.judge.probabilities(state["frozen"], fake, state["norm"])
        top = jax.nn.one_hot(jnp.argmax(p, -1), p.shape[-1])
        sums.update(
            class_counts=jnp.sum(top * fw[:, None], 0),
            confidence=jnp.sum(jnp.max(p, -1) * fw),
            probabilities=jnp.sum(p * fw[:, None], 0),
            entropy=jnp.sum(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-12)), -1) * fw),
        )
    return sums


def _eval_step(gan: _Gan, state, batch, totals):
    sums = psum(_metrics(gan, state, batch, totals["batches"]), gan.axis_name)
    totals = {**totals, "batches": totals["batches"] + 1}
    return {k: totals[k] + sums[k] if k in sums else totals[k] for k in totals}


def _eval_zeros(gan: _Gan, state, batch):
    row = jax.tree.map(lambda v: v[:1], batch)

    def shapes(state, row):
        return _metrics(gan, state, row, jnp.zeros((), jnp.int32))

    zeros = host_zeros(shapes, gan.axis_name, state, row)
    return {**zeros, "batches": np.zeros((), np.int32)}


def make(config: Config, run, axis_name: str | None) -> Program:
    """The GAN program of `run` (its image data and step config), a program factory."""
    size, channels, latent = run.input_shape[0], run.input_shape[2], config.latent_dim
    if not dcgan.upsamplings(size):
        raise ConfigError(
            f"--image_size={size} does not suit dcgan (4 to 7 pixels times a power of 2); "
            f"use {dcgan.SIZES}"
        )
    if config.ema_decay > 0:
        # Not built yet: the generator's average needs its own sub-state and a measurement.
        raise ConfigError("--ema_decay is not available for --program=gan yet; leave it at 0")
    judge, frozen, notes = None, {}, []
    if config.judge:
        judge, frozen, note = load_judge(config.judge, run.trained, dataset=config.dataset)
        notes.append(note)
    rows = min(len(run.splits.val), len(run.splits.test))
    gan = _Gan(
        generator=dcgan.Generator(size, channels, width=config.width, bn_axis_name=axis_name),
        discriminator=dcgan.Discriminator(width=config.width, bn_axis_name=axis_name),
        tx=optax.adam(optim.schedule(optim.settings(config), len(run.train_loader)), b1=ADAM_B1),
        cfg=run.step_config,
        latent=latent,
        input_shape=tuple(run.input_shape),
        axis_name=axis_name,
        judge=judge,
        fakes_per_row=max(1, math.ceil(EVAL_SAMPLES / max(rows, 1))),
    )
    norm = {k: jnp.asarray(v, jnp.float32) for k, v in run.norm.items()}
    params = architectures.count_params(gan.generator, (1, latent))
    params += architectures.count_params(gan.discriminator, (1, *run.input_shape))
    notes.insert(
        0,
        f"dcgan: generator {latent} -> {size}x{size}x{channels} and discriminator, "
        f"{params:,} parameters together; Adam lr {config.lr:g} beta1 {ADAM_B1}, schedule "
        f"{config.schedule}, {config.epochs} epochs; {gan.fakes_per_row} fake(s) per evaluated "
        f"image of {run.splits.info.name}",
    )
    grid = SampleGrid(
        gan.generator, jax.random.normal(jax.random.PRNGKey(config.seed), (GRID**2, latent))
    )
    return Program(
        init=functools.partial(_init, gan, norm, frozen),
        train_step=functools.partial(_train_step, gan),
        eval_step=functools.partial(_eval_step, gan),
        eval_zeros=functools.partial(_eval_zeros, gan),
        summarize=summarize,
        higher_is_better=HIGHER_IS_BETTER,
        monitor="val_score" if judge is not None else "val_moment_gap",
        notes=tuple(notes),
        callbacks=(grid,),
    )
