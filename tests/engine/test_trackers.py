"""--tracker=mlflow,wandb: runs read back from a local MLflow store and W&B's offline files."""

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from engine_helpers import fast_config, read_json, read_lines

import engine
from benchmarks import kill_resume
from engine.config import ConfigError
from engine.runtime.callbacks import logs, trackers
from engine.workflows.train import TRACKED_FILES


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No W&B key, no mode: the tracker must choose offline itself."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tracked(data_dir, tmp_path_factory):
    """One 2-epoch run tracked by TensorBoard, MLflow and W&B (its workdir)."""
    workdir = str(tmp_path_factory.mktemp("tracked"))
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: `_offline` is not yet active
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
            patch.delenv(name, raising=False)
        engine.fit(fast_config(data_dir, workdir, tracker=("tensorboard", "mlflow", "wandb")))
    return workdir


def _expected_params(workdir: str) -> dict[str, str]:
    """config.json's settings as strings (strings as they are, the rest JSON)."""
    saved = read_json(workdir, "config.json")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in saved.items()}


def _epochs(workdir: str) -> dict[int, dict[str, float]]:
    """metrics.jsonl's numbers by epoch, as the trackers were given them."""
    return {r["epoch"]: logs.scalars(r) for r in map(json.loads, read_lines(workdir))}


def _mlflow_runs(workdir: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trackers.mlflow_uri(workdir))
    experiment = client.get_experiment_by_name(trackers.PROJECT)
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_holds_the_settings_every_epoch_and_the_artifacts(tracked):
    client, runs = _mlflow_runs(tracked)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == _expected_params(tracked)
    epochs = _epochs(tracked)
    assert sorted(epochs) == [1, 2]
    for name in {*epochs[1], *epochs[2]}:  # some are the first epoch's only
        history = client.get_metric_history(run.info.run_id, name)
        logged = [(e, epochs[e][name]) for e in (1, 2) if name in epochs[e]]
        assert [(m.step, m.value) for m in history] == logged
    listed = {f.path for f in client.list_artifacts(run.info.run_id)}
    present = {name for name in TRACKED_FILES if os.path.isfile(os.path.join(tracked, name))}
    assert {"curves.png", "results.json", "confusion.png"} <= present
    assert listed == present
    assert os.path.isdir(os.path.join(tracked, "tensorboard"))  # beside the others


def _wandb_records(path: str) -> list:
    """The records of a `.wandb` transaction log (a LevelDB-style log of protobuf records).

    The format: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks of chunks, each
    with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last). wandb no
    longer ships a Python reader (its core is Go), so the test reads it here.
    """
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_runs(workdir: str) -> list[tuple[str, list]]:
    """Each offline run folder's run id and records."""
    found = []
    for folder in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))):
        (log,) = glob.glob(os.path.join(folder, "run-*.wandb"))
        found.append((folder.rsplit("-", 1)[1], _wandb_records(log)))
    return found


def _wandb_history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
            rows.append(items)
    return rows


def test_wandb_offline_holds_the_settings_every_epoch_and_the_artifacts(tracked):
    runs = _wandb_runs(tracked)
    assert len(runs) == 1
    run_id, records = runs[0]
    assert trackers.read_state(tracked)["wandb"] == {"run_id": run_id, "epoch": 2}
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "run":
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif r.WhichOneof("record_type") == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
    config.pop("_wandb", None)
    assert config == _expected_params(tracked)
    epochs = _epochs(tracked)
    history = _wandb_history(records)
    assert [h["_step"] for h in history] == [1, 2]
    for h in history:
        assert {k: h[k] for k in epochs[h["_step"]]} == epochs[h["_step"]]
    files = glob.glob(os.path.join(tracked, "wandb", "offline-run-*", "files", "*"))
    assert {"curves.png", "results.json", "confusion.png"} <= {os.path.basename(f) for f in files}


def test_a_tracker_not_installed_names_its_pip_extra(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    with pytest.raises(ConfigError) as e:
        engine.fit(fast_config(data_dir, str(tmp_path), tracker=("mlflow",)))
    assert str(e.value) == "--tracker=mlflow needs the mlflow extra: pip install 'jaxtrain[mlflow]'"
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_a_tracker_failing_mid_run_is_said_once_and_training_goes_on(
    data_dir, tmp_path, monkeypatch, capsys
):
    def broken(self, epoch, numbers):
        raise OSError("disk full")

    monkeypatch.setattr(trackers.MLflowTracker, "_log", broken)
    workdir = str(tmp_path)
    results = engine.fit(fast_config(data_dir, workdir, tracker=("mlflow",)))
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("--tracker=mlflow")]
    assert said == [
        "--tracker=mlflow: logging epoch 1 failed (OSError: disk full); this tracker is off for "
        "the rest of the run, training goes on"
    ]
    assert "test" in results and len(read_lines(workdir)) == 2
    assert "2" in os.listdir(os.path.join(workdir, "checkpoints", "latest"))
    assert not os.path.isdir(os.path.join(workdir, "tensorboard"))  # not asked for


@pytest.mark.slow  # a subprocess run killed and rerun (~25 s)
def test_a_killed_and_resumed_run_stays_one_tracked_run(data_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    flags = (*kill_resume.FLAGS, "--tracker=mlflow,wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.Popen(
        kill_resume.command(workdir, data_dir, flags=flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env, JAX_PLATFORMS="cpu"),
    )
    first = os.path.join(workdir, "checkpoints", "latest", "1")
    deadline = time.monotonic() + 300
    while proc.poll() is None and not os.path.isdir(first) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(
        kill_resume.command(workdir, data_dir, flags=flags),
        capture_output=True,
        text=True,
        env=dict(env, JAX_PLATFORMS="cpu"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout
    client, runs = _mlflow_runs(workdir)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2, 3]
    wandb_runs = _wandb_runs(workdir)
    assert len({run_id for run_id, _ in wandb_runs}) == 1
    steps = [h["_step"] for _, records in wandb_runs for h in _wandb_history(records)]
    assert steps == [1, 2, 3]
