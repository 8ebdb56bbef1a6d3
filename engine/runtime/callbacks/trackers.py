"""Experiment trackers as callbacks: MLflow and Weights & Biases (`--tracker`; TensorBoard: logs).

Each tracker logs the configuration (flat, as `config.json` holds it) when its run is created,
every epoch's numbers (`logs.scalars`: `train/loss`, `val/accuracy`, ...) with the epoch as the
step, and at the end the workdir's artifacts (curves, confusion matrix, `results.json`, an
exported model). Only process 0 tracks.

A resumed run continues the same tracked run: the run's id and the last epoch it kept are in
`WORKDIR/trackers.json` (MLflow: written after every epoch; W&B: at the run's end, see
`WandbTracker.durable`). A file rather than the checkpoint's callback state because a run
killed before its first checkpoint restarts from scratch in the same workdir, and with the id in
a checkpoint it would open a second tracked run; and because the last kept epoch lets a resume
skip the epochs logged before the kill (resumes are bit-identical, so their values are the
same) instead of logging them twice, and log from `metrics.jsonl` those a kill lost.

A tracker that fails (a network, a full disk, a library's error) says so in one line and is off
for the rest of the run: it never stops training or a checkpoint. mlflow and wandb are optional
extras, imported only when asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from engine import paths
from engine.config import CONFIG_FILE, ConfigError
from engine.runtime import report
from engine.runtime.callbacks.base import Callback
from engine.runtime.callbacks.logs import scalars

STATE_FILE = "trackers.json"  # in the workdir: each tracker's run id and last logged epoch
MLFLOW_DB = "mlflow.db"  # the default MLflow store: sqlite in the workdir
MLFLOW_ARTIFACTS = "mlartifacts"  # ... and its artifacts beside it
PROJECT = "jaxtrain"  # the MLflow experiment and W&B project (W&B: $WANDB_PROJECT overrides)


def check_installed(names: tuple[str, ...]) -> None:
    """Raises a one-line `ConfigError` naming the pip extra of a tracker that is not installed."""
    for name in names:
        try:
            if name == "mlflow":
                import mlflow  # noqa: F401
            elif name == "wandb":
                import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--tracker={name} needs the {name} extra: pip install 'jaxtrain[{name}]'"
            ) from None


def flat_params(config: dict) -> dict[str, str]:
    """`config.json`'s settings as tracker parameters: strings as they are, the rest as JSON.

    >>> flat_params({"lr": 0.1, "arch": "mlp", "hidden_sizes": [64], "progress": False})
    {'lr': '0.1', 'arch': 'mlp', 'hidden_sizes': '[64]', 'progress': 'false'}
    """
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def read_state(workdir: str) -> dict:
    """`trackers.json`: `{tracker: {"run_id": ..., "epoch": last logged}}` ({} when absent)."""
    path = paths.join(workdir, STATE_FILE)
    return json.loads(paths.read_text(path)) if paths.exists(path) else {}


class Tracker(Callback):
    """What the trackers share: the saved run id, skipping logged epochs, failing once.

    A subclass defines `_open(saved_id, params) -> run id`, `_log(epoch, numbers)`,
    `_save(path)` (one artifact) and `_close(failed)`.
    """

    kind = ""
    durable = True  # an epoch logged is kept at once (False: only once the run ends)

    def __init__(self, workdir: str, artifacts: tuple[str, ...]):
        self.workdir, self.artifacts = workdir, artifacts
        self.active, self.run_id, self.logged = True, None, 0

    def _guarded(self, what: str, fn, *args) -> None:
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as e:  # any failure of a tracker: report it, train on
            self.active = False
            print(
                f"--tracker={self.kind}: {what} failed ({type(e).__name__}: {e}); this tracker "
                "is off for the rest of the run, training goes on",
                flush=True,
            )

    def on_fit_start(self, fit):
        self._guarded("starting its run", self._start, fit.start_epoch)

    def _start(self, start_epoch: int) -> None:
        saved = read_state(self.workdir).get(self.kind, {})
        params = flat_params(json.loads(paths.read_text(paths.join(self.workdir, CONFIG_FILE))))
        self.run_id = self._open(saved.get("run_id"), params)
        self.logged = saved.get("epoch", 0) if saved.get("run_id") == self.run_id else 0
        self._remember()
        # Epochs the checkpoint holds that this run has not kept (a kill lost them): from
        # metrics.jsonl, which holds every epoch up to the checkpoint's.
        for record in report.read_metrics(self.workdir):
            if self.logged < record.get("epoch", 0) <= start_epoch:
                self._log_epoch(record["epoch"], scalars(record))

    def on_epoch_end(self, epoch, record, state):
        if epoch > self.logged:  # an epoch logged before a kill comes again on resume: skip it
            self._guarded(f"logging epoch {epoch}", self._log_epoch, epoch, scalars(record))

    def _log_epoch(self, epoch: int, numbers: dict[str, float]) -> None:
        self._log(epoch, numbers)
        self.logged = epoch
        if self.durable:
            self._remember()

    def _remember(self) -> None:
        state = read_state(self.workdir)
        state[self.kind] = {"run_id": self.run_id, "epoch": self.logged}
        report.write_json(self.workdir, STATE_FILE, state)  # strict JSON, written atomically

    def finish(self, failed: bool) -> None:
        """Logs the workdir's artifacts and ends the run (called after `results.json`)."""
        self._guarded("ending its run", self._finish, failed)

    def _finish(self, failed: bool) -> None:
        for name in self.artifacts:
            path = paths.join(self.workdir, name)
            if not paths.is_remote(path) and os.path.isfile(path):  # local files only
                self._save(path)
        self._close(failed)
        self.active = False
        self._remember()  # what it logged is kept now, even where an epoch's log is not

    def _open(self, saved_id: str | None, params: dict[str, str]) -> str:
        raise NotImplementedError

    def _log(self, epoch: int, numbers: dict[str, float]) -> None:
        raise NotImplementedError

    def _save(self, path: str) -> None:
        raise NotImplementedError

    def _close(self, failed: bool) -> None:
        raise NotImplementedError


