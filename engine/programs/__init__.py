"""Programs: the kinds of training the engine runs, one registry entry each.

A program is the pure part of a training job (`engine.runtime.program.Program`: init, steps,
summary) with everything the engine needs to know of it (`registry.ProgramSpec`): its factory,
the settings it owns, its recipe, checks and doctor rules. The built-in ones register
themselves here; a user's program registers the same way from a `--plugins` module:

    from engine.programs import registry

    registry.register(registry.ProgramSpec(name="mine", help="...", make=my_factory))

The pieces they share: the pure steps (`steps`), the task adapter (`tasks`), the state
(`state`) and the optax chain (`optim`).
"""

import importlib
import pkgutil

from engine.programs.registry import (
    DEFAULT,
    Factory,
    ProgramSpec,
    Run,
    get,
    names,
    register,
    resolve,
    unregister,
)

# Each module or package here that defines a program registers it when imported: adding a
# program is adding its file (the shared pieces, steps, tasks, state, optim, register nothing).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DEFAULT",
    "Factory",
    "ProgramSpec",
    "Run",
    "get",
    "names",
    "register",
    "resolve",
    "unregister",
]
