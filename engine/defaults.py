"""Defaults that depend on the run: the architecture's recipe and the epoch count.

Two settings are filled in for a training run when the user did not set them:

- the architecture's recipe (`ArchSpec.recipe`, e.g. VGG's SGD with momentum, lr 1e-2, weight
  decay 5e-4 and BatchNorm; with its `table_recipe` on top when the inputs are feature vectors:
  the MLP's AdamW with strong decay on the small tables), one field at a time: a field the user
  set keeps the user's value;
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

"Set by the user" is `Config.given` when the caller filled it (run.py does, from the flags on
the command line), else every field whose value differs from the `Config` default. What was
filled in is recorded in `Config.auto` ("name=value"), saved with the config: a resumed run, an
evaluation or a prediction takes the same values, and the start-up lines (`notes`) name them.
"""

from __future__ import annotations

import dataclasses
import math

from engine.config import Config, ConfigError

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
    defaults = Config()
    return {
        f.name
        for f in dataclasses.fields(Config)
        if getattr(config, f.name) != getattr(defaults, f.name)
    }


def recipe(arch: str, *, table: bool = False) -> dict:
    """The registered architecture's recipe (empty for unknown names and user modules).

    Args:
      arch: the architecture's name.
      table: whether the inputs are feature vectors; its `table_recipe` then joins the recipe.
    """
    import architectures

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


def with_recipe(config: Config) -> Config:
    """`config` with its architecture's recipe for each recipe field the user did not set."""
    if config.mode != "train" or config.program != "supervised" or config.auto:
        return config  # eval/predict take the saved values; `auto`: resolved already
    mine = given(config)
    values, _ = _run_recipe(config)
    void = _decay_void(values, config, mine)
    if void:
        values.pop("weight_decay")
    changes = {k: v for k, v in values.items() if k not in mine}
    if not changes and not void:
        return config
    auto = tuple(f"{k}={v}" for k, v in changes.items())
    if void:
        auto = (*auto, _void_entry(void))
    return dataclasses.replace(config, **changes, auto=auto)


def _run_recipe(config: Config) -> tuple[dict, bool]:
    """The recipe of `config`'s architecture for its data, and whether a table part joined it."""
    from engine.data.registry import is_table

    table = is_table(config.dataset)
    values = recipe(config.arch, table=table)
    return values, table and values != recipe(config.arch)


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


# Row counts of embedded datasets' splits, by the fields that decide them. Every validated
# training run with `--select=auto` counts its rows (about 0.15 s for digits); an embedded
# dataset never changes, so a process (a notebook, a search, the tests) counts each split once.
# Folder, CSV and TFDS datasets can change on disk between runs and are counted every time.
_EMBEDDED_ROWS: dict[tuple, tuple[int, int, str]] = {}
_SPLIT_FIELDS = (
    "dataset", "data_dir", "test_fraction", "val_fraction", "seed", "split", "cv_folds", "fold",
    "classes", "balance",
)  # fmt: skip


def split_rows(config: Config) -> tuple[int, int, str]:
    """The training rows, validation rows and task of the run's splits (as `engine.build`)."""
    from engine import build, data

    key = tuple(getattr(config, f) for f in _SPLIT_FIELDS)
    if key in _EMBEDDED_ROWS:
        return _EMBEDDED_ROWS[key]
    splits = build.load_splits(config, materialize=False)
    rows = len(splits.train)
    if config.balance == "oversample" and splits.info.task != "regression":
        rows = len(data.oversample(splits.train, seed=config.seed))
    counted = rows, len(splits.val), splits.info.task
    if config.dataset in data.dataset_names():
        _EMBEDDED_ROWS[key] = counted
    return counted


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


