"""What the registry knows about each family (ArchSpec) and the validation of user options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from architectures.conv_lowering import LOWERINGS
from architectures.layers import ACTIVATIONS, INITS

# Options every family accepts (the shared flags); families add their own.
SHARED_OPTIONS = (
    "dropout",
    "activation",
    "leaky_slope",
    "init",
    "batchnorm",
    "dtype",
    "bn_axis_name",
    "conv",
)


@dataclasses.dataclass(frozen=True)
class PaperCount:
    """A published parameter count and the geometry it was measured at.

    Attributes:
        label: the variant, e.g. "VGG-16" or "VGG-16-BN".
        options: the options that build that variant, as (name, value) pairs.
        input_shape: (N, H, W, C) of the input it is counted at.
        num_classes: classes of the counted head.
        params: the count (`params` collection only; BatchNorm running statistics excluded).
        source: where the number is published.
    """

    label: str
    options: tuple[tuple[str, Any], ...]
    input_shape: tuple[int, int, int, int]
    num_classes: int
    params: int
    source: str


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Static facts about one architecture family.

    Attributes:
        name: registry name.
        needs_image: True if the input must be (N, H, W, C) images; False for the MLP.
        min_image_size: smallest H = W the geometry allows (the engine resizes smaller images up).
        has_batchnorm: whether the family's default configuration uses BatchNorm.
        has_dropout: whether the default configuration uses dropout (every family accepts
            `dropout`; this says whether training needs a "dropout" rng by default).
        default_dropout: the family's dropout rate when the option is not given (paper value).
        options: the option names `get` accepts for this family.
        description: one line for --help and the README.
        paper_params: published parameter counts this implementation reproduces.
        depths: the valid `depth` values (empty if the family has no depth option).
        default_depth: the depth used when the option is not given.
        recipe: the training settings the family trains well with, from its paper or a
            well-known reference implementation, as engine config fields (e.g. `optimizer`,
            `lr`, `weight_decay`, `schedule`, `batchnorm`); the engine applies each to a run
            that does not set that field itself (`engine.config.recipes`). Empty: the engine's own
            defaults (Adam, lr 1e-3, cosine).
        table_recipe: settings that replace or add to `recipe`'s when the inputs are feature
            vectors (a table: `csv:` files and the embedded tables, `engine.data.is_table`),
            for a family that trains on both tables and images (the MLP).
    """

    name: str
    needs_image: bool
    min_image_size: int
    has_batchnorm: bool
    has_dropout: bool
    default_dropout: float
    options: tuple[str, ...]
    description: str
    paper_params: tuple[PaperCount, ...] = ()
    depths: tuple[int, ...] = ()
    default_depth: int | None = None
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    table_recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _bool(name: str, value: Any, spec: ArchSpec) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{spec.name}: option {name} must be True or False, got {value!r}")
    return value


def _dropout(name: str, value: Any, spec: ArchSpec) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{spec.name}: dropout must be a rate in [0, 1), got {value!r}")
    return float(value)


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any, ArchSpec], str]:
    def check(name: str, value: Any, spec: ArchSpec) -> str:
        if value not in choices:
            raise ValueError(f"{spec.name}: unknown {name} {value!r}; valid: {', '.join(choices)}")
        return value

    return check


def _positive(name: str, value: Any, spec: ArchSpec) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{spec.name}: option {name} must be a positive number, got {value!r}")
    return float(value)


def _slope(name: str, value: Any, spec: ArchSpec) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{spec.name}: leaky_slope must be a number, got {value!r}")
    return float(value)


def _dtype(name: str, value: Any, spec: ArchSpec) -> Any:
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{spec.name}: dtype must be a floating type (float32, bfloat16, float16), "
            f"got {value!r}"
        )
    return dtype


def _axis_name(name: str, value: Any, spec: ArchSpec) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{spec.name}: bn_axis_name must be a string or None, got {value!r}")
    return value


def _depth(name: str, value: Any, spec: ArchSpec) -> int:
    if value not in spec.depths or isinstance(value, bool):
        valid = ", ".join(str(d) for d in spec.depths)
        raise ValueError(f"{spec.name}: unknown depth {value!r}; valid: {valid}")
    return int(value)


def _hidden_sizes(name: str, value: Any, spec: ArchSpec) -> tuple[int, ...]:
    sizes = tuple(value) if isinstance(value, list | tuple) else None
    if sizes is None or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise ValueError(
            f"{spec.name}: hidden_sizes must be a tuple of positive ints, got {value!r}"
        )
    return sizes


VALIDATORS: Mapping[str, Callable[[str, Any, ArchSpec], Any]] = {
    "dropout": _dropout,
    "activation": _choice(ACTIVATIONS),
    "leaky_slope": _slope,
    "init": _choice(INITS),
    "batchnorm": _bool,
    "dtype": _dtype,
    "bn_axis_name": _axis_name,
    "conv": _choice(LOWERINGS),
    "depth": _depth,
    "hidden_sizes": _hidden_sizes,
    "width": _positive,
    "aux_heads": _bool,
    "zero_init_residual": _bool,
    "stem": _choice(("auto", "imagenet", "cifar")),
}


# Option names that differ from the module field (Module.init is flax's method).
_FIELDS = {"init": "initializer"}


def resolve_options(spec: ArchSpec, num_classes: Any, options: Mapping[str, Any]) -> dict:
    """Checks the user's options for `spec`'s family and fills the family defaults.

    Args:
        spec: the family.
        num_classes: a positive int, or None for a net without a head.
        options: user options; a value of None means "the family default".

    Returns:
        Keyword arguments for the family's module constructor.

    Raises:
        ValueError: one line naming the bad option or value and the valid ones.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    for name, value in options.items():
        if name not in spec.options:
            raise ValueError(
                f"unknown option {name!r} for architecture {spec.name!r}; "
                f"valid options: {', '.join(sorted(spec.options))}"
            )
        if value is not None:
            kwargs[_FIELDS.get(name, name)] = VALIDATORS[name](name, value, spec)
    # Families that take the shared options get their defaults; a user factory that does not
    # list an option never receives it.
    if "dropout" in spec.options:
        kwargs.setdefault("dropout", spec.default_dropout)
    if "batchnorm" in spec.options:
        kwargs.setdefault("batchnorm", spec.has_batchnorm)
    if spec.depths:
        kwargs.setdefault("depth", spec.default_depth)
    return kwargs
