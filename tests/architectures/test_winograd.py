"""architectures.winograd: F(2x2, 3x3) and F(4x4, 3x3) equal XLA's convolution, values and grads.

Expected values come from `lax.conv_general_dilated` (XLA's convolution) on the same inputs.
Tolerances: F(2x2, 3x3)'s transforms hold only 0, +-1 and 1/2, so it gets the matmul forms'
float32 summation-order tolerance (tests/architectures/test_conv_lowering.py); F(4x4, 3x3)'s
hold 4, 5 and 8 (and 1/6, 1/24), which scale up the rounding of the transformed values, by about
an order of magnitude measured here (2e-6 against 2e-7 of the output's largest value), as
Lavin and Gray (2016, section 5) report, so its tolerances are ten times wider.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arch_helpers import leaf_errors
from jax import lax

import architectures
from architectures import conv_lowering, winograd

NHWC = ("NHWC", "HWIO", "NHWC")
TOLERANCE = {2: {"atol": 1e-4, "rtol": 1e-5}, 4: {"atol": 1e-3, "rtol": 1e-4}}

# (N, H, W, C), F, padding: square and odd maps, maps smaller than a tile (1x1, 2x2, 3x3),
# sizes that are not a multiple of the tile (the last tiles are cropped), asymmetric and
# zero padding ("VALID"), and more channels than a tile's positions.
SHAPES = [
    ((2, 8, 8, 3), 4, ((1, 1), (1, 1))),
    ((2, 7, 5, 4), 3, ((1, 1), (1, 1))),
    ((3, 1, 1, 2), 5, ((1, 1), (1, 1))),
    ((2, 2, 2, 5), 6, ((1, 1), (1, 1))),
    ((1, 3, 3, 2), 2, ((1, 1), (1, 1))),
    ((2, 6, 9, 3), 4, ((0, 0), (2, 1))),
    ((2, 9, 6, 3), 2, ((0, 2), (1, 0))),
    ((2, 12, 12, 16), 24, ((1, 1), (1, 1))),
    ((1, 17, 11, 3), 3, ((1, 1), (1, 1))),
]


def _value_and_grads(conv, x, kernel):
    def loss(x, kernel):
        # sin: a loss whose gradient depends on every output value, not only on their sum
        return jnp.sum(jnp.sin(conv(x, kernel)))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


def _inputs(shape, features, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], features)), jnp.float32)
    return x, kernel


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape, features, padding", SHAPES)
def test_winograd_equals_xla_in_values_and_gradients(tile, shape, features, padding):
    x, kernel = _inputs(shape, features)
    want = _value_and_grads(
        lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC),
        x,
        kernel,
    )
    got = _value_and_grads(
        lambda x, k: winograd.winograd_conv(x, k, padding=padding, tile=tile), x, kernel
    )
    chex.assert_trees_all_close(got, want, **TOLERANCE[tile])


@pytest.mark.parametrize("tile", [2, 4])
def test_the_written_out_transposes_equal_jaxs_own(tile):
    # The three transforms are linear with hand-written transposes (custom VJPs): each must be
    # the exact adjoint, which jax.linear_transpose derives from the forward function alone.
    rng = np.random.default_rng(3)
    n, th, tw, c = 2, 3, 2, 4
    size = tile + 2
    xp = jnp.asarray(rng.normal(size=(n, tile * (th + 1), tile * (tw + 1), c)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, c, 5)), jnp.float32)
    m = jnp.asarray(rng.normal(size=(size * size, n * th * tw, 5)), jnp.float32)
    cases = [
        (lambda a: winograd._input_transform_fwd(a, tile), xp),
        (lambda a: winograd._output_transform_fwd(a, tile, (n, th, tw)), m),
        (lambda a: winograd._sandwich(a, *(winograd.TRANSFORMS[tile][1],) * 2), kernel),
    ]
    customs = [
        lambda a: winograd._input_transform(a, tile, (n, th, tw)),
        lambda a: winograd._output_transform(a, tile, (n, th, tw)),
        lambda a: jnp.reshape(winograd._kernel_transform(a, tile), (size, size, c, 5)),
    ]
    for (plain, primal), custom in zip(cases, customs):
        out = plain(primal)
        cotangent = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
        (want,) = jax.linear_transpose(plain, primal)(cotangent)
        _, vjp = jax.vjp(custom, primal)
        (got,) = jax.jit(vjp)(cotangent)
        chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_router_sends_large_3x3_stride_1_convolutions_to_winograd(monkeypatch):
    # With the thresholds lowered, a small 3x3 stride-1 convolution takes the Winograd path (its
    # batched dot_general has the tile positions as batch dimension), equal to XLA's; stride 2
    # and 1x1 kernels keep the matmul forms.
    monkeypatch.setattr(conv_lowering, "WINOGRAD_FLOPS", 0)
    monkeypatch.setattr(conv_lowering, "WINOGRAD_TILE4_SIZE", 8)
    pad = ((1, 1), (1, 1))
    assert conv_lowering.winograd_tile((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), pad) == 4
    assert conv_lowering.winograd_tile((2, 6, 6, 3), (3, 3, 3, 4), (1, 1), pad) == 2
    assert conv_lowering.winograd_tile((2, 3, 3, 3), (3, 3, 3, 4), (1, 1), pad) == 0
    assert conv_lowering.winograd_tile((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), pad) == 0
    assert conv_lowering.winograd_tile((2, 8, 8, 3), (1, 1, 3, 4), (1, 1), ((0, 0), (0, 0))) == 0
    assert conv_lowering.winograd_tile((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), ((-1, 1), (1, 1))) == 0
    x, kernel = _inputs((2, 6, 6, 3), 4, seed=5)

    def conv(x, k):
        return conv_lowering.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)

    text = jax.jit(conv).lower(x, kernel).as_text()
    assert "batching_dims = [0] x [0]" in text and "convolution" not in text
    want = _value_and_grads(
        lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC),
        x,
        kernel,
    )
    chex.assert_trees_all_close(_value_and_grads(conv, x, kernel), want, **TOLERANCE[2])


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32():
    # --dtype=bfloat16 convolutions: the output keeps the input's dtype; the kernel transform is
    # computed in float32 and rounded once.
    x, kernel = _inputs((2, 8, 8, 4), 4, seed=7)
    want = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
    got = jax.jit(lambda x, k: winograd.winograd_conv(x, k, padding=((1, 1), (1, 1)), tile=2))(
        x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    )
    assert got.dtype == jnp.bfloat16
    # bfloat16 keeps 8 significant bits: 2^-8 of the outputs' scale per rounding, a few roundings.
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got.astype(jnp.float32) - want))) < 0.05 * scale


# Net-level gradients are compared leaf by leaf, each against its own scale (`leaf_errors`): the
# largest error of a leaf may be this share of the leaf's largest value. Measured on the correct
# code (2026-12-07): at most 3.1e-6 (ResNet-18, layer1_0/conv1) and 5.7e-6 (VGG-16, conv1_1) at
# quarter width; a wrong gradient (a +10% kernel gradient on one convolution, a zeroed one) is
# off by 0.1 or 1 of its leaf.
LEAF_TOLERANCE = 1e-4


def net_gradients(arch: str, check_lowering: bool = True):
    """(Winograd's, XLA's) parameter gradients of a quarter-width `arch` on 2 random 32x32x3.

    ResNet is built without `zero_init_residual` (which zeroes every block's last BatchNorm
    scale, and with it the gradient of every block convolution): every leaf's gradient is
    non-zero. `check_lowering`: first check the compiled program holds no convolution (off
    where a test counts the Winograd calls of one trace).
    """
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)), jnp.float32)
    options = {"zero_init_residual": False} if arch == "resnet" else {}
    auto = architectures.get(arch, num_classes=10, conv="auto", width=0.25, **options)
    xla = architectures.get(arch, num_classes=10, conv="xla", width=0.25, **options)
    variables = auto.init(jax.random.PRNGKey(0), x)

    def loss(model, params):
        logits = model.apply({**variables, "params": params}, x)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    if check_lowering:
        text = jax.jit(lambda p: loss(auto, p)).lower(variables["params"]).as_text()
        assert "convolution" not in text and "batching_dims = [0] x [0]" in text
    got = jax.jit(jax.grad(lambda p: loss(auto, p)))(variables["params"])
    want = jax.jit(jax.grad(lambda p: loss(xla, p)))(variables["params"])
    return got, want


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """The 3x3 stride-1 convolutions on Winograd, its thresholds lowered.

    F(4x4, 3x3) on the 32x32 to 8x8 maps, F(2x2, 3x3) on 4x4, the matmul forms below.
    """
    monkeypatch.setattr(conv_lowering, "WINOGRAD_FLOPS", 0)
    monkeypatch.setattr(conv_lowering, "WINOGRAD_TILE4_SIZE", 8)


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_a_net_with_winograd_layers_has_xlas_gradients_leaf_by_leaf(winograd_everywhere, arch):
    errors = leaf_errors(*net_gradients(arch))
    assert max(errors.values()) <= LEAF_TOLERANCE, max(errors.items(), key=lambda e: e[1])


def _broken(input_scale: float, kernel_scale: float, which: int | None):
    """`winograd_conv` whose backward pass scales its input and kernel gradients.

    Of the convolution traced `which`-th (0: the stem; 1: the first block's first), or of all.
    """
    real, calls = winograd.winograd_conv, []

    def conv(x, kernel, **kwargs):
        if x.shape[-1] == 3:  # the net's first convolution (RGB input): a new trace begins
            calls.clear()  # (init, then the gradient's trace, each call every convolution)
        calls.append(None)
        if which is not None and len(calls) - 1 != which:
            return real(x, kernel, **kwargs)

        @jax.custom_vjp
        def wrong(x, kernel):
            return real(x, kernel, **kwargs)

        def forward(x, kernel):
            return jax.vjp(lambda a, b: real(a, b, **kwargs), x, kernel)

        def backward(vjp, cotangent):
            dx, dk = vjp(cotangent)
            return dx * input_scale, dk * kernel_scale

        wrong.defvjp(forward, backward)
        return wrong(x, kernel)

    return conv


@pytest.mark.parametrize(
    ("arch", "mutation"),
    [
        ("resnet", (0.0, 1.0, None)),  # every Winograd convolution's input gradient zeroed
        ("resnet", (1.0, 0.0, None)),  # every Winograd convolution's kernel gradient zeroed
        ("resnet", (1.0, 1.1, 1)),  # one block convolution's kernel gradient 10% too large
        ("vgg", (1.0, 1.1, 1)),  # VGG's second convolution's
    ],
)
def test_each_gradient_bug_fails_the_net_level_comparison(
    winograd_everywhere, monkeypatch, arch, mutation
):
    # The net-level test above must fail on a wrong backward pass: each mutation breaks it.
    monkeypatch.setattr(winograd, "winograd_conv", _broken(*mutation))
    errors = leaf_errors(*net_gradients(arch, check_lowering=False))
    broken = {path: e for path, e in errors.items() if e > LEAF_TOLERANCE}
    assert broken, "a wrong gradient passed the comparison"
    print(arch, mutation, "fails on", broken)