def mlflow_uri(workdir: str, uri: str = "") -> str:
    """`--mlflow_uri`, or the default: a sqlite store in the workdir.

    MLflow 3 refuses its file store (`./mlruns`, in maintenance mode) unless an environment
    variable opts in; sqlite needs nothing and keeps the store inside the run's folder.
    """
    if uri:
        return uri
    if paths.is_remote(workdir):
        raise ConfigError(f"a remote workdir ({workdir}) holds no sqlite store: give --mlflow_uri")
    return f"sqlite:///{os.path.abspath(os.path.join(workdir, MLFLOW_DB))}"


class MLflowTracker(Tracker):
    """One MLflow run per workdir, in experiment `jaxtrain` of `--mlflow_uri`'s store."""

    kind = "mlflow"

    def __init__(self, workdir: str, artifacts: tuple[str, ...], uri: str = ""):
        super().__init__(workdir, artifacts)
        self.uri, self.client = uri, None

    def _open(self, saved_id, params):
        import mlflow
        from mlflow.entities import Param

        uri = mlflow_uri(self.workdir, self.uri)
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        if saved_id is not None:
            self.client.update_run(saved_id, status="RUNNING")
            return saved_id
        experiment = self.client.get_experiment_by_name(PROJECT)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # a local store keeps its artifacts in the workdir too, not in ./mlruns
            where = None if self.uri else os.path.abspath(self.workdir) + "/" + MLFLOW_ARTIFACTS
            experiment_id = self.client.create_experiment(PROJECT, artifact_location=where)
        name = os.path.basename(os.path.normpath(self.workdir))
        run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    def _log(self, epoch, numbers):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in numbers.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def _save(self, path):
        self.client.log_artifact(self.run_id, path)

    def _close(self, failed):
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def wandb_mode() -> str:
    """$WANDB_MODE when set; otherwise offline unless $WANDB_API_KEY is set (never a prompt)."""
    return os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )


class WandbTracker(Tracker):
    """One W&B run per workdir (files under `WORKDIR/wandb`), resumed by its id."""

    kind = "wandb"
    # wandb-core buffers its offline `.wandb` log: a process killed before the run's end left
    # only the file's header there. The epochs count as kept only at the end; a resume after
    # a kill logs again those its checkpoint holds.
    durable = False
    INIT_TIMEOUT_S = 30  # W&B's default is 90: a start-up waits at most this for the network

    def __init__(self, workdir: str, artifacts: tuple[str, ...]):
        super().__init__(workdir, artifacts)
        self.run = None

    def _open(self, saved_id, params):
        import wandb

        settings = wandb.Settings(init_timeout=self.INIT_TIMEOUT_S, console="off", silent=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=os.path.basename(os.path.normpath(self.workdir)),
            id=saved_id,
            resume="allow",
            dir=os.path.abspath(self.workdir),
            mode=wandb_mode(),
            config=params,
            settings=settings,
        )
        return self.run.id

    def _log(self, epoch, numbers):
        # commit: a row with an explicit step is otherwise held until the next step comes,
        # and a kill before it would lose the epoch.
        self.run.log({**numbers, "epoch": epoch}, step=epoch, commit=True)

    def _save(self, path):
        # The run's folder is uploaded at its end (online) and kept (offline); `run.save`
        # would symlink instead, with a warning per file.
        shutil.copy(path, os.path.join(self.run.dir, os.path.basename(path)))

    def _close(self, failed):
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None


def make(names: tuple[str, ...], workdir: str, artifacts: tuple[str, ...], uri: str) -> list:
    """The MLflow and W&B trackers among `names` (TensorBoard is `logs.TensorBoardLog`)."""
    made: list[Tracker] = []
    if "mlflow" in names:
        made.append(MLflowTracker(workdir, artifacts, uri))
    if "wandb" in names:
        made.append(WandbTracker(workdir, artifacts))
    return made


def finish(callbacks, failed: bool) -> None:
    """Ends the runs of the trackers among `callbacks` (after `results.json` is written)."""
    for callback in callbacks:
        if isinstance(callback, Tracker):
            callback.finish(failed)
