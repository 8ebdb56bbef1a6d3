"""A damaged newest checkpoint: the run falls back to the previous whole one, with a warning."""

import dataclasses
import json
import os
import shutil

import pytest
from engine_helpers import fast_config

import engine
from engine.config import ConfigError


def _truncate_files(path):
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            size = os.path.getsize(full)
            with open(full, "r+b") as f:
                f.truncate(size // 2)


def _epochs(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["epoch"] for line in f]


def test_truncated_or_deleted_newest_checkpoint_falls_back(data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "w")
    latest = os.path.join(workdir, "checkpoints", "latest")
    config = fast_config(data_dir, workdir, epochs=3, stop_after_epoch=2)
    engine.fit(config)
    assert sorted(os.listdir(latest)) == ["1", "2"]

    _truncate_files(os.path.join(latest, "2"))  # every file of the newest cut in half
    capsys.readouterr()
    results = engine.fit(dataclasses.replace(config, stop_after_epoch=0))
    out = capsys.readouterr().out
    assert f"warning: checkpoint {latest}/2 does not restore" in out
    assert "moved to" in out and os.path.isdir(os.path.join(workdir, "checkpoints", "damaged"))
    assert f"resumed from {workdir} at epoch 1" in out
    assert results["checkpoint_epoch"] >= 1
    assert _epochs(workdir) == [1, 2, 3]  # epoch 2 trained again, recorded once

    shutil.rmtree(os.path.join(latest, "3", "state"))  # a deleted folder this time
    capsys.readouterr()
    engine.fit(dataclasses.replace(config, epochs=4, stop_after_epoch=0))
    out = capsys.readouterr().out
    assert f"warning: checkpoint {latest}/3 does not restore" in out
    assert f"resumed from {workdir} at epoch 2" in out
    assert _epochs(workdir) == [1, 2, 3, 4]

    for name in os.listdir(latest):  # nothing whole is left: refused, never a fresh start
        _truncate_files(os.path.join(latest, name))
    with pytest.raises(ConfigError, match="restores"):
        engine.fit(dataclasses.replace(config, epochs=5, stop_after_epoch=0))
    assert _epochs(workdir) == [1, 2, 3, 4]
