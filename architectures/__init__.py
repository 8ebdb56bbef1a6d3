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

from typing import Any

import flax.linen as nn

from architectures import alexnet, googlenet, lenet, mlp, nin, resnet, vgg
from architectures.spec import ArchSpec, PaperCount, resolve_options
from architectures.summary import Layer, count_params, layers, summary, variable_shapes

_REGISTRY: dict[str, tuple[ArchSpec, type[nn.Module]]] = {
    "mlp": (mlp.SPEC, mlp.MLP),
    "lenet": (lenet.SPEC, lenet.LeNet),
    "alexnet": (alexnet.SPEC, alexnet.AlexNet),
    "vgg": (vgg.SPEC, vgg.VGG),
    "nin": (nin.SPEC, nin.NiN),
    "googlenet": (googlenet.SPEC, googlenet.GoogLeNet),
    "resnet": (resnet.SPEC, resnet.ResNet),
}


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
    "spec",
    "summary",
    "variable_shapes",
]
