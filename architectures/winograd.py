"""Winograd's minimal filtering F(m x m, 3 x 3): a 3x3 stride-1 convolution in fewer products.

Why: on CPU the 3x3 stride-1 convolutions of a ResNet at 32x32 are most of a training step, and
XLA's CPU convolution or the matmul forms (`architectures.conv_lowering`) spend 9 multiplies per
output and input channel. Winograd's algorithm (Lavin and Gray 2016, "Fast Algorithms for
Convolutional Neural Networks") computes an m x m output tile from an (m + 2) x (m + 2) input
tile with (m + 2)^2 multiplies: 4 instead of 9 per output for F(2x2, 3x3), 2.25 for F(4x4,
3x3). The input tiles and the kernel are transformed by small constant matrices (sums of
slices), the products become (m + 2)^2 independent matrix products (tiles, C) @ (C, F),
batched in one `dot_general`, and the output tiles are transformed back. The batched product's
gradient is JAX's own (batched products of the same size, so the backward pass gets the same
saving); the three transforms are linear and their transposes are written out as custom VJPs,
because JAX's own transpose of a slice is a zero map of the full size padded around it, one
per tile position, which made the backward pass of F(2x2, 3x3) slower than its forward.

Exactness: the transforms are exact in real arithmetic; in float32 F(2x2, 3x3) differs from
`lax.conv_general_dilated` by about 2e-7 of the output's largest value (as the matmul forms),
F(4x4, 3x3) by about 2e-6 (its transforms hold 4s, 5s and 8s). Parameters keep flax's HWIO
layout: the kernel is transformed inside the step, so checkpoints do not depend on it.

Measured on the 2-core CPU (forward+backward, batch 128, 2 MiB pages; `python
benchmarks/conv_lowering.py --table=layers`): 32x32x64 251 ms as taps, 127 ms F(2x2, 3x3),
94 ms F(4x4, 3x3); 16x16x128 171 / 88 / 84 ms; 8x8x256 147 / 73 / 82 ms (PyTorch 2.13's oneDNN
convolution: 165, 140 and 121 ms).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(2x2, 3x3) (Lavin and Gray 2016, section 4.1): Y = A^T [(G g G^T) * (B^T d B)] A.
_F2 = (
    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32),  # B^T
    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32),  # G
    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32),  # A^T
)

# F(4x4, 3x3) at the points 0, +-1, +-2 (Lavin and Gray 2016, section 4.2).
_F4 = (
    np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float32,
    ),
    np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float32,
    ),
    np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        np.float32,
    ),  # A^T
)

TRANSFORMS = {2: _F2, 4: _F4}


def _combine(coefficients, parts: list[jax.Array]) -> jax.Array:
    """sum_i coefficients[i] * parts[i], skipping zeros and multiplying only where needed."""
    total = None
    for c, part in zip(np.asarray(coefficients).tolist(), parts):
        if c == 0:
            continue
        term = part if c == 1 else -part if c == -1 else part * jnp.asarray(c, part.dtype)
        total = term if total is None else total + term
    return total  # every row of these transforms has a nonzero coefficient


def _pick(x: jax.Array, axis: int, index: int) -> jax.Array:
    """Entry `index` of x along `axis`, that axis removed (a lax slice: cheap to trace)."""
    return lax.index_in_dim(x, index, axis, keepdims=False)


def _window(blocks: jax.Array, axis: int, start: int, count: int, sub: int) -> jax.Array:
    """blocks[..., start:start + count, sub, ...] along (axis, axis + 1), sub's axis removed."""
    piece = lax.slice_in_dim(blocks, start, start + count, axis=axis)
    return _pick(piece, axis + 1, sub)


def _place(part: jax.Array, axis: int, shift: int) -> jax.Array:
    """`part` moved `shift` (0 or 1) blocks along `axis` in a map one block longer (zeros)."""
    config = [(0, 0, 0)] * part.ndim
    config[axis] = (shift, 1 - shift, 0)
    return lax.pad(part, jnp.zeros((), part.dtype), config)


