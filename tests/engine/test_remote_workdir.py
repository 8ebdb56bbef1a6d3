"""A `gs://` workdir end to end (train, SIGTERM, resume, eval, predict) on a fake GCS.

The fake (tests/engine/fake_gcs.py) serves TensorStore's GCS driver over loopback HTTP and
fsspec's `gs` protocol from one local folder, the "bucket". The runs are real `run.py`
subprocesses; their working directory and temporary folder are empty folders checked at the
end, so a path that slipped past the path layer (a local `gs:/...` folder) fails the test.
"""

import json
import os
import signal
import subprocess
import sys
import time

import fake_gcs
import numpy as np
import pytest

from benchmarks import kill_resume

pytest.importorskip("google.cloud.storage")  # orbax's bucket check on gs:// needs it

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(kill_resume.ROOT, "run.py")


def _command(store, *flags):
    return [sys.executable, os.path.join(HERE, "fake_gcs.py"), store, RUN, *flags]


def test_a_gs_workdir_trains_resumes_evaluates_and_predicts_leaving_nothing_local(
    data_dir, tmp_path
):
    store, cwd, tmp = tmp_path / "store", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (store / "bucket", cwd, tmp):
        folder.mkdir(parents=True)
    bucket_run = store / "bucket" / "run"  # where the fake keeps gs://bucket/run's objects
    remote = "gs://bucket/run"
    with fake_gcs.Server(str(store)) as server:
        env = dict(os.environ, JAX_PLATFORMS="cpu", TMPDIR=str(tmp), **server.environ())
        env["STORAGE_EMULATOR_HOST"] = server.url  # google-cloud-storage's testing hook
        flags = [f"--workdir={remote}", f"--data_dir={data_dir}", *kill_resume.FLAGS]
        proc = subprocess.Popen(_command(str(store), *flags), cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        mid = bucket_run / "checkpoints" / "mid_epoch"
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if mid.is_dir() and any(n.isdigit() for n in os.listdir(mid)):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 143, err[-3000:]
        assert "stopped by SIGTERM after step" in out

        def run(*given):
            done = subprocess.run(_command(str(store), *given), cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            assert "Traceback" not in done.stderr
            return done.stdout

        resumed = run(*flags)
        assert "resumed from gs://bucket/run at epoch" in resumed
        assert "is remote and not locked" in resumed

        where = (f"--workdir={remote}", f"--data_dir={data_dir}", "--noprogress")
        evaluated = run(*where, "--mode=eval")
        results = json.loads((bucket_run / "results.json").read_text())
        shown = f"acc {results['test']['accuracy']:.4f}"
        assert shown in evaluated.splitlines()[-1]

        np.save(store / "bucket" / "inputs.npy", np.zeros((3, 8, 8, 1), np.float32))
        run(*where, "--mode=predict", "--inputs=npy:gs://bucket/inputs.npy")
        rows = (bucket_run / "predictions.csv").read_text().splitlines()
        assert rows[0] == "input,prediction,probability" and len(rows) == 4

    # The same run on a local disk, uninterrupted: bit-identical state and records.
    local = str(tmp_path / "local")
    kill_resume.run_to_end(local, data_dir)
    assert kill_resume.differences(local, str(bucket_run)) == []
    names = set(os.listdir(bucket_run))
    assert {"config.json", "metrics.jsonl", "results.json", "curves.png", "tensorboard"} <= names
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(bucket_run / "tensorboard"))
    assert os.listdir(cwd) == []  # no local `gs:` folder
    # Nor a file in the temporary folder (the TensorBoard staging folder is removed). TFDS
    # leaves an empty `tmp*tfds` folder there whenever it looks for a dataset's metadata in its
    # own bucket (DatasetInfo.initialize_from_bucket), remote workdir or not.
    assert [files for _, _, files in os.walk(tmp) if files] == []
