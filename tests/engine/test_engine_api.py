"""The public API: engine.fit with a user's module, loss and callbacks; engine.load; monitor."""

import json
import os
import re
import subprocess
import sys

import pytest
from engine_helpers import fast_config, read_json, read_lines, records_without_timings

import engine
from engine.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _guide_example() -> str:
    """The first Python block of docs/api.md, the Python API's guide."""
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_api_guide_example_trains_a_user_module_and_loss_and_predicts_its_test_accuracy(
    tmp_path, data_dir
):
    # The guide's script as a user would run it: its own flax module, its own loss, a
    # callback that pauses the run; the same call resumes; engine.load's predictions on the
    # test split give exactly the accuracy in results.json (the script asserts it too).
    script = tmp_path / "example.py"
    script.write_text(_guide_example(), encoding="utf-8")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    workdir = tmp_path / "runs" / "api-example"
    results = read_json(str(workdir), "results.json")
    line = done.stdout.strip().splitlines()[-1]
    assert line == (
        f"paused at 3; test accuracy {results['test']['accuracy']:.4f}, "
        f"predicted {results['test']['accuracy']:.4f}"
    )
    assert "resumed from runs/api-example at epoch 3" in done.stdout
    assert [json.loads(r)["epoch"] for r in read_lines(str(workdir))] == list(range(1, 9))
    saved = read_json(str(workdir), "config.json")
    assert (saved["arch"], saved["loss"]) == ("TwoLayer", "squared_hinge")
    # A user's model is needed again to load the run: said in one line.
    with pytest.raises(ConfigError, match="model="):
        engine.load(str(workdir), data_dir=data_dir)


class _StopAt(engine.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record, state):
        if epoch == self.epoch:
            self.fit.stop("test stop")


def test_a_callback_that_stops_at_epoch_two_pauses_the_run_resumably(data_dir, tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    cfg = dict(epochs=4, dropout=0.1)
    reference = engine.fit(fast_config(data_dir, full, **cfg))
    stopped = engine.fit(fast_config(data_dir, part, **cfg), callbacks=[_StopAt(2)])
    assert stopped["stopped_at"] == 2
    assert len(read_lines(part)) == 2
    assert not os.path.exists(os.path.join(part, "results.json"))  # no test after a pause
    resumed = engine.fit(fast_config(data_dir, part, **cfg))
    assert records_without_timings(part) == records_without_timings(full)
    assert resumed["test"] == reference["test"]


def test_monitor_val_loss_keeps_the_epoch_with_the_lowest_validation_loss(data_dir, tmp_path):
    # A wide MLP at a high rate on 359 training rows: the validation loss falls, then rises
    # and wobbles (measured: lowest at epoch 4 of 8, highest at epoch 1).
    workdir = str(tmp_path / "m")
    cfg = fast_config(
        data_dir,
        workdir,
        epochs=8,
        lr=0.03,
        test_fraction=0.8,
        hidden_sizes=(128,),
        monitor="val_loss",
    )
    results = engine.fit(cfg)
    losses = [json.loads(r)["val"]["loss"] for r in read_lines(workdir)]
    lowest = 1 + losses.index(min(losses))
    assert lowest not in (1, len(losses))  # neither "first" nor "latest" would pass
    assert results["best_epoch"] == lowest == results["checkpoint_epoch"]
    # The best checkpoint evaluates to the logged validation loss of that epoch.
    assert engine.load(workdir).evaluate("val")["loss"] == pytest.approx(min(losses), rel=1e-6)


def test_monitor_names_are_checked_before_work(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="valid: val_loss, val_accuracy"):
        engine.fit(fast_config(data_dir, str(tmp_path / "x"), monitor="val_r2"))
    assert not os.path.exists(tmp_path / "x" / "config.json")


class _Finish(engine.Callback):
    """Ends the run for good at `epoch` and keeps the records it was shown."""

    def __init__(self, epoch):
        self.epoch, self.records = epoch, []

    def on_epoch_end(self, epoch, record, state):
        self.records.append(dict(record))
        if epoch == self.epoch:
            self.fit.finish(f"finished at epoch {epoch}")


def test_a_callback_ends_a_run_for_good_and_sees_the_whole_record(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    finish = _Finish(2)
    results = engine.fit(fast_config(data_dir, workdir, epochs=4), callbacks=[finish])
    # Ended, not paused: tested at once, and a rerun finds nothing left to train.
    assert results["stop_reason"] == "finished at epoch 2" and "test" in results
    assert len(read_lines(workdir)) == 2
    again = engine.fit(fast_config(data_dir, workdir, epochs=4))
    assert again["test"] == results["test"] and len(read_lines(workdir)) == 2
    # What a callback is shown is what metrics.jsonl holds (the doctor's and the speed's too).
    logged = [json.loads(line) for line in read_lines(workdir)]
    for shown, saved in zip(finish.records, logged, strict=True):
        assert {"train_eval", "probe", "speed"} <= set(shown)
        assert set(shown) == set(saved)


def test_predict_takes_flat_rows_when_the_model_takes_vectors(data_dir, tmp_path):
    workdir = str(tmp_path / "mlp")
    engine.fit(fast_config(data_dir, workdir, epochs=1))  # the MLP on 8x8x1 digits
    predictor = engine.load(workdir)
    images, _ = predictor.examples("test")
    flat = images.reshape(len(images), -1)  # (N, 64): rows of pixel values
    assert (predictor.predict(flat) == predictor.predict(images)).all()
    with pytest.raises(ValueError, match=r"shaped \(N, 8, 8, 1\) or \(N, 64\)"):
        predictor.predict(flat[:, :10])
