"""Early stopping and the plateau schedule: real digits runs, checked against their own logs."""

import json
import math
import re

import pytest
from engine_helpers import fast_config, read_json, read_lines, records_without_timings

from engine.workflows.fit import fit


def _records(workdir):
    return [json.loads(line) for line in read_lines(workdir)]


def _keras_stop_epoch(values, patience, min_delta, higher_is_better):
    """The epoch Keras' EarlyStopping rule stops at, replayed on logged values (None: never)."""
    best, wait, sign = None, 0, 1.0 if higher_is_better else -1.0
    for epoch, value in enumerate(values, start=1):
        if math.isfinite(value) and (best is None or sign * (value - best) > min_delta):
            best, wait = value, 0
        else:
            wait += 1
        if wait >= patience:
            return epoch
    return None


def test_early_stopping_ends_a_plateaued_run_and_tests_the_best(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    # A small MLP at lr 1e-2 reaches its validation plateau on digits within ~10 epochs, so
    # 40 planned epochs with patience 3 on val_loss must end early.
    config = fast_config(
        data_dir, workdir, epochs=40, early_stopping=3, min_delta=1e-3, monitor="val_loss"
    )
    results = fit(config)
    records = _records(workdir)
    expected = _keras_stop_epoch([r["val"]["loss"] for r in records], 3, 1e-3, False)
    assert expected is not None and expected < 40
    assert len(records) == expected
    assert results["stop_reason"].startswith(f"early stopping at epoch {expected}: val_loss")
    # The best checkpoint (lowest val_loss) is the one tested, not the last epoch.
    best_epoch = min(records, key=lambda r: r["val"]["loss"])["epoch"]
    assert results["checkpoint_epoch"] == best_epoch == results["best_epoch"]
    assert best_epoch == expected - 3
    assert read_json(workdir, "results.json")["test"] == results["test"]


@pytest.mark.slow  # three runs of ~12 epochs: about a minute on the loaded 2-core machine
def test_early_stopping_resumes_like_an_uninterrupted_run(data_dir, tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    cfg = dict(epochs=40, early_stopping=2, monitor="val_loss", min_delta=1e-3)
    done = fit(fast_config(data_dir, full, **cfg))
    stop = len(read_lines(full))
    assert stop > 3  # so the pause below falls before the stop
    paused = fit(fast_config(data_dir, part, stop_after_epoch=stop - 2, **cfg))
    assert paused["stopped_at"] == stop - 2
    resumed = fit(fast_config(data_dir, part, **cfg))
    assert records_without_timings(part) == records_without_timings(full)
    assert resumed["stop_reason"] == done["stop_reason"]
    assert resumed["test"] == done["test"]
    # A stopped run stays stopped: running it again trains nothing more.
    again = fit(fast_config(data_dir, part, **cfg))
    assert records_without_timings(part) == records_without_timings(full)
    assert again["stop_reason"] == done["stop_reason"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("early_stopping", -1, "--early_stopping must be >= 0"),
        ("min_delta", -0.1, "--min_delta must be >= 0"),
        ("plateau_factor", 1.0, "--plateau_factor must be in (0, 1)"),
        ("plateau_patience", 0, "--plateau_patience must be >= 1"),
        ("plateau_min_lr", 1.0, "--plateau_min_lr must be in [0, --lr="),
    ],
)
def test_bad_selection_settings_are_one_line_errors(data_dir, tmp_path, field, value, message):
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        fit(fast_config(data_dir, str(tmp_path / "run"), **{field: value}))
    assert not (tmp_path / "run").exists()


def _optax_plateau_lrs(val_losses, lr, factor, patience, rtol=1e-4):
    """The rates optax's reduce_on_plateau rule gives epoch by epoch (no cooldown, no minimum).

    Replayed from optax.contrib.reduce_on_plateau's definition: an epoch improves when its
    value is below (1 - rtol) x best; after `patience` epochs without improvement the scale is
    multiplied by `factor` and the count restarts. Epoch e trains with the rate set after e-1.
    """
    best, count, scale, lrs = math.inf, 0, 1.0, []
    for value in val_losses:
        lrs.append(lr * scale)
        if value < (1 - rtol) * best:
            best, count = value, 0
        else:
            count += 1
        if count == patience:
            scale, count = scale * factor, 0
    return lrs


def test_plateau_lowers_the_rate_and_resumes_identically(data_dir, tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    # At lr 0.05 the validation loss of this small MLP bounces within a few epochs.
    cfg = dict(epochs=8, lr=0.05, schedule="plateau", plateau_patience=1, plateau_factor=0.5)
    fit(fast_config(data_dir, full, **cfg))
    records = _records(full)
    logged = [r["lr"] for r in records]
    expected = _optax_plateau_lrs([r["val"]["loss"] for r in records], 0.05, 0.5, 1)
    # The scale is float32 in the optimizer state: equal to ~1e-7 relative.
    assert logged == pytest.approx(expected, rel=1e-6)
    assert min(logged) < 0.05  # the run did plateau and the rate went down
    # Paused after epoch 4 (the plateau state is in its checkpoint) and resumed: the same run.
    fit(fast_config(data_dir, part, stop_after_epoch=4, **cfg))
    fit(fast_config(data_dir, part, **cfg))
    assert records_without_timings(part) == records_without_timings(full)
