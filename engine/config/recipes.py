"""The values filled in for a run: the recipes, the epoch count and the tested epoch.

Settings the user did not set are filled in when a training run is built:

- a program's recipe (`ProgramSpec.recipe`, e.g. an adversarial program's Adam settings),
  before anything else, from the configuration alone;
- the architecture's recipe (`ArchSpec.recipe`, e.g. VGG's SGD with momentum, lr 1e-2, weight
  decay 5e-4 and BatchNorm; with its `table_recipe` on top when the inputs are feature vectors:
  the MLP's AdamW with strong decay on the small tables), one setting at a time: a setting the
  user set keeps the user's value;
- the epoch count (`--epochs=0`, the default): at least `AUTO_FLOOR` epochs and at least
  `--min_updates` optimizer updates, so a 105-row training split (iris: 2 updates an epoch)
  trains as long in updates as digits does in 30 epochs, while a large dataset stays at
  `AUTO_FLOOR` epochs; never more than `AUTO_CAP`;
- the tested epoch (`--select=auto`, the default): the last epoch when the validation split has
  fewer than `SELECT_MIN_ROWS` rows and the run is a classifier on its default monitor, else
  the best on `--monitor`. On iris's 10 validation rows
  one row is 10 points: the "best" epoch is often a lucky early one (seed 3 chose epoch 1,
  validation 0.9, test 0.69), where the last epoch of the long automatic run tests 0.96 on
  average over 5 seeds. `--early_stopping` keeps the best (it stops past it).

The last three depend on the data (whether the inputs are a table, the split sizes): they are
resolved once, after the data is loaded (`resolve`, with the facts in `DataFacts`).

"Set by the user" is `Config.given` when the caller filled it (run.py does, from the flags on
the command line), else every setting whose value differs from its default. What was filled
in is recorded in `Config.auto` ("name=value"), saved with the config: a resumed run, an
evaluation or a prediction takes the same values, and the start-up lines (`notes`) name them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import architectures
from engine.config.checks import check_settings
from engine.config.fields import Config
from engine.config.schema import ConfigError, declared

AUTO_FLOOR = 30  # epochs: the default run's length on digits (18 updates an epoch)
AUTO_CAP = 1000  # epochs: the most an automatic count asks for
# Validation rows below which `--select=auto` tests the last epoch: one row is then more than a
# point of accuracy, less than the differences between the late epochs it would choose among.
SELECT_MIN_ROWS = 100
# The fields a recipe may set: the optimisation and the regularisation.
RECIPE_FIELDS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "lr_scaling",
    "batchnorm",
    "dropout",
)


def given(config: Config) -> set[str]:
    """The fields the user set: `config.given`, or those that differ from the defaults."""
    if config.given:
        return set(config.given)
    return {d.name for d in declared(type(config)) if getattr(config, d.name) != d.default}


def recipe(arch: str, *, table: bool = False) -> dict:
    """The registered architecture's recipe (empty for unknown names and user modules).

    Args:
      arch: the architecture's name.
      table: whether the inputs are feature vectors; its `table_recipe` then joins the recipe.
    """
    if arch not in architectures.names():
        return {}
    spec = architectures.spec(arch)
    values = {**spec.recipe, **(spec.table_recipe if table else {})}
    unknown = sorted(set(values) - set(RECIPE_FIELDS))
    if unknown:
        raise ConfigError(
            f"--arch={arch}: its recipe sets {', '.join(unknown)}; a recipe may set only "
            f"{', '.join(RECIPE_FIELDS)}"
        )
    return values


def _recorded(config: Config) -> set[str]:
    """The settings `config.auto` records as filled in."""
    return {item.partition("=")[0] for item in config.auto}


def _fill(
    config: Config, values: Mapping[str, Any], extra_auto: tuple[str, ...] = (), check=True
) -> Config:
    """`config` with `values` for the settings the user did not set, recorded in `auto`.

    Settings filled in already (`auto`) are left: resolving twice changes nothing. `check`:
    the values obey each setting's rule (a caller that validates afterwards passes False).
    """
    mine, done = given(config), _recorded(config)
    changes = {k: v for k, v in values.items() if k not in mine and k not in done}
    extra_auto = tuple(a for a in extra_auto if a.partition("=")[0] not in done)
    if not changes and not extra_auto:
        return config
    auto = (*config.auto, *(f"{k}={v}" for k, v in changes.items()), *extra_auto)
    resolved = dataclasses.replace(config, **changes, auto=auto)
    if check:
        check_settings(resolved, names=changes)  # a registered recipe's values obey the rules
    return resolved


def with_program_recipe(config: Config, values: Mapping[str, Any]) -> Config:
    """`config` with a program's recipe for the settings the user did not set.

    In every mode: the program's checks need its recipe (a saved configuration has it already).
    Checked with the rest of the configuration afterwards (`engine.config.checks.validate`).
    """
    return _fill(config, values, check=False)


def with_recipe(config: Config, *, table: bool) -> Config:
    """`config` with its architecture's recipe for each recipe setting the user did not set.

    Args:
      config: the configuration.
      table: whether the inputs are feature vectors (the `table_recipe` joins the recipe).
    """
    if config.mode != "train":
        return config  # eval/predict take the saved values
    values = recipe(config.arch, table=table)
    void = _decay_void(values, config, given(config))
    if void:
        values.pop("weight_decay")
    return _fill(config, values, (_void_entry(void),) if void else ())


def _for_tables(arch: str, table: bool) -> bool:
    """Whether a table part joined `arch`'s recipe."""
    return table and recipe(arch, table=True) != recipe(arch)