def _unfold(x: jax.Array, axis: int, tile: int, bt: np.ndarray) -> jax.Array:
    """B^T along one spatial axis: (..., tile * (t + 1), ...) -> (size, ..., t, ...).

    Tile t's element i is the map's element tile * t + i, which is element i % tile of block
    t + i // tile once the axis is split into blocks of `tile`: a contiguous slice, not a
    strided one.
    """
    size, blocks = bt.shape[0], x.shape[axis] // tile
    split = lax.reshape(x, (*x.shape[:axis], blocks, tile, *x.shape[axis + 1 :]))
    parts = [_window(split, axis, i // tile, blocks - 1, i % tile) for i in range(size)]
    return jnp.stack([_combine(bt[a], parts) for a in range(size)])


def _fold(d: jax.Array, axis: int, tile: int, bt: np.ndarray) -> jax.Array:
    """The transpose of `_unfold`: (size, ..., t, ...) -> (..., tile * (t + 1), ...).

    Each tile's element i goes back to block t + i // tile, sub-element i % tile, summed where
    tiles overlap: shifts by one block and adds (no strided pads, which XLA's CPU backend runs
    as full-size zero maps, one per element).
    """
    size = bt.shape[0]
    parts = [_combine(bt[:, i], [_pick(d, 0, a) for a in range(size)]) for i in range(size)]
    axis -= 1  # the leading `size` axis is gone
    subs = [
        functools.reduce(lax.add, (_place(parts[i], axis, i // tile) for i in range(s, size, tile)))
        for s in range(tile)
    ]
    stacked = jnp.stack(subs, axis + 1)  # (..., t + 1, tile, ...)
    shape = stacked.shape
    return lax.reshape(stacked, (*shape[:axis], shape[axis] * tile, *shape[axis + 2 :]))


def _input_transform_fwd(xp: jax.Array, tile: int) -> jax.Array:
    bt = TRANSFORMS[tile][0]
    rows = _unfold(xp, 1, tile, bt)  # (size_a, N, th, W, C): row position a of every tile
    v = _unfold(rows, 3, tile, bt)  # (size_b, size_a, N, th, tw, C)
    sb, sa, n, th, tw, c = v.shape
    return lax.reshape(v, (sb * sa, n * th * tw, c))


def _input_transform_bwd(tile: int, grid, dv: jax.Array) -> jax.Array:
    bt = TRANSFORMS[tile][0]
    size = bt.shape[0]
    n, th, tw = grid
    dv = lax.reshape(dv, (size, size, n, th, tw, dv.shape[-1]))
    return _fold(_fold(dv, 4, tile, bt), 2, tile, bt)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _input_transform(xp: jax.Array, tile: int, grid) -> jax.Array:
    """B^T d B of every tile: (N, tile * (th + 1), tile * (tw + 1), C) -> (size^2, N*th*tw, C).

    `grid` is (N, th, tw). Tile positions are ordered column-major (b * size + a for row a,
    column b). The transpose is written out (`_fold`).
    """
    return _input_transform_fwd(xp, tile)


_input_transform.defvjp(
    lambda xp, tile, grid: (_input_transform_fwd(xp, tile), None),
    lambda tile, grid, _, dv: (_input_transform_bwd(tile, grid, dv),),
)


def _output_transform_fwd(m: jax.Array, tile: int, grid) -> jax.Array:
    at = TRANSFORMS[tile][2]
    size = at.shape[1]
    n, th, tw = grid
    f = m.shape[-1]
    m = lax.reshape(m, (size, size, n, th, tw, f))  # (b, a, ...)
    half = [_combine(at[b2], [_pick(m, 0, b) for b in range(size)]) for b2 in range(tile)]
    y = jnp.stack(
        [
            jnp.stack(
                [
                    _combine(at[a2], [_pick(half[b2], 0, a) for a in range(size)])
                    for b2 in range(tile)
                ],
                3,
            )
            for a2 in range(tile)
        ],
        2,
    )  # (N, th, tile, tw, tile, F)
    return lax.reshape(y, (n, tile * th, tile * tw, f))


def _output_transform_bwd(tile: int, grid, dy: jax.Array) -> jax.Array:
    at = TRANSFORMS[tile][2]
    size = at.shape[1]
    n, th, tw = grid
    f = dy.shape[-1]
    dy = lax.reshape(dy, (n, th, tile, tw, tile, f))
    rows = [_pick(dy, 2, a2) for a2 in range(tile)]  # (N, th, tw, tile, F) each
    dh = [  # over b2: (size_a, N, th, tw, F) for each output column b2
        jnp.stack([_combine(at[:, a], [_pick(r, 3, b2) for r in rows]) for a in range(size)])
        for b2 in range(tile)
    ]
    dm = jnp.stack([_combine(at[:, b], dh) for b in range(size)])  # (size_b, size_a, N, th, tw, F)
    return lax.reshape(dm, (size * size, n * th * tw, f))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _output_transform(m: jax.Array, tile: int, grid) -> jax.Array:
    """A^T M A of every tile: (size^2, N*th*tw, F) -> (N, tile * th, tile * tw, F).

    `grid` is (N, th, tw). The transpose is written out (`_output_transform_bwd`).
    """
    return _output_transform_fwd(m, tile, grid)


_output_transform.defvjp(
    lambda m, tile, grid: (_output_transform_fwd(m, tile, grid), None),
    lambda tile, grid, _, dy: (_output_transform_bwd(tile, grid, dy),),
)


def _sandwich(taps: jax.Array, left: np.ndarray, right: np.ndarray) -> jax.Array:
    """out[b, a] = sum_ij left[a, i] right[b, j] taps[i, j] over the two leading axes.

    Sums of slices (one fused loop), not an einsum: XLA ran the einsum as matrix products with
    3 or 4 columns, ~190 ms a ResNet-18 32x32 step on the 2-core CPU.
    """
    rows = [
        _combine(left[a], [_pick(taps, 0, i) for i in range(left.shape[1])])
        for a in range(left.shape[0])
    ]
    return jnp.stack(
        [
            jnp.stack(
                [_combine(right[b], [_pick(r, 0, j) for j in range(right.shape[1])]) for r in rows]
            )
            for b in range(right.shape[0])
        ]
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _kernel_transform(kernel: jax.Array, tile: int) -> jax.Array:
    """G g G^T of a (3, 3, C, F) kernel -> (size^2, C, F), positions ordered as the input's.

    In float32 whatever the kernel's dtype (it is small), cast back. The transpose is written
    out (G^T on both sides).
    """
    g = TRANSFORMS[tile][1]
    u = _sandwich(kernel.astype(jnp.float32), g, g)  # (size_b, size_a, C, F)
    return lax.reshape(u, (g.shape[0] ** 2, *kernel.shape[2:])).astype(kernel.dtype)


def _kernel_transform_bwd(tile: int, _, du: jax.Array) -> tuple[jax.Array]:
    g = TRANSFORMS[tile][1]
    size = g.shape[0]
    du = lax.reshape(du.astype(jnp.float32), (size, size, *du.shape[1:]))  # (b, a, C, F)
    # dk[i, j] = sum_ab G[a, i] G[b, j] du[b, a]: the same sandwich with G^T, du's (b, a) in
    # the places of the kernel's (i, j), which it returns in (i, j) order.
    return (_sandwich(du, g.T, g.T).astype(du.dtype),)


_kernel_transform.defvjp(
    lambda kernel, tile: (_kernel_transform(kernel, tile), None),
    _kernel_transform_bwd,
)


def winograd_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    padding: tuple[tuple[int, int], tuple[int, int]],
    tile: int = 2,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """A 3x3 stride-1 convolution by Winograd's F(tile x tile, 3 x 3).

    Args:
        x: (N, H, W, C) input.
        kernel: (3, 3, C, F) kernel (flax's HWIO).
        padding: ((top, bottom), (left, right)) zero padding, each >= 0.
        tile: output tile size m, 2 or 4.
        precision, preferred_element_type: as `lax.dot_general`.

    Returns:
        (N, Ho, Wo, F) with Ho = H + top + bottom - 2 (Wo likewise), equal to
        `lax.conv_general_dilated` with NHWC/HWIO/NHWC dimension numbers up to float rounding.
    """
    n, h, w, _ = x.shape
    (pt, pb), (pl, pr) = padding
    ho, wo = h + pt + pb - 2, w + pl + pr - 2
    th, tw = -(-ho // tile), -(-wo // tile)  # output tiles; the last may reach past the output
    # Zeros below and right so the map is whole blocks of `tile` (one more than the tiles):
    # every tile is then whole, and the outputs past (ho, wo) are cropped.
    xp = lax.pad(
        x,
        jnp.zeros((), x.dtype),
        (
            (0, 0, 0),
            (pt, tile * (th + 1) - h - pt, 0),
            (pl, tile * (tw + 1) - w - pl, 0),
            (0, 0, 0),
        ),
    )
    v = _input_transform(xp, tile, (n, th, tw))  # (size^2, tiles, C)
    u = _kernel_transform(kernel, tile)  # (size^2, C, F)
    m = lax.dot_general(
        v,
        u,
        (((2,), (1,)), ((0,), (0,))),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )  # (size^2, tiles, F)
    y = _output_transform(m, tile, (n, th, tw))
    return y[:, :ho, :wo] if (tile * th, tile * tw) != (ho, wo) else y
