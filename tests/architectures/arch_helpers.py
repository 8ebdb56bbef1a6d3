"""Shared helpers for the architecture tests: CPU-sized models, real digit batches, cached inits.

The init uses an "rbg" key, which XLA:CPU compiles several times faster than threefry for deep
nets.
"""

import functools

import jax
import jax.numpy as jnp
from sklearn.datasets import load_digits

import architectures

BATCH = 16


def small(name: str, **options):
    """The smallest configuration of `name` (CPU-sized), with options on top."""
    spec = architectures.spec(name)
    base = {}
    if "width" in spec.options:
        base["width"] = 0.25 if name == "nin" else 0.125
    if "depth" in spec.options:
        base["depth"] = min(spec.depths)
    if "hidden_sizes" in spec.options:
        base["hidden_sizes"] = (32, 32)
    base.update(options)
    return architectures.get(name, num_classes=10, **base)


def digits_batch(size: int):
    """BATCH real 8x8 digits (scikit-learn's bundled set), resized on device to size x size."""
    digits = load_digits()
    x = jnp.asarray(digits.images[:BATCH, :, :, None] / 16.0, jnp.float32)
    if size > 8:  # what the engine does for nets with a larger minimum
        x = jax.image.resize(x, (BATCH, size, size, 1), method="bilinear")
    return x, jnp.asarray(digits.target[:BATCH])


def synthetic_batch(size: int):
    """BATCH 32x32x3 images: a random prototype per class plus noise; resized up where needed."""
    kp, kx, ky = jax.random.split(jax.random.key(42), 3)
    y = jax.random.randint(ky, (BATCH,), 0, 10)
    prototypes = jax.random.normal(kp, (10, 32, 32, 3))
    x = prototypes[y] + 0.5 * jax.random.normal(kx, (BATCH, 32, 32, 3))
    if size > 32:
        x = jax.image.resize(x, (BATCH, size, size, 3), method="bilinear")
    return x, y


@functools.cache
def _init(model, shape):
    key = jax.random.key(0, impl="rbg")
    return jax.jit(lambda x: model.init({"params": key}, x, train=False))(jnp.zeros(shape))


def init(model, x):
    """Initial variables (they depend on the input's shape only; cached across tests)."""
    return _init(model, x.shape)


def input_size(name: str) -> int:
    return max(architectures.spec(name).min_image_size, 8)


def leaf_errors(got, want) -> dict[str, float]:
    """`{path: largest error / largest value}` of each leaf of two gradient trees.

    A leaf whose reference is all zeros counts as broken (its error is inf): a comparison of
    zeros catches no gradient bug, so the nets below are built to have none.
    """
    errors = {}
    for (path, g), w in zip(
        jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True
    ):
        scale = float(jnp.max(jnp.abs(w)))
        error = float(jnp.max(jnp.abs(g - w)))
        errors[jax.tree_util.keystr(path)] = error / scale if scale > 0 else float("inf")
    return errors
