"""The model side of a run: the architecture's spec, the image size, the module, the step options.

Split from `engine.workflows.build` (which loads and splits the data and builds the loaders):
here is everything that depends on the architecture rather than on the rows.
"""

from __future__ import annotations

import jax
import numpy as np

import architectures
from engine.config import Config, ConfigError
from engine.data import augment
from engine.programs import ProgramSpec, supervised
from engine.programs.steps import StepConfig


def spec_of(config: Config, model, program: ProgramSpec) -> architectures.ArchSpec:
    """The architecture's spec: the zoo family's, a user module's, or the program's own nets'."""
    if not program.zoo:  # nets the program builds itself
        return program.nets or user_spec(config.arch)
    return architectures.spec(config.arch) if model is None else user_spec(config.arch)


def make_model(config: Config, spec, num_outputs: int, axis_name: str | None):
    """The zoo family's flax module for `config`, its output width `num_outputs`."""
    try:
        return architectures.get(
            config.arch, num_classes=num_outputs, **model_options(config, spec, axis_name)
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def model_options(config: Config, spec, axis_name: str | None) -> dict:
    """The architecture options from the config, refusing ones the family does not take."""
    options = {
        "dropout": config.dropout if config.dropout >= 0 else None,
        "activation": config.activation,
        "leaky_slope": config.leaky_slope,
        "init": config.init,
        "dtype": config.dtype,
        "batchnorm": {"auto": None, "on": True, "off": False}[config.batchnorm],
        "depth": config.depth or None,
        "width": config.width,
        "hidden_sizes": tuple(config.hidden_sizes),
        "aux_heads": config.aux_heads,
        "bn_axis_name": axis_name,
        "conv": config.conv,
    }
    explicit = {"depth": config.depth != 0, "width": config.width != 1.0}
    for name, is_set in explicit.items():
        if is_set and name not in spec.options:
            raise ConfigError(f"--{name} does not apply to --arch={config.arch}")
    return {k: v for k, v in options.items() if k in spec.options and v is not None}


def image_size(config: Config, info, spec) -> int:
    """The side the images are resized to (0 for tables), refusing a size below the minimum."""
    if not info.is_image:
        if spec.needs_image:
            raise ConfigError(
                f"--arch={config.arch} needs images but --dataset={info.name} has "
                f"{info.input_shape[0]} features per example; use --arch=mlp"
            )
        return 0
    height = info.input_shape[0]
    minimum = spec.min_image_size or 0
    if config.image_size:
        if config.image_size < minimum:
            raise ConfigError(
                f"--image_size={config.image_size} is below --arch={config.arch}'s minimum "
                f"{minimum}; use --image_size={minimum} or larger"
            )
        return config.image_size
    return max(height, minimum)


def user_spec(name: str) -> architectures.ArchSpec:
    """What the engine assumes of a user's module: any input shape, options of its own."""
    return architectures.ArchSpec(
        name=name,
        needs_image=False,
        min_image_size=0,
        has_batchnorm=False,
        has_dropout=False,
        default_dropout=0.0,
        options=(),
        description="user module",
    )


def _has_batchnorm(model, input_shape: tuple[int, ...]) -> bool:
    """Whether a user's module keeps `batch_stats` (traced with shapes only, nothing is run)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    try:
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    except Exception as e:  # a user's module that cannot be called as documented
        raise ConfigError(
            f"model {type(model).__name__} cannot be initialised as "
            f"model.init(rng, x, train=False) on inputs {x.shape}: {str(e).splitlines()[0][:160]}"
        ) from None
    return "batch_stats" in shapes


# Below this side the pad-and-crop of `--augment=crop|standard` was measured to hurt (digits'
# 8x8, default MLP, 30 epochs: test 0.9555 with it, 0.9870 without, 0.9814 when the images are
# resized to 32x32 first and then cropped), so a run is warned.
SMALLEST_CROP = 16


def augment_warning(augment_name: str, input_shape: tuple[int, ...]) -> str | None:
    """Why `augment_name` hurts images of `input_shape` (the side the model sees), or None."""
    if augment_name not in ("crop", "standard") or len(input_shape) != 3:
        return None
    side = min(input_shape[:2])
    if side >= SMALLEST_CROP:
        return None
    return (
        f"--augment={augment_name} pads and crops {side}x{side} images by a pixel, too coarse a "
        f"shift for so few pixels (digits' 8x8, MLP, 30 epochs: test 0.9555 against 0.9870 "
        f"without; 0.9814 cropped after --image_size=32); give --image_size=32 or --augment=none"
    )


def step_config(config: Config, info, spec, model, size: int):
    """(the train step's static options, the model's input shape (H, W, C) or (D,)).

    `model` None: a program that builds its own nets (no BatchNorm or mask options here).
    """
    augment_fn = None if config.augment == "none" else augment.get(config.augment)
    if augment_fn is not None and not info.is_image:
        raise ConfigError(f"--augment={config.augment} needs images; {info.name} is a table")
    input_shape = (size, size, info.input_shape[2]) if info.is_image else tuple(info.input_shape)
    options = StepConfig(
        image_size=size,
        augment=augment_fn,
        aux_weight=config.aux_weight,
        on_nan=config.on_nan,
        ema_decay=config.ema_decay,
        ema_eval=config.ema_eval == "on",
        # The registry resolves a zoo family's default; any other module is asked.
        has_batchnorm=False
        if model is None
        else model.batchnorm
        if "batchnorm" in spec.options
        else _has_batchnorm(model, input_shape),
        takes_mask=model is not None and supervised.takes_mask(model),
    )
    return options, input_shape
