"""AlexNet (Krizhevsky et al. 2012), single-tower layout 64-192-384-256-256 as torchvision.

torchvision's layout (no LRN, adaptive average pooling to 6x6 before the classifier) gives the
published 61,100,840 parameters at 224x224x3 / 1000 classes, and a classifier whose size does not
depend on the input size. The three 3x3/2 max-pools need a 63x63 input at least (torchvision's
documented `min_size`); the engine resizes smaller images (8x8 digits, 28x28 MNIST) up to 63.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import AdaptiveAvgPool, Flatten, MaxPool, Net, check_image, scaled
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 63


class AlexNet(Net):
    """Five convs (11x11/4, 5x5, 3x3 x3) with three max-pools, then dropout-FC-FC-classifier.

    Attributes:
        width: multiplier on every conv and hidden FC width (1.0 = paper; < 1 for CPU use).
    """

    width: float = 1.0

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 63 -> (N, num_classes) float32 logits, or (N, 4096*width)."""
        check_image(x, MIN_SIZE, "alexnet")
        x = x.astype(self.dtype)
        c = lambda n: scaled(n, self.width)  # noqa: E731
        x = self.unit(c(64), 11, stride=4, padding=2, name="conv1")(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool1")(x)
        x = self.unit(c(192), 5, padding=2, name="conv2")(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool2")(x)
        x = self.unit(c(384), 3, padding=1, name="conv3")(x, train, mask=mask)
        x = self.unit(c(256), 3, padding=1, name="conv4")(x, train, mask=mask)
        x = self.unit(c(256), 3, padding=1, name="conv5")(x, train, mask=mask)
        x = MaxPool(3, 2, name="pool5")(x)
        x = AdaptiveAvgPool(6, name="avgpool")(x)
        x = Flatten(name="flatten")(x)
        # torchvision's order: dropout -> fc -> act, twice, then the classifier.
        for i in (6, 7):
            x = self.drop(x, train, name=f"fc{i}_dropout")
            x = self.act(self.dense(c(4096), name=f"fc{i}")(x))
        return self.head(x)


SPEC = ArchSpec(
    name="alexnet",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=False,
    has_dropout=True,
    default_dropout=0.5,
    options=(*SHARED_OPTIONS, "width"),
    description="AlexNet: 5 convs (64-192-384-256-256) + 3 FC with dropout 0.5, ReLU",
    # Krizhevsky et al. (2012), section 5: SGD, momentum 0.9, lr 1e-2, weight decay 5e-4
    # (torchvision's reference recipe: the same with 1e-4), dropout 0.5 in the classifier.
    recipe={"optimizer": "momentum", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
    paper_params=(
        PaperCount(
            "AlexNet", (), (1, 224, 224, 3), 1000, 61_100_840, "torchvision alexnet num_params"
        ),
    ),
)
