"""The optuna search: space parsing, a real study on digits, two processes, kill and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from engine_helpers import fast_config, read_json

from engine.config import Config, ConfigError
from engine.workflows import study as study_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPACE = "lr=loguniform(1e-3,3e-2); dropout=uniform(0,0.3); batch_size=choice(32,64)"


def test_space_parses_into_typed_params():
    params = study_lib.parse_space(SPACE + "; arch=choice(mlp,lenet); depth=int(1,3)")
    assert [(p.name, p.kind, p.args) for p in params] == [
        ("lr", "loguniform", (1e-3, 3e-2)),
        ("dropout", "uniform", (0, 0.3)),
        ("batch_size", "choice", (32, 64)),
        ("arch", "choice", ("mlp", "lenet")),
        ("depth", "int", (1, 3)),
    ]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lr=loguniform(0,1)", "loguniform needs low > 0"),
        ("lr=uniform(1)", "needs two numbers"),
        ("workdir=choice(a,b)", "not a setting a trial can vary"),
        ("lrr=uniform(0,1)", "not a setting a trial can vary"),
        ("lr=normal(0,1)", "must be one of"),
        ("arch=choice(1,2)", "arch takes str values"),
        ("lr", "must look like name=kind(a,b)"),
    ],
)
def test_bad_space_is_a_one_line_error(space, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        study_lib.parse_space(space)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # two trials, the report and the final test: ~40 s on an idle 2-core CPU
def test_a_small_random_study_reports_and_writes_a_reusable_best_config(data_dir, tmp_path):
    study_dir = str(tmp_path / "study")
    base = fast_config(data_dir, "", epochs=1)
    params = study_lib.parse_space(SPACE)
    summary = study_lib.run_search(base, params, study_dir=study_dir, trials=2, seed=0)
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(study_dir, 'study.db')}")
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    best = max(trials, key=lambda t: t.value)
    assert summary["best_trial"] == best.number and summary["finished"] == 2
    for t in trials:  # the objective is the trial's best validation accuracy; no trial tested
        results = read_json(os.path.join(study_dir, f"trial-{t.number}"), "results.json")
        assert t.value == results["best_val"]["accuracy"] and "test" not in results
    # The best config loads as a Config (python run.py --config=...) with the best params.
    with open(os.path.join(study_dir, "best_config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    config = Config.from_dict(saved)
    assert {k: getattr(config, k) for k in best.params} == best.params
    assert summary["test"]["count"] == 539  # the best trial, tested once at the end
    for name in ("lr", "dropout", "batch_size"):
        assert os.path.exists(os.path.join(study_dir, f"objective_vs_{name}.png"))


def _search(study_dir, data_dir, trials, seed):
    flags = [
        os.path.join(ROOT, "search.py"),
        f"--study_dir={study_dir}",
        f"--trials={trials}",
        f"--space={SPACE}",
        f"--sampler_seed={seed}",
        f"--data_dir={data_dir}",
        "--epochs=1",
        "--hidden_sizes=16",
        "--noprogress",
        "--parallel=none",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _states(study_dir):
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(study_dir, 'study.db')}")
    return [t.state.name for t in optuna.load_study(study_name="search", storage=storage).trials]


@pytest.mark.slow  # 30 one-epoch trials in two processes, a kill and a restart: minutes
def test_two_processes_share_one_study_of_30_trials_and_resume_after_a_kill(data_dir, tmp_path):
    study_dir = str(tmp_path / "study")
    first = _search(study_dir, data_dir, 30, seed=1)
    time.sleep(3)  # the first process creates the study
    second = _search(study_dir, data_dir, 30, seed=2)
    deadline = time.time() + 900
    while _states_safe(study_dir).count("COMPLETE") < 5 and time.time() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # killed mid-study, likely inside a trial
    first.wait()
    done_before = _states(study_dir).count("COMPLETE")
    restarted = _search(study_dir, data_dir, 30, seed=3)
    assert second.wait(timeout=1800) == 0, second.stderr.read()
    assert restarted.wait(timeout=1800) == 0, restarted.stderr.read()
    states = _states(study_dir)
    # MaxTrialsCallback: every process stops at 30 finished trials, one extra per racing one.
    assert 30 <= states.count("COMPLETE") <= 32
    assert done_before >= 5  # the restart continued from the trials already done


def _states_safe(study_dir):
    try:
        return _states(study_dir)
    except Exception:  # the study is not created yet
        return []
