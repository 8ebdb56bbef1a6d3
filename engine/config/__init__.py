"""The run's configuration: its settings, their checks, and the values filled in automatically.

`Config` is one frozen dataclass (`fields`), each setting declared with its help, choices and
checks beside it (`schema`); `checks.validate` refuses a bad configuration before any work, in
one line; `recipes` fills in what depends on the architecture, the program and the data (the
recipe, the epoch count, the tested epoch). Programs register settings of their own here, with
the same checks (`at_least`, `POSITIVE`).
"""

from engine.config.fields import GROUPS, Config, parse_window
from engine.config.fields.rules import POSITIVE, at_least
from engine.config.saved import CONFIG_FILE, evaluation_settings, for_workdir, load_json
from engine.config.schema import (
    ConfigError,
    Declared,
    Setting,
    declared,
    owned,
    owners,
    register_settings,
    setting,
    unregister_settings,
)

__all__ = [
    "CONFIG_FILE",
    "GROUPS",
    "POSITIVE",
    "Config",
    "ConfigError",
    "Declared",
    "Setting",
    "at_least",
    "declared",
    "evaluation_settings",
    "for_workdir",
    "load_json",
    "owned",
    "owners",
    "parse_window",
    "register_settings",
    "setting",
    "unregister_settings",
]
