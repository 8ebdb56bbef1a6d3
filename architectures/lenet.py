"""LeNet-5 (LeCun et al. 1998) in its common modern form: full C3 connections, 61,706 parameters.

Geometry: 5x5 VALID convolutions and 2x2 average-pool subsampling, as in the paper, on a 32x32
input (the paper's MNIST digits were 28x28 placed in a 32x32 field). Smaller images (8x8 digits,
28x28 MNIST) are resized up to 32x32 by the engine before they reach the net; larger images make
the first fully connected layer wider (16 * ((H - 12) / 4)^2 inputs), as a faithful LeNet must.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import AvgPool, Flatten, Net, check_image
from architectures.spec import SHARED_OPTIONS, ArchSpec, PaperCount

MIN_SIZE = 32


class LeNet(Net):
    """conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> classes.

    BatchNorm (option) follows each conv and hidden fc; dropout (option) follows each hidden fc.
    """

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, H, W, C), H, W >= 32 -> (N, num_classes) float32 logits, or (N, 84) features."""
        check_image(x, MIN_SIZE, "lenet")
        x = x.astype(self.dtype)
        x = self.unit(6, 5, name="conv1")(x, train, mask=mask)
        x = AvgPool(2, 2, name="pool1")(x)
        x = self.unit(16, 5, name="conv2")(x, train, mask=mask)
        x = AvgPool(2, 2, name="pool2")(x)
        x = Flatten(name="flatten")(x)
        for i, size in enumerate((120, 84), start=1):
            x = self.dense(size, name=f"fc{i}")(x)
            if self.batchnorm:
                x = self.norm(train, name=f"fc{i}_bn")(x, mask=mask)
            x = self.act(x)
            x = self.drop(x, train, name=f"fc{i}_dropout")
        return self.head(x)


SPEC = ArchSpec(
    name="lenet",
    needs_image=True,
    min_image_size=MIN_SIZE,
    has_batchnorm=False,
    has_dropout=False,
    default_dropout=0.0,
    options=SHARED_OPTIONS,
    description="LeNet-5: conv 6 -> pool -> conv 16 -> pool -> 120 -> 84 -> classes (32x32 input)",
    # No recipe: the engine's Adam (lr 1e-3, cosine) reaches 0.9759 on digits in 30 epochs.
    recipe={},
    paper_params=(
        PaperCount("LeNet-5", (), (1, 32, 32, 1), 10, 61_706, "LeCun et al. 1998 layout; issue 4"),
    ),
)
