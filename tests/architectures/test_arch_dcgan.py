"""DCGAN's generator and discriminator: geometry, the paper's rules, the reference's sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures import dcgan


def _init(net, x):
    return jax.jit(lambda x: net.init(jax.random.key(0), x, train=False))(x)


def _params(variables) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("size,channels", [(16, 1), (28, 1), (32, 3), (64, 3)])
def test_generator_and_discriminator_shapes(size, channels):
    g, d = dcgan.Generator(size, channels, width=0.25), dcgan.Discriminator(width=0.25)
    z = jax.random.normal(jax.random.key(1), (3, dcgan.LATENT_DIM))
    gv = _init(g, z)
    x, _ = g.apply(gv, z, train=True, mutable=["batch_stats"])
    assert x.shape == (3, size, size, channels) and x.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(x))) <= 1.0  # tanh: the range of symmetric-normalised data
    dv = _init(d, x)
    logits, _ = d.apply(dv, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (3, 1)


def test_the_reference_implementations_parameter_counts():
    # PyTorch's examples/dcgan/main.py at nz=100, ngf=ndf=64, nc=3 (64 x 64 images): netG
    # 3,576,704 and netD 2,765,568 parameters, the sums of its layers' shapes (biasless
    # convolutions, BatchNorm weight and bias); the nets here keep the biases of the layers
    # no BatchNorm follows (3 in the generator, 64 + 1 in the discriminator: dcgan.py).
    g, d = dcgan.Generator(64, 3), dcgan.Discriminator()
    assert _params(_init(g, jnp.zeros((1, 100)))) == 3_576_704 + 3
    assert _params(_init(d, jnp.zeros((1, 64, 64, 3)))) == 2_765_568 + 64 + 1


def test_the_papers_rules_strided_convolutions_leaky_relu_no_pooling():
    d = dcgan.Discriminator(width=0.25)
    x = jnp.zeros((2, 32, 32, 1))
    variables = _init(d, x)
    jaxpr = str(jax.make_jaxpr(lambda x: d.apply(variables, x, train=False))(x))
    assert "reduce_window" not in jaxpr  # no pooling: the convolutions' strides downsample
    assert "window_strides=(2, 2)" in jaxpr
    # LeakyReLU(0.2) (the seeds' rule for a GAN's discriminator), and BatchNorm on every
    # block but the input one: 3 blocks at 32 px, 2 BatchNorms.
    assert dcgan.LEAKY_SLOPE == 0.2
    assert len(variables["batch_stats"]) == dcgan.upsamplings(32) - 1
    g = dcgan.Generator(32, 1, width=0.25)
    z = jnp.zeros((2, 100))
    gv = _init(g, z)
    gjaxpr = str(jax.make_jaxpr(lambda z: g.apply(gv, z, train=False))(z))
    assert "lhs_dilation=(2, 2)" in gjaxpr and "tanh" in gjaxpr  # transposed convolutions


def test_a_size_without_a_4_to_7_base_is_refused():
    sizes = (16, 28, 32, 64, 10, 9, 22)
    assert [dcgan.upsamplings(s) for s in sizes] == [2, 2, 3, 4, 1, 0, 0]
    g = dcgan.Generator(22, 1)  # 22 = 11 x 2: no base of 4 to 7 pixels
    with pytest.raises(ValueError, match="image size 22 is not"):
        g.init(jax.random.key(0), jnp.zeros((1, 100)), train=False)
