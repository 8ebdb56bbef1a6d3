"""On-device augmentation: shapes, exact mirrors, translations, determinism, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.data import augment


def _batch(b=16, h=32, w=32, c=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, h, w, c)), jnp.float32)


def test_names_and_unknown_name_is_one_line():
    assert augment.names() == ("none", "flip", "crop", "standard")
    with pytest.raises(ValueError) as err:
        augment.get("rotate")
    message = str(err.value)
    assert "\n" not in message
    for name in augment.names():
        assert name in message


@pytest.mark.parametrize("name", ["none", "flip", "crop", "standard"])
@pytest.mark.parametrize("shape", [(16, 32, 32, 3), (4, 8, 8, 1), (3, 64, 80, 3)])
def test_jitted_keeps_shape_dtype_and_is_deterministic(name, shape):
    images = _batch(*shape)
    fn = jax.jit(augment.get(name))
    a = fn(jax.random.key(1), images)
    b = fn(jax.random.key(1), images)
    assert a.shape == images.shape and a.dtype == images.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same key, same batch
    if name != "none":
        c = fn(jax.random.key(2), images)
        assert not np.array_equal(np.asarray(a), np.asarray(c))  # another key, another batch
        assert not np.array_equal(np.asarray(a), np.asarray(images))  # inputs are changed
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(images))


def test_flip_is_an_exact_mirror_per_example():
    images = _batch(64)
    out = np.asarray(jax.jit(augment.flip)(jax.random.key(0), images))
    x = np.asarray(images)
    mirrored = [np.array_equal(o, i[:, ::-1, :]) for o, i in zip(out, x)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each example is exactly one of the two
    # Bernoulli(1/2) per example: 64 draws, both outcomes occur (P(all same) = 2 * 2**-64).
    assert 0 < sum(mirrored) < 64


def test_examples_get_their_own_keys():
    # The same image repeated 32 times must not be cropped identically everywhere.
    image = _batch(1)
    images = jnp.repeat(image, 32, axis=0)
    out = np.asarray(jax.jit(augment.crop)(jax.random.key(3), images))
    assert len({o.tobytes() for o in out}) > 1


def test_crop_is_a_zero_padded_translation_of_at_most_h_over_8():
    # Every output must equal the input shifted by some (dy, dx) with |d| <= 4 (32 // 8) and
    # zeros shifted in; found by trying all 81 shifts (the definition of pad-and-crop).
    images = _batch(16, 32, 32, 3)
    out = np.asarray(jax.jit(augment.crop)(jax.random.key(5), images))
    x = np.asarray(images)
    pad = 32 // 8
    shifts = set()
    for o, i in zip(out, x):
        padded = np.pad(i, ((pad, pad), (pad, pad), (0, 0)))
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(o, padded[dy : dy + 32, dx : dx + 32])
        ]
        assert found, "output is not a translation of its input"
        shifts.add(found[0])
    assert len(shifts) > 1


def test_crop_pads_at_least_one_pixel_on_tiny_images():
    # 8x8 digits: 8 // 8 = 1 pixel of padding, so shifts are in {-1, 0, 1}.
    images = _batch(32, 8, 8, 1)
    out = np.asarray(jax.jit(augment.crop)(jax.random.key(0), images))
    x = np.asarray(images)
    for o, i in zip(out, x):
        padded = np.pad(i, ((1, 1), (1, 1), (0, 0)))
        assert any(
            np.array_equal(o, padded[dy : dy + 8, dx : dx + 8])
            for dy in range(3)
            for dx in range(3)
        )


def test_standard_on_large_images_uses_resized_crop():
    # A constant image stays constant under any resized crop (bilinear weights sum to one), but
    # a pad-and-crop would shift zeros in: so a constant output shows the resized-crop path.
    images = jnp.full((8, 64, 64, 3), 2.5, jnp.float32)
    out = np.asarray(jax.jit(augment.standard)(jax.random.key(0), images))
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)
    small = jnp.full((8, 32, 32, 3), 2.5, jnp.float32)
    out_small = np.asarray(jax.jit(augment.standard)(jax.random.key(0), small))
    assert (out_small == 0).any()  # pad-and-crop shifted zeros in


def test_resized_crop_zooms_in():
    # A horizontal ramp x[i, j] = j: a box of width bw resized to the full width w advances
    # bw / w <= 1 input columns per output column, so the output's slope is bw / w, never above
    # 1, and below 1 for boxes narrower than the image.
    ramp = jnp.broadcast_to(jnp.arange(64, dtype=jnp.float32)[None, :, None], (64, 64, 1))
    images = jnp.broadcast_to(ramp, (16, 64, 64, 1))
    out = np.asarray(jax.jit(augment.resized_crop)(jax.random.key(0), images))
    slopes = np.median(np.diff(out[:, 32, 8:56, 0], axis=1), axis=1)
    assert (slopes <= 1 + 1e-4).all()
    assert (slopes < 0.9).any()
    assert out.min() >= 0 and out.max() <= 63  # values come from inside the image


def test_rejects_tables():
    with pytest.raises(ValueError, match="image batch"):
        augment.flip(jax.random.key(0), jnp.zeros((4, 10)))
