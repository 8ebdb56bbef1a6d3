"""How a setting is declared: its default with its help, choices and checks beside it.

Every flag of `run.py` is one `setting(...)`: a dataclass field whose metadata (`Setting`) holds
the help text, the valid choices and the check of its value, and says what the setting means to
a saved workdir (does it shape the model? may `--mode=eval` change it?). `run.py`'s flags, its
`--help`, `docs/flags.md` and the checks before a run are all generated from these fields.

The engine's own settings are the fields of `engine.config.Config`. A program may own settings
of its own (a generator's noise size, a user program's option): it declares them the same way and
registers them with `register_settings`, and they behave as fields of `Config` everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

KEY = "setting"  # the dataclass field metadata key holding the `Setting`


class ConfigError(ValueError):
    """A user error in the configuration; its message is one line naming the fix."""


# A check: `(predicate, "must be > 0")`, read as "--NAME must be > 0, got VALUE" when the
# predicate is false; or a function of the value returning such a message (None: valid).
Check = tuple[Callable[[Any], bool], str] | Callable[[Any], "str | None"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a setting means, beside its default.

    Attributes:
      help: one or two lines for `--help` and `docs/flags.md`.
      group: the section of the reference it is listed under.
      choices: the valid values, or a function returning them (a registry's names); None:
        any value of the field's type.
      check: the rule its value must satisfy (see `Check`).
      model: it decides the shapes or the meaning of the parameters: a workdir trained with
        another value is refused, never mixed.
      resume: for a setting that is not a model setting, `(saved, now) -> bool`: True when a
        workdir saved with `saved` cannot resume with `now` (its optimizer state differs).
      evaluation: `--mode=eval` and `--mode=predict` may change it beside a trained workdir's
        saved settings (where data and outputs are, how evaluation runs).
      remote: it may name a remote path (`gs://...`).
      internal: bookkeeping, not a flag.
      owner: the program that owns it ("": the engine).
    """

    help: str
    group: str = "run"
    choices: tuple | Callable[[], Sequence] | None = None
    check: Check | None = None
    model: bool = False
    resume: Callable[[Any, Any], bool] | None = None
    evaluation: bool = False
    remote: bool = False
    internal: bool = False
    owner: str = ""

    def valid_choices(self) -> tuple | None:
        """The choices, called if they come from a registry."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def problem(self, name: str, value: Any) -> str | None:
        """The one-line message for an invalid `value` of `--name`, or None."""
        if isinstance(value, float) and not math.isfinite(value):
            # inf and nan pass every comparison-based range check, then break training.
            return f"--{name} must be a finite number, got {value}"
        choices = self.valid_choices()
        if choices is not None and value not in choices:
            return f"--{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
        if self.check is None:
            return None
        if isinstance(self.check, tuple):
            predicate, rule = self.check
            return None if predicate(value) else f"--{name} {rule}, got {value}"
        return self.check(value)


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field declaring a setting (see `Setting` for `meta`)."""
    return dataclasses.field(default=default, metadata={KEY: Setting(help, **meta)})


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting as listed: its name, default and meaning."""

    name: str
    default: Any
    meta: Setting


# Settings owned by programs, by name; and each owner's one-line help.
_OWNED: dict[str, Declared] = {}
_OWNERS: dict[str, str] = {}


def register_settings(owner: str, help: str, settings: Mapping[str, Any] | None = None) -> None:
    """Registers `owner` (a program) and the settings it owns (fields made with `setting`).

    Raises:
      ValueError: a setting name that is taken, or not declared with `setting`.
    """
    settings = dict(settings or {})
    for name, field in settings.items():
        meta = field.metadata.get(KEY) if isinstance(field, dataclasses.Field) else None
        if meta is None or not name.isidentifier():
            raise ValueError(f"{owner}: setting {name!r} must be declared with setting(...)")
        taken = _OWNED.get(name)
        if (taken and taken.meta.owner != owner) or name in _core_names():
            raise ValueError(f"{owner}: setting {name!r} is taken; choose another name")
    _OWNERS[owner] = help
    for name, field in settings.items():
        meta = dataclasses.replace(field.metadata[KEY], owner=owner)
        _OWNED[name] = Declared(name, field.default, meta)


def unregister_settings(owner: str) -> None:
    """Removes an owner and its settings (a test's or a notebook's program)."""
    _OWNERS.pop(owner, None)
    for name in [n for n, d in _OWNED.items() if d.meta.owner == owner]:
        del _OWNED[name]


def owners() -> dict[str, str]:
    """The registered owners (programs) and their help, in registration order."""
    return dict(_OWNERS)


def owned(name: str) -> Declared | None:
    """The owned setting called `name`, or None."""
    return _OWNED.get(name)


_CORE: list[type] = []  # the `Settings` class (engine.config.Config), once defined


def _core_names() -> set[str]:
    return {f.name for f in dataclasses.fields(_CORE[0])} if _CORE else set()


class Settings:
    """The behaviour of `engine.config.Config`: its own fields plus the registered owned ones.

    Owned settings are given as keywords like any field (`Config(my_option=64)`,
    `dataclasses.replace(config, my_option=...)`), read as attributes, saved and compared like
    fields. They are kept in the internal field `extra` (only those that differ from their
    default), and need not be registered when a `Config` is made: validation refuses names no
    program registered.
    """

    extra: tuple

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        _CORE[:] = [cls]

    def __init__(self, **values: Any):
        fields = {f.name: f for f in dataclasses.fields(type(self))}
        extra = dict(values.pop("extra", ()))
        for name, value in values.items():
            if name not in fields:
                extra[name] = value
        for name, field in fields.items():
            if name != "extra":
                object.__setattr__(self, name, values.get(name, field.default))
        kept = {k: v for k, v in extra.items() if k not in _OWNED or v != _OWNED[k].default}
        object.__setattr__(self, "extra", tuple(sorted(kept.items())))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "extra"):
            if key == name:
                return value
        declared = _OWNED.get(name)
        if declared is None:
            raise AttributeError(f"Config has no setting {name!r}")
        return declared.default

    def _key(self) -> tuple:
        return tuple((d.name, getattr(self, d.name)) for d in declared(type(self), internal=True))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        changed = [
            f"{d.name}={getattr(self, d.name)!r}"
            for d in declared(type(self), internal=True)
            if getattr(self, d.name) != d.default
        ]
        changed += [f"{k}={v!r}" for k, v in self.extra if k not in _OWNED]
        return f"Config({', '.join(changed)})"

    def unknown(self) -> list[str]:
        """Names given that no program registered (a typo, or a plugin not imported)."""
        return [name for name, _ in self.extra if name not in _OWNED]

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-able values (what `config.json` holds)."""
        return {d.name: _jsonable(getattr(self, d.name)) for d in declared(type(self), True)}

    def to_json(self) -> str:
        """Every setting as strict JSON (saved in the workdir)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def model_fields(self) -> dict[str, Any]:
        """The settings that shape the model, as saved in the workdir."""
        return {
            d.name: _jsonable(getattr(self, d.name)) for d in declared(type(self)) if d.meta.model
        }

    def resume_conflicts(self, saved: Mapping[str, Any]) -> list[str]:
        """`--flag=saved (now value)` for each setting the saved state cannot resume with.

        Args:
          saved: the workdir's saved settings (its `config.json`).
        """
        mine = self.to_dict()
        found = []
        for d in declared(type(self)):
            if d.name not in saved:
                continue
            if (d.meta.model and saved[d.name] != mine[d.name]) or (
                d.meta.resume is not None and d.meta.resume(saved[d.name], mine[d.name])
            ):
                found.append(d.name)
        return [f"--{k}={saved[k]!r} (now {mine[k]!r})" for k in found]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config"):
        """Settings from saved values (lists become tuples); unknown names are refused.

        Raises:
          ConfigError: one line naming the unknown setting or the badly typed value.
        """
        defaults = {d.name: d.default for d in declared(cls, internal=True)}
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ConfigError(
                f"{source} has unknown setting(s) {', '.join(unknown)}; valid: see --help "
                "(a program's or plugin's settings need its --plugins)"
            )
        typed = {}
        for name, value in values.items():
            default = defaults[name]
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple):
                    raise ConfigError(f"{source}: {name} must be a list, got {value!r}")
                value = tuple(value)
            elif (
                isinstance(default, bool) != isinstance(value, bool)
                or (isinstance(default, int | float) and not isinstance(value, int | float))
                or (isinstance(default, str) and not isinstance(value, str))
            ):
                raise ConfigError(
                    f"{source}: {name} must be a {type(default).__name__}, got {value!r}"
                )
            elif isinstance(default, float):
                value = float(value)
            typed[name] = value
        return cls(**typed)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def declared(cls: type, internal: bool = False) -> Iterator[Declared]:
    """Every setting of `cls` (a `Settings` dataclass): its fields, then the owned ones."""
    for field in dataclasses.fields(cls):
        meta = field.metadata.get(KEY)
        if meta is not None and (internal or not meta.internal):
            yield Declared(field.name, field.default, meta)
    yield from _OWNED.values()
