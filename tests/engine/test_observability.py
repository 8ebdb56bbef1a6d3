"""One fast run's TensorBoard files, metrics.jsonl extras, per-class results and profile."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines

from engine.workflows.fit import fit


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("observed") / "w")
    results = fit(fast_config(data_dir, workdir, epochs=2, profile="3:6"))
    return workdir, results


def test_tensorboard_reader_parses_the_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, _ = run
    acc = EventAccumulator(os.path.join(workdir, "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    wanted = {
        "train/loss",
        "train/accuracy",
        "val/loss",
        "val/accuracy",
        "train_eval/loss",
        "optim/lr",
        "optim/grad_norm",
        "optim/grad_norm/dense0",
        "speed/examples_per_s",
        "speed/step_ms",
    }
    assert wanted <= tags
    records = [json.loads(line) for line in read_lines(workdir)]
    # The same numbers as metrics.jsonl, one per epoch (TensorBoard stores float32).
    for tag, get in {
        "val/loss": lambda r: r["val"]["loss"],
        "optim/lr": lambda r: r["train"]["optim"]["lr"],
        "speed/step_ms": lambda r: r["speed"]["step_ms"],
    }.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        np.testing.assert_allclose([e.value for e in events], [get(r) for r in records], rtol=1e-6)


def test_the_tensorboard_writer_does_not_import_torch():
    # tensorboardX imports torch when installed (seconds of a short run); the logger keeps it
    # out and leaves `import torch` working afterwards.
    code = (
        "import importlib.util, sys\n"
        "from engine.runtime.callbacks.logs import _summary_writer\n"
        "assert _summary_writer().__name__ == 'SummaryWriter'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "if importlib.util.find_spec('torch') is not None:\n"
        "    import torch\n"
        "    assert torch.zeros(2).sum().item() == 0.0\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_metrics_log_has_lr_grad_norms_and_speed(run):
    workdir, _ = run
    last = json.loads(read_lines(workdir)[-1])
    optim = last["train"]["optim"]
    # Cosine decay from 1e-2 over 2 epochs of 18 steps: the second epoch's mean lr is below the
    # peak and above zero.
    assert 0 < optim["lr"] < 1e-2
    assert math.isfinite(optim["grad_norm"]) and optim["grad_norm"] > 0
    assert set(optim["layers"]) == {"dense0", "head"}
    assert last["speed"]["examples_per_s"] > 0
    assert last["train_eval"]["count"] == 256  # the fixed training subset (MIN_TRAIN_SUBSET)


def test_per_class_scores_match_scikit_learn_on_the_predictions(run, data_dir):
    from sklearn.metrics import classification_report

    import engine

    workdir, results = run
    per_class = read_json(workdir, "results.json")["test_per_class"]
    assert per_class == results["test_per_class"]
    # An independent path: the saved best checkpoint's predictions through engine.load.
    predictor = engine.load(workdir, data_dir=data_dir)
    split = predictor.setup.run.splits.test
    inputs, targets = split.get(np.arange(len(split)))
    report = classification_report(
        targets, predictor.predict(inputs), output_dict=True, zero_division=0
    )
    for name in [str(i) for i in range(10)]:
        for key, ours in per_class["per_class"][name].items():
            theirs = report[name]["f1-score" if key == "f1" else key]
            assert ours == pytest.approx(theirs, abs=1e-12), (name, key)
    matrix = np.asarray(per_class["confusion"])
    assert matrix.sum() == 539 and np.trace(matrix) / 539 == pytest.approx(
        results["test"]["accuracy"], abs=1e-9
    )
    assert os.path.getsize(os.path.join(workdir, "confusion.png")) > 0
    assert os.path.getsize(os.path.join(workdir, "mistakes.png")) > 0
    assert 0 < per_class["mistakes_shown"] <= 16


def test_profile_traces_the_window_and_splits_its_time(run):
    workdir, _ = run
    traces = [
        os.path.join(d, f)
        for d, _, files in os.walk(os.path.join(workdir, "profile"))
        for f in files
        if f.endswith(".xplane.pb")
    ]
    assert traces and os.path.getsize(traces[0]) > 0
    prof = read_json(workdir, "profile.json")
    assert prof["steps"] == 4  # steps 3, 4, 5 and 6
    # The train step, the eval step and init compiled before step 3 (jax's compile events).
    assert prof["compile_s"] > 0
    assert prof["device_ms_per_step"] > 0 and prof["host_ms_per_step"] > 0
