"""search.py on a real PostgreSQL server: a short study, one-line storage errors, two workers.

The server (tests/engine/pg_server.py) is PostgreSQL 16 from the `pgserver` wheel on loopback,
one per test process; each test's study gets a database of its own. No real cluster of
machines: "machines" are processes with separate working directories.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pg_server
import pytest
from engine_helpers import fast_config

from engine.config import ConfigError
from engine.workflows import study as study_lib
from engine.workflows import study_storage

pytest.importorskip("psycopg")
pytest.importorskip("pgserver")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
SPACE = "lr=loguniform(1e-3,3e-2); dropout=uniform(0,0.3)"


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server on a free loopback port for this test process, stopped at the end."""
    server = pg_server.Server().start()
    yield server
    server.stop()


@functools.cache
def _storage(url):  # one connection pool per database: the tests poll it many times a second
    return optuna.storages.RDBStorage(url)


def _trials(url):
    return optuna.load_study(study_name="search", storage=_storage(url)).get_trials(deepcopy=False)


def test_a_short_search_on_postgres_completes_its_trials_and_reports_once(
    postgres, data_dir, tmp_path
):
    url = postgres.new_database("short")
    study_dir = str(tmp_path / "study")
    base = fast_config(data_dir, "", epochs=1, hidden_sizes=(16,))
    params = study_lib.parse_space(SPACE)
    summary = study_lib.run_search(base, params, study_dir=study_dir, trials=3, seed=0,
                                   storage=url, say=lambda *a, **k: None)  # fmt: skip
    trials = _trials(url)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert not os.path.exists(os.path.join(study_dir, "study.db"))  # the study is on the server
    assert summary["finished"] == 3 and summary["test"]["count"] == 539
    with open(os.path.join(study_dir, "best_config.json"), encoding="utf-8") as f:
        assert json.load(f)["lr"] == trials[summary["best_trial"]].params["lr"]
    # Working on the complete study again writes nothing: the report was claimed once.
    again = study_lib.run_search(base, params, study_dir=study_dir, trials=3, storage=url,
                                 say=lambda *a, **k: None)  # fmt: skip
    assert again["reported_by"] == summary["reported_by"] and "test" not in again
    assert len(_trials(url)) == 3


def _search(*flags, cwd=None, wrap=()):
    command = [sys.executable, *wrap, os.path.join(ROOT, "search.py"), *flags]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("not a url", "--storage is not a database URL; give one like postgresql+psycopg"),
        ("postgresql+psycopg://me:secret@127.0.0.1:{closed}/db",
         "--storage=postgresql+psycopg://me:***@127.0.0.1:{closed}/db: cannot reach the database"),
    ],
)  # fmt: skip
def test_a_bad_storage_on_the_command_line_is_one_line_and_exit_status_2(
    storage, message, tmp_path
):
    closed = pg_server.free_port()
    storage, message = storage.format(closed=closed), message.format(closed=closed)
    done = _search(f"--storage={storage}", f"--study_dir={tmp_path / 'study'}", "--trials=1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert message in done.stderr
    assert "secret" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("storage", "study_dir", "message"),
    [
        ("mysql://me:secret@127.0.0.1/db", "local",
         "its database driver MySQLdb is not installed: pip install mysqlclient"),
        ("postgresql+psycopg2://me:secret@127.0.0.1/db", "local",
         "its database driver psycopg2 is not installed: pip install psycopg2-binary"),
        ("nosuchdb://me:secret@host/db", "local", "'nosuchdb' is not a database SQLAlchemy knows"),
        ("", "gs://bucket/study", "is remote; the default SQLite study file needs a local"),
    ],
)  # fmt: skip
def test_a_missing_driver_or_a_remote_sqlite_study_is_one_line(
    storage, study_dir, message, tmp_path
):
    study_dir = str(tmp_path / "study") if study_dir == "local" else study_dir
    with pytest.raises(ConfigError) as err:
        study_storage.open_storage(study_dir, storage)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "secret" not in str(err.value)


TRIALS = 12


