"""GoogLeNet / Inception v1 (Szegedy et al. 2015), in torchvision's BatchNorm variant.

Each Inception block runs four branches on the same input and concatenates them on channels:
1x1; 1x1 -> 3x3; 1x1 -> "5x5" (a 3x3 kernel, as in torchvision's widely used reference, which gives
its published 6,624,904 parameters at 224x224x3 / 1000 classes); 3x3 max-pool -> 1x1. Nine blocks
in five stages (stem, 3a-3b, 4a-4e, 5a-5b), global average pooling, dropout 0.4 (paper), classifier.
Every conv is conv -> BatchNorm (eps 1e-3, torchvision) -> activation, without conv bias.

Auxiliary classifiers after 4a and 4d (average-pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7,
classifier) run only in training and are emitted with `self.sow("aux_outputs", "aux1"|"aux2",
logits)` (flax stores a 1-tuple); the engine adds `aux_weight * loss` for each. Their parameters are
created at init whatever `train` is, so checkpoints have one structure. Evaluation output does not
depend on them. Pools round up (ceil mode), as torchvision and Caffe, so the smallest input is
15x15 (torchvision's documented `min_size`); the engine resizes 8x8 digits up to 15.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.layers import (
    AdaptiveAvgPool,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Net,
    check_image,
    scaled,
)
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 15
BN_EPSILON = 1e-3  # torchvision's BasicConv2d
AUX_DROPOUT = 0.7  # the paper's rate in the auxiliary classifiers

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per block, from the paper's Table 1.
BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(Net):
    """Four branches concatenated on channels: (N, H, W, C) -> (N, H, W, b1 + b2 + b3 + b4).

    The summary follows branch b3 (1x1 -> "5x5") as the block's main path for the receptive field;
    the other branches are side branches (their receptive field is at most b3's).

    Attributes:
        channels: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj).
    """

    channels: tuple[int, ...] = (1, 1, 1, 1, 1, 1)
    summary_side_branches = ("b1", "b2", "b4")

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C) -> (N, H, W, sum of branch widths)."""
        c1, c3r, c3, c5r, c5, cp = self.channels
        unit = lambda f, k, name: self.unit(  # noqa: E731
            f, k, padding=k // 2, use_bias=not self.batchnorm, bn_epsilon=BN_EPSILON, name=name
        )
        b1 = unit(c1, 1, "b1")(x, train, mask=mask)
        b2 = unit(c3r, 1, "b2_reduce")(x, train, mask=mask)
        b2 = unit(c3, 3, "b2_conv")(b2, train, mask=mask)
        b3 = unit(c5r, 1, "b3_reduce")(x, train, mask=mask)
        b3 = unit(c5, 3, "b3_conv")(b3, train, mask=mask)
        pooled = MaxPool(3, 1, padding=1, ceil_mode=True, name="b4_pool")(x)
        b4 = unit(cp, 1, "b4_proj")(pooled, train, mask=mask)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(Net):
    """Auxiliary classifier: avg-pool to 4x4 -> 1x1 conv 128 -> FC 1024 -> dropout -> classifier.

    Attributes:
        width: multiplier on the conv and FC widths.
    """

    width: float = 1.0

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C) -> (N, num_classes) float32 logits."""
        x = AdaptiveAvgPool(4, name="avgpool")(x)
        conv = self.unit(
            scaled(128, self.width),
            1,
            use_bias=not self.batchnorm,
            bn_epsilon=BN_EPSILON,
            name="conv",
        )
        x = Flatten(name="flatten")(conv(x, train, mask=mask))
        x = self.act(self.dense(scaled(1024, self.width), name="fc1")(x))
        x = self.drop(x, train, name="dropout")
        return self.head(x)


class GoogLeNet(Net):
    """Stem, Inception 3a-3b, 4a-4e, 5a-5b, global average pooling, dropout, classifier.

    Attributes:
        aux_heads: build the auxiliary classifiers (used in training only; ignored without a head).
        width: multiplier on every conv and FC width (1.0 = paper; < 1 for CPU use).
    """

    aux_heads: bool = True
    width: float = 1.0

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 15 -> (N, num_classes) float32 logits, or (N, 1024*width)."""
        check_image(x, MIN_SIZE, "googlenet")
        x = x.astype(self.dtype)
        c = lambda n: scaled(n, self.width)  # noqa: E731
        conv = lambda f, k, name, **kw: self.unit(  # noqa: E731
            c(f), k, use_bias=not self.batchnorm, bn_epsilon=BN_EPSILON, name=name, **kw
        )
        x = conv(64, 7, "conv1", stride=2, padding=3)(x, train, mask=mask)
        x = MaxPool(3, 2, ceil_mode=True, name="pool1")(x)
        x = conv(64, 1, "conv2")(x, train, mask=mask)
        x = conv(192, 3, "conv3", padding=1)(x, train, mask=mask)
        x = MaxPool(3, 2, ceil_mode=True, name="pool2")(x)
        for name in BLOCKS:
            if name == "4a":
                x = MaxPool(3, 2, ceil_mode=True, name="pool3")(x)
            if name == "5a":
                x = MaxPool(2, 2, ceil_mode=True, name="pool4")(x)
            widths = tuple(c(n) for n in BLOCKS[name])
            x = Inception(**self.shared(), channels=widths, name=f"inception{name}")(
                x, train, mask=mask
            )
            if name in ("4a", "4d"):
                self._aux(x, train, "aux1" if name == "4a" else "aux2", mask)
        x = GlobalAvgPool(name="gap")(x)
        x = self.drop(x, train, name="dropout")
        return self.head(x)

    @nn.nowrap
    def _aux(self, x: jax.Array, train: bool, name: str, mask: jax.Array | None) -> None:
        """Runs an aux head in training (sowing its logits) and at init (creating its params)."""
        if not self.aux_heads or self.num_classes is None:
            return
        if not (train or self.is_initializing()):
            return
        # Dropout 0.7 as in the paper, but only when dropout is on at all: dropout=0 turns every
        # dropout off (and then training needs no "dropout" rng).
        rate = AUX_DROPOUT if self.dropout > 0 else 0.0
        # The module is "<name>_head": a scope cannot share the name of the sown value.
        head = InceptionAux(
            **self.shared(dropout=rate),
            num_classes=self.num_classes,
            width=self.width,
            name=f"{name}_head",
        )
        logits = head(x, train, mask=mask)
        if train and not self.is_initializing():
            self.sow("aux_outputs", name, logits)


SPEC = ArchSpec(
    name="googlenet",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=True,
    has_dropout=True,
    default_dropout=0.4,
    options=(*SHARED_OPTIONS, "aux_heads", "width"),
    description="GoogLeNet (Inception v1, BatchNorm) with two aux classifiers used in training",
    # No recipe: the engine's Adam (lr 1e-3, cosine) reaches 0.9740 on digits in 30 epochs
    # (the paper's asynchronous SGD with momentum 0.9 and a 4% step decay was not measured).
    recipe={},
    paper_params=(
        PaperCount(
            "GoogLeNet (no aux heads)",
            (("aux_heads", False),),
            (1, 224, 224, 3),
            1000,
            6_624_904,
            "torchvision googlenet num_params",
        ),
    ),
)
