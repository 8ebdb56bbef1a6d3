"""ResNet-18/34/50/101/152 (He et al. 2016), as torchvision (v1.5: stride on the 3x3 conv).

No conv bias (BatchNorm follows), BatchNorm momentum 0.9 (PyTorch's 0.1) and eps 1e-5, 1x1
projection shortcuts where the shape changes, and (option `zero_init_residual`, default on as in
flax's ImageNet example) the last BatchNorm scale of each residual branch starts at zero so every
block starts as the identity. Counts at 224x224x3 / 1000 classes match torchvision.

Stem (option `stem`, default "auto", decided from the input size at call time): images of 64
pixels or more get the ImageNet stem (7x7/2 conv + 3x3/2 max-pool); smaller ones the CIFAR stem
(one 3x3/1 conv, no pooling), so 8x8 digits and 32x32 CIFAR keep their resolution. The stem conv's
kernel differs, so a checkpoint belongs to one stem. 8x8 is the smallest input: the three stride-2
stages then end on a 1x1 map.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import GlobalAvgPool, MaxPool, Net, check_image, scaled
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 8
IMAGENET_STEM_FROM = 64  # inputs at least this large get the 7x7/2 + max-pool stem

# (block kind, blocks per stage) by depth, from the paper's Table 1.
LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class ResidualBlock(Net):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block with a shortcut.

    The summary follows the residual branch as the main path; the projection is a side branch.

    Attributes:
        features: width of the block (output is features, or 4 * features for bottleneck).
        stride: stride of the block's 3x3 conv and of the projection.
        bottleneck: bottleneck block instead of basic.
        zero_init_residual: zero-initialise the last BatchNorm scale (or, without BatchNorm, the
            last conv kernel) so the block starts as the identity.
    """

    features: int = 64
    stride: int = 1
    bottleneck: bool = False
    zero_init_residual: bool = True
    summary_side_branches = ("proj",)

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C) -> (N, ceil(H / stride), ceil(W / stride), features * expansion)."""
        # Padding k // 2 as torchvision; no conv bias where BatchNorm follows.
        conv = lambda f, k, name, **kw: self.unit(  # noqa: E731
            f, k, padding=k // 2, use_bias=not self.batchnorm, name=name, **kw
        )
        f, stride = self.features, self.stride
        if self.bottleneck:
            out_features = 4 * f
            y = conv(f, 1, "conv1")(x, train, mask=mask)
            y = conv(f, 3, "conv2", stride=stride)(y, train, mask=mask)
            last = conv(out_features, 1, "conv3", act=False, zero_init=self.zero_init_residual)
        else:
            out_features = f
            y = conv(f, 3, "conv1", stride=stride)(x, train, mask=mask)
            last = conv(out_features, 3, "conv2", act=False, zero_init=self.zero_init_residual)
        y = last(y, train, mask=mask)
        shortcut = x
        if stride != 1 or x.shape[-1] != out_features:
            shortcut = conv(out_features, 1, "proj", stride=stride, act=False)(x, train, mask=mask)
        return self.act(y + shortcut)


class ResNet(Net):
    """ResNet by depth.

    Attributes:
        depth: 18, 34 (basic blocks), 50, 101, 152 (bottleneck blocks).
        width: multiplier on every stage width (1.0 = paper; < 1 for CPU use).
        zero_init_residual: zero-initialise each block's last BatchNorm scale.
        stem: "auto" (ImageNet stem from 64 px, CIFAR stem below), "imagenet" or "cifar".
    """

    depth: int = 18
    width: float = 1.0
    zero_init_residual: bool = True
    stem: str = "auto"

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 8 -> (N, num_classes) float32 logits, or pooled features."""
        check_image(x, MIN_SIZE, "resnet")
        x = x.astype(self.dtype)
        bias = not self.batchnorm
        c = lambda n: scaled(n, self.width)  # noqa: E731
        imagenet = self.stem == "imagenet" or (
            self.stem == "auto" and min(x.shape[1:3]) >= IMAGENET_STEM_FROM
        )
        if imagenet:
            x = self.unit(c(64), 7, stride=2, padding=3, use_bias=bias, name="stem")(
                x, train, mask=mask
            )
            x = MaxPool(3, 2, padding=1, name="stem_pool")(x)
        else:
            x = self.unit(c(64), 3, padding=1, use_bias=bias, name="stem")(x, train, mask=mask)
        kind, stages = LAYOUTS[self.depth]
        for s, blocks in enumerate(stages):
            for b in range(blocks):
                x = ResidualBlock(
                    **self.shared(),
                    features=c(64 * 2**s),
                    stride=2 if (s > 0 and b == 0) else 1,
                    bottleneck=kind == "bottleneck",
                    zero_init_residual=self.zero_init_residual,
                    name=f"layer{s + 1}_{b}",
                )(x, train, mask=mask)
        x = GlobalAvgPool(name="gap")(x)
        x = self.drop(x, train, name="dropout")
        return self.head(x)


_PUBLISHED = {  # torchvision resnet{depth} num_params at 224x224x3, 1000 classes
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}

SPEC = ArchSpec(
    name="resnet",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=True,
    has_dropout=False,
    default_dropout=0.0,
    options=(*SHARED_OPTIONS, "depth", "width", "zero_init_residual", "stem"),
    description="ResNet-18/34/50/101/152 (basic/bottleneck blocks; CIFAR stem below 64 px)",
    # No recipe: the engine's Adam (lr 1e-3, cosine) trains ResNet-18 to 0.9907 on digits in 30
    # epochs. He et al.'s SGD (momentum 0.9, lr 0.1 at batch 256, weight decay 1e-4) was not
    # measured here.
    recipe={},
    paper_params=tuple(
        PaperCount(
            f"ResNet-{depth}",
            (("depth", depth),),
            (1, 224, 224, 3),
            1000,
            count,
            f"torchvision resnet{depth} num_params",
        )
        for depth, count in _PUBLISHED.items()
    ),
    depths=tuple(LAYOUTS),
    default_depth=18,
)