def _worker(store, log, cwd, url, data_dir, seed, env):
    """One "machine": search.py on the fake GCS, its own cwd, the shared study and database."""
    flags = ["--study_dir=gs://bucket/study", f"--storage={url}", f"--trials={TRIALS}",
             f"--space={SPACE}", f"--sampler_seed={seed}", f"--data_dir={data_dir}",
             "--epochs=3", "--hidden_sizes=16", "--noprogress", "--parallel=none"]  # fmt: skip
    command = [sys.executable, os.path.join(HERE, "fake_gcs.py"), store,
               os.path.join(ROOT, "search.py"), *flags]  # fmt: skip
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _running_checkpointed_trial(log, bucket):
    """The trial the worker logging to `log` runs now, once it has a checkpoint; else None."""
    with open(log, encoding="utf-8") as f:
        started = [line.split()[1] for line in f if line.startswith("trial ")]
    if not started:
        return None
    latest = bucket / "study" / f"trial-{started[-1]}" / "checkpoints" / "latest"
    done = bucket / "study" / f"trial-{started[-1]}" / "results.json"
    saved = latest.is_dir() and any((s / "commit_success.txt").exists() for s in latest.iterdir())
    return int(started[-1]) if saved and not done.exists() else None


@pytest.mark.slow  # two workers, 12 three-epoch trials, a SIGKILL and the heartbeat's grace: ~2 min
def test_two_workers_on_postgres_and_a_gs_study_dir_share_12_trials_through_a_sigkill(
    postgres, data_dir, tmp_path
):
    pytest.importorskip("google.cloud.storage")  # orbax's bucket check on gs:// needs it
    import fake_gcs

    url = postgres.new_database("two_workers")
    store, bucket = tmp_path / "store", tmp_path / "store" / "bucket"
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    for folder in (bucket, *machines):
        folder.mkdir(parents=True)
    logs = [tmp_path / "a.log", tmp_path / "b.log", tmp_path / "a-again.log"]
    with fake_gcs.Server(str(store)) as server:
        env = dict(os.environ, JAX_PLATFORMS="cpu", **server.environ())
        env["STORAGE_EMULATOR_HOST"] = server.url
        a = _worker(str(store), logs[0], machines[0], url, data_dir, 1, env)
        _wait_for(lambda: "trial " in logs[0].read_text(), 120, "the first trial")
        b = _worker(str(store), logs[1], machines[1], url, data_dir, 2, env)
        # SIGKILL worker a inside a trial that has saved a checkpoint, after 2 trials finished.
        _wait_for(lambda: sum(t.state.name == "COMPLETE" for t in _trials(url)) >= 2, 180, "2")
        _wait_for(lambda: _running_checkpointed_trial(logs[0], bucket) is not None, 120, "ckpt")
        killed = _running_checkpointed_trial(logs[0], bucket)
        a.send_signal(signal.SIGKILL)
        a.wait()
        again = _worker(str(store), logs[2], machines[0], url, data_dir, 3, env)
        assert b.wait(timeout=300) == 0, logs[1].read_text()[-3000:]
        assert again.wait(timeout=300) == 0, logs[2].read_text()[-3000:]

    trials = _trials(url)
    assert [t.number for t in trials] == list(range(len(trials)))  # none lost
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == TRIALS
    assert trials[killed].state.name == "FAIL"
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in trials if retry(t) is not None]
    assert [(retry(t), t.state.name) for t in retries] == [(killed, "COMPLETE")]
    assert retries[0].params == trials[killed].params  # the same trial, run again
    # Each completed trial ran once: no parameters twice (the killed run did not complete).
    assert len({tuple(sorted(t.params.items())) for t in complete}) == TRIALS
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    resumed = f"resumed from gs://bucket/study/trial-{killed} at epoch"
    outputs = [log.read_text() for log in logs[1:]]
    assert any(resumed in out for out in outputs), outputs
    # The report: written by one of the two workers that saw the study complete, once.
    written = [out for out in outputs if "report written by " in out]
    assert len(written) == 1, outputs
    attrs = _storage(url).get_study_system_attrs(_storage(url).get_study_id_from_name("search"))
    writer = attrs[f"report_for_{TRIALS}_trials"]
    summary = json.loads((bucket / "study" / "search.json").read_text())
    assert summary["reported_by"] == writer and f"report written by {writer}" in written[0]
    assert summary["finished"] == TRIALS and summary["test"]["count"] == 539
    assert (bucket / "study" / "best_config.json").is_file()
    other = next(out for out in outputs if out is not written[0])
    assert f"was written by {writer}" in other
    assert [os.listdir(m) for m in machines] == [[], []]  # every file went to gs://
