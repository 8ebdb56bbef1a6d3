"""`engine.fit`: what `python run.py` does with a configuration, from a notebook or a script.

    import engine
    results = engine.fit(engine.Config(dataset="digits", epochs=5), callbacks=[MyCallback()])

One training run (`engine.workflows.train`), or, as the configuration asks, K-fold
cross-validation (`--cv_folds`, `engine.workflows.select`) or the learning-rate range test
(`--find_lr`, `engine.workflows.lr_find`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine import programs
from engine.config import Config
from engine.runtime.callbacks import Callback
from engine.workflows import lr_find, select
from engine.workflows.train import train


def fit(
    config: Config,
    *,
    model=None,
    loss: Callable | None = None,
    loss_kind: str | None = None,
    program: programs.Factory | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Trains and tests exactly like `python run.py` (same workdir layout, resume, results).

    Args:
      config: the run's configuration.
      model: a flax module to train instead of `config.arch`.
      loss: a loss function to use instead of `config.loss`; `loss_kind` (`losses.KINDS`)
        says which targets it takes.
      program: a program factory `(config, run, axis_name) -> Program` instead of the
        registered program's.
      callbacks: `engine.Callback`s called after the best tracker, before the checkpoint of
        each epoch.

    Returns:
      `engine.workflows.train.train`'s results (test metrics, best epoch, ...); for
      cross-validation `cv.json`'s content; for the range test its suggestion.
    """
    kwargs = dict(model=model, loss=loss, loss_kind=loss_kind, program=program)
    if config.find_lr and config.mode == "train":
        return lr_find.find_lr(config, **kwargs)
    if config.cv_folds and not config.fold and config.mode == "train":
        return select.cross_validate(config, callbacks=callbacks, **kwargs)
    return train(config, callbacks=callbacks, **kwargs)
