"""Output shapes at several input sizes, minimum sizes, stems, and PyTorch-compatible pooling.

Shapes are checked with jax.eval_shape (tracing only). Pooling numerics are checked against
NumPy loops written here from PyTorch's documented definitions.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.layers import AdaptiveAvgPool, MaxPool, pool_padding


def out_shape(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = architectures.variable_shapes(model, shape)
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape


def cpu_sized(name, **options):
    spec = architectures.spec(name)
    if "width" in spec.options:
        options.setdefault("width", 0.25)
    return architectures.get(name, **options)


@pytest.mark.parametrize("name", architectures.names())
def test_logits_shape_at_several_input_sizes_and_channels(name):
    spec = architectures.spec(name)
    model = cpu_sized(name, num_classes=7)
    # The minimum, a mid size and a large odd one; grey and colour (the first conv adapts).
    for size, channels in ((max(spec.min_image_size, 8), 1), (72, 3), (101, 1)):
        assert out_shape(model, (2, size, size, channels)) == (2, 7), (size, channels)
    if not spec.needs_image:
        assert out_shape(model, (3, 13)) == (3, 7)  # tables


@pytest.mark.parametrize(
    ("name", "options", "features"),
    [
        ("mlp", {"hidden_sizes": (64, 32)}, 32),
        ("lenet", {}, 84),
        ("alexnet", {}, 4096),
        ("vgg", {"depth": 11}, 4096),
        ("nin", {}, 384),
        ("googlenet", {}, 1024),
        ("resnet", {"depth": 18}, 512),
        ("resnet", {"depth": 50}, 2048),
    ],
)
def test_no_head_returns_features(name, options, features):
    size = max(architectures.spec(name).min_image_size, 8)
    model = architectures.get(name, num_classes=None, **options)
    assert out_shape(model, (2, size, size, 3)) == (2, features)


@pytest.mark.parametrize("name", [n for n in architectures.names() if n != "mlp"])
def test_minimum_image_size_is_exact(name):
    m = architectures.spec(name).min_image_size
    model = cpu_sized(name, num_classes=10)
    assert out_shape(model, (1, m, m, 1)) == (1, 10)
    with pytest.raises(ValueError, match=f"at least {m}x{m}") as err:
        out_shape(model, (1, m - 1, m - 1, 1))
    assert "\n" not in str(err.value)


def test_documented_minimum_sizes():
    # torchvision documents min_size 63 (AlexNet), 32 (VGG), 15 (GoogLeNet); LeNet-5's paper input
    # is 32x32; NiN's 11x11/4 stem and three 3x3/2 pools need 4*(2*(2*3+1)+1)+11-4 = 67; ResNet's
    # CIFAR stem and three stride-2 stages end on 1x1 at 8.
    expected = {"mlp": 1, "lenet": 32, "alexnet": 63, "vgg": 32, "nin": 67, "googlenet": 15,
                "resnet": 8}  # fmt: skip
    assert {n: architectures.spec(n).min_image_size for n in architectures.names()} == expected


def test_image_nets_reject_tables_in_one_line():
    with pytest.raises(ValueError, match="use --arch=mlp") as err:
        out_shape(architectures.get("lenet", num_classes=3), (4, 30))
    assert "\n" not in str(err.value)


def test_mlp_flattens_images():
    model = architectures.get("mlp", num_classes=10, hidden_sizes=(16,))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    variables = model.init(jax.random.key(1), x.reshape(2, 64))
    np.testing.assert_array_equal(
        model.apply(variables, x), model.apply(variables, x.reshape(2, 64))
    )


def test_resnet_stem_follows_input_size():
    model = architectures.get("resnet", num_classes=10, depth=18, width=0.25)
    small = architectures.variable_shapes(model, (1, 63, 63, 3))["params"]
    large = architectures.variable_shapes(model, (1, 64, 64, 3))["params"]
    assert small["stem"]["conv"]["kernel"].shape == (3, 3, 3, 16)  # CIFAR stem
    assert large["stem"]["conv"]["kernel"].shape == (7, 7, 3, 16)  # ImageNet stem
    forced = architectures.get("resnet", num_classes=10, width=0.25, stem="imagenet")
    kernel = architectures.variable_shapes(forced, (1, 32, 32, 3))["params"]["stem"]["conv"]
    assert kernel["kernel"].shape == (7, 7, 3, 16)


def _torch_pool_size(size, k, s, p, ceil):
    # PyTorch's MaxPool2d output size (its documentation), with the ceil-mode rule that the last
    # window must start inside the input or the left padding.
    out = (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_matches_pytorch_definition(k, s, p, ceil):
    for size in range(max(k - p, 2), 16):
        lo, hi = pool_padding(size, k, s, p, ceil)
        assert (size + lo + hi - k) // s + 1 == _torch_pool_size(size, k, s, p, ceil)
    # Numerics on one map: each output is the max over its window, padding never wins.
    size = 9
    x = jax.random.normal(jax.random.key(0), (1, size, size, 2)) - 10.0  # all negative
    y = np.asarray(MaxPool(k, s, padding=p, ceil_mode=ceil).apply({}, x))
    xn = np.asarray(x)
    n = _torch_pool_size(size, k, s, p, ceil)
    assert y.shape == (1, n, n, 2)
    for i in range(n):
        for j in range(n):
            r0, c0 = max(i * s - p, 0), max(j * s - p, 0)
            r1, c1 = min(i * s - p + k, size), min(j * s - p + k, size)
            np.testing.assert_array_equal(y[0, i, j], xn[0, r0:r1, c0:c1].max(axis=(0, 1)))


@pytest.mark.parametrize(("size", "out"), [(6, 6), (13, 6), (1, 4), (14, 4)])
def test_adaptive_avg_pool_matches_pytorch_definition(size, out):
    # PyTorch: window i spans [floor(i*size/out), ceil((i+1)*size/out)) on each axis.
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    y = np.asarray(AdaptiveAvgPool(out).apply({}, x))
    xn = np.asarray(x)
    for i in range(out):
        for j in range(out):
            r0, r1 = (i * size) // out, math.ceil((i + 1) * size / out)
            c0, c1 = (j * size) // out, math.ceil((j + 1) * size / out)
            # atol: a float32 mean of O(1) values carries ~1e-7 absolute error, so a mean near 0
            # cannot meet rtol alone (measured: 1.8e-8 off a mean of 1.4e-3, case 13 -> 6).
            np.testing.assert_allclose(
                y[:, i, j], xn[:, r0:r1, c0:c1].mean(axis=(1, 2)), rtol=1e-5, atol=1e-7
            )
