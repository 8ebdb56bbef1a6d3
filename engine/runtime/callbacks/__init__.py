"""Callbacks: everything around the loop's steps, one family per module.

`base` (the `Callback` interface), `selection` (best tracking, early stopping, plateaus, a
pause), `checkpointing` (epoch-end checkpoints), `midepoch` (saves inside an epoch, SIGTERM),
`guards` (the NaN guard), `logs` (metrics.jsonl, the printed lines, curves, TensorBoard,
speed, the progress bar), `trackers` (MLflow and W&B runs, `--tracker`), `profiler`
(`--profile`), `sanity` (`--overfit_batches`); `registry` holds the ones a command line adds by
name (`--callbacks`). The doctor's callbacks are the doctor's (`engine.doctor`); a program's
own come with it (`Program.callbacks`).
"""

from engine.runtime.callbacks.base import Callback, monitored
from engine.runtime.callbacks.checkpointing import Checkpointer
from engine.runtime.callbacks.logs import CurvesPlot, EpochPrinter, MetricsLog, ProgressBar
from engine.runtime.callbacks.selection import BestTracker, EarlyStopping, PlateauFeed, StopAtEpoch

__all__ = [
    "BestTracker",
    "Callback",
    "Checkpointer",
    "CurvesPlot",
    "EarlyStopping",
    "EpochPrinter",
    "MetricsLog",
    "PlateauFeed",
    "ProgressBar",
    "StopAtEpoch",
    "monitored",
]
