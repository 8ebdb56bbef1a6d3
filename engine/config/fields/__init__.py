"""The engine's settings: one frozen dataclass, each field with its help, choices and checks.

This is the one source of every flag: `run.py` defines its flags from these fields, `--help` and
`docs/flags.md` print their help, and `engine.config.checks` applies their checks. The fields
are declared by group, one module each (`run`, `data`, `model`, `training`, `output`), and
`Config` joins them in that order. Settings owned by a program are declared in the program's own
files (`engine.config.schema`).
"""

from __future__ import annotations

import dataclasses
import os

from engine.config.fields.data import Data
from engine.config.fields.model import Model
from engine.config.fields.output import Output, parse_window
from engine.config.fields.run import Run
from engine.config.fields.training import Training
from engine.config.schema import Settings, setting

__all__ = ["GROUPS", "Config", "parse_window"]

# Which groups the settings are listed under, in --help and docs/flags.md order.
GROUPS = {
    "run": "What to do and where",
    "data": "Data",
    "model": "Model",
    "loss": "Loss",
    "optimisation": "Optimisation",
    "selection": "Model selection",
    "devices": "Devices and processes",
    "output": "Checkpoints and output",
}


# A dataclass takes its bases' fields in reverse order of their listing: Run's come first, as
# --help and config.json list them.
@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Config(Output, Training, Model, Data, Run, Settings):
    """Everything a run needs. `run.py` builds it from flags; notebooks and tests directly."""

    # Bookkeeping of the defaults (not flags). `given`: the settings the user set (run.py
    # fills it from the command line; empty: a setting that differs from its default counts
    # as given). `auto`: "name=value" for each setting engine.config.recipes filled in (the
    # epoch count, the recipes), saved so that resume, eval and the start-up lines agree.
    given: tuple[str, ...] = setting((), "the settings the user set", internal=True)
    auto: tuple[str, ...] = setting((), "the settings filled in automatically", internal=True)
    # The registered settings of programs that differ from their defaults (schema.Settings).
    extra: tuple = ()

    def resolved_workdir(self) -> str:
        """The workdir, defaulting to runs/<dataset>-<arch>-<loss> (path-safe)."""
        if self.workdir:
            return self.workdir
        name = f"{self.dataset}-{self.arch}-{self.loss}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join("runs", safe)
