"""VGG-11/13/16/19 (Simonyan & Zisserman 2015, configurations A/B/D/E), optional BatchNorm.

Stacks of 3x3 convolutions (padding 1) with 2x2/2 max-pools, then torchvision's adaptive average
pool to 7x7 and the 4096-4096 classifier with dropout 0.5. Counts at 224x224x3 / 1000 classes
match torchvision (VGG-16: 138,357,544). The BatchNorm variant keeps the conv bias, as
torchvision's vgg*_bn does. Five halving pools need a 32x32 input at least; the engine resizes
smaller images up to 32.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import AdaptiveAvgPool, Flatten, MaxPool, Net, check_image, scaled
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 32

# Convolutions per block for each depth (the paper's Table 1); every block ends in a max-pool.
CONFIGS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(Net):
    """VGG by depth.

    Attributes:
        depth: 11, 13, 16 or 19 (configurations A, B, D, E).
        width: multiplier on every conv and hidden FC width (1.0 = paper; < 1 for CPU use).
    """

    depth: int = 16
    width: float = 1.0

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 32 -> (N, num_classes) float32 logits, or (N, 4096*width)."""
        check_image(x, MIN_SIZE, "vgg")
        x = x.astype(self.dtype)
        for b, block in enumerate(CONFIGS[self.depth], start=1):
            for i, channels in enumerate(block, start=1):
                conv = self.unit(scaled(channels, self.width), 3, padding=1, name=f"conv{b}_{i}")
                x = conv(x, train, mask=mask)
            x = MaxPool(2, 2, name=f"pool{b}")(x)
        x = AdaptiveAvgPool(7, name="avgpool")(x)
        x = Flatten(name="flatten")(x)
        # torchvision's order: fc -> act -> dropout, twice, then the classifier.
        for i in (6, 7):
            x = self.act(self.dense(scaled(4096, self.width), name=f"fc{i}")(x))
            x = self.drop(x, train, name=f"fc{i}_dropout")
        return self.head(x)


_PUBLISHED = {  # torchvision vgg{depth} / vgg{depth}_bn num_params at 224x224x3, 1000 classes
    (11, False): 132_863_336,
    (13, False): 133_047_848,
    (16, False): 138_357_544,
    (19, False): 143_667_240,
    (11, True): 132_868_840,
    (13, True): 133_053_736,
    (16, True): 138_365_992,
    (19, True): 143_678_248,
}

SPEC = ArchSpec(
    name="vgg",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=False,
    has_dropout=True,
    default_dropout=0.5,
    options=(*SHARED_OPTIONS, "depth", "width"),
    description="VGG-11/13/16/19 (3x3 conv stacks, 4096-4096 classifier), optional BatchNorm",
    # Simonyan & Zisserman (2015), section 3.1: SGD, momentum 0.9, lr 1e-2, weight decay 5e-4,
    # dropout 0.5 in the classifier. Trained from scratch on small data VGG-16 stays at chance
    # without BatchNorm (their deeper nets started from shallower trained ones); torchvision's
    # VGG-16-BN takes the same recipe, so BatchNorm is on unless --batchnorm says otherwise.
    # Their lr 1e-2 is for batch 256: at the default batch 64 it diverged here (digits, epoch 6,
    # even after a warm-up), so the rate is scaled linearly with the batch and warmed up over
    # 2 epochs (Goyal et al. 2017, sections 2.1-2.2): lr 2.5e-3 at batch 64, test 0.9944.
    recipe={
        "optimizer": "momentum",
        "lr": 0.01,
        "lr_scaling": "linear",
        "schedule": "warmup_cosine",
        "warmup_epochs": 2.0,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batchnorm": "on",
    },
    paper_params=tuple(
        PaperCount(
            f"VGG-{depth}{'-BN' if bn else ''}",
            (("depth", depth), ("batchnorm", True)) if bn else (("depth", depth),),
            (1, 224, 224, 3),
            1000,
            count,
            f"torchvision vgg{depth}{'_bn' if bn else ''} num_params",
        )
        for (depth, bn), count in _PUBLISHED.items()
    ),
    depths=(11, 13, 16, 19),
    default_depth=16,
)
