"""Cross-validation: folds equal scikit-learn's, per-fold runs, cv.json, refit, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit

from engine import data
from engine.workflows.fit import fit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rows(subset):
    """Original row numbers of a fold's view (a Subset of the non-test Subset)."""
    return subset.source.indices[subset.indices]


@pytest.mark.parametrize("method", ["random", "time"])
def test_folds_equal_scikit_learns_splitters(data_dir, method):
    digits = data.load("digits", data.Options(data_dir))
    plain = data.split(digits, seed=3, method=method)
    rest = plain.train.source  # the non-test rows (train + val of the plain split)
    y = rest.targets
    if method == "time":
        expected = list(TimeSeriesSplit(n_splits=5).split(np.zeros((len(y), 1))))
    else:
        expected = list(StratifiedKFold(5, shuffle=True, random_state=3).split(np.zeros(len(y)), y))
    for k, (train_idx, val_idx) in enumerate(expected, start=1):
        fold = data.split(digits, seed=3, method=method, cv_folds=5, fold=k)
        np.testing.assert_array_equal(_rows(fold.train), rest.indices[train_idx])
        np.testing.assert_array_equal(_rows(fold.val), rest.indices[val_idx])
        np.testing.assert_array_equal(fold.test.indices, plain.test.indices)
        if method == "time":  # expanding windows: never trains on rows after its validation
            assert _rows(fold.train).max() < _rows(fold.val).min()
    if method == "random":  # every non-test row validates exactly once
        held = np.concatenate([val for _, val in expected])
        assert sorted(held.tolist()) == list(range(len(y)))


def test_cv_runs_each_fold_writes_cv_json_and_refits(data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "cv")
    result = fit(fast_config(data_dir, workdir, cv_folds=2, cv_refit=True))
    saved = read_json(workdir, "cv.json")
    assert saved == json.loads(json.dumps(result))
    best = []
    for k in (1, 2):
        records = [json.loads(line) for line in read_lines(os.path.join(workdir, f"fold-{k}"))]
        # Each fold's best epoch is its highest val accuracy (ties: lower val loss).
        top = max(records, key=lambda r: (r["val"]["accuracy"], -r["val"]["loss"]))
        assert saved["folds"][k - 1]["best_epoch"] == top["epoch"]
        best.append(top["val"]["accuracy"])
        # A fold validates on half of the 1258 non-test rows (1797 - 539) and never tests.
        assert top["val"]["count"] == 629
        assert "test" not in read_json(os.path.join(workdir, f"fold-{k}"), "results.json")
    assert saved["mean"]["accuracy"] == pytest.approx(np.mean(best), abs=1e-12)
    assert saved["std"]["accuracy"] == pytest.approx(np.std(best), abs=1e-12)
    # The refit trains on all 1258 non-test rows and tests the 539 held-out ones once.
    assert saved["refit"]["test"]["count"] == 539
    refit = [json.loads(line) for line in read_lines(os.path.join(workdir, "refit"))]
    assert len(refit) == saved["refit"]["epochs"] and refit[0]["train"]["count"] == 1258
    out = capsys.readouterr().out
    assert "mean " in out and "±" in out


@pytest.mark.slow  # two CLI processes and 5 folds of 6 epochs: about a minute here
def test_cv_killed_during_fold_3_resumes_with_folds_3_to_5(data_dir, tmp_path):
    workdir = str(tmp_path / "cv")
    flags = [
        os.path.join(ROOT, "run.py"),
        f"--workdir={workdir}",
        f"--data_dir={data_dir}",
        "--cv_folds=5",
        "--epochs=6",
        "--hidden_sizes=32",
        "--noprogress",
        "--parallel=none",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, *flags], env=env, stdout=subprocess.DEVNULL)
    latest = os.path.join(workdir, "fold-3", "checkpoints", "latest")

    def committed():  # orbax renames a checkpoint to its bare step number once complete
        return os.path.isdir(latest) and any(d.isdigit() for d in os.listdir(latest))

    deadline = time.time() + 300
    while not committed() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed() and not os.path.exists(os.path.join(workdir, "fold-3", "results.json"))
    before = {k: read_lines(os.path.join(workdir, f"fold-{k}")) for k in (1, 2)}
    done = subprocess.run([sys.executable, *flags], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fold 1/5: done earlier" in out and "fold 2/5: done earlier" in out
    assert "fold 3/5: training" in out and "resumed from" in out
    assert "fold 4/5: training" in out and "fold 5/5: training" in out
    assert out.count("resumed from") == 1  # only fold 3 had a checkpoint to resume
    for k in (1, 2):  # the finished folds were not touched
        assert read_lines(os.path.join(workdir, f"fold-{k}")) == before[k]
    saved = read_json(workdir, "cv.json")
    assert [f["fold"] for f in saved["folds"]] == [1, 2, 3, 4, 5]
    assert "±" in out