def with_select(config: Config, val_rows: int, task: str) -> Config:
    """`config` with `--select=auto` replaced by best or last for `val_rows` validation rows.

    Last only for a classifier monitored on its default (accuracy, one row = 1/`val_rows`):
    a regression's validation loss is continuous, and choosing its epoch by it is what keeps
    diabetes' MLP with Adam from its overfitted last epochs (R^2 0.45 at the best epoch, 0.36 at
    the last, mean of 5 seeds; with the table recipe's decay they are close, 0.5014 and 0.5079,
    so the rule that also protects an unregularised run stays); a `--monitor` the user chose
    is followed.
    """
    if config.select != "auto" or config.mode != "train":
        return config
    classifier = task != "regression" and config.program == "supervised" and not config.monitor
    last = classifier and val_rows < SELECT_MIN_ROWS and not config.early_stopping
    select = "last" if last else "best"
    return dataclasses.replace(
        config, select=select, auto=(*config.auto, f"select={select}", f"val_rows={val_rows}")
    )


def with_data(config: Config) -> Config:
    """`config` with the defaults that depend on the data resolved (epochs, tested epoch).

    The dataset is loaded and split (without materialising it) only when one is automatic.
    """
    if config.mode != "train" or not (config.epochs == 0 or config.select == "auto"):
        return config
    if config.overfit_batches or config.find_lr:  # a fixed set of batches: no selection
        config = dataclasses.replace(
            config, select="best" if config.select == "auto" else config.select
        )
        return with_epochs(config, 0)
    rows, val_rows, task = split_rows(config)
    return with_select(with_epochs(config, rows), val_rows, task)


def notes(config: Config, updates: float | None = None) -> list[str]:
    """The start-up lines that say which values were filled in and why.

    Args:
      config: the resolved configuration.
      updates: optimizer updates an epoch, for the line of an epoch count given by the user.
    """
    auto = dict(item.split("=", 1) for item in config.auto)
    lines = []
    if "epochs" not in auto and updates is not None and config.program == "supervised":
        lines.append(
            f"epochs: {config.epochs} (--epochs) at {updates:.3g} updates an epoch: "
            f"{round(config.epochs * updates):,} updates"
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
    chosen = {k: v for k, v in auto.items() if k in RECIPE_FIELDS}
    values, for_tables = _run_recipe(config)
    if VOID in auto:
        decay = values["weight_decay"]
        flags = ", ".join(f"--{name}" for name in auto[VOID].split("+"))
        lines.append(
            f"weight decay: the {config.arch} recipe's {decay:g} is left out, {flags} given "
            "(it holds only for its optimizer, lr and widths); --weight_decay to set one"
        )
    if chosen:
        shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
        kind = " for tables" if for_tables else ""
        lines.append(
            f"from the {config.arch} recipe{kind}: {shown} (flags given on the command win)"
        )
    return lines


def for_trial(base: Config, **values) -> Config:
    """`base` (resolved) with a search trial's `values`, its automatic epochs to be resolved anew.

    A trial that changes e.g. `batch_size` makes another number of updates an epoch, so an
    automatic epoch count is counted again for it (unless the trial sets `epochs`); the trial's
    values count as given, so no recipe replaces them.
    """
    changes = dict(values)
    auto = base.auto
    if config_auto_epochs(base) and "epochs" not in values:
        changes["epochs"] = 0
        auto = tuple(a for a in auto if not a.startswith(("epochs=", "updates=")))
    if any(a.startswith("weight_decay=") for a in auto):  # the recipe's: does it still hold?
        void = _decay_void(_run_recipe(base)[0], dataclasses.replace(base, **values), set(values))
        if void:
            changes["weight_decay"] = Config.weight_decay
            auto = (*(a for a in auto if not a.startswith("weight_decay=")), _void_entry(void))
    if auto != base.auto:
        changes["auto"] = auto
    if base.given:
        changes["given"] = tuple(sorted(set(base.given) | set(values)))
    return dataclasses.replace(base, **changes)


def config_auto_epochs(config: Config) -> bool:
    """Whether `config`'s epoch count was chosen automatically."""
    return any(a.startswith("epochs=") for a in config.auto)
