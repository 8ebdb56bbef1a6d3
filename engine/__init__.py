"""The training engine: config, data, programs, the loop and its callbacks, checkpoints, predict.

The public API, importable from a notebook:

    import engine

    results = engine.fit(engine.Config(epochs=5), model=None, loss=None, callbacks=())
    predictor = engine.load(results["workdir"])
    predictor.predict(images)

`engine.fit` trains and tests exactly as `python run.py` does; `engine.load` restores a trained
workdir (`Predictor`); `engine.Callback` is the base of the loop's callbacks; `engine.Program`
the pure part of a kind of training. They are imported on first use, so importing `engine`
alone stays light (`run.py` restarts the process before JAX loads).

The floor plan, in the order a run flows through it (each folder imports only those below it):

    config/     the settings (help, choices, checks beside each), the automatic values
    data/       dataset sources (a registry), splits, statistics, loaders, augmentation
    runtime/    the loop, the program interface, callbacks, checkpoints, devices
    doctor/     the rules that name what went wrong, and their measurements
    programs/   the kinds of training (a registry: one module or package each)
    workflows/  fit, load/predict, cross-validation, search, the range test, the doctor's wiring
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "fit": ("engine.workflows.fit", "fit"),
    "load": ("engine.workflows.predict", "load"),
    "Predictor": ("engine.workflows.predict", "Predictor"),
    "Callback": ("engine.runtime.callbacks", "Callback"),
    "Program": ("engine.runtime.program", "Program"),
    "Config": ("engine.config", "Config"),
    "ConfigError": ("engine.config", "ConfigError"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    return getattr(importlib.import_module(module), attr)
