"""Network in Network (Lin et al. 2014), in the ImageNet-style layout of Dive into Deep Learning.

Each NiN block is a k x k convolution followed by two 1x1 convolutions (the "mlpconv" layer). Three
blocks (96, 256, 384 channels) with 3x3/2 max-pools, dropout 0.5, then a last block with one
channel per class and global average pooling: no fully connected layer. The last 1x1 conv has no
activation so that logits can be negative (d2l applies ReLU there too; with it a class whose map
dies at zero can never recover). The 11x11/4 stem and three floor-mode 3x3/2 pools need a 67x67
input at least; the engine resizes smaller images up to 67.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import GlobalAvgPool, MaxPool, Net, check_image, scaled
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 67


class NiNBlock(Net):
    """conv k x k (stride, padding) -> 1x1 conv -> 1x1 conv, each followed by the activation.

    Attributes:
        features: channels of all three convs.
        kernel, stride, padding: geometry of the first conv.
        logits: the class block: its last 1x1 conv has no BatchNorm and no activation.
    """

    features: int = 1
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    logits: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C) -> (N, H', W', features)."""
        f = self.features
        x = self.unit(f, self.kernel, stride=self.stride, padding=self.padding, name="conv")(
            x, train, mask=mask
        )
        x = self.unit(f, 1, name="mlp1")(x, train, mask=mask)
        last = {"act": False, "batchnorm": False} if self.logits else {}
        return self.unit(f, 1, name="mlp2", **last)(x, train, mask=mask)


class NiN(Net):
    """NiN blocks 96-256-384 with max-pools, dropout, a class block, and global average pooling.

    Attributes:
        width: multiplier on the hidden blocks' channels (1.0 = d2l's layout; < 1 for CPU use).
    """

    width: float = 1.0

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 67 -> (N, num_classes) float32 logits, or (N, 384*width)."""
        check_image(x, MIN_SIZE, "nin")
        x = x.astype(self.dtype)
        c = lambda n: scaled(n, self.width)  # noqa: E731
        block = lambda f, k, name, **kw: NiNBlock(  # noqa: E731
            **self.shared(), features=f, kernel=k, name=name, **kw
        )
        x = block(c(96), 11, "block1", stride=4)(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool1")(x)
        x = block(c(256), 5, "block2", padding=2)(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool2")(x)
        x = block(c(384), 3, "block3", padding=1)(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool3")(x)
        if self.num_classes is not None:
            x = self.drop(x, train, name="dropout")
            x = block(self.num_classes, 3, "block4", padding=1, logits=True)(x, train, mask=mask)
        return GlobalAvgPool(name="gap")(x).astype("float32")


SPEC = ArchSpec(
    name="nin",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=False,
    has_dropout=True,
    default_dropout=0.5,
    options=(*SHARED_OPTIONS, "width"),
    description="Network in Network: conv + two 1x1 convs per block, global average pooling",
    # Lin et al. (2014) train NiN with SGD and momentum, AlexNet's conventions (momentum 0.9,
    # weight decay 5e-4); d2l uses lr 0.1. Measured on digits (67x67 upsampled), without
    # BatchNorm nothing trained well: 5 epochs of Adam 0.3043, SGD lr 0.1 0.1577, momentum lr
    # 1e-2 0.1076, 30 epochs of Adam 0.8776. With BatchNorm after each conv (as VGG's recipe):
    # Adam 30 epochs 0.9017 (one class never learned), momentum 0.9, lr 0.05, weight decay 5e-4
    # 10 epochs 0.9926. So that, with BatchNorm on unless --batchnorm says otherwise.
    recipe={
        "optimizer": "momentum",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batchnorm": "on",
    },
    paper_params=(
        PaperCount(
            "NiN (d2l layout)",
            (),
            (1, 224, 224, 3),
            1000,
            7_439_608,
            "no published count; summed by hand: sum of k*k*c_in*c_out + c_out over the 12 convs",
        ),
    ),
)
