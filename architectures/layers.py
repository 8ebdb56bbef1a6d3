"""Building blocks shared by the zoo: activations and initialisers by name, pooling, the base net.

Every module's `__call__` takes `train` and an optional keyword `mask` ((N,) bool, True for a
real row; None: all rows real), which reaches each BatchNorm so that the padding rows of a
partial batch stay out of the batch statistics (`architectures.batchnorm`).

Pooling layers are small modules (not bare functions) so that the model summary sees them: they
change the output shape and the receptive field, and the summary reads their window and stride
from the module's attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from architectures.batchnorm import BatchNorm
from architectures.conv_lowering import conv_function

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid")
INITS = ("lecun", "he", "xavier", "normal")

# Hidden activations are sown into this collection; it is only kept when an apply asks for it
# (`mutable=[ACTIVATIONS_COLLECTION]`), so training and evaluation pay nothing.
ACTIVATIONS_COLLECTION = "activations"

# BatchNorm defaults for the whole zoo: flax's momentum 0.9 is PyTorch's 0.1; eps as torchvision.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
HEAD = "head"  # the classifier layer every zoo net ends with (fine-tuning zeroes a fresh one)


def activation(name: str, *, leaky_slope: float = 0.01) -> Callable[[jax.Array], jax.Array]:
    """Returns the elementwise activation called `name`.

    Args:
        name: one of relu, leaky_relu, gelu (exact erf form, as PyTorch's default), tanh, sigmoid.
        leaky_slope: negative-side slope for leaky_relu.

    Returns:
        A function from an array to an array of the same shape.

    >>> activation("leaky_relu", leaky_slope=0.2)(jnp.array([-1.0, 2.0])).tolist()
    [-0.20000000298023224, 2.0]
    """
    if name == "relu":
        return nn.relu
    if name == "leaky_relu":
        return lambda x: nn.leaky_relu(x, negative_slope=leaky_slope)
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=False)
    if name == "tanh":
        return jnp.tanh
    if name == "sigmoid":
        return nn.sigmoid
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def kernel_init(name: str) -> nn.initializers.Initializer:
    """Returns the kernel initialiser called `name`.

    lecun = LeCun normal (flax's default), he = He/Kaiming normal (fan_in), xavier = Glorot
    uniform (PyTorch's `xavier_uniform_`), normal = N(0, 0.02) (the DCGAN convention).
    """
    if name == "lecun":
        return nn.initializers.lecun_normal()
    if name == "he":
        return nn.initializers.he_normal()
    if name == "xavier":
        return nn.initializers.glorot_uniform()
    if name == "normal":
        return nn.initializers.normal(stddev=0.02)
    raise ValueError(f"unknown init {name!r}; valid: {', '.join(INITS)}")


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` scaled by the width multiplier, at least 1."""
    return max(1, round(channels * width))


def check_image(x: jax.Array, min_size: int, arch: str) -> None:
    """Raises a one-line ValueError unless x is a batch of images at least min_size pixels a side.

    Args:
        x: the network input, expected (N, H, W, C).
        min_size: the smallest H and W the architecture's geometry allows.
        arch: the architecture's registry name, for the message.
    """
    if x.ndim != 4:
        raise ValueError(
            f"{arch} expects images shaped (N, H, W, C), got shape {tuple(x.shape)}; "
            "use --arch=mlp for tables"
        )
    height, width = x.shape[1:3]
    if height < min_size or width < min_size:
        raise ValueError(
            f"{arch} needs images of at least {min_size}x{min_size}, got {height}x{width}; "
            f"resize them to {min_size} or more (the engine does so by default: --image_size)"
        )


def pool_padding(
    size: int, window: int, stride: int, padding: int, ceil_mode: bool
) -> tuple[int, int]:
    """(low, high) padding that reproduces PyTorch's pooling output size, floor or ceil mode.

    PyTorch: out = floor_or_ceil((size + 2p - k) / s) + 1, and in ceil mode the last window must
    start inside the input or the left padding. Ceil mode needs extra padding on the high side.
    """
    span = size + 2 * padding - window
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ValueError(
            f"pooling window {window} does not fit a {size}-pixel feature map; use larger images"
        )
    extra = max(0, (out - 1) * stride + window - (size + 2 * padding))
    return padding, padding + extra


class MaxPool(nn.Module):
    """Max pooling with PyTorch's padding and floor/ceil semantics (padding counts as -inf).

    Attributes:
        window: square window size k.
        stride: stride s (flax's default stride of 1 is a classic pitfall; always explicit here).
        padding: symmetric padding p on each side.
        ceil_mode: round the output size up, as PyTorch's `ceil_mode=True` (and Caffe).
    """

    window: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, H', W', C)."""
        pads = [
            pool_padding(d, self.window, self.stride, self.padding, self.ceil_mode)
            for d in x.shape[1:3]
        ]
        return nn.max_pool(
            x, (self.window, self.window), strides=(self.stride, self.stride), padding=pads
        )


class AvgPool(nn.Module):
    """Average pooling over k x k windows with stride s, no padding (LeNet's subsampling)."""

    window: int
    stride: int

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, floor((H-k)/s)+1, floor((W-k)/s)+1, C)."""
        for d in x.shape[1:3]:
            pool_padding(d, self.window, self.stride, 0, False)  # raises if the window does not fit
        return nn.avg_pool(x, (self.window, self.window), strides=(self.stride, self.stride))


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix; PyTorch's windows [floor(i*n/o), ceil((i+1)*n/o))."""
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, math.ceil((i + 1) * size / out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool(nn.Module):
    """PyTorch's AdaptiveAvgPool2d: any (H, W) to (output_size, output_size); smaller maps repeat.

    torchvision's AlexNet and VGG use it before the classifier, which is why their parameter
    counts do not depend on the input size.
    """

    output_size: int

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, output_size, output_size, C)."""
        rows = jnp.asarray(_adaptive_matrix(x.shape[1], self.output_size), x.dtype)
        cols = jnp.asarray(_adaptive_matrix(x.shape[2], self.output_size), x.dtype)
        return jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: (N, H, W, C) -> (N, C)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, C)."""
        return jnp.mean(x, axis=(1, 2))


class Flatten(nn.Module):
    """(N, ...) -> (N, prod(...)), row-major (H, W, C order, unlike PyTorch's C, H, W)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, ...) -> (N, D)."""
        return x.reshape(x.shape[0], -1)


def sow_activation(module: nn.Module, x: jax.Array) -> None:
    """Keeps `x` in the activations collection when an apply asks for it (never at init)."""
    if not module.is_initializing() and module.is_mutable_collection(ACTIVATIONS_COLLECTION):
        module.sow(ACTIVATIONS_COLLECTION, "act", x)


class ConvUnit(nn.Module):
    """Conv -> optional BatchNorm -> optional activation (torchvision's BasicConv2d when act is on).

    Attributes:
        features: output channels.
        kernel: square kernel size.
        stride: stride.
        padding: symmetric zero padding (PyTorch convention; flax's "SAME" differs for stride 2).
        use_bias: conv bias (families drop it where BatchNorm follows, as in their reference).
        zero_init: start with a zero output (zero BatchNorm scale, or zero kernel without BN).
        batchnorm: add BatchNorm after the conv.
        act: apply the activation (off for a block's last unit or for logits).
        activation, leaky_slope, initializer, dtype, bn_axis_name, bn_epsilon, conv: as the
            parent net.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    batchnorm: bool = False
    act: bool = True
    activation: str = "relu"
    leaky_slope: float = 0.01
    initializer: str = "lecun"
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    bn_epsilon: float = BN_EPSILON
    zero_init: bool = False
    conv: str = "auto"

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C) -> (N, H', W', features); `mask` (N,) marks real rows for BatchNorm."""
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        # zero_init makes the unit output zero at init: through BatchNorm's scale when there is
        # one (ResNet's zero-init residual), else through the conv kernel itself.
        zero_kernel = self.zero_init and not self.batchnorm
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=self.stride,
            padding=pad,
            use_bias=self.use_bias,
            kernel_init=nn.initializers.zeros if zero_kernel else kernel_init(self.initializer),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            conv_general_dilated=conv_function(self.conv),
            name="conv",
        )(x)
        if self.batchnorm:
            x = BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=self.bn_epsilon,
                dtype=self.dtype,
                axis_name=self.bn_axis_name,
                scale_init=nn.initializers.zeros if self.zero_init else nn.initializers.ones,
                name="bn",
            )(x, mask=mask)
        if self.act:
            x = activation(self.activation, leaky_slope=self.leaky_slope)(x)
            sow_activation(self, x)
        return x