# `Config.auto` entry naming the given flags that left a recipe's weight decay out.
VOID = "recipe_decay_void"
# Flags a decoupled (AdamW) decay is measured with: its weights settle near 1/wd and move by
# lr * wd a step, so the MLP's table decay of 10 (1% a step at lr 1e-3, for its 256-128 layers)
# is ruinous elsewhere: at lr 1e-2 a clean linear table fits to R^2 0.68 (0.999 with Adam),
# with hidden_sizes=64 diabetes falls to R^2 0.43. An L2 decay (added to the gradient) is the
# same penalty at any lr and width.
_DECOUPLED_TIES = ("lr", "hidden_sizes", "width")


def _decay_void(values: dict, config: Config, mine: set[str]) -> list[str]:
    """The given flags the recipe's weight decay does not hold for (empty: it holds).

    A recipe's decay is kept only for an optimizer of its form: AdamW's decay is scaled by the
    learning rate, the others' added to the gradient (where AdamW's 10 would swamp the loss).
    """
    if "weight_decay" not in values or "weight_decay" in mine:
        return []
    decoupled = _decoupled(values.get("optimizer", Config.optimizer))
    void = []
    if "optimizer" in mine and _decoupled(config.optimizer) != decoupled:
        void.append("optimizer")
    if decoupled:
        void += [name for name in _DECOUPLED_TIES if name in mine]
    return void


def _void_entry(void: list[str]) -> str:
    """The `Config.auto` entry recording which given flags left the recipe's decay out."""
    return f"{VOID}={'+'.join(void)}"


def _decoupled(optimizer: str) -> bool:
    """Whether `optimizer`'s weight decay is decoupled from the gradient (AdamW's form)."""
    return optimizer == "adamw"


def updates_per_epoch(train_rows: int, config: Config) -> float:
    """Optimizer updates an epoch of `train_rows` rows makes (the last batch is padded)."""
    steps = math.ceil(train_rows / config.batch_size)
    return steps / config.grad_accum_steps


def auto_epochs(updates: float, min_updates: int) -> int:
    """At least `AUTO_FLOOR` epochs and `min_updates` updates, at most `AUTO_CAP` epochs."""
    return min(max(AUTO_FLOOR, math.ceil(min_updates / max(updates, 1e-9))), AUTO_CAP)


def with_epochs(config: Config, rows: int) -> Config:
    """`config` with `--epochs=0` replaced by the automatic count for `rows` training rows."""
    if config.epochs or config.mode != "train":
        return config
    if config.overfit_batches or config.find_lr:  # a fixed set of batches, or no epochs
        return dataclasses.replace(config, epochs=AUTO_FLOOR, auto=(*config.auto, "epochs=30"))
    updates = updates_per_epoch(rows, config)
    epochs = auto_epochs(updates, config.min_updates)
    return dataclasses.replace(
        config, epochs=epochs, auto=(*config.auto, f"epochs={epochs}", f"updates={updates:g}")
    )


