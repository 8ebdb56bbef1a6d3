"""Model summary: per layer output shape, parameter count and receptive field, plus totals.

Everything is traced with `jax.eval_shape`, so summarising VGG at 224x224 allocates nothing big.
The layer calls are observed with `flax.linen.intercept_methods`, which sees every module's
`__call__` in execution order together with the module object, so the geometry (kernel size,
stride, dilation, pooling window) is read from the module itself.

Receptive field (RF), in input pixels, of one output unit along one spatial axis, from the
standard recurrence (padding does not change it): for a layer with kernel k, stride s and dilation
d applied to a map whose units are `jump` input pixels apart,
    RF_out = RF_in + (d * (k - 1)) * jump_in,    jump_out = jump_in * s,
starting from RF = 1, jump = 1 at the input. Equivalently, backwards, RF(i) = (RF(i+1) - 1) * s + k.
Branching blocks follow their main path: a module class may list `summary_side_branches`, name
prefixes of children that form side branches (ResNet's projection shortcut; Inception's b1, b2, b4,
so the 1x1 -> "5x5" branch is the main path). A side branch starts from the block's input and its
rows show their own RF; the block's output carries the main path's RF. Layers that mix the whole map
(flatten, global pooling) show "global". For adaptive average pooling the window is the largest
PyTorch window and the stride the integer ratio in/out (exact when in divides by out).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.layers import (
    AdaptiveAvgPool,
    AvgPool,
    ConvUnit,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    as_tuple,
)

GLOBAL = "global"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One row of the summary.

    Attributes:
        path: module names from the model down to this layer, e.g. ("layer1_0", "conv1", "conv").
        kind: the module's class name.
        detail: short description of its geometry, e.g. "Conv 3x3/2+BN" or "MaxPool 3x3/2".
        output_shape: shape of the layer's output (including the batch axis).
        params: parameters in this module and its submodules.
        receptive_field: RF in input pixels (int), "global", or None for non-image inputs.
        jump: distance in input pixels between neighbouring output units (None if not spatial).
    """

    path: tuple[str, ...]
    kind: str
    detail: str
    output_shape: tuple[int, ...] | None
    params: int
    receptive_field: int | str | None
    jump: int | None


def variable_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The model's variables as ShapeDtypeStructs (init under eval_shape: nothing allocated).

    Args:
        model: a Flax module called as `model(x, train=...)`.
        input_shape: full input shape including the batch axis, e.g. (1, 224, 224, 3).
    """
    # A fresh tree over the cached structs, so a caller may reshape its own copy.
    return jax.tree.map(lambda s: s, _traced_init(model, tuple(input_shape))[0])


def param_order(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The model's top-level `params` entries in creation (call) order, input side first.

    Pytrees sort dict keys, so the order is read inside the trace, where `init` returns the
    dict in creation order (the same cached trace as `variable_shapes`).
    """
    return _traced_init(model, tuple(input_shape))[1]


def init_program(model: nn.Module):
    """`model.init(rngs, x, train=False)` jitted, one function per module (equal modules share).

    The summary's shape pass (`jax.eval_shape`) and the training state's init
    (`engine.programs.state.create`: `.lower`) call this same jitted function with the same argument
    shapes, so JAX traces the model's init once per start, not twice (a ResNet-18 init's
    second trace was ~0.1 s of a start on this CPU).

    Args:
        model: a Flax module called as `model(x, train=...)`.

    Returns:
        `(init, order)`: the jitted `init(rngs, x)` with `rngs` a dict of raw keys
        (`{"params": key, "dropout": key}`, each as `jax.random.PRNGKey` makes it), and the
        list its first trace fills with the top-level `params` entries in creation order
        (pytrees sort dict keys; the order is only visible inside the trace).
    """
    return _init_program(model)


