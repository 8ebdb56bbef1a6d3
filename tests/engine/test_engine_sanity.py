"""--overfit_batches: the seeds' sanity check on real digits runs (MLP, LeNet, a broken run)."""

import dataclasses
import json

import pytest
from engine_helpers import fast_config, read_json, read_lines

from engine.workflows.fit import fit


def _overfit(data_dir, workdir, **overrides):
    # The default MLP (256, 128) and lr 1e-3, regularisation requested but switched off.
    config = fast_config(
        data_dir,
        workdir,
        hidden_sizes=(256, 128),
        lr=1e-3,
        overfit_batches=1,
        epochs=80,
        dropout=0.3,
        weight_decay=1e-3,
    )
    return fit(dataclasses.replace(config, **overrides))


@pytest.mark.slow  # ~25 one-batch epochs, each with its validation pass and checkpoint
def test_overfit_one_batch_with_the_mlp_reaches_99_percent(data_dir, tmp_path):
    workdir = str(tmp_path / "mlp")
    results = _overfit(data_dir, workdir)
    records = [json.loads(line) for line in read_lines(workdir)]
    assert records[-1]["train"]["accuracy"] >= 0.99 and records[-1]["train"]["count"] == 64
    assert all(r["train"]["accuracy"] < 0.99 for r in records[:-1])  # stopped when reached
    assert results["stop_reason"].startswith("overfit check passed: train accuracy")
    saved = read_json(workdir, "config.json")  # regularisation was off, and it says so
    assert (saved["dropout"], saved["weight_decay"], saved["augment"]) == (0.0, 0.0, "none")


@pytest.mark.slow  # LeNet at 32x32 for tens of one-batch epochs
def test_overfit_one_batch_with_lenet_reaches_99_percent(data_dir, tmp_path):
    results = _overfit(data_dir, str(tmp_path / "lenet"), arch="lenet")
    assert results["stop_reason"].startswith("overfit check passed: train accuracy")


def test_a_net_that_cannot_overfit_gets_a_hint(data_dir, tmp_path, capsys):
    # lr 1e-7: one one-batch epoch cannot memorise anything.
    results = _overfit(data_dir, str(tmp_path / "stuck"), lr=1e-7, epochs=1)
    assert "stop_reason" not in results
    out = capsys.readouterr().out
    assert "overfit check failed: train accuracy" in out and "learning rate" in out
