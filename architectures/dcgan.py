"""DCGAN's generator and discriminator (Radford, Metz and Chintala, 2016), for small images.

The paper's rules, kept here: the generator maps a latent vector through a dense projection and
stride-2 transposed convolutions, each but the last followed by BatchNorm and ReLU, to a tanh
image in [-1, 1]; the discriminator mirrors it with stride-2 convolutions (no pooling) and
LeakyReLU(0.2), BatchNorm on every block but the first, to one logit. Weights start at
N(0, 0.02) and BatchNorm scales at N(1, 0.02), as in the paper and PyTorch's DCGAN example.

Biases only where no BatchNorm follows (the generator's output layer, the discriminator's input
layer and logit); PyTorch's example drops those too, and at 64 x 64 x 3 with the paper's widths
has 3,576,704 + 2,765,568 parameters, these nets 3 and 65 more. Without the discriminator's
input bias the samples here varied less (pixel diversity 0.77-0.79 against 0.90 after 100
epochs on digits, one run each). The paper's nets are for 64 x 64; the geometry here follows
the image size: `upsamplings(size)` doublings from a base of 4 to 7 pixels (16 and 32: from 4,
28: from 7), with channels halving at each doubling in the generator and doubling at each
halving in the discriminator.

The two nets are not in the supervised zoo's registry (`architectures.get`): they are trained
only by the GAN program (`--program=gan --arch=dcgan`), which owns their validation.

>>> import jax, jax.numpy as jnp
>>> g, d = Generator(image_size=16, channels=1), Discriminator()
>>> z = jnp.zeros((2, 100))
>>> gv = jax.jit(lambda z: g.init(jax.random.key(0), z, train=False))(z)
>>> x = g.apply(gv, z, train=False)
>>> x.shape, float(jnp.abs(x).max()) <= 1.0
((2, 16, 16, 1), True)
>>> dv = d.init(jax.random.key(1), x, train=False)
>>> d.apply(dv, x, train=False).shape
(2, 1)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.batchnorm import BatchNorm
from architectures.spec import ArchSpec

# The paper's widths (ngf = ndf = 64) and latent size; LeakyReLU's slope (the seeds' rule).
BASE_WIDTH = 64
LATENT_DIM = 100
LEAKY_SLOPE = 0.2
# PyTorch's BatchNorm momentum 0.1 (the reference implementation's), in flax's convention.
BN_MOMENTUM = 0.9
SIZES = "16, 28, 32 or 64"  # image sizes the geometry is checked for (any 4..7 x 2^k works)

# What the engine's build checks of the pair (image data, a size of at least 16).
SPEC = ArchSpec(
    name="dcgan",
    needs_image=True,
    min_image_size=16,
    has_batchnorm=True,
    has_dropout=False,
    default_dropout=0.0,
    options=("width",),
    description="DCGAN generator and discriminator (--program=gan)",
)


def upsamplings(size: int) -> int:
    """Doublings from a base of 4..7 pixels up to `size` (0 when `size` has no such base).

    >>> [upsamplings(s) for s in (16, 28, 32, 64, 10, 22)]
    [2, 2, 3, 4, 1, 0]
    """
    k = 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        k += 1
    return k if 4 <= size <= 7 else 0


def _weights() -> nn.initializers.Initializer:
    return nn.initializers.normal(0.02)


def _scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class Generator(nn.Module):
    """Latent (N, latent) -> images (N, size, size, channels) in [-1, 1].

    Attributes:
      image_size: output height = width (`upsamplings(image_size)` > 0).
      channels: output channels (1 grey, 3 colour).
      width: channel multiplier of the paper's ngf = 64.
      bn_axis_name: BatchNorm's cross-device axis under pmap (None under jit).
    """

    image_size: int
    channels: int
    width: float = 1.0
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool = False, mask=None):
        """Images (N, size, size, channels) from z (N, latent); `mask` (N,) marks real rows."""
        k = upsamplings(self.image_size)
        if not k:
            raise ValueError(f"dcgan: image size {self.image_size} is not 4..7 x 2^k; use {SIZES}")
        base = self.image_size >> k
        ngf = max(int(BASE_WIDTH * self.width), 1)

        def norm(x):
            bn = BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                axis_name=self.bn_axis_name,
                scale_init=_scale_init,
            )
            return bn(x, mask=mask)

        # The paper's first layer is a transposed convolution of the 1 x 1 latent to base x base;
        # on a 1 x 1 input that is exactly a dense projection.
        features = ngf * 2 ** (k - 1)
        x = nn.Dense(base * base * features, kernel_init=_weights(), use_bias=False)(z)
        x = nn.relu(norm(x.reshape(z.shape[0], base, base, features)))
        for i in range(1, k):
            x = nn.ConvTranspose(
                ngf * 2 ** (k - 1 - i),
                (4, 4),
                (2, 2),
                "SAME",
                use_bias=False,
                kernel_init=_weights(),
            )(x)
            x = nn.relu(norm(x))
        x = nn.ConvTranspose(self.channels, (4, 4), (2, 2), "SAME", kernel_init=_weights())(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """Images (N, size, size, channels) in [-1, 1] -> one real/fake logit (N, 1).

    Attributes:
      width: channel multiplier of the paper's ndf = 64.
      bn_axis_name: BatchNorm's cross-device axis under pmap (None under jit).
    """

    width: float = 1.0
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        """Logits (N, 1) for images x (N, size, size, channels); `mask` (N,) marks real rows."""
        k = upsamplings(x.shape[1])
        ndf = max(int(BASE_WIDTH * self.width), 1)
        for i in range(k):
            # The input block has no BatchNorm, so it keeps its bias (its only offset).
            conv = nn.Conv(
                ndf * 2**i, (4, 4), (2, 2), "SAME", use_bias=i == 0, kernel_init=_weights()
            )
            x = conv(x)
            if i:  # the paper: no BatchNorm on the discriminator's input layer
                bn = BatchNorm(
                    use_running_average=not train,
                    momentum=BN_MOMENTUM,
                    axis_name=self.bn_axis_name,
                    scale_init=_scale_init,
                )
                x = bn(x, mask=mask)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
        # The paper's last layer is a base x base convolution to one channel: on a base x base
        # input, a dense layer on the flattened features.
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(1, kernel_init=_weights())(x).astype(jnp.float32)