@functools.lru_cache(maxsize=8)
def _init_program(model: nn.Module):
    order: list[str] = []

    def init(rngs, x):
        variables = model.init(rngs, x, train=False)
        if not order:  # a retrace (other input shapes) finds the same entries
            order.extend(variables.get("params", {}).keys())
        return variables

    return jax.jit(init), order


# Cached: a start asks for the same net's shapes several times (parameter count, summary, the
# doctor's layer order). Modules are frozen dataclasses, equal when their attributes are.
@functools.lru_cache(maxsize=8)
def _traced_init(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict, tuple[str, ...]]:
    init, order = init_program(model)
    key = jax.eval_shape(jax.random.PRNGKey, 0)  # the state's raw keys, as the PRNG makes them
    shapes = jax.eval_shape(
        init, {"params": key, "dropout": key}, jax.ShapeDtypeStruct(input_shape, jnp.float32)
    )
    return shapes, tuple(order)


def _size(tree: Any) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def count_params(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of parameters (the `params` collection only; BatchNorm statistics excluded).

    Args:
        model: a Flax module.
        input_shape: full input shape including the batch axis.

    >>> from architectures import get
    >>> count_params(get("lenet", num_classes=10), (1, 32, 32, 1))
    61706
    """
    return _size(variable_shapes(model, input_shape).get("params", {}))


def _subtree(tree: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return {}
        tree = tree[name]
    return tree


def _geometry(module: nn.Module, x: Any) -> tuple[int, int] | str | None:
    """(effective kernel, stride) of a leaf layer, GLOBAL, or None if it keeps the geometry."""
    if isinstance(module, nn.Conv):
        k = as_tuple(module.kernel_size)[0]
        d = as_tuple(module.kernel_dilation)[0]
        return d * (k - 1) + 1, as_tuple(module.strides)[0]
    if isinstance(module, MaxPool | AvgPool):
        return module.window, module.stride
    if isinstance(module, AdaptiveAvgPool):
        size, out = x.shape[1], module.output_size
        widths = [math.ceil((i + 1) * size / out) - (i * size) // out for i in range(out)]
        return max(widths), max(1, size // out)
    if isinstance(module, GlobalAvgPool | Flatten):
        return GLOBAL
    return None


def _detail(module: nn.Module) -> str:
    """A short geometry description for the table's type column."""
    if isinstance(module, ConvUnit):
        bn = "+BN" if module.batchnorm else ""
        return f"Conv {module.kernel}x{module.kernel}/{module.stride}{bn}"
    if isinstance(module, nn.Conv):
        k, s = as_tuple(module.kernel_size)[0], as_tuple(module.strides)[0]
        return f"Conv {k}x{k}/{s}"
    if isinstance(module, MaxPool | AvgPool):
        name = type(module).__name__
        return f"{name} {module.window}x{module.window}/{module.stride}"
    if isinstance(module, AdaptiveAvgPool):
        return f"AdaptiveAvg {module.output_size}x{module.output_size}"
    if isinstance(module, nn.Dense):
        return "Dense"
    return type(module).__name__


def _advance(state: Any, geometry: Any) -> Any:
    if state is None or state == GLOBAL or geometry is None:
        return state
    if geometry == GLOBAL:
        return GLOBAL
    (rf, jump), (k, s) = state, geometry
    return rf + (k - 1) * jump, jump * s


@dataclasses.dataclass
class _Frame:
    module: nn.Module
    state_in: Any
    state_main: Any
    side_states: dict
    has_children: bool = False
    row: int = -1


def _side_branch(parent: nn.Module, name: str) -> str | None:
    for prefix in getattr(type(parent), "summary_side_branches", ()):
        if name == prefix or name.startswith(prefix + "_"):
            return prefix
    return None


def layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[Layer]:
    """Per-layer rows (pre-order: a block before its layers) for `model` on `input_shape`.

    Modules that the evaluation pass does not call (GoogLeNet's training-only aux heads) are
    appended at the end with their parameter counts and no shape.
    """
    variables = variable_shapes(model, input_shape)
    params = variables.get("params", {})
    rows: list[dict] = []
    stack: list[_Frame] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module, x = context.module, args[0] if args else None
        if not stack:  # the model itself
            spatial = x is not None and x.ndim == 4
            stack.append(_Frame(module, (1, 1) if spatial else None, None, {}))
            stack[0].state_main = stack[0].state_in
            try:
                return next_fun(*args, **kwargs)
            finally:
                stack.pop()
        parent = stack[-1]
        branch = _side_branch(parent.module, module.name)
        state_in = (
            parent.state_main if branch is None else parent.side_states.get(branch, parent.state_in)
        )
        frame = _Frame(module, state_in, state_in, {}, row=len(rows))
        path = tuple(module.path)
        rows.append({"path": path, "kind": type(module).__name__, "detail": _detail(module)})
        stack.append(frame)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        state_out = (
            frame.state_main if frame.has_children else _advance(state_in, _geometry(module, x))
        )
        rows[frame.row].update(
            output_shape=tuple(out.shape) if hasattr(out, "shape") else None, state=state_out
        )
        parent.has_children = True
        if branch is None:
            parent.state_main = state_out
        else:
            parent.side_states[branch] = state_out
        return out

    def run(variables, x):
        with nn.intercept_methods(interceptor):
            return model.apply(variables, x, train=False)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))

    result = []
    for row in rows:
        state = row.get("state")
        rf = state if state in (None, GLOBAL) else state[0]
        jump = state[1] if isinstance(state, tuple) else None
        size = _size(_subtree(params, row["path"]))
        result.append(
            Layer(row["path"], row["kind"], row["detail"], row.get("output_shape"), size, rf, jump)
        )
    called = {row["path"][0] for row in rows}
    for name in params:
        if name not in called:  # e.g. training-only heads
            size = _size(params[name])
            result.append(Layer((name,), "-", "(train only)", None, size, None, None))
    return result


