"""Logs users know: speed numbers in each epoch's record, and TensorBoard event files.

`Speed` adds `speed` (examples/s and milliseconds per step of the training pass) to the record,
so `metrics.jsonl` holds them; `TensorBoardLog` writes every number of the record (train, val,
train_eval metrics, learning rate, gradient norms, speed) as scalars with tensorboardX, which
needs no TensorFlow. Both are callbacks; process 0 writes.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

from engine import paths
from engine.callbacks import Callback

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
