"""The training engine: config, data, programs, the loop and its callbacks, checkpoints, predict.

The public API, importable from a notebook:

    import engine
    from engine.config import Config

    results = engine.fit(Config(epochs=5), model=None, loss=None, callbacks=())
    predictor = engine.load(results["workdir"])
    predictor.predict(images)

`engine.fit` trains and tests exactly as `python run.py` does; `engine.load` restores a trained
workdir (`Predictor`); `engine.Callback` is the base of the loop's callbacks; `engine.Program`
the pure part of a kind of training. They are imported on first use, so importing
`engine.config` alone stays light.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "fit": ("engine.train", "fit"),
    "load": ("engine.predict", "load"),
    "Predictor": ("engine.predict", "Predictor"),
    "Callback": ("engine.callbacks", "Callback"),
    "Program": ("engine.programs", "Program"),
    "Config": ("engine.config", "Config"),
    "ConfigError": ("engine.config", "ConfigError"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    return getattr(importlib.import_module(module), attr)
