"""On-device image augmentation: pure, key-driven JAX functions applied inside the jitted step.

Every augmentation is `fn(rng, images) -> images` with `images` a float `(B, H, W, C)` batch
(already normalised, so the zero used for padding is the dataset mean) and the output of the same
shape and dtype. Each example draws from its own key (`jax.random.split(rng, B)`), so the result
is a pure function of `(rng, images)`: the same key gives the same batch, on any device.

Names:
  - `none`: the identity.
  - `flip`: mirror left-right with probability 1/2 per example.
  - `crop`: zero-pad `max(1, H // 8)` rows and `max(1, W // 8)` columns on each side (4 pixels
    for 32x32, as in the CIFAR ResNet papers), then crop back a random `H x W` window: a random
    translation of up to that many pixels.
  - `standard`: for images smaller than 64 pixels on a side, `crop` then `flip`; for images of
    64 pixels or more, random-resized-crop then `flip`. The random-resized crop (Inception /
    torchvision's defaults) takes a box of area fraction U(0.08, 1) and log aspect ratio
    U(log 3/4, log 4/3), clipped to the image rather than re-drawn (so the shapes stay static
    under jit), and resizes it back to `H x W` bilinearly.

>>> import jax, jax.numpy as jnp
>>> get("flip")(jax.random.key(0), jnp.zeros((2, 8, 8, 1))).shape
(2, 8, 8, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Augment = Callable[[jax.Array, jax.Array], jax.Array]

# At and above this side length `standard` uses random-resized-crop (ImageNet-style inputs);
# below it pad-and-crop (CIFAR-style inputs, where cropping away 92% of the area is too much).
RESIZED_CROP_MIN_SIZE = 64
_AREA_RANGE = (0.08, 1.0)
_LOG_RATIO_RANGE = (math.log(3 / 4), math.log(4 / 3))


def _check(images: jax.Array) -> None:
    if images.ndim != 4:
        raise ValueError(
            f"augmentation needs an image batch (B, H, W, C), got shape {tuple(images.shape)}; "
            "use --augment=none for tables"
        )


def none(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Returns `images` unchanged (`rng` unused)."""
    del rng
    _check(images)
    return images


def flip(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Mirrors each example left-right with probability 1/2.

    Args:
      rng: a JAX key.
      images: `(B, H, W, C)` float batch.

    Returns:
      `(B, H, W, C)`: each example either unchanged or exactly `image[:, ::-1, :]`.
    """
    _check(images)
    keys = jax.random.split(rng, images.shape[0])
    mirror = jax.vmap(lambda k: jax.random.bernoulli(k))(keys)
    return jnp.where(mirror[:, None, None, None], images[:, :, ::-1, :], images)


def _pad_crop_one(key: jax.Array, image: jax.Array, pad_h: int, pad_w: int) -> jax.Array:
    h, w, _ = image.shape
    padded = jnp.pad(image, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    ky, kx = jax.random.split(key)
    top = jax.random.randint(ky, (), 0, 2 * pad_h + 1)
    left = jax.random.randint(kx, (), 0, 2 * pad_w + 1)
    return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, image.shape[2]))


def crop(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Zero-pads by `max(1, H // 8)` x `max(1, W // 8)` pixels and crops a random window back.

    Args:
      rng: a JAX key.
      images: `(B, H, W, C)` float batch.

    Returns:
      `(B, H, W, C)`: each example shifted by its own random offset, zeros shifted in.
    """
    _check(images)
    _, h, w, _ = images.shape
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    keys = jax.random.split(rng, images.shape[0])
    return jax.vmap(lambda k, x: _pad_crop_one(k, x, pad_h, pad_w))(keys, images)


def _resized_crop_one(key: jax.Array, image: jax.Array) -> jax.Array:
    h, w, _ = image.shape
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (), minval=_AREA_RANGE[0], maxval=_AREA_RANGE[1]) * h * w
    ratio = jnp.exp(
        jax.random.uniform(k_ratio, (), minval=_LOG_RATIO_RANGE[0], maxval=_LOG_RATIO_RANGE[1])
    )
    # Box of that area and width/height ratio, clipped to the image (no rejection loop).
    box_w = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, w)
    box_h = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, h)
    top = jnp.floor(jax.random.uniform(k_top, ()) * (h - box_h + 1))
    left = jnp.floor(jax.random.uniform(k_left, ()) * (w - box_w + 1))
    # scale_and_translate maps input coordinate y to y * scale + translation: the box
    # [top, top + box_h) lands on [0, h).
    scale = jnp.stack([h / box_h, w / box_w])
    translation = -jnp.stack([top, left]) * scale
    out = jax.image.scale_and_translate(
        image, image.shape, (0, 1), scale, translation, method="linear", antialias=True
    )
    return out.astype(image.dtype)


def resized_crop(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Random-resized-crop of each example back to its own `H x W` (see the module docstring).

    Args:
      rng: a JAX key.
      images: `(B, H, W, C)` float batch.

    Returns:
      `(B, H, W, C)`: each example a random box of itself, bilinearly resized to full size.
    """
    _check(images)
    keys = jax.random.split(rng, images.shape[0])
    return jax.vmap(_resized_crop_one)(keys, images)


def standard(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Crop (pad-and-crop, or random-resized-crop from 64 pixels up), then flip.

    Args:
      rng: a JAX key.
      images: `(B, H, W, C)` float batch.

    Returns:
      `(B, H, W, C)` augmented batch.
    """
    _check(images)
    k_crop, k_flip = jax.random.split(rng)
    large = min(images.shape[1], images.shape[2]) >= RESIZED_CROP_MIN_SIZE
    cropped = resized_crop(k_crop, images) if large else crop(k_crop, images)
    return flip(k_flip, cropped)


_REGISTRY: dict[str, Augment] = {"none": none, "flip": flip, "crop": crop, "standard": standard}


def names() -> tuple[str, ...]:
    """The augmentation names `get` accepts.

    >>> names()
    ('none', 'flip', 'crop', 'standard')
    """
    return tuple(_REGISTRY)


def get(name: str) -> Augment:
    """The augmentation called `name` (one of `names()`).

    Raises:
      ValueError: unknown name (the message lists the valid ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(names())}") from None