def with_select(config: Config, val_rows: int, task: str, *, by_accuracy: bool = True) -> Config:
    """`config` with `--select=auto` replaced by best or last for `val_rows` validation rows.

    Last only for a classifier monitored on its default (accuracy, one row = 1/`val_rows`):
    a regression's validation loss is continuous, and choosing its epoch by it is what keeps
    diabetes' MLP with Adam from its overfitted last epochs (R^2 0.45 at the best epoch, 0.36 at
    the last, mean of 5 seeds; with the table recipe's decay they are close, 0.5014 and 0.5079,
    so the rule that also protects an unregularised run stays); a `--monitor` the user chose
    is followed. `by_accuracy`: the program's default monitor is a per-row share (a program
    of its own numbers, such as a generator's, always tests the best epoch).
    """
    if config.select != "auto" or config.mode != "train":
        return config
    classifier = task != "regression" and by_accuracy and not config.monitor
    last = classifier and val_rows < SELECT_MIN_ROWS and not config.early_stopping
    select = "last" if last else "best"
    return dataclasses.replace(
        config, select=select, auto=(*config.auto, f"select={select}", f"val_rows={val_rows}")
    )


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the automatic values need to know of the loaded data.

    Attributes:
      table: the inputs are feature vectors (the architecture's `table_recipe` applies).
      train_rows: rows of the training split as trained on (after oversampling).
      val_rows: rows of the validation split.
      task: the dataset's task ("classification" or "regression").
    """

    table: bool
    train_rows: int
    val_rows: int
    task: str


def for_overfit_check(config: Config) -> Config:
    """`config` for `--overfit_batches`: no dropout, weight decay or augmentation."""
    return dataclasses.replace(config, dropout=0.0, weight_decay=0.0, augment="none")


def resolve(config: Config, facts: DataFacts, *, zoo: bool = True) -> Config:
    """`config` with the values that depend on the data filled in (once; again is a no-op).

    Args:
      config: a validated configuration (its program's recipe applied).
      facts: the loaded data's facts.
      zoo: the program trains one model of the zoo (or a user's) on the labels: the
        architecture's recipe and the last-epoch rule of `--select=auto` apply to it.
    """
    if config.mode != "train":
        return config
    if zoo:
        config = with_recipe(config, table=facts.table)
    if config.overfit_batches:
        config = for_overfit_check(config)
    if config.overfit_batches or config.find_lr:  # a fixed set of batches: no selection
        config = dataclasses.replace(
            config, select="best" if config.select == "auto" else config.select
        )
        return with_epochs(config, 0)
    config = with_epochs(config, facts.train_rows)
    return with_select(config, facts.val_rows, facts.task, by_accuracy=zoo)


def notes(
    config: Config, updates: float | None = None, *, table: bool = False, zoo: bool = True
) -> list[str]:
    """The start-up lines that say which values were filled in and why.

    Args:
      config: the resolved configuration.
      updates: optimizer updates an epoch, for the line of an epoch count given by the user.
      table: whether the inputs are feature vectors (the recipe's table part).
      zoo: the architecture's recipe applies (a program of its own nets says its own).
    """
    auto = dict(item.split("=", 1) for item in config.auto)
    lines = []
    if "epochs" not in auto and updates is not None:
        # Set: by --epochs, or by a --config file's.
        lines.append(
            f"epochs: {config.epochs} (set) at {updates:.3g} updates an epoch: "
            f"{int(config.epochs * updates):,} updates"
        )
    if "epochs" in auto and "updates" in auto:
        epochs, updates = int(auto["epochs"]), float(auto["updates"])
        capped = f", capped at {AUTO_CAP}" if epochs == AUTO_CAP else ""
        lines.append(
            f"epochs: {epochs} (auto: at least {AUTO_FLOOR} epochs and {config.min_updates:,} "
            f"updates at {updates:.3g} updates an epoch{capped}: {round(epochs * updates):,} "
            "updates; --epochs to choose)"
        )
    elif "epochs" in auto:
        lines.append(f"epochs: {auto['epochs']} (auto; --epochs to choose)")
    if auto.get("select") == "last":
        lines.append(
            f"test: the last epoch (auto: {auto['val_rows']} validation rows are too few to "
            f"choose an epoch by; --select=best to test the best on the monitored metric)"
        )
    if not zoo:
        return lines
    chosen = {k: v for k, v in auto.items() if k in RECIPE_FIELDS}
    if VOID in auto:
        decay = recipe(config.arch, table=table)["weight_decay"]
        flags = ", ".join(f"--{name}" for name in auto[VOID].split("+"))
        lines.append(
            f"weight decay: the {config.arch} recipe's {decay:g} is left out, {flags} given "
            "(it holds only for its optimizer, lr and widths); --weight_decay to set one"
        )
    if chosen:
        shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
        kind = " for tables" if _for_tables(config.arch, table) else ""
        lines.append(
            f"from the {config.arch} recipe{kind}: {shown} (flags given on the command win)"
        )
    return lines


def for_trial(base: Config, **values) -> Config:
    """`base` (validated, not resolved) with a search trial's `values`, which count as given.

    The trial is resolved by its own run like any other: its automatic epoch count for its
    own batch size, the recipe for the settings neither the base nor the trial set.
    """
    mine = sorted(given(base) | set(values))
    return dataclasses.replace(base, **values, given=tuple(mine))
