"""Callbacks by name, so a command line can add a user's own: `--callbacks=NAME,...`.

A `--plugins` module registers a factory `(config) -> Callback` under a name; the Python API
takes callback objects directly (`engine.fit(config, callbacks=[...])`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.runtime.callbacks.base import Callback

_REGISTRY: dict[str, Callable[[Any], Callback]] = {}


def register(name: str, factory: Callable[[Any], Callback]) -> Callable[[Any], Callback]:
    """Registers `factory(config) -> Callback` as `--callbacks=name`; returns it unchanged.

    Raises:
      ValueError: a taken or malformed name.
    """
    if not name.isidentifier() or name in _REGISTRY:
        raise ValueError(f"callback name {name!r} is taken or not an identifier")
    _REGISTRY[name] = factory
    return factory


def unregister(name: str) -> None:
    """Removes a callback added with `register` (a test's or a notebook's)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered callback names."""
    return tuple(_REGISTRY)


def make(names_: tuple[str, ...], config: Any) -> list[Callback]:
    """The callbacks registered under `names_`, made for `config` (names checked before)."""
    return [_REGISTRY[name](config) for name in names_]
