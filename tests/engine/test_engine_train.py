"""End-to-end behaviour of the orchestrating function on the embedded datasets."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines, read_state, records_without_timings

from engine.workflows.fit import fit


def _latest_params(workdir):
    """Parameters of the newest 'latest' checkpoint, read with orbax independently of the engine."""
    root = os.path.join(workdir, "checkpoints", "latest")
    step = max(int(d) for d in os.listdir(root) if d.isdigit())
    return read_state(os.path.join(root, str(step), "state"))["params"]


def test_default_digits_run_reports_all_splits(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    results = fit(fast_config(data_dir, workdir, epochs=3))
    # digits has 1797 examples (scikit-learn docs); 30% held out: round(0.3 * 1797) = 539.
    assert results["test"]["count"] == 539
    # This run reaches 0.9388 (506 of 539) on this machine; the margin of 0.02 (about ten test
    # examples) covers float differences between CPUs, not a worse engine.
    assert results["test"]["accuracy"] > 0.92
    lines = read_lines(workdir)
    assert len(lines) == 3
    for name in ("config.json", "curves.png", "results.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # The train step compiled exactly once over three epochs (the last batch is padded).
    assert results["train_step_compilations"] == 1


def test_same_command_twice_gives_identical_metrics(data_dir, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    fit(fast_config(data_dir, a, dropout=0.2))
    fit(fast_config(data_dir, b, dropout=0.2))
    assert records_without_timings(a) == records_without_timings(b)


def test_interrupted_run_resumes_to_the_same_result(data_dir, tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    cfg = dict(epochs=4, dropout=0.1, schedule="cosine")
    fit(fast_config(data_dir, full, **cfg))
    stopped = fit(fast_config(data_dir, part, stop_after_epoch=2, **cfg))
    assert stopped["stopped_at"] == 2
    assert len(read_lines(part)) == 2
    # The same command again (without the stop) continues from epoch 2 to 4.
    fit(fast_config(data_dir, part, **cfg))
    assert records_without_timings(part) == records_without_timings(full)
    a, b = _latest_params(full), _latest_params(part)
    np.testing.assert_array_equal(_flat(a), _flat(b))
    assert read_json(part, "results.json")["test"] == read_json(full, "results.json")["test"]


def test_best_checkpoint_is_the_best_validation_epoch_and_a_tie_goes_to_the_lower_loss(
    data_dir, tmp_path
):
    # wine at lr 0.05: validation accuracy reaches 1.0 at epoch 2 and stays there while the
    # validation loss keeps moving (measured: lowest at epoch 3), so the tie rule decides.
    workdir = str(tmp_path / "best")
    # --select=best: wine's 12 validation rows would test the last epoch under auto.
    config = dict(dataset="wine", epochs=12, lr=0.05, batch_size=16, select="best")
    results = fit(fast_config(data_dir, workdir, **config))
    records = [json.loads(line) for line in read_lines(workdir)]
    accuracy = [r["val"]["accuracy"] for r in records]
    loss = [r["val"]["loss"] for r in records]
    # The README's rule: the highest validation accuracy; among equal ones, the lowest loss.
    best = max(range(len(records)), key=lambda i: (accuracy[i], -loss[i]))
    first_top = accuracy.index(max(accuracy))
    # The run must exercise the rule: a tie at the top, decided by loss, not at the last epoch,
    # so "first maximum" and "last epoch" rules would both pick another epoch.
    assert accuracy.count(max(accuracy)) > 1 and best != first_top and best != len(records) - 1
    assert results["best_epoch"] == records[best]["epoch"] == best + 1
    assert results["best_val"] == records[best]["val"]
    assert results["checkpoint_epoch"] == best + 1  # the test split used that checkpoint


def test_short_epochs_are_saved_less_often_and_the_best_is_kept(data_dir, tmp_path, monkeypatch):
    from engine.runtime import checkpoint
    from engine.runtime.callbacks import checkpointing

    # As if every save cost more than the whole run: only the first epoch (it measures the
    # cost) and the last are saved; the best epoch in between is held and written with the last.
    monkeypatch.setattr(checkpointing, "SAVE_RATIO", 1e9)
    workdir = str(tmp_path / "run")
    results = fit(
        fast_config(data_dir, workdir, epochs=6, lr=0.05, max_to_keep=10, monitor="val_loss")
    )
    records = [json.loads(line) for line in read_lines(workdir)]
    best = min(records, key=lambda r: r["val"]["loss"])["epoch"]
    assert 1 < best < 6  # measured: epoch 5 (lr 0.05), so the held best is exercised
    ckpt = checkpoint.Checkpoints(workdir, max_to_keep=10)
    try:
        assert ckpt.steps(checkpoint.LATEST) == [6, 1]
        assert ckpt.steps(checkpoint.BEST) == [best]
    finally:
        ckpt.close()
    assert results["checkpoint_epoch"] == results["best_epoch"] == best


def _flat(tree):
    return np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(tree)])


def test_regression_reports_mae_rmse_r2(data_dir, tmp_path):
    results = fit(
        fast_config(data_dir, str(tmp_path / "r"), dataset="diabetes", loss="huber", epochs=3)
    )
    test = results["test"]
    assert set(test) >= {"loss", "mae", "rmse", "r2"}
    # 442 rows in diabetes (scikit-learn docs), 30% held out: round(0.3 * 442) = 133.
    assert test["count"] == 133
    assert test["rmse"] >= test["mae"] > 0


def test_workdir_with_other_model_flags_is_refused(data_dir, tmp_path):
    from engine.config import ConfigError

    workdir = str(tmp_path / "w")
    fit(fast_config(data_dir, workdir, epochs=1))
    before = {p: os.path.getmtime(os.path.join(workdir, p)) for p in os.listdir(workdir)}
    with pytest.raises(ConfigError, match="hidden_sizes"):
        fit(fast_config(data_dir, workdir, epochs=1, hidden_sizes=(16,)))
    after = {p: os.path.getmtime(os.path.join(workdir, p)) for p in os.listdir(workdir)}
    assert before == after


def test_eval_mode_tests_the_best_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "e")
    trained = fit(fast_config(data_dir, workdir, epochs=2))
    evaluated = fit(fast_config(data_dir, workdir, epochs=2, mode="eval"))
    assert evaluated["test"] == trained["test"]


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_parallel_modes_match_plain_jit_on_one_device(data_dir, tmp_path, parallel):
    base = fit(fast_config(data_dir, str(tmp_path / "none"), epochs=1))
    other = fit(fast_config(data_dir, str(tmp_path / parallel), epochs=1, parallel=parallel))
    assert other["test"]["accuracy"] == pytest.approx(base["test"]["accuracy"], abs=1e-6)
    assert other["test"]["loss"] == pytest.approx(base["test"]["loss"], rel=1e-4)


def test_dataclass_config_is_frozen():
    cfg = fast_config("d", "w")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_a_resume_that_changes_the_epochs_says_so_and_records_it(data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    fit(fast_config(data_dir, workdir, epochs=2))
    capsys.readouterr()
    fit(fast_config(data_dir, workdir, epochs=4))  # the cosine now spans 4 epochs: it rises
    out = capsys.readouterr().out
    # fast_config: lr 1e-2, 18 updates an epoch; at update 36 the 2-epoch plan had reached 0.
    expected = 0.01 * 0.5 * (1 + np.cos(np.pi * 36 / 72))
    line = next(x for x in out.splitlines() if x.startswith("resume: --epochs changed"))
    assert line == (
        "resume: --epochs changed from 2 to 4, so the cosine schedule now spans 4 epochs: the "
        f"rate at epoch 3 is {expected:.4g} (the first plan's: 0)"
    )
    assert "resumed_epochs=2" in read_json(workdir, "config.json")["auto"]
    fit(fast_config(data_dir, workdir, epochs=5))  # later resumes keep the record
    assert {"resumed_epochs=2", "resumed_epochs=4"} <= set(
        read_json(workdir, "config.json")["auto"]
    )


def test_a_crop_on_tiny_images_is_warned_about(data_dir, tmp_path, capsys):
    fit(fast_config(data_dir, str(tmp_path / "crop"), epochs=1, augment="crop"))
    out = capsys.readouterr().out
    assert "warning: --augment=crop pads and crops 8x8 images by a pixel" in out
    fit(fast_config(data_dir, str(tmp_path / "big"), epochs=1, augment="crop", image_size=32))
    assert "--augment=crop pads" not in capsys.readouterr().out
