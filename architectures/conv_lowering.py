"""Convolution lowerings per backend: XLA's own on GPU and TPU; Winograd or matmuls on CPU.

Why: XLA's CPU convolution is slow when the spatial size is small and the channels many (a 3x3
convolution on a (64, 2, 2, 256) batch: 79 ms forward+backward through
`lax.conv_general_dilated`, 7 ms as matmuls), which is every late stage of a ResNet on 8x8
digits or 32x32 CIFAR. Written as matrix products over shifted, strided slices of the padded
input, the same convolution runs in Eigen's GEMM and its gradient is slices and pads, which XLA
CPU handles well. Measured on a 2-core CPU (benchmarks/conv_lowering.py): never more than ~10%
slower than XLA's convolution and up to 12x faster; on large 32x32x64 maps still ~2x faster.

Two matmul forms, both exact up to float summation order:
- im2col ("patches"): the kh*kw shifted slices concatenated along channels, one
  (N*Ho*Wo, kh*kw*C) @ (kh*kw*C, F) product. Fastest while the patch matrix is small.
- sum of taps: one (N*Ho*Wo, C) @ (C, F) product per kernel tap, summed; no patch matrix, so
  memory stays at the input's size. Used once the patches would exceed PATCH_BYTES.
Taps that read only padding (a 3x3 kernel on a 1x1 map) are dropped: they add zeros.
- Winograd F(2x2, 3x3) or F(4x4, 3x3) (`architectures.winograd`) for the large 3x3 stride-1
  convolutions: 4 or 2.25 products per output instead of 9 (`winograd_tile` says where).

The choice is made when the function is traced, from the backend JAX runs on
(`jax.default_backend()`), which is where the engine places every computation. (`lax.
platform_dependent` would carry both forms in one trace, for lowering to another platform, but
tracing and differentiating its switch made a ResNet-18 step's trace 2.4 s instead of 1.3 s,
paid at every start.) Parameters keep flax's HWIO layout either way, so checkpoints do not
depend on the lowering, and a model trained on CPU evaluates with XLA's convolution on a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from architectures import winograd

LOWERINGS = ("auto", "xla")

# Above this many bytes of patch matrix the sum-of-taps form is used instead of im2col: on
# (128, 32, 32, 64) the patches are 302 MB and the taps form is the faster of the two (1.08 s vs
# 1.19 s forward+backward); below it im2col wins (the 32x32x3 stem: 84 ms vs 477 ms).
PATCH_BYTES = 256 * 2**20


def _resolve_padding(padding, in_spatial, kernel_spatial, strides) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return lax.padtype_to_pads(in_spatial, kernel_spatial, strides, padding)
    return [tuple(p) for p in padding]


def _is_plain_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
    """True if dimension_numbers are flax's NHWC / HWIO / NHWC for 2-D inputs."""
    if len(lhs_shape) != 4:
        return False
    nhwc = lax.conv_dimension_numbers(lhs_shape, rhs_shape, ("NHWC", "HWIO", "NHWC"))
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return given == nhwc


def _taps(x_spatial, kernel_spatial, strides, padding, out_spatial) -> list[tuple[int, int]]:
    """The kernel taps (i, j) that read at least one real input pixel (others add zeros)."""

    def reads_input(start: int, pad_low: int, size: int, stride: int, out: int) -> bool:
        # Tap offset `start` reads padded rows start, start + stride, ...: any inside the input?
        return any(pad_low <= start + stride * o < pad_low + size for o in range(out))

    (h, w), (kh, kw), (sh, sw), ((pt, _), (pl, _)), (ho, wo) = (
        x_spatial,
        kernel_spatial,
        strides,
        padding,
        out_spatial,
    )
    return [
        (i, j)
        for i in range(kh)
        if reads_input(i, pt, h, sh, ho)
        for j in range(kw)
        if reads_input(j, pl, w, sw, wo)
    ]


