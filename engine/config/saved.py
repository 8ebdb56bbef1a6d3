"""Settings saved in a workdir: reading a `config.json`, and what eval and predict may change."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from etils import epath

from engine.config.fields import Config
from engine.config.schema import ConfigError, declared

CONFIG_FILE = "config.json"


def load_json(path: str) -> dict[str, Any]:
    """The settings saved in a config JSON file.

    Raises:
      ConfigError: the file is missing, unreadable or not a JSON object.
    """
    try:
        text = epath.Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        raise ConfigError(f"cannot read config file {path}: {type(e).__name__}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"config file {path} is not valid JSON ({e.msg} at line {e.lineno})"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values


def evaluation_settings() -> tuple[str, ...]:
    """What `--mode=eval` and `--mode=predict` may set beside a trained workdir's config.

    Where data and outputs are, how evaluation is batched and run; nothing of the model.
    """
    return tuple(d.name for d in declared(Config) if d.meta.evaluation)


def for_workdir(saved: dict[str, Any], overrides: dict[str, Any], *, source: str) -> Config:
    """The saved config of a trained workdir with the settings eval and predict may change.

    Args:
      saved: the workdir's saved settings.
      overrides: settings given now (e.g. explicit flags); only `evaluation_settings()`.
      source: where `saved` came from, for messages.

    Raises:
      ConfigError: an override that would change the trained model, naming it.
    """
    allowed = evaluation_settings()
    refused = sorted(set(overrides) - set(allowed))
    if refused:
        raise ConfigError(
            f"--mode={overrides.get('mode', 'eval')} takes the training settings from {source}; "
            f"{', '.join('--' + k for k in refused)} cannot be changed (allowed: "
            f"{', '.join('--' + k for k in allowed if k != 'mode')})"
        )
    base = Config.from_dict(saved, source=source)
    return dataclasses.replace(base, **overrides)
