"""The doctor on deliberately broken small runs (one per rule), and silent on healthy ones.

Each broken run is a real, jitted training run of a few epochs; the configurations were found
by running them (the figures in the comments are what they printed on this project's CPU).
Each run costs about 20 s on the loaded 2-core machine, so only the healthy run and the
non-finite one are in the default suite; `pytest -m slow tests/engine/test_doctor_runs.py` runs
them all (every rule also has a fast test on hand-made records in test_doctor_rules.py).
"""

import itertools
import json
import os

import flax.linen as nn
import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines

from engine.runtime.callbacks.guards import Diverged
from engine.workflows.diagnose import post_hoc
from engine.workflows.fit import fit


def _doctor(data_dir, workdir, **overrides) -> dict:
    """Trains a fast config and returns the doctor's findings by rule (from doctor.json)."""
    fit(fast_config(data_dir, str(workdir), **overrides))
    return {f["rule"]: f for f in read_json(str(workdir), "doctor.json")["findings"]}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """Runs shared by several tests, trained once per module (workdir by name)."""
    root = tmp_path_factory.mktemp("doctor")
    done = {}

    def get(name, **overrides):
        if name not in done:
            done[name] = (_doctor(data_dir, root / name, **overrides), str(root / name))
        return done[name]

    return get


def _healthy(runs):
    return runs("healthy", epochs=3)


def _tiny_wide(runs):
    # 5% of digits to train (90 examples), a 512x512 MLP at a constant lr: val loss
    # 0.4136 -> 0.5047 -> 0.5301 over epochs 6-8 while val accuracy went 0.889 -> 0.911.
    return runs(
        "tiny_wide",
        test_fraction=0.9,
        val_fraction=0.5,
        hidden_sizes=(512, 512),
        epochs=8,
        schedule="constant",
    )


def _sigmoid_deep(runs):
    # Eight sigmoid layers: the first layer's gradient norm was 3.9e-05x the head's.
    return runs("sigmoid_deep", hidden_sizes=(32,) * 8, activation="sigmoid", epochs=3)


def _tiny_lr(runs):
    # Plain SGD at lr 1e-5: the loss moved 2.4544 -> 2.4541 in three epochs.
    return runs("tiny_lr", optimizer="sgd", lr=1e-5, epochs=3)


def test_healthy_run_is_silent(runs):
    findings, workdir = _healthy(runs)
    assert findings == {}
    assert os.path.exists(os.path.join(workdir, "doctor.json"))


@pytest.mark.slow
def test_chance_at_random_and_lr_too_low(runs):
    findings, _ = _tiny_lr(runs)
    assert set(findings) == {"chance", "lr_too_low"}
    assert "at random" in findings["chance"]["saw"]
    assert "ln 10 = 2.3026" in findings["chance"]["saw"]
    assert "peak lr 1e-05" in findings["lr_too_low"]["saw"]


def _write_csv(path, columns: dict) -> str:
    names = list(columns)
    rows = zip(*columns.values())
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(names) + "\n")
        f.writelines(",".join(str(v) for v in row) + "\n" for row in rows)
    return str(path)


@pytest.mark.slow
def test_chance_one_class_on_a_9_to_1_subset(data_dir, tmp_path):
    # 9:1 labels with features that carry no signal: the net predicts the majority class.
    rng = np.random.default_rng(0)
    n = 400
    labels = np.where(np.arange(n) % 10 == 0, "rare", "common")
    path = _write_csv(
        tmp_path / "imbalanced.csv",
        {"a": rng.normal(size=n).round(4), "b": rng.normal(size=n).round(4), "label": labels},
    )
    findings = _doctor(
        data_dir, tmp_path / "w", dataset=f"csv:{path}", target="label", epochs=3, batch_size=32
    )
    assert "chance" in findings
    assert "predicts one class (common)" in findings["chance"]["saw"]
    assert "imbalance" in findings["chance"]["cause"]
    assert "--balance=oversample" in findings["chance"]["remedy"]


NON_FINITE = dict(
    optimizer="momentum",
    lr=1000.0,
    schedule="constant",
    activation="leaky_relu",
    hidden_sizes=(64, 64),
    epochs=2,
)


def test_non_finite_names_the_first_step(data_dir, tmp_path, capsys):
    # Momentum SGD at lr 1000 with leaky ReLUs: gradients overflowed at step 4, and the NaN
    # guard stopped the run there, inside epoch 1: the doctor still reports it.
    with pytest.raises(Diverged):
        fit(fast_config(data_dir, str(tmp_path / "w"), **NON_FINITE))
    findings = {f["rule"]: f for f in read_json(str(tmp_path / "w"), "doctor.json")["findings"]}
    assert set(findings) == {"non_finite"}
    assert "from step 4 (epoch 1)" in findings["non_finite"]["saw"]
    assert "lr 1000.0" in findings["non_finite"]["cause"]
    printed = [line for line in capsys.readouterr().out.splitlines() if "[non_finite]" in line]
    assert len(printed) == 1  # said once, when first seen


@pytest.mark.slow
def test_vanishing_gradients(runs):
    findings, _ = _sigmoid_deep(runs)
    assert "vanishing_gradients" in findings
    assert "across 9 layers" in findings["vanishing_gradients"]["saw"]
    assert "lr_too_low" not in findings  # no gradient arrives: not the learning rate's fault


