"""What a run shows and keeps of each epoch: metrics.jsonl, printed lines, curves, TensorBoard.

`MetricsLog` appends each epoch's record to `metrics.jsonl`; `EpochPrinter` prints it;
`CurvesPlot` draws `curves.png` at the end; `Speed` adds `speed` (examples/s and milliseconds
per step of the training pass) to the record; `TensorBoardLog` writes every number of the
record (train, val, train_eval metrics, learning rate, gradient norms, speed) as scalars with
tensorboardX, which needs no TensorFlow; `ProgressBar` is one tqdm line. Process 0 writes.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time

from tqdm import tqdm

from engine import paths
from engine.runtime import report
from engine.runtime.callbacks.base import Callback
from engine.runtime.callbacks.selection import BestTracker

TENSORBOARD_DIR = "tensorboard"


class Speed(Callback):
    """Adds `speed`: `examples_per_s` and `step_ms` of the epoch's training pass.

    The time is the training pass's wall time (the loop's `epoch_seconds`), data waits and the
    first epoch's compilation included.
    """

    def on_epoch_end(self, epoch, record, state):
        seconds = max(self.fit.epoch_seconds, 1e-9)
        record["speed"] = {
            "examples_per_s": record["train"].get("count", 0) / seconds,
            "step_ms": 1000.0 * seconds / max(self.fit.steps_per_epoch, 1),
        }


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers as TensorBoard tags: `train/loss`, `optim/lr`, `speed/step_ms`, ...

    >>> scalars({"epoch": 1, "train": {"loss": 0.5, "count": 8, "optim": {"lr": 0.1,
    ...     "layers": {"dense0": 2.0}}}, "val": {"loss": 0.7}})
    {'train/loss': 0.5, 'optim/lr': 0.1, 'optim/grad_norm/dense0': 2.0, 'val/loss': 0.7}
    """
    out = {}
    for split in ("train", "val", "train_eval"):
        for name, value in (record.get(split) or {}).items():
            if name == "optim":
                for key, v in value.items():
                    if key == "layers":
                        out.update({f"optim/grad_norm/{k}": n for k, n in v.items()})
                    elif isinstance(v, int | float) and not isinstance(v, bool):
                        out[f"optim/{key}"] = v
            elif name != "count" and isinstance(value, int | float):
                out[f"{split}/{name}"] = value
    for name, value in (record.get("speed") or {}).items():
        out[f"speed/{name}"] = value
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def _summary_writer():
    """The `SummaryWriter` class of tensorboardX, imported without importing torch.

    tensorboardX imports torch when it is installed (2 s here, more than the rest of a default
    run's logging) only to accept torch tensors, and this logger passes Python floats. A
    `None` in `sys.modules` makes that `import torch` fail as if torch were absent; the entry
    is removed afterwards, so a later `import torch` by the user works. A torch the process
    already imported is left alone.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoardLog(Callback):
    """Writes each epoch's scalars to `<workdir>/tensorboard` (step = epoch).

    tensorboardX writes local files (its own cloud writers need their own clients), so for a
    remote workdir the event file is written in a local temporary folder and uploaded whole
    after every epoch (it is small: a few hundred bytes an epoch); the folder is removed at
    the end.
    """

    def __init__(self, workdir: str, is_main: bool):
        self.logdir, self.is_main = paths.join(workdir, TENSORBOARD_DIR), is_main
        self.writer, self._local, self._start_epoch = None, None, 0

    def on_fit_start(self, fit):
        self._start_epoch = fit.start_epoch

    def _open(self) -> None:
        # Opened at the first epoch's end, not at the start: importing tensorboardX would
        # otherwise delay the first step.
        SummaryWriter = _summary_writer()

        local = self.logdir
        if paths.is_remote(self.logdir):
            local = self._local = tempfile.mkdtemp(prefix="tensorboard-")
        # purge_step drops events a resumed run will write again (its later epochs).
        self.writer = SummaryWriter(local, purge_step=self._start_epoch + 1)

    def on_epoch_end(self, epoch, record, state):
        if self.is_main and self.writer is None:
            self._open()
        if self.writer is not None:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, epoch)
            self.writer.flush()
            self._upload()

    def on_fit_end(self, fit, state):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self._upload()
            if self._local is not None:
                shutil.rmtree(self._local, ignore_errors=True)
                self._local = None

    def _upload(self) -> None:
        if self._local is None:
            return
        paths.make_dirs(self.logdir)
        for name in os.listdir(self._local):
            with open(os.path.join(self._local, name), "rb") as f:
                paths.write_bytes(paths.join(self.logdir, name), f.read())


class MetricsLog(Callback):
    """Appends each epoch's record to `metrics.jsonl` (process 0); a resume drops later ones.

    Every start rewrites the file to the records of the epochs the checkpoint holds, a fresh
    start too: a run killed after appending epoch 1 but before its first checkpoint committed
    restarts from scratch, and keeping that record gave two `"epoch": 1` lines.
    """

    def __init__(self, workdir: str, is_main: bool):
        self.workdir, self.is_main = workdir, is_main

    def on_fit_start(self, fit):
        if not self.is_main:
            return
        records = report.read_metrics(self.workdir)
        kept = [r for r in records if r.get("epoch", math.inf) <= fit.start_epoch]
        if kept != records:
            report.rewrite_metrics(self.workdir, kept)

    def on_epoch_end(self, epoch, record, state):
        if self.is_main:
            report.append_metrics(self.workdir, record)


class EpochPrinter(Callback):
    """Prints one line per epoch: train and validation side by side, speed, best mark."""

    def __init__(self, tracker: BestTracker):
        self.tracker = tracker

    def on_epoch_end(self, epoch, record, state):
        rate = record["train"].get("count", 0) / max(self.fit.epoch_seconds, 1e-9)
        mark = " *" if self.tracker.improved else ""
        lr = f"lr {record['lr']:.3g}  " if "lr" in record else ""
        extra = f"{lr}{rate:,.0f} ex/s{mark}"
        self.fit.say(
            report.epoch_line(epoch, self.fit.epochs, record["train"], record["val"], extra)
        )


class CurvesPlot(Callback):
    """Draws train vs validation curves of the loss and `metric` into `curves.png` at the end."""

    def __init__(self, workdir: str, metric: str, is_main: bool):
        self.workdir, self.metric, self.is_main = workdir, metric, is_main

    def on_fit_end(self, fit, state):
        if self.is_main:
            records = report.read_metrics(self.workdir)
            if records:
                report.plot_curves(self.workdir, records, self.metric)


class ProgressBar(Callback):
    """One tqdm line for the whole run: steps done of all planned, ETA, epoch, running loss.

    The running loss and speed are read back at most once a second (a per-step read-back
    would wait for every step to finish).
    """

    def __init__(self):
        self.bar = None

    def on_fit_start(self, fit):
        # A run resumed inside an epoch has that epoch's first start_step steps done.
        remaining = max(fit.epochs - fit.start_epoch, 0) * fit.steps_per_epoch - fit.start_step
        self.bar = tqdm(total=remaining, unit="step", leave=False, disable=None, file=sys.stderr)
        self.bar.set_description(f"epoch {fit.start_epoch + 1}/{fit.epochs}")
        self.epoch_started, self.last = time.perf_counter(), time.time()

    def on_step(self, step, state, totals):
        fit = self.fit
        within = (step - 1) % fit.steps_per_epoch
        epoch = (step - 1) // fit.steps_per_epoch + 1
        if within == 0:
            self.bar.set_description(f"epoch {epoch}/{fit.epochs}")
            self.epoch_started = time.perf_counter()
        self.bar.update(1)
        if time.time() - self.last > 1.0:
            self.last = time.time()
            summary = fit.program.summarize(fit.plan.read(totals))
            rate = summary.get("count", 0) / max(time.perf_counter() - self.epoch_started, 1e-9)
            self.bar.set_postfix(loss=f"{summary.get('loss', math.nan):.4f}", ex_s=f"{rate:.0f}")

    def on_fit_end(self, fit, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
