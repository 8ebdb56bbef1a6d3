"""The settings of what is trained: the architecture and its shape, and the loss."""

from __future__ import annotations

import dataclasses

import architectures
import losses
from architectures import conv_lowering
from architectures.layers import ACTIVATIONS, INITS
from engine.config.fields.rules import POSITIVE, at_least
from engine.config.schema import setting


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Model:
    """The architecture (the "model" group) and the loss (the "loss" group)."""

    arch: str = setting(
        "mlp",
        "architecture (a registered one; a program may train nets of its own)",
        group="model",
        choices=architectures.names,
        model=True,
    )
    depth: int = setting(
        0,
        "depth for resnet (18/34/50/101/152) and vgg (11/13/16/19); 0: family default",
        group="model",
        model=True,
    )
    width: float = setting(
        1.0,
        "channel width multiplier for convolutional nets",
        group="model",
        check=POSITIVE,
        model=True,
    )
    hidden_sizes: tuple[int, ...] = setting(
        (256, 128),
        "hidden layer sizes of the mlp",
        group="model",
        check=(lambda v: bool(v) and all(h > 0 for h in v), "must be positive integers"),
        model=True,
    )
    activation: str = setting("relu", "activation", group="model", choices=ACTIVATIONS, model=True)
    leaky_slope: float = setting(0.01, "negative slope of leaky_relu", group="model")
    init: str = setting("lecun", "kernel initialiser", group="model", choices=INITS)
    batchnorm: str = setting(
        "auto",
        "BatchNorm (auto: the family's default)",
        group="model",
        choices=("auto", "on", "off"),
        model=True,
    )
    dropout: float = setting(
        -1.0,
        "dropout rate, for every architecture (-1: the family's default, e.g. 0.5 in "
        "AlexNet/VGG, 0 in the MLP)",
        group="model",
        check=(
            lambda v: v < 1 and (v >= 0 or v == -1.0),
            "must be in [0, 1) (or -1: the family default)",
        ),
    )
    aux_heads: bool = setting(
        True, "GoogLeNet's auxiliary classifiers (training only)", group="model", model=True
    )
    aux_weight: float = setting(0.3, "weight of each auxiliary classifier's loss", group="model")
    dtype: str = setting(
        "float32",
        "compute dtype (parameters stay float32)",
        group="model",
        choices=("float32", "bfloat16"),
    )
    conv: str = setting(
        "auto",
        "convolution lowering: auto (matmuls on CPU, XLA's convolution on GPU/TPU) or xla "
        "(XLA's everywhere); parameters and results are the same",
        group="model",
        choices=conv_lowering.LOWERINGS,
        evaluation=True,
    )

    # Loss.
    loss: str = setting(
        "cross_entropy", "loss (a registered one)", group="loss", choices=losses.names, model=True
    )
    label_smoothing: float = setting(
        0.0,
        "label smoothing of the losses that take class distributions (cross_entropy, "
        "kl_divergence)",
        group="loss",
        check=(lambda v: 0 <= v < 1, "must be in [0, 1)"),
    )
    delta: float = setting(1.0, "huber's delta and smooth_l1's beta", group="loss", check=POSITIVE)
    focal_gamma: float = setting(2.0, "focal loss gamma", group="loss", check=at_least(0))
    focal_alpha: float = setting(
        -1.0,
        "focal loss alpha (negative: none)",
        group="loss",
        check=(lambda v: v <= 1, "must be in [0, 1] (or negative for none)"),
    )
