"""Programs by name: each kind of training is one registry entry (`ProgramSpec`).

An entry holds everything the engine needs to know of a program: its name and help, its factory
(the pure `Program` it runs, built from the configuration and the run's data), the settings it
owns (flags), its recipe, its checks, the doctor's rules for its numbers, and how the run is
built for it (its task, its training batches, the nets it builds itself). Nothing outside a
program's own files names it: the engine asks the registry.

`--program` picks an entry by name; left at the default, an entry whose `claims` accepts the
configuration is picked instead (one whose own settings are given, or one that forms the
triplets a triplet loss compares). A user's program registers the same way from a `--plugins`
module (`register(ProgramSpec(...))`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import architectures
from engine.config import Config, ConfigError, owners, register_settings, unregister_settings
from engine.config.recipes import with_program_recipe
from engine.data import Splits
from engine.programs.steps import StepConfig
from engine.programs.tasks import Task
from engine.runtime.program import Program

DEFAULT = "supervised"  # the program of a run that names none


@dataclasses.dataclass(frozen=True)
class Run:
    """What a program is built from: the run's data, task, model and loaders.

    Attributes:
      splits: the train / val / test splits (and the dataset's description).
      task: how outputs are scored (the program's or the loss's).
      model: the flax module trained (None for a program that builds its own nets).
      step_config: the steps' static options (image size, augmentation, BatchNorm).
      norm: the training split's normalisation constants.
      input_shape: one example as the model sees it (after resizing).
      train_loader, val_loader, test_loader: the loaders (`engine.data.Loader`).
      notes: lines to print at the start (split sizes, class counts, warnings).
      trained: `(WORKDIR[:best|latest]) -> predictor` of another trained run (a frozen model
        a program trains beside): its `config`, `state`, `epoch`, `which` and `setup.run`.
      takes_vectors: the model flattens its inputs (an architecture that needs no image), so
        rows of an example's flattened values are examples too (`engine.load(...).predict`).
    """

    splits: Splits
    task: Task
    model: object
    step_config: StepConfig
    norm: dict[str, np.ndarray]
    input_shape: tuple[int, ...]
    train_loader: object
    val_loader: object
    test_loader: object
    notes: tuple[str, ...]
    trained: Callable[[str], Any] | None = None
    takes_vectors: bool = False

    def sample_batch(self) -> dict[str, np.ndarray]:
        """A one-row host batch of the dataset's raw shapes (for shape-only tracing)."""
        info = self.splits.info
        if info.target_dim:
            targets = np.zeros((1, info.target_dim), np.float32)
        else:
            targets = np.zeros(1, np.int32)
        inputs = np.zeros((1, *info.input_shape), np.float32)
        return {"inputs": inputs, "targets": targets, "mask": np.ones(1, bool)}


# A program factory: `(config, run, axis_name) -> Program` (axis_name: the pmap axis, or None).
Factory = Callable[[Config, Run, "str | None"], Program]


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """One registered program.

    Attributes:
      name: its `--program` name.
      help: one line for `--help`.
      make: its factory `(config, run, axis_name) -> Program`.
      settings: the settings (flags) it owns, declared with `engine.config.setting`; giving
        one to a run of another program is refused.
      claims: `config -> bool`: it takes a run left at the default program when this holds.
      recipe: settings it fills in when the user did not set them (recorded in `auto`).
      check: `config -> None`, raising `ConfigError` for settings it cannot honour.
      zoo: it trains one model built from `--arch` (the zoo's or a user's) on the dataset's
        labels: the architecture's recipe, the last-epoch rule of `--select=auto`, and the
        doctor's probe of the training split apply.
      nets: for a program that builds its own nets (`zoo` False), their `ArchSpec` (image
        sizes); None: any input.
      archs: `--arch` values that belong to this program (refused for any other).
      task: `(config, info, class_weights, axis_name) -> Task` instead of the loss's task.
      train_batches: `(config, info, train_source, divisor) -> (class_batches, note)`, the
        training batches' composition (P classes x K examples, for triplets); None:
        shuffled batches of `--batch_size`.
      doctor_rules: the doctor's rules for its numbers; None: the doctor's own.
    """

    name: str
    help: str
    make: Factory
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    claims: Callable[[Config], bool] | None = None
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check: Callable[[Config], None] | None = None
    zoo: bool = True
    nets: architectures.ArchSpec | None = None
    archs: tuple[str, ...] = ()
    task: Callable[..., Task] | None = None
    train_batches: Callable[..., tuple] | None = None
    doctor_rules: Sequence[Callable] | None = None


_REGISTRY: dict[str, ProgramSpec] = {}


def register(spec: ProgramSpec) -> ProgramSpec:
    """Registers a program (and its settings); usable as `--program=NAME`.

    Raises:
      ValueError: a taken or malformed name, or a setting name that is taken.
    """
    if not spec.name.isidentifier() or spec.name in _REGISTRY:
        raise ValueError(f"program {spec.name!r} is taken or not an identifier")
    register_settings(spec.name, spec.help, spec.settings)
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes a program added with `register` (a test's or a notebook's)."""
    _REGISTRY.pop(name, None)
    unregister_settings(name)


def names() -> tuple[str, ...]:
    """The registered program names."""
    return tuple(_REGISTRY)


def get(name: str) -> ProgramSpec:
    """The program registered as `name`.

    Raises:
      ConfigError: no such program; the message lists the registered ones.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"--program={name!r} is not valid; choose one of: {', '.join(_REGISTRY)}"
            " (a program of your own: --plugins=MODULE registering it)"
        )
    return _REGISTRY[name]


def _set(config: Config, name: str, default: Any) -> bool:
    return getattr(config, name) != default


def resolve(config: Config, *, factory: Factory | None = None) -> tuple[ProgramSpec, Config]:
    """The program of `config`, and `config` with that program's name and recipe.

    Left at the default, a program that claims the configuration takes it. Settings owned by
    another program, and architectures that belong to another program, are refused; then the
    program's recipe fills in what the user did not set, and its own check runs.

    Args:
      config: the configuration.
      factory: a factory to build the program with instead of the registered one (the Python
        API's `program=`); the registered entry still says everything else.

    Raises:
      ConfigError: one line naming the setting and the program it belongs to.
    """
    spec = get(config.program)
    if config.program == DEFAULT:
        claimed = [s for s in _REGISTRY.values() if s.claims is not None and s.claims(config)]
        if len(claimed) > 1:
            raise ConfigError(
                f"settings of the {' and '.join(s.name for s in claimed)} programs are given "
                "together; a run trains one program: drop one's settings"
            )
        if claimed:
            spec = claimed[0]
            config = dataclasses.replace(config, program=spec.name)
    for other in _REGISTRY.values():
        if other is spec:
            continue
        for name, field in other.settings.items():
            if _set(config, name, field.default):
                raise ConfigError(
                    f"--{name} belongs to the {other.name} program ({owners()[other.name]}); "
                    f"this run trains --program={spec.name}: drop --{name}"
                )
        if config.arch in other.archs:
            raise ConfigError(f"--arch={config.arch} is trained by --program={other.name}")
    config = with_program_recipe(config, spec.recipe)
    if spec.check is not None:
        spec.check(config)
    if factory is not None:
        spec = dataclasses.replace(spec, make=factory)
    return spec, config
