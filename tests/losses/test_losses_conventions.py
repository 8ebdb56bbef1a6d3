"""Conventions every loss shares: registry, reduction, where, shape/dtype errors, jit/vmap/bf16.

The expected values here come from the losses' own documented contract (losses/__init__.py):
"mean" = sum of per-example values / kept count (or kept target weight), "sum" = their sum,
masked rows are absent; the per-loss values themselves are checked against optax / NumPy in
the per-family test files.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses

B, D, C = 6, 3, 4
CLASS_WEIGHTS = np.array([1.0, 2.0, 0.5, 3.0], np.float32)


def _normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _labels(rng):
    return rng.integers(0, C, size=B).astype(np.int32)


def _probs(rng):
    raw = rng.uniform(size=(B, C))
    return (raw / raw.sum(-1, keepdims=True)).astype(np.float32)


def _binary(rng):
    return (rng.uniform(size=(B, C)) > 0.5).astype(np.float32)


# case id -> (registry name, args maker, keyword hyperparameters)
CASES = {
    "mse": ("mse", lambda r: (_normal(r, (B, D)), _normal(r, (B, D))), {}),
    "mae": ("mae", lambda r: (_normal(r, (B,)), _normal(r, (B,))), {}),
    "huber": ("huber", lambda r: (_normal(r, (B, D)), _normal(r, (B, D))), {"delta": 0.5}),
    "smooth_l1": ("smooth_l1", lambda r: (_normal(r, (B, D)), _normal(r, (B, D))), {"beta": 0.5}),
    "log_cosh": ("log_cosh", lambda r: (_normal(r, (B, D)), _normal(r, (B, D))), {}),
    "cross_entropy": (
        "cross_entropy",
        lambda r: (_normal(r, (B, C)), _labels(r)),
        {"label_smoothing": 0.1, "class_weights": CLASS_WEIGHTS},
    ),
    "binary_cross_entropy": (
        "binary_cross_entropy",
        lambda r: (_normal(r, (B, C)), _binary(r)),
        {"pos_weight": 2.0},
    ),
    "focal": ("focal", lambda r: (_normal(r, (B, C)), _binary(r)), {"alpha": 0.25}),
    "focal_multiclass": (
        "focal",
        lambda r: (_normal(r, (B, C)), _labels(r)),
        {"multiclass": True, "gamma": 0.5},
    ),
    "kl_divergence": ("kl_divergence", lambda r: (_normal(r, (B, C)), _probs(r)), {}),
    "triplet_margin": (
        "triplet_margin",
        lambda r: tuple(_normal(r, (B, D)) for _ in range(3)),
        {"margin": 1.0, "swap": True},
    ),
}
IDS = list(CASES)
MASK = np.array([True, False, True, True, False, True])


def _make(case, seed=0):
    name, make_args, kwargs = CASES[case]
    return losses.get(name), make_args(np.random.default_rng(seed)), kwargs


def _float_positions(args):
    return tuple(i for i, a in enumerate(args) if np.issubdtype(a.dtype, np.floating))


def _garbage(args):
    """The arguments with the masked rows overwritten by NaN / inf / an invalid label."""
    out = []
    for a in args:
        a = a.copy()
        if np.issubdtype(a.dtype, np.floating):
            a[~MASK] = np.nan
            a[np.flatnonzero(~MASK)[0]] = np.inf
        else:
            a[~MASK] = -1
        out.append(a)
    return tuple(out)


def _expected_mean(case, per_example, args, mask=None):
    """The documented "mean": kept sum / kept count, or / kept target weight (weighted CE)."""
    keep = np.ones(B, bool) if mask is None else mask
    if case == "cross_entropy":
        return per_example[keep].sum() / CLASS_WEIGHTS[args[1][keep]].sum()
    return per_example[keep].mean()


# ---------------------------------------------------------------- registry


def test_registry_has_every_documented_name():
    # The names fixed by the project's interface (SPEC "Interfaces" / issue 2).
    expected = {
        "mse",
        "mae",
        "huber",
        "smooth_l1",
        "log_cosh",
        "cross_entropy",
        "binary_cross_entropy",
        "focal",
        "kl_divergence",
        "triplet_margin",
    }
    assert set(losses.names()) == expected
    for name in losses.names():
        fn = losses.get(name)
        assert fn is getattr(losses, name) and fn.__name__ == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown loss 'hubber'") as info:
        losses.get("hubber")
    for name in losses.names():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        losses.get(None)


# ---------------------------------------------------------------- reduction and where


@pytest.mark.parametrize("case", IDS)
def test_reductions_follow_the_documented_contract(case):
    fn, args, kwargs = _make(case)
    none = np.asarray(fn(*args, **kwargs, reduction="none"))
    assert none.shape == (B,) and none.dtype == np.float32 and np.all(np.isfinite(none))
    np.testing.assert_allclose(fn(*args, **kwargs, reduction="sum"), none.sum(), rtol=1e-5)
    expected = _expected_mean(case, none, args)
    np.testing.assert_allclose(fn(*args, **kwargs), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none'"):
        fn(*args, **kwargs, reduction="avg")


@pytest.mark.parametrize("case", IDS)
def test_masked_rows_change_neither_values_nor_gradients(case):
    fn, args, kwargs = _make(case, seed=1)
    kept = tuple(a[MASK] for a in args)
    dirty = _garbage(args)
    positions = _float_positions(args)

    @jax.jit
    def run(args, where):
        """All reductions at once (one compile per batch shape); gradients of the mean."""

        def mean(floats):
            full = list(args)
            for i, x in zip(positions, floats):
                full[i] = x
            return fn(*full, **kwargs, where=where)

        value, grads = jax.value_and_grad(mean)(tuple(args[i] for i in positions))
        total = fn(*args, **kwargs, reduction="sum", where=where)
        return value, grads, total, fn(*args, **kwargs, reduction="none", where=where)

    value, grads, total, none = run(dirty, jnp.asarray(MASK))
    ref_value, ref_grads, ref_total, ref_none = run(kept, None)
    # "none": masked entries are 0, kept entries are the batch-without-them values. The two
    # batch shapes compile to differently fused programs, so float32 rounding of O(1) terms
    # (KL's sum of p log p - p log q cancels) can differ by an ulp: atol 1e-6.
    np.testing.assert_array_equal(np.asarray(none)[~MASK], 0.0)
    np.testing.assert_allclose(np.asarray(none)[MASK], ref_none, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(total, ref_total, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6, atol=1e-6)
    for g, ref_g in zip(grads, ref_grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), f"{case}: non-finite gradient"
        np.testing.assert_array_equal(g[~MASK], 0.0)
        np.testing.assert_allclose(g[MASK], ref_g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ["mse", "cross_entropy", "triplet_margin"])
def test_all_masked_mean_is_zero_not_nan(case):
    fn, args, kwargs = _make(case)
    nothing = np.zeros(B, bool)
    value, grads = jax.value_and_grad(lambda x: fn(x, *args[1:], **kwargs, where=nothing))(args[0])
    assert float(value) == 0.0
    np.testing.assert_array_equal(grads, 0.0)


def test_where_must_be_boolean_of_batch_shape():
    x = jnp.zeros((B, D))
    with pytest.raises(TypeError, match="where must be a boolean"):
        losses.mse(x, x, where=jnp.ones(B))
    with pytest.raises(ValueError, match=re.escape(f"shape (batch,) = ({B},), got shape ({B}, 1)")):
        losses.mse(x, x, where=jnp.ones((B, 1), bool))


# ---------------------------------------------------------------- shapes and dtypes


def _shrink(a):
    return a[:, :-1] if a.ndim >= 2 else a[:-1]


@pytest.mark.parametrize("case", IDS)
def test_mismatched_shapes_raise_naming_both_shapes(case):
    fn, args, kwargs = _make(case)
    bad = list(args)
    bad[-1] = _shrink(bad[-1])  # targets (or the negatives, for triplets)
    with pytest.raises(ValueError) as info:
        fn(*bad, **kwargs)
    message = str(info.value)
    assert str(tuple(args[0].shape)) in message, message
    assert str(tuple(bad[-1].shape)) in message, message
    assert "\n" not in message


@pytest.mark.parametrize("case", IDS)
def test_integer_predictions_raise_type_error(case):
    fn, args, kwargs = _make(case)
    with pytest.raises(TypeError, match="floating-point"):
        fn(args[0].astype(np.int32), *args[1:], **kwargs)


def test_no_silent_broadcast_of_column_targets():
    # The classic bug: (batch,) predictions against (batch, 1) targets broadcast to
    # (batch, batch). Refused, naming both shapes.
    with pytest.raises(ValueError, match=re.escape("(6,)") + ".*" + re.escape("(6, 1)")):
        losses.mse(jnp.zeros(B), jnp.zeros((B, 1)))


def test_float_class_labels_raise_type_error():
    with pytest.raises(TypeError, match="class indices"):
        losses.cross_entropy(jnp.zeros((B, C)), jnp.zeros(B))


# ---------------------------------------------------------------- jit, vmap, bfloat16


@pytest.mark.parametrize("case", IDS)
def test_jit_and_vmap_agree_with_eager(case):
    fn, args, kwargs = _make(case, seed=2)
    _, args2, _ = _make(case, seed=3)
    eager = fn(*args, **kwargs)
    # vmap over an extra leading axis (e.g. an ensemble): one loss per stacked batch. Both
    # paths are compiled in one program (one compile per case keeps the suite fast).
    stacked = tuple(np.stack([a, b]) for a, b in zip(args, args2))

    @jax.jit
    def both(args, stacked):
        return fn(*args, **kwargs), jax.vmap(lambda *a: fn(*a, **kwargs))(*stacked)

    jitted, mapped = both(args, stacked)
    # atol: differently fused float32 programs may round O(1) terms an ulp apart (see above).
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mapped, [eager, fn(*args2, **kwargs)], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", IDS)
def test_bfloat16_inputs_compute_in_float32(case):
    fn, args, kwargs = _make(case, seed=4)
    positions = _float_positions(args)
    low = [a.astype(jnp.bfloat16) if i in positions else a for i, a in enumerate(args)]
    # Reference: the same bfloat16 values widened to float32 before the call.
    wide = [a.astype(np.float32) if i in positions else a for i, a in enumerate(low)]
    value, grad = jax.jit(jax.value_and_grad(lambda x: fn(x, *low[1:], **kwargs)))(low[0])
    assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(value, fn(*wide, **kwargs), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))
