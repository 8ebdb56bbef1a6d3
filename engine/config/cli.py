"""The command line of the settings: absl flags, `--help` and `docs/flags.md`, all from the fields.

Each flag is defined from its setting (`engine.config.fields`, or a program's own): its type
from the default, its help and choices from the metadata. A program's settings are listed with
their program's name. `config_from_flags` turns the parsed flags into a `Config`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from engine import paths
from engine.config.fields import GROUPS, Config
from engine.config.saved import CONFIG_FILE, for_workdir, load_json
from engine.config.schema import ConfigError, Declared, declared, owners

CONFIG_FLAG = "config"  # a saved config.json to run from (not a setting)


def help_text(d: Declared, *, choices: bool = True) -> str:
    """A setting's help line: its program, its text and (with `choices`) its choices."""
    text = d.meta.help() if callable(d.meta.help) else d.meta.help
    valid = d.meta.valid_choices()
    if choices and valid is not None:
        text = f"{text}: {'|'.join(map(str, valid))}"
    return f"--program={d.meta.owner}: {text}" if d.meta.owner else text


def define(values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines a flag for every setting not defined yet (a plugin's settings come later)."""
    if CONFIG_FLAG not in values:
        flags.DEFINE_string(
            CONFIG_FLAG,
            "",
            "a saved config.json to run from; flags given beside it override its values",
            flag_values=values,
        )
    for d in declared(Config):
        if d.name in values:
            continue
        helptext, default = help_text(d), d.default
        if isinstance(default, bool):
            flags.DEFINE_bool(d.name, default, helptext, flag_values=values)
        elif isinstance(default, int):
            flags.DEFINE_integer(d.name, default, helptext, flag_values=values)
        elif isinstance(default, float):
            flags.DEFINE_float(d.name, default, helptext, flag_values=values)
        elif isinstance(default, tuple):
            flags.DEFINE_list(d.name, [str(v) for v in default], helptext, flag_values=values)
        else:
            flags.DEFINE_string(d.name, default, helptext, flag_values=values)


def plugins_in(argv: list[str]) -> tuple[str, ...]:
    """The `--plugins` modules named on a command line, read before the flags are defined.

    A plugin may register settings, which become flags.
    """
    found: tuple[str, ...] = ()
    for i, arg in enumerate(argv):
        if arg.startswith("--plugins="):
            found = tuple(filter(None, arg.split("=", 1)[1].split(",")))
        elif arg == "--plugins" and i + 1 < len(argv):
            found = tuple(filter(None, argv[i + 1].split(",")))
    return found


def _integers(d: Declared) -> bool:
    """Whether a list setting holds integers (its annotation, or its default's items, say so)."""
    field = Config.__dataclass_fields__.get(d.name)
    if field is not None:
        return "tuple[int" in str(field.type)
    return isinstance(d.default, tuple) and bool(d.default) and isinstance(d.default[0], int)


def explicit_values(values: flags.FlagValues = flags.FLAGS) -> dict:
    """The Config values of the flags given on the command line (typed as the settings)."""
    found = {}
    for d in declared(Config):
        if d.name not in values or not values[d.name].present:
            continue
        value = values[d.name].value
        if _integers(d):
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise ConfigError(
                    f"--{d.name} takes comma-separated integers, got {','.join(value)}"
                ) from None
        elif isinstance(d.default, tuple):
            value = tuple(value)
        found[d.name] = value
    return found


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> Config:
    """The run's Config: defaults or a saved file, with the flags given on top.

    The saved file is `--config`'s, or for eval, predict and export the trained workdir's.
    """
    explicit = explicit_values(values)
    if values[CONFIG_FLAG].value:
        source = values[CONFIG_FLAG].value
        saved = load_json(source)
        base = Config.from_dict(saved, source=source)
        # The file's values count as given: its recipe and epoch count were resolved already.
        given = sorted((set(saved) | set(explicit)) - {"given", "auto"})
        return dataclasses.replace(base, **explicit, given=tuple(given))
    mode = explicit.get("mode", Config.mode)
    if mode in ("eval", "predict", "export"):
        workdir = explicit.get("workdir") or Config(**explicit).resolved_workdir()
        path = paths.join(workdir, CONFIG_FILE)
        if not paths.exists(path):
            raise ConfigError(
                f"--mode={mode} needs a trained workdir; {workdir} has no {CONFIG_FILE} "
                "(give --workdir=DIR of a trained run)"
            )
        return for_workdir(load_json(path), {**explicit, "workdir": workdir}, source=path)
    # `given` tells engine.config.recipes which flags were set, even to their default values.
    return Config(**explicit, given=tuple(sorted(explicit)))


def markdown() -> str:
    """`docs/flags.md`: every flag by group, then each program's own.

    Generated; a test checks that the file is current.
    """
    lines = [
        "# Flags",
        "",
        "Generated from the settings' declarations (`engine/config/fields/` and each "
        "program's own) by `python run.py --helpmd`; do not edit by hand.",
        "",
    ]
    settings = list(declared(Config))
    sections = [(title, [d for d in settings if not d.meta.owner and d.meta.group == g])
                for g, title in GROUPS.items()]  # fmt: skip
    sections += [
        (f"Program `{owner}`", [d for d in settings if d.meta.owner == owner]) for owner in owners()
    ]
    for title, items in sections:
        if not items:
            continue
        lines += [f"## {title}", "", "| flag | default | choices | meaning |", "|---|---|---|---|"]
        for d in items:
            default = ",".join(map(str, d.default)) if isinstance(d.default, tuple) else d.default
            valid = d.meta.valid_choices()
            shown = ", ".join(f"`{c}`" for c in valid) if valid is not None else ""
            text = help_text(d, choices=False).removeprefix(f"--program={d.meta.owner}: ")
            text = text.replace("|", "\\|")  # a table cell: WORKDIR[:best\|latest]
            lines.append(f"| `--{d.name}` | `{default}` | {shown} | {text} |")
        lines.append("")
    return "\n".join(lines)
