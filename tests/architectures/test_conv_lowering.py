"""architectures.conv_lowering: the CPU matmul lowering equals XLA's convolution, values and grads.

Expected values come from `lax.conv_general_dilated` itself (XLA's convolution) on the same
inputs; the tolerance is float32 summation-order noise for sums of at most a few thousand terms.
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
from architectures import conv_lowering

NHWC = ("NHWC", "HWIO", "NHWC")

# (input N, H, W, C), (kh, kw, F), strides, padding: every stride the zoo uses and more, odd
# and even sizes, asymmetric and string paddings, cropping (negative) padding, 1x1 maps under
# a 3x3 kernel (taps reading only padding are dropped), a kernel larger than the stride.
SHAPES = [
    ((2, 5, 7, 3), (3, 3, 4), (1, 1), ((1, 1), (1, 1))),
    ((2, 8, 8, 3), (3, 3, 4), (2, 2), ((1, 1), (1, 1))),
    ((2, 7, 7, 3), (3, 3, 4), (2, 2), ((1, 1), (1, 1))),
    ((3, 1, 1, 5), (3, 3, 6), (1, 1), ((1, 1), (1, 1))),
    ((2, 2, 2, 5), (3, 3, 6), (2, 2), ((1, 1), (1, 1))),
    ((2, 7, 6, 3), (4, 2, 4), (2, 3), ((2, 1), (0, 1))),
    ((2, 9, 9, 2), (1, 1, 3), (2, 2), ((0, 0), (0, 0))),
    ((2, 9, 9, 2), (1, 1, 3), (1, 1), ((0, 0), (0, 0))),
    ((2, 8, 8, 3), (4, 4, 4), (2, 2), "SAME"),
    ((2, 8, 8, 3), (3, 3, 4), (1, 1), "VALID"),
    ((2, 6, 6, 3), (3, 3, 4), (1, 1), ((-1, 1), (2, 0))),
    ((2, 9, 9, 3), (5, 5, 4), (3, 3), ((2, 2), (2, 2))),
    ((2, 12, 12, 3), (11, 11, 4), (4, 4), ((2, 2), (2, 2))),  # AlexNet's first layer, small
    ((1, 3, 3, 1), (5, 5, 2), (1, 1), ((2, 2), (2, 2))),  # kernel larger than the map
]


def _value_and_grads(conv, x, kernel, strides, padding):
    def loss(x, kernel):
        # sin: a loss whose gradient depends on every output value, not only on their sum
        return jnp.sum(jnp.sin(conv(x, kernel, strides, padding, dimension_numbers=NHWC)))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


@pytest.mark.parametrize("patch_bytes", [conv_lowering.PATCH_BYTES, 0], ids=["im2col", "taps"])
@pytest.mark.parametrize("shape, kernel_shape, strides, padding", SHAPES)
def test_matmul_lowering_equals_xla_in_values_and_gradients(
    monkeypatch, patch_bytes, shape, kernel_shape, strides, padding
):
    monkeypatch.setattr(conv_lowering, "PATCH_BYTES", patch_bytes)
    rng = np.random.default_rng(0)
    kh, kw, f = kernel_shape
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kh, kw, shape[-1], f)), jnp.float32)
    want = _value_and_grads(lax.conv_general_dilated, x, kernel, strides, padding)
    got = _value_and_grads(conv_lowering.conv_general_dilated, x, kernel, strides, padding)
    chex.assert_trees_all_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_cpu_traces_matmuls_and_gpu_tpu_keep_xlas_convolution(monkeypatch, backend):
    # The form is chosen at trace time from the backend JAX runs on.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)

    def conv(x, kernel):
        return conv_lowering.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC
        )

    text = jax.jit(conv).lower(jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 3, 5))).as_text()
    if backend == "cpu":
        assert "convolution" not in text and "dot_general" in text
    else:
        assert "convolution" in text and "dot_general" not in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rhs_dilation": (2, 2)},
        {"lhs_dilation": (2, 2)},
        {"feature_group_count": 3},
        {"dimension_numbers": ("NCHW", "OIHW", "NCHW")},
    ],
    ids=["kernel_dilation", "input_dilation", "groups", "nchw"],
)
def test_what_the_matmul_form_does_not_cover_goes_to_xla(kwargs):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    in_channels = 1 if "feature_group_count" in kwargs else 3
    kernel = jnp.asarray(rng.normal(size=(3, 3, in_channels, 3)), jnp.float32)
    if kwargs.get("dimension_numbers") == ("NCHW", "OIHW", "NCHW"):
        x, kernel = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(kernel, (3, 2, 0, 1))
    kwargs = {"dimension_numbers": NHWC, **kwargs}
    args = (x, kernel, (1, 1), ((1, 1), (1, 1)))
    want = lax.conv_general_dilated(*args, **kwargs)
    got = jax.jit(lambda x, k: conv_lowering.conv_general_dilated(x, k, *args[2:], **kwargs))(
        x, kernel
    )
    chex.assert_trees_all_close(got, want, atol=1e-5)
    text = jax.jit(lambda x, k: conv_lowering.conv_general_dilated(x, k, *args[2:], **kwargs))
    assert "convolution" in text.lower(x, kernel).as_text()


# The nets' gradients compared leaf by leaf, each against its own scale (`leaf_errors`).
# Measured (2026-12-07): at most 8.5e-7 of a leaf's largest value (ResNet-18's stem kernel);
# a +10% or zeroed gradient is off by 0.1 or 1.
LEAF_TOLERANCE = 2e-5


@pytest.mark.parametrize("arch", ["resnet", "lenet", "googlenet", "nin", "alexnet", "vgg"])
def test_a_net_built_either_way_has_the_same_parameters_and_outputs(arch):
    # Checkpoint portability: parameters never depend on the lowering, and a model trained with
    # one evaluates (and trains) the same with the other, within float tolerance. Every
    # gradient leaf takes part: ResNet without zero_init_residual (whose zero BatchNorm scales
    # zero every block convolution's gradient), GoogLeNet without the auxiliary heads (unused
    # outside training).
    size = architectures.spec(arch).min_image_size
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, size, size, 3)), jnp.float32)
    options = {"width": 0.25} if "width" in architectures.spec(arch).options else {}
    options.update({"resnet": {"zero_init_residual": False}, "googlenet": {"aux_heads": False}}
                   .get(arch, {}))  # fmt: skip
    auto = architectures.get(arch, num_classes=10, conv="auto", **options)
    xla = architectures.get(arch, num_classes=10, conv="xla", **options)
    variables = auto.init(jax.random.PRNGKey(0), x)
    chex.assert_trees_all_equal_shapes_and_dtypes(variables, xla.init(jax.random.PRNGKey(0), x))

    def loss(model, params):
        logits = model.apply({**variables, "params": params}, x)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    got = jax.jit(jax.value_and_grad(lambda p: loss(auto, p)))(variables["params"])
    want = jax.jit(jax.value_and_grad(lambda p: loss(xla, p)))(variables["params"])
    chex.assert_trees_all_close(got[0], want[0], atol=2e-4, rtol=2e-4)
    errors = leaf_errors(got[1], want[1])
    assert max(errors.values()) <= LEAF_TOLERANCE, max(errors.items(), key=lambda e: e[1])


def test_an_unknown_lowering_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown conv 'fast'; valid: auto, xla"):
        architectures.get("lenet", num_classes=10, conv="fast")
