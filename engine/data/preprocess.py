"""Inputs as a model sees them, on the device: normalised, resized and (in training) augmented."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def preprocess(
    norm: dict,
    inputs: jax.Array,
    *,
    image_size: int = 0,
    augment: Callable | None = None,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Normalises with training statistics, resizes images and (with `rng`) augments them.

    Args:
      norm: the normalisation constants (`input_shift`, `input_scale`).
      inputs: raw inputs (B, ...).
      image_size: the side images are resized to (bilinear); 0 keeps them.
      augment: `(rng, images) -> images`, applied only when `rng` is given (training).
      rng: the augmentation key; None in evaluation.
    """
    x = (inputs.astype(jnp.float32) - norm["input_shift"]) / norm["input_scale"]
    if image_size and x.ndim == 4 and x.shape[1:3] != (image_size, image_size):
        shape = (x.shape[0], image_size, image_size, x.shape[3])
        x = jax.image.resize(x, shape, method="bilinear")
    if rng is not None and augment is not None:
        x = augment(rng, x)
    return x
