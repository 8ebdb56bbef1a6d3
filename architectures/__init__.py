"""The architecture zoo: classic networks as Flax linen modules, selected by name.

Every model is called as `model.apply(variables, x, train=bool, mask=None,
rngs={"dropout": key}, mutable=[...])` with x shaped (N, H, W, C) for images (channels last) or
(N, D) for tables; the MLP flattens anything. `variables` holds "params" and, only for nets with
BatchNorm, "batch_stats" (make it mutable in training). Outputs are float32 logits
(N, num_classes), or float32 features when `num_classes=None`. `mask` ((N,) bool, True for a
real row) keeps the padding rows of a partial batch out of every BatchNorm's statistics in
training. GoogLeNet's auxiliary logits are sown into the "aux_outputs" collection in training
only.

Shared options (keyword, all families; None means the family default):
    dropout: rate (family default: the paper's; see `spec(name).default_dropout`).
    activation: relu | leaky_relu | gelu | tanh | sigmoid; leaky_slope: float (default 0.01).
    init: lecun | he | xavier | normal (kernel initialiser).
    batchnorm: bool (family default `spec(name).has_batchnorm`).
    dtype: compute dtype (e.g. "bfloat16"); parameters stay float32.
    bn_axis_name: BatchNorm axis_name for cross-device statistics under pmap; None outside.
Family options: depth (vgg 11/13/16/19, resnet 18/34/50/101/152), hidden_sizes (mlp), width
(channel multiplier, conv nets), aux_heads (googlenet), zero_init_residual and stem (resnet).

>>> import jax, jax.numpy as jnp
>>> model = get("mlp", num_classes=10, hidden_sizes=(32,), batchnorm=True)
>>> x = jnp.zeros((4, 8, 8, 1))
>>> variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
>>> sorted(variables)
['batch_stats', 'params']
>>> logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
>>> logits.shape, logits.dtype
((4, 10), dtype('float32'))
>>> spec("resnet").min_image_size, count_params(get("resnet", num_classes=10), (1, 32, 32, 3))
(8, 11173962)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from architectures import alexnet, googlenet, lenet, mlp, nin, resnet, vgg
from architectures.spec import VALIDATORS, ArchSpec, PaperCount, resolve_options
from architectures.summary import Layer, count_params, layers, summary, variable_shapes

_REGISTRY: dict[str, tuple[ArchSpec, Any]] = {
    "mlp": (mlp.SPEC, mlp.MLP),
    "lenet": (lenet.SPEC, lenet.LeNet),
    "alexnet": (alexnet.SPEC, alexnet.AlexNet),
    "vgg": (vgg.SPEC, vgg.VGG),
    "nin": (nin.SPEC, nin.NiN),
    "googlenet": (googlenet.SPEC, googlenet.GoogLeNet),
    "resnet": (resnet.SPEC, resnet.ResNet),
}


_BUILTIN = tuple(_REGISTRY)


def register(name: str, factory: Any, **spec_fields: Any) -> Any:
    """Registers a user architecture, usable as `get(name, ...)` and `--arch=name`.

    Args:
        name: a new name (letters, digits and underscores).
        factory: a flax Module class (or any callable) taking `num_classes=` plus the keyword
            options named in `options`, returning a module called as
            `module.apply(variables, x, train=bool)` (and, if it takes it, `mask=` (N,) bool
            marking the real rows, for BatchNorm statistics).
        **spec_fields: `ArchSpec` fields other than `name`: `needs_image` (default True),
            `min_image_size` (1), `has_batchnorm` (False), `has_dropout` (False),
            `default_dropout` (0.0), `options` (() : names from the shared and family options
            the factory accepts, validated like the built-ins'), `description`, `recipe`
            ({}: the training settings the family trains well with, applied to the flags a
            run does not give; see `engine.config.recipes`).

    Returns:
        `factory`, unchanged.

    Raises:
        ValueError: one line naming a taken name, an unknown field or option, or a bad value.

    >>> import flax.linen as nn
    >>> class Tiny(nn.Module):
    ...     num_classes: int
    ...     dropout: float = 0.0
    ...     @nn.compact
    ...     def __call__(self, x, train=False):
    ...         return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
    >>> _ = register("doc_tiny", Tiny, needs_image=False, options=("dropout",))
    >>> count_params(get("doc_tiny", num_classes=3), (1, 4))
    15
    >>> get("doc_tiny", num_classes=3, depth=2)
    Traceback (most recent call last):
    ValueError: unknown option 'depth' for architecture 'doc_tiny'; valid options: dropout
    >>> unregister("doc_tiny")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"architecture name must be a Python identifier, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} is already registered; choose another name")
    if not callable(factory):
        raise ValueError(f"architecture {name!r}: factory must be callable, got {factory!r}")
    fields = {f.name for f in dataclasses.fields(ArchSpec)} - {"name"}
    unknown = sorted(set(spec_fields) - fields)
    if unknown:
        raise ValueError(
            f"architecture {name!r}: unknown spec field(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    options = tuple(spec_fields.pop("options", ()))
    bad = sorted(set(options) - set(VALIDATORS))
    if bad:
        raise ValueError(
            f"architecture {name!r}: unknown option(s) {', '.join(bad)}; "
            f"valid: {', '.join(sorted(VALIDATORS))}"
        )
    defaults = dict(
        needs_image=True,
        min_image_size=1,
        has_batchnorm=False,
        has_dropout=False,
        default_dropout=0.0,
        description=f"user architecture {getattr(factory, '__name__', name)}",
    )
    _REGISTRY[name] = (ArchSpec(name=name, options=options, **{**defaults, **spec_fields}), factory)
    return factory


def unregister(name: str) -> None:
    """Removes an architecture added with `register` (built-ins cannot be removed)."""
    if name in _BUILTIN:
        raise ValueError(f"architecture {name!r} is built in and cannot be unregistered")
    _lookup(name)
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered architecture names, in the order the zoo presents them."""
    return tuple(_REGISTRY)


def _lookup(name: str) -> tuple[ArchSpec, type[nn.Module]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def spec(name: str) -> ArchSpec:
    """The static facts (ArchSpec) about architecture `name`.

    >>> spec("vgg").min_image_size
    32
    """
    return _lookup(name)[0]


def get(name: str, *, num_classes: int | None, **options: Any) -> nn.Module:
    """Builds architecture `name` with a `num_classes` head (None: no head) and options.

    Args:
        name: one of `names()`.
        num_classes: classifier size, or None to return features.
        **options: shared and family options (see the module docstring and `spec(name).options`);
            a value of None means the family default.

    Returns:
        An unbound flax.linen.Module whose attributes hold the resolved options.

    Raises:
        ValueError: one line naming an unknown architecture, option or value, and the valid ones.
    """
    arch_spec, cls = _lookup(name)
    return cls(**resolve_options(arch_spec, num_classes, options))


__all__ = [
    "ArchSpec",
    "Layer",
    "PaperCount",
    "count_params",
    "get",
    "layers",
    "names",
    "register",
    "spec",
    "summary",
    "unregister",
    "variable_shapes",
]