def summary(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """A text table: per layer name, type, output shape, params, receptive field; then totals.

    Rows are indented by nesting; a conv unit (conv [+ BatchNorm] + activation) is one row.

    Args:
        model: a Flax module from `architectures.get`.
        input_shape: full input shape including the batch axis, e.g. (1, 32, 32, 3).

    Returns:
        The table as one string (print it).
    """
    rows = layers(model, input_shape)
    # A ConvUnit's row already says conv (+BN); its inner conv/bn rows would only repeat it.
    units = {row.path for row in rows if row.kind == "ConvUnit"}
    rows = [row for row in rows if row.path[:-1] not in units]
    variables = variable_shapes(model, input_shape)
    trainable = _size(variables.get("params", {}))
    stats = _size(variables.get("batch_stats", {}))
    header = f"{'layer':<30} {'type':<18} {'output shape':<22} {'params':>12} {'RF':>7}"
    lines = [
        f"{type(model).__name__} on input {tuple(input_shape)}",
        header,
        "-" * len(header),
    ]
    for row in rows:
        name = "  " * (len(row.path) - 1) + row.path[-1]
        shape = str(row.output_shape) if row.output_shape is not None else "-"
        rf = "-" if row.receptive_field is None else str(row.receptive_field)
        lines.append(f"{name:<30} {row.detail:<18} {shape:<22} {row.params:>12,} {rf:>7}")
    lines += [
        "-" * len(header),
        f"trainable params: {trainable:,}   non-trainable (batch_stats): {stats:,}   "
        f"total: {trainable + stats:,}",
    ]
    if any(row.receptive_field is not None for row in rows):
        lines.append(
            "RF: receptive field in input pixels along the main path (residual branch, "
            "Inception's 5x5 branch); 'global' after flatten or global pooling"
        )
    return "\n".join(lines)


__all__ = ["GLOBAL", "Layer", "count_params", "layers", "summary", "variable_shapes"]