def _matmul(a: jax.Array, b: jax.Array, precision, preferred_element_type) -> jax.Array:
    """(M, K) @ (K, F) with the convolution's precision and output type."""
    return lax.dot_general(
        a,
        b,
        (((1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def shifted_matmul_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """A 2-D convolution as matrix products over shifted slices (no dilation, one group).

    Args:
        x: (N, H, W, C) input.
        kernel: (kh, kw, C, F) kernel (flax's HWIO).
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)) zero padding; negative values crop.
        precision, preferred_element_type: as `lax.dot_general`.

    Returns:
        (N, Ho, Wo, F), equal to `lax.conv_general_dilated` with NHWC/HWIO/NHWC dimension
        numbers up to float summation order.
    """
    # The gradient is JAX's own (slices transpose to pads). A hand-written transposed
    # convolution in the same matmul form was measured slower on every ResNet-18 shape
    # (e.g. 27.9 vs 5.6 ms forward+backward on a 64x8x8x64 stride-2 layer), so there is none.
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    n, h, w, c = x.shape
    kh, kw, kc, f = kernel.shape
    if kc != c:
        raise ValueError(f"kernel shape {kernel.shape} does not match input shape {x.shape}")
    (sh, sw), ((pt, pb), (pl, pr)) = tuple(strides), padding
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    taps = _taps((h, w), (kh, kw), strides, padding, (ho, wo))
    if not taps:  # every tap reads padding only: the output is zero
        dtype = preferred_element_type or jnp.result_type(x, kernel)
        return jnp.zeros((n, ho, wo, f), dtype)
    # lax.pad takes negative padding as cropping, as the convolution does.
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))

    def tap(i: int, j: int) -> jax.Array:
        limit = (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c)
        piece = lax.slice(xp, (0, i, j, 0), limit, (1, sh, sw, 1))
        return lax.reshape(piece, (n * ho * wo, c))

    matmul = functools.partial(
        _matmul, precision=precision, preferred_element_type=preferred_element_type
    )
    # The kernel's rows per tap by static slices of its (kh * kw * C, F) view, not `kernel[i, j]`:
    # jnp indexing is slow to trace, and a ResNet-18 step had ~190 of them (with lax slices and
    # reshapes its first trace went from ~1.0 to ~0.85 s on this CPU).
    rows = lax.reshape(kernel, (kh * kw * c, f))

    def weight(i: int, j: int) -> jax.Array:
        start = (i * kw + j) * c
        return lax.slice_in_dim(rows, start, start + c, axis=0)

    if len(taps) == 1 or n * ho * wo * len(taps) * c * x.dtype.itemsize <= PATCH_BYTES:
        patches = lax.concatenate([tap(i, j) for i, j in taps], 1)
        # Every tap kept (the common case): the view is already the im2col weight matrix.
        weights = rows if len(taps) == kh * kw else lax.concatenate([weight(*t) for t in taps], 0)
        return lax.reshape(matmul(patches, weights), (n, ho, wo, f))
    y = functools.reduce(lax.add, (matmul(tap(i, j), weight(i, j)) for i, j in taps))
    return lax.reshape(y, (n, ho, wo, f))


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """`lax.conv_general_dilated`, lowered as shifted matmuls on CPU where that applies.

    Same signature and result as `lax.conv_general_dilated` (pass it as flax `nn.Conv`'s
    `conv_general_dilated`). The matmul form covers plain 2-D NHWC/HWIO convolutions (no
    dilation, one group) on the CPU backend; anything else, and every other backend, uses
    XLA's convolution, as does a symbolic shape.
    """
    xla = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    applies = (
        jax.default_backend() == "cpu"
        # A symbolic batch (`jax.export`, engine/workflows/export.py) cannot pick a form by
        # size, and an artifact for serving is better off with XLA's portable convolution.
        and all(isinstance(d, int) for d in lhs.shape)
        and undilated
        and feature_group_count == 1
        and batch_group_count == 1
        and _is_plain_nhwc(dimension_numbers, lhs.shape, rhs.shape)
    )
    if not applies:
        return xla(lhs, rhs)
    pads = _resolve_padding(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
    tile = winograd_tile(lhs.shape, rhs.shape, window_strides, pads)
    if tile:
        return winograd.winograd_conv(
            lhs,
            rhs,
            padding=pads,
            tile=tile,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return shifted_matmul_conv(
        lhs,
        rhs,
        strides=window_strides,
        padding=pads,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


# Winograd (architectures/winograd.py) for 3x3 stride-1 convolutions whose output map is at
# least WINOGRAD_MIN_SIZE on each side and whose direct form costs at least WINOGRAD_FLOPS: below
# that its transforms' fixed cost outweighs the saved products (forward+backward on the 2-core
# CPU: (64, 2, 2, 256) 10.5 ms against 4.0 ms as taps, (64, 4, 4, 128) 8.5 against 5.7 ms;
# (128, 8, 8, 64) 6.5 against 12.2 ms, (16, 32, 32, 64) 11.5 against 30.6 ms). F(4x4, 3x3) from
# WINOGRAD_TILE4_SIZE on: (128, 32, 32, 64) 94 ms against 127 ms with F(2x2, 3x3) (251 as
# taps); at 8x8 and below F(2x2, 3x3) is the faster (73 against 82 ms on (128, 8, 8, 256)).
WINOGRAD_MIN_SIZE = 4
WINOGRAD_FLOPS = 5 * 10**8
WINOGRAD_TILE4_SIZE = 16


def winograd_tile(x_shape, kernel_shape, strides, padding) -> int:
    """Winograd's output tile (2 or 4) for a plain NHWC convolution, or 0 for the matmul forms.

    Args:
        x_shape: (N, H, W, C); kernel_shape: (kh, kw, C, F); strides: (sh, sw);
        padding: ((top, bottom), (left, right)).

    >>> winograd_tile((128, 32, 32, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)))
    4
    >>> winograd_tile((128, 8, 8, 256), (3, 3, 256, 256), (1, 1), ((1, 1), (1, 1)))
    2
    >>> winograd_tile((64, 8, 8, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)))  # too small
    0
    """
    n, h, w, c = x_shape
    kh, kw, _, f = kernel_shape
    if (kh, kw) != (3, 3) or tuple(strides) != (1, 1) or min(min(p) for p in padding) < 0:
        return 0
    ho, wo = h + sum(padding[0]) - 2, w + sum(padding[1]) - 2
    if min(ho, wo) < WINOGRAD_MIN_SIZE or 2 * 9 * n * ho * wo * c * f < WINOGRAD_FLOPS:
        return 0
    return 4 if min(ho, wo) >= WINOGRAD_TILE4_SIZE else 2


def conv_function(lowering: str):
    """The convolution function for flax `nn.Conv` for lowering "auto" or "xla"."""
    if lowering == "auto":
        return conv_general_dilated
    if lowering == "xla":
        return lax.conv_general_dilated
    raise ValueError(f"unknown conv lowering {lowering!r}; valid: {', '.join(LOWERINGS)}")