class HugeInit(nn.Module):
    """Six ReLU layers initialised with N(0, 1) weights (lecun would use std 1/sqrt(fan_in))."""

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape((x.shape[0], -1))
        for _ in range(6):
            x = nn.relu(nn.Dense(64, kernel_init=nn.initializers.normal(1.0))(x))
        return nn.Dense(10)(x)


@pytest.mark.slow
def test_exploding_gradients(data_dir, tmp_path):
    fit(fast_config(data_dir, str(tmp_path / "w"), epochs=1), model=HugeInit())
    findings = {f["rule"]: f for f in read_json(str(tmp_path / "w"), "doctor.json")["findings"]}
    # Measured: every layer's gradient norm near 4,600-5,800 and the head's 52,228; the loss
    # at step 1 in the thousands (ln 10 = 2.3 for small weights).
    assert "exploding_gradients" in findings
    assert "gradient norms up to 5.223e+04 (Dense_6" in findings["exploding_gradients"]["saw"]
    assert "initialisation" in findings and "lr_too_high" not in findings


@pytest.mark.slow
def test_dead_relus(data_dir, tmp_path):
    # Adam at lr 0.5: 94% of the hidden ReLUs never fired on a validation batch.
    findings = _doctor(
        data_dir, tmp_path / "w", lr=0.5, schedule="constant", hidden_sizes=(64,), epochs=2
    )
    assert "dead_relus" in findings
    assert "act/0" in findings["dead_relus"]["saw"]


@pytest.mark.slow
def test_overfitting_and_loss_up_accuracy_up(runs):
    findings, _ = _tiny_wide(runs)
    assert "overfitting" in findings and "evaluation mode" in findings["overfitting"]["saw"]
    assert "loss_up_accuracy_up" in findings
    assert "chance" not in findings and "underfitting" not in findings


@pytest.mark.slow
def test_underfitting(data_dir, tmp_path):
    # Two tanh units for ten classes: accuracy stuck near 0.4 on training data too.
    findings = _doctor(data_dir, tmp_path / "w", hidden_sizes=(2,), activation="tanh", epochs=6)
    assert set(findings) == {"underfitting"}
    assert "both poor" in findings["underfitting"]["saw"]


@pytest.mark.slow
def test_lr_too_high(data_dir, tmp_path):
    # Momentum SGD at lr 1.0: the training loss rose in epoch 3 (0.4036 -> 0.6661 on one
    # machine, 0.6764 on another: a step this large amplifies the float summation order).
    findings = _doctor(
        data_dir,
        tmp_path / "w",
        optimizer="momentum",
        lr=1.0,
        schedule="constant",
        activation="tanh",
        hidden_sizes=(64,),
        epochs=3,
    )
    assert "lr_too_high" in findings and "lr_too_low" not in findings
    # The finding quotes the largest rise of the run's own training loss (metrics.jsonl).
    losses = [r["train"]["loss"] for r in map(json.loads, read_lines(str(tmp_path / "w")))]
    rise = max(b / a for a, b in itertools.pairwise(losses))
    assert rise > 1.5 and f"at most {rise:.2f}x" in findings["lr_too_high"]["saw"]


@pytest.mark.slow
def test_unnormalised_breast_cancer_features(data_dir, tmp_path):
    findings = _doctor(
        data_dir, tmp_path / "w", dataset="breast_cancer", normalize="none", epochs=1
    )
    assert "preprocessing" in findings
    assert "not normalised" in findings["preprocessing"]["saw"]
    assert "--normalize=standard" in findings["preprocessing"]["remedy"]


@pytest.mark.slow
def test_train_val_preprocessing_mismatch(data_dir, tmp_path):
    # The later rows (validation and test under --split=time) were recorded 20x larger.
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] > 0).astype(int)
    x[int(0.6 * n) :] *= 20.0
    path = _write_csv(
        tmp_path / "shifted.csv", {"a": x[:, 0].round(4), "b": x[:, 1].round(4), "y": y}
    )
    findings = _doctor(
        data_dir, tmp_path / "w", dataset=f"csv:{path}", target="y", split="time", epochs=1
    )
    assert "preprocessing" in findings
    assert "validation inputs have" in findings["preprocessing"]["saw"]


@pytest.mark.slow
def test_degradation_across_workdirs_post_hoc(runs):
    _, shallow = _healthy(runs)
    _, deep = _sigmoid_deep(runs)
    lines = post_hoc([shallow, deep])
    assert any("[degradation]" in line and "depth 8" in line for line in lines)
    deep_findings = read_json(deep, "doctor.json")["findings"]
    assert "degradation" in {f["rule"] for f in deep_findings}
    assert "degradation" not in {f["rule"] for f in read_json(shallow, "doctor.json")["findings"]}


@pytest.mark.slow
def test_default_jobs_are_silent(data_dir, tmp_path):
    """`python run.py` (digits, 30 epochs) and the diabetes job: no findings."""
    from engine.config import Config

    for name, overrides in {
        "digits": {},
        "diabetes": {"dataset": "diabetes", "loss": "huber"},
    }.items():
        workdir = str(tmp_path / name)
        fit(Config(data_dir=data_dir, workdir=workdir, progress=False, **overrides))
        assert read_json(workdir, "doctor.json")["findings"] == [], name
