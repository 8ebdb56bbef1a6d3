"""--on_nan: a non-finite step stops the run without saving it, or is skipped and counted."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from engine_helpers import fast_config, read_state

import engine
from engine.runtime import checkpoint
from engine.runtime.callbacks import guards

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Read when the step is traced (each fit traces anew): NaN in batches whose label sum divides.
POISON = {"on": False, "every": 5}
# digits: 1,797 rows; 539 test, then 126 validation -> 1,132 training rows in 18 batches of 64.
STEPS_PER_EPOCH = 18


def spiky(predictions, targets, *, reduction="mean", where=None):
    """Cross-entropy, NaN for a batch whose label sum is divisible by POISON["every"]."""
    values = optax.softmax_cross_entropy_with_integer_labels(predictions, targets)
    if POISON["on"]:
        bad = jnp.sum(jnp.where(where, targets, 0)) % POISON["every"] == 0
        values = jnp.where(bad, jnp.nan, values)
    assert reduction == "none"
    return values


def strict_lines(path, whole=False):
    """Parses JSON lines (or one document) refusing NaN/Infinity, as strict parsers do."""

    def refuse(token):
        raise ValueError(f"non-strict JSON constant {token}")

    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = [text] if whole else [line for line in text.splitlines() if line.strip()]
    return [json.loads(part, parse_constant=refuse) for part in parts]


def _tree_bytes(path):
    out = {}
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def test_stop_keeps_the_last_good_checkpoint_and_names_the_step(data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    config = fast_config(data_dir, workdir, epochs=3, stop_after_epoch=1)
    POISON["on"] = False
    engine.fit(config, loss=spiky)
    good = _tree_bytes(os.path.join(workdir, "checkpoints"))
    POISON.update(on=True, every=1)  # every batch of epoch 2 is bad
    try:
        with pytest.raises(guards.Diverged) as raised:
            engine.fit(dataclasses.replace(config, stop_after_epoch=0), loss=spiky)
    finally:
        POISON.update(on=False, every=5)
    message = str(raised.value)
    assert "\n" not in message and "learning rate" in message
    assert f"at step {STEPS_PER_EPOCH + 1} (epoch 2)" in message
    assert raised.value.exit_code == 3
    # Nothing of the diverged epoch was saved: the checkpoints are byte for byte those of epoch 1.
    assert _tree_bytes(os.path.join(workdir, "checkpoints")) == good
    best = read_state(os.path.join(workdir, "checkpoints", checkpoint.BEST, "1", "state"))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(best["params"]))
    records = strict_lines(os.path.join(workdir, "metrics.jsonl"))
    assert records[0]["epoch"] == 1


def test_select_last_keeps_the_last_good_epoch_as_best_when_a_later_one_fails(data_dir, tmp_path):
    # --select=last marks each good epoch, so a run that diverges before its last epoch
    # still has its last good epoch (2, saved when the first fit stopped) as the best.
    workdir = str(tmp_path / "w")
    config = fast_config(data_dir, workdir, epochs=3, stop_after_epoch=2, select="last")
    POISON["on"] = False
    engine.fit(config, loss=spiky)
    POISON.update(on=True, every=1)  # every batch of epoch 3 is bad
    try:
        with pytest.raises(guards.Diverged):
            engine.fit(dataclasses.replace(config, stop_after_epoch=0), loss=spiky)
    finally:
        POISON.update(on=False, every=5)
    best_dir = os.path.join(workdir, "checkpoints", checkpoint.BEST)
    assert sorted(os.listdir(best_dir)) == ["2"]
    best = read_state(os.path.join(best_dir, "2", "state"))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(best["params"]))


def test_skip_drops_and_counts_non_finite_updates(data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    config = fast_config(data_dir, workdir, epochs=1, on_nan="skip")
    POISON["on"] = True
    try:
        results = engine.fit(config, loss=spiky)
    finally:
        POISON["on"] = False
    (record,) = strict_lines(os.path.join(workdir, "metrics.jsonl"))
    skipped = record["train"]["nonfinite_steps"]
    assert 0 < skipped < STEPS_PER_EPOCH
    # optax.apply_if_finite counts the updates it dropped on its own: the two counts agree.
    state = read_state(os.path.join(workdir, "checkpoints", checkpoint.LATEST, "1", "state"))
    assert int(np.asarray(state["opt_state"]["total_notfinite"])) == skipped
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))
    # The poisoned loss is NaN on some test batches too: strict JSON writes null and says so.
    (saved,) = strict_lines(os.path.join(workdir, "results.json"), whole=True)
    if not math.isfinite(results["test"]["loss"]):
        assert saved["test"]["loss"] is None
        assert "test.loss" in saved["nonfinite_values"]
    else:
        assert saved["test"]["loss"] == results["test"]["loss"]


@pytest.mark.slow
def test_lenet_sgd_lr_5_stops_at_the_first_bad_epoch(data_dir, tmp_path):
    """The issue's own command: `--arch=lenet --optimizer=sgd --lr=5`."""
    workdir = str(tmp_path / "w")
    done = subprocess.run(
        [
            *(sys.executable, os.path.join(ROOT, "run.py"), "--arch=lenet", "--optimizer=sgd"),
            *("--lr=5", "--epochs=3", f"--workdir={workdir}", f"--data_dir={data_dir}"),
            "--noprogress",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=600,
    )
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "non-finite" in lines[0] and "learning rate" in lines[0]
    assert " *" not in done.stdout  # no epoch marked best
    for record in strict_lines(os.path.join(workdir, "metrics.jsonl")):
        assert record["epoch"] == 1
    assert not os.path.exists(os.path.join(workdir, "checkpoints", checkpoint.BEST, "1"))