class Net(nn.Module):
    """Options every family shares; the families subclass it and add their own.

    `architectures.get` fills these from the user's options and the family defaults, so a built
    model's attributes are concrete (e.g. `model.batchnorm` is a bool, never None).

    Attributes:
        num_classes: size of the classifier head; None returns features (no head).
        dropout: dropout rate where the family puts dropout; 0 turns it off.
        activation: name from ACTIVATIONS.
        leaky_slope: negative slope for leaky_relu.
        initializer: kernel initialiser name from INITS (the `init` option; a field cannot be
            called `init`, which is Module.init).
        batchnorm: whether the net uses BatchNorm.
        dtype: compute dtype (e.g. bfloat16); parameters stay float32 and outputs are float32.
        bn_axis_name: BatchNorm `axis_name` for statistics across devices under pmap; None outside.
        conv: convolution lowering, "auto" (shifted matmuls on CPU, XLA's convolution on GPU and
            TPU; `architectures.conv_lowering`) or "xla" (XLA's everywhere). Parameters and
            results are the same either way.
    """

    num_classes: int | None = None
    dropout: float = 0.0
    activation: str = "relu"
    leaky_slope: float = 0.01
    initializer: str = "lecun"
    batchnorm: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv: str = "auto"

    @nn.nowrap
    def act(self, x: jax.Array) -> jax.Array:
        """The configured activation (its output sown for the doctor's dead-unit probe)."""
        x = activation(self.activation, leaky_slope=self.leaky_slope)(x)
        sow_activation(self, x)
        return x

    @nn.nowrap
    def shared(self, **overrides: Any) -> dict[str, Any]:
        """This net's shared options, to build a sub-block (itself a Net) that inherits them."""
        options = {
            "dropout": self.dropout,
            "activation": self.activation,
            "leaky_slope": self.leaky_slope,
            "initializer": self.initializer,
            "batchnorm": self.batchnorm,
            "dtype": self.dtype,
            "bn_axis_name": self.bn_axis_name,
            "conv": self.conv,
        }
        options.update(overrides)
        return options

    @nn.nowrap
    def unit(self, features: int, kernel: int, **kwargs: Any) -> ConvUnit:
        """A ConvUnit carrying this net's options; kwargs override (stride, padding, name, ...)."""
        options = self.shared(**kwargs)
        del options["dropout"]  # a conv unit has no dropout
        return ConvUnit(features, kernel, **options)

    @nn.nowrap
    def dense(self, features: int, name: str) -> nn.Dense:
        """A Dense layer with this net's initialiser and dtypes."""
        return nn.Dense(
            features,
            kernel_init=kernel_init(self.initializer),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    @nn.nowrap
    def norm(self, train: bool, name: str, **kwargs: Any) -> BatchNorm:
        """A BatchNorm with the zoo's momentum/epsilon and this net's axis name.

        Call it as `norm(...)(x, mask=mask)`.
        """
        options: dict[str, Any] = {"momentum": BN_MOMENTUM, "epsilon": BN_EPSILON}
        options.update(kwargs)
        return BatchNorm(
            use_running_average=not train,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
            name=name,
            **options,
        )

    @nn.nowrap
    def drop(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        """Inverted dropout at the net's rate in training; identity in eval or at rate 0."""
        if self.dropout <= 0.0:
            return x
        return nn.Dropout(self.dropout, deterministic=not train, name=name)(x)

    @nn.nowrap
    def head(self, x: jax.Array) -> jax.Array:
        """Classifier (N, D) -> (N, num_classes) float32 logits; float32 features if no head."""
        if self.num_classes is not None:
            x = self.dense(self.num_classes, name=HEAD)(x)
        # Losses and metrics reduce in float32 even when the net computes in bfloat16.
        return x.astype(jnp.float32)


def as_tuple(value: int | Sequence[int] | None) -> tuple[int, ...]:
    """Normalises flax's int-or-sequence attributes (kernel_size, strides) to a tuple."""
    if value is None:
        return (1,)
    if isinstance(value, int):
        return (value,)
    return tuple(value)
