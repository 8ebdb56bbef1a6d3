"""The doctor on deliberately broken small runs: each rule fires on a real run, by default.

Each broken run is a real, jitted training run of a small MLP for a few epochs (most on digits,
through `fast_config`); the configurations were found by running them. Every test checks the
finding's numbers against the run's own records (`metrics.jsonl`, the context in
`doctor.json`, the NaN guard's own count of steps), not figures of one machine: a doctor that
quoted numbers it did not read, or stayed silent, fails. Runs shared by several tests are
trained once per worker through the module's `runs` fixture. Only the default jobs' 30-epoch
runs (minutes) are slow: `pytest -m slow tests/engine/test_doctor_runs.py`.

Rules and runs: `non_finite` (momentum SGD at lr 1000), `preprocessing` (raw breast_cancer
features; validation rows 20x the training rows), `initialisation` and `exploding_gradients`
(N(0, 1) weights), `chance` (at random: SGD at lr 1e-5; one class: eight sigmoid layers;
imbalance: a 9:1 CSV without signal), `vanishing_gradients` (eight sigmoid layers),
`dead_relus` and the jump form of `lr_too_high` (Adam at lr 0.5), the rising form of
`lr_too_high` (momentum SGD at lr 1), `lr_too_low` (SGD at lr 1e-5), `overfitting` and
`loss_up_accuracy_up` (90 training rows, a 512x512 MLP), `underfitting` (two tanh units) and
`degradation` (eight sigmoid layers against one ReLU layer, post hoc).
"""

import itertools
import json
import math
import os
import re

import flax.linen as nn
import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines

from engine.runtime.callbacks.guards import Diverged
from engine.workflows.diagnose import post_hoc
from engine.workflows.fit import fit

# ln 10 = 2.302585...: the cross-entropy of a uniform guess over 10 classes (digits).
LN_10 = math.log(10)


def _doctor(data_dir, workdir, **overrides) -> dict:
    """Trains a fast config and returns the doctor's findings by rule (from doctor.json)."""
    fit(fast_config(data_dir, str(workdir), **overrides))
    return _findings(workdir)


def _findings(workdir) -> dict:
    return {f["rule"]: f for f in read_json(str(workdir), "doctor.json")["findings"]}


def _records(workdir) -> list[dict]:
    """The run's epoch records as it logged them (metrics.jsonl)."""
    return [r for r in map(json.loads, read_lines(str(workdir))) if "epoch" in r]


def _context(workdir) -> dict:
    """The plain values the run gave the doctor (doctor.json's context)."""
    return read_json(str(workdir), "doctor.json")["context"]


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


def _sigmoid_deep(runs):
    # Eight sigmoid layers (lecun init, Adam at 1e-2): the first layer's gradient norm was
    # 4.5e-04x the head's in epoch 3, and every validation example went to one class.
    return runs("sigmoid_deep", hidden_sizes=(32,) * 8, activation="sigmoid", epochs=3)


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


def _tiny_lr(runs):
    # Plain SGD at lr 1e-5: the loss moved 2.4544 -> 2.4541 in three epochs.
    return runs("tiny_lr", optimizer="sgd", lr=1e-5, epochs=3)


def _adam_lr_half(runs):
    # Adam at lr 0.5, one hidden ReLU layer: the first epoch's loss 22.7 (ln 10 = 2.3), and
    # 94-97% of the hidden ReLUs never fired on a validation batch.
    return runs("adam_lr_half", lr=0.5, schedule="constant", hidden_sizes=(64,), epochs=2)


def test_healthy_run_is_silent(runs):
    findings, workdir = _healthy(runs)
    assert findings == {}
    assert os.path.exists(os.path.join(workdir, "doctor.json"))


def test_vanishing_gradients_and_chance_on_one_class(runs):
    findings, workdir = _sigmoid_deep(runs)
    last, ctx = _records(workdir)[-1], _context(workdir)
    assert "vanishing_gradients" in findings
    assert "lr_too_low" not in findings  # no gradient arrives: not the learning rate's fault
    # The ratio quoted is the last epoch's first-layer norm over the head's, as logged.
    layers = last["train"]["optim"]["layers"]
    first, head = ctx["layers"][0], ctx["layers"][-1]
    assert (first, head, len(ctx["layers"])) == ("dense0", "head", 9)  # 8 hidden + the head
    ratio = layers[first] / layers[head]
    assert ratio <= 1e-3
    assert (
        f"gradient norm {layers[first]:.3g} at the first layer (dense0) vs {layers[head]:.3g} at "
        f"the last (head): {ratio:.2g}x across 9 layers"
    ) in findings["vanishing_gradients"]["saw"]
    # Nothing learned: validation accuracy and loss as logged, one class for the probe's share.
    chance = findings["chance"]
    acc, share = last["val"]["accuracy"], last["probe"]["top_prediction_share"]
    assert f"validation accuracy {acc:.4f}" in chance["saw"]
    assert f"loss {last['val']['loss']:.4f} vs ln 10 = {LN_10:.4f}" in chance["saw"]
    top = ctx["class_names"][last["probe"]["top_prediction"]]
    assert f"predicts one class ({top}) for {share:.0%}" in chance["saw"] and share >= 0.9
    # Digits' classes are balanced (majority share near 0.1): a collapse, not an imbalance.
    assert ctx["majority_share"] < 0.7 and "collapsed onto one class" in chance["cause"]


def test_degradation_across_workdirs_post_hoc(runs):
    _, shallow = _healthy(runs)
    _, deep = _sigmoid_deep(runs)
    lines = post_hoc([shallow, deep])
    found = [line for line in lines if "[degradation]" in line]
    assert len(found) == 1
    # The best train (evaluation mode) and validation accuracy of each run's own records.
    best = {
        w: [max(r[s]["accuracy"] for r in _records(w)) for s in ("train_eval", "val")]
        for w in (shallow, deep)
    }
    (ts, vs), (td, vd) = best[shallow], best[deep]
    assert (
        f"mlp at depth 8 reaches best training accuracy {td:.4f} and validation {vd:.4f}, "
        f"below depth 1's {ts:.4f} and {vs:.4f} ({shallow})"
    ) in found[0]
    deep_findings = _findings(deep)
    assert "degradation" in deep_findings
    assert "degradation" not in _findings(shallow)


def test_chance_at_random_and_lr_too_low(runs):
    findings, workdir = _tiny_lr(runs)
    assert set(findings) == {"chance", "lr_too_low"}
    records = _records(workdir)
    last = records[-1]
    chance = findings["chance"]["saw"]
    assert f"validation accuracy {last['val']['accuracy']:.4f}" in chance
    assert f"loss {last['val']['loss']:.4f} vs ln 10 = {LN_10:.4f}" in chance
    assert "at random" in chance and last["probe"]["top_prediction_share"] < 0.9
    # The training pass's loss of the first and last epochs, as logged.
    losses = [r["train"]["loss"] for r in records]
    moved = (losses[0] - losses[-1]) / losses[0]
    assert abs(moved) < 0.05
    assert (
        f"barely moved over 3 epochs ({losses[0]:.4f} -> {losses[-1]:.4f}, {moved:.1%}) at "
        "peak lr 1e-05"
    ) in findings["lr_too_low"]["saw"]


def _write_csv(path, columns: dict) -> str:
    names = list(columns)
    rows = zip(*columns.values())
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(names) + "\n")
        f.writelines(",".join(str(v) for v in row) + "\n" for row in rows)
    return str(path)


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
    last, ctx = _records(tmp_path / "w")[-1], _context(tmp_path / "w")
    chance = findings["chance"]
    # The validation split's majority share: 9:1 in the whole file (every tenth row is rare).
    majority = ctx["majority_share"]
    assert 0.8 <= majority <= 1.0
    assert f"majority class share {majority:.4f}" in chance["saw"]
    assert f"validation accuracy {last['val']['accuracy']:.4f}" in chance["saw"]
    share = last["probe"]["top_prediction_share"]
    assert ctx["class_names"][last["probe"]["top_prediction"]] == "common"
    assert f"predicts one class (common) for {share:.0%}" in chance["saw"]
    assert f"the majority class is {majority:.0%} of the data" in chance["cause"]
    assert "--balance=oversample" in chance["remedy"]


NON_FINITE = dict(
    optimizer="momentum",
    lr=1000.0,
    schedule="constant",
    activation="leaky_relu",
    hidden_sizes=(64, 64),
    epochs=2,
)


def test_non_finite_names_the_first_step(data_dir, tmp_path, capsys):
    # Momentum SGD at lr 1000 with leaky ReLUs: gradients overflowed at step 4 here, and the
    # NaN guard stopped the run there, inside epoch 1: the doctor still reports it.
    with pytest.raises(Diverged) as stopped:
        fit(fast_config(data_dir, str(tmp_path / "w"), **NON_FINITE))
    findings = _findings(tmp_path / "w")
    assert set(findings) == {"non_finite"}
    # The guard counts the state's good steps; the doctor reads the step's own markers: the
    # two must name the same first bad step.
    step, epoch = map(int, re.search(r"at step (\d+) \(epoch (\d+)\)", str(stopped.value)).groups())
    assert f"from step {step} (epoch {epoch})" in findings["non_finite"]["saw"]
    assert "lr 1000.0" in findings["non_finite"]["cause"]
    printed = [line for line in capsys.readouterr().out.splitlines() if "[non_finite]" in line]
    assert len(printed) == 1  # said once, when first seen


class HugeInit(nn.Module):
    """Six ReLU layers initialised with N(0, 1) weights (lecun would use std 1/sqrt(fan_in))."""

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape((x.shape[0], -1))
        for _ in range(6):
            x = nn.relu(nn.Dense(64, kernel_init=nn.initializers.normal(1.0))(x))
        return nn.Dense(10)(x)


def test_exploding_gradients_and_initialisation(data_dir, tmp_path):
    # Measured: every layer's gradient norm near 4,600-5,800 and the head's 52,228; the loss
    # before any update 30,931 (ln 10 = 2.3 for small weights).
    fit(fast_config(data_dir, str(tmp_path / "w"), epochs=1), model=HugeInit())
    findings, record = _findings(tmp_path / "w"), _records(tmp_path / "w")[0]
    assert "lr_too_high" not in findings  # the loss started high: the weights, not the steps
    layers = record["train"]["optim"]["layers"]
    name, top = max(layers.items(), key=lambda kv: kv[1])
    assert top >= 1e3
    assert f"gradient norms up to {top:.4g} ({name};" in findings["exploding_gradients"]["saw"]
    start = record["train"]["optim"]["initial_loss"]
    assert start >= 3 * LN_10
    assert (
        f"the loss before any update was {start:.4g}, far above ln 10 = {LN_10:.4f}"
        in findings["initialisation"]["saw"]
    )


def test_dead_relus(runs):
    findings, workdir = _adam_lr_half(runs)
    dead = _records(workdir)[-1]["probe"]["dead_units"]
    assert list(dead) == ["act/0"] and dead["act/0"] >= 0.5  # the one hidden ReLU layer
    assert (
        f"1 of 1 ReLU layers have at least half their units never active on a validation batch "
        f"(act/0 {dead['act/0']:.0%})"
    ) in findings["dead_relus"]["saw"]


def test_lr_too_high_when_the_loss_jumps_above_chance(runs):
    findings, workdir = _adam_lr_half(runs)
    records = _records(workdir)
    # The highest training-pass loss of the run, against the untrained level it started at.
    worst = max(records, key=lambda r: r["train"]["loss"])
    assert records[0]["train"]["optim"]["initial_loss"] < 3 * LN_10 <= worst["train"]["loss"]
    assert (
        f"training loss {worst['train']['loss']:.4g} in epoch {worst['epoch']} is far above the "
        f"untrained level ln 10 = {LN_10:.4f}: it jumped up (lr 0.5)"
    ) in findings["lr_too_high"]["saw"]


def test_lr_too_high_when_the_loss_rises(data_dir, tmp_path):
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
    losses = [r["train"]["loss"] for r in _records(tmp_path / "w")]
    rise, at = max((b / a, i + 1) for i, (a, b) in enumerate(itertools.pairwise(losses)))
    assert rise > 1.5
    assert (
        f"at most {rise:.2f}x (epoch {at + 1}: {losses[at - 1]:.4f} -> {losses[at]:.4f}) at lr 1.0"
    ) in findings["lr_too_high"]["saw"]


def test_overfitting_and_loss_up_accuracy_up(runs):
    findings, workdir = _tiny_wide(runs)
    assert "chance" not in findings and "underfitting" not in findings
    records = _records(workdir)
    last = records[-1]
    # Validation against the training subset measured in evaluation mode, as logged; the
    # gap of the last three epochs.
    t, v = last["train_eval"]["loss"], last["val"]["loss"]
    gaps = [r["val"]["loss"] - r["train_eval"]["loss"] for r in records[-3:]]
    assert v >= 2 * t and gaps[-1] > gaps[0]
    assert (
        f"validation loss {v:.4f} vs training loss {t:.4f} (evaluation mode, same measurement), "
        f"gap widening {gaps[0]:.4f} -> {gaps[-1]:.4f} over 3 epochs"
    ) in findings["overfitting"]["saw"]
    losses = [r["val"]["loss"] for r in records[-3:]]
    accs = [r["val"]["accuracy"] for r in records[-3:]]
    assert losses[0] < losses[1] < losses[2] and accs[-1] > accs[0]
    assert (
        f"validation loss rose {losses[0]:.4f} -> {losses[-1]:.4f} over 2 epochs while "
        f"validation accuracy rose {accs[0]:.4f} -> {accs[-1]:.4f}"
    ) in findings["loss_up_accuracy_up"]["saw"]


def test_underfitting(data_dir, tmp_path):
    # Two tanh units for ten classes: accuracy stuck near 0.4 on training data too.
    findings = _doctor(data_dir, tmp_path / "w", hidden_sizes=(2,), activation="tanh", epochs=6)
    assert set(findings) == {"underfitting"}
    records = _records(tmp_path / "w")
    ta, va = records[-1]["train_eval"]["accuracy"], records[-1]["val"]["accuracy"]
    assert max(ta, va) < 0.9  # a 32-unit ReLU layer reaches about 0.94 in 3 epochs (healthy)
    t_old, t = records[-3]["train_eval"]["loss"], records[-1]["train_eval"]["loss"]
    assert (
        f"training accuracy {ta:.4f} (evaluation mode) and validation {va:.4f} both poor; "
        f"training loss flat over the last 3 epochs ({t_old:.4f} -> {t:.4f})"
    ) in findings["underfitting"]["saw"]


def test_unnormalised_breast_cancer_features(data_dir, tmp_path):
    from sklearn.datasets import load_breast_cancer

    findings = _doctor(
        data_dir, tmp_path / "w", dataset="breast_cancer", normalize="none", epochs=1
    )
    train = _context(tmp_path / "w")["input_stats"]["train"]
    # The raw features as scikit-learn ships them: the widest (worst area) has a std near 569.
    raw = load_breast_cancer().data.std(axis=0).max()
    assert raw / 2 < train["max_std"] < 2 * raw
    assert (
        f"training inputs have mean {train['mean']:.4g} and std {train['std']:.4g} (per feature "
        f"up to {train['max_std']:.4g})"
    ) in findings["preprocessing"]["saw"]
    assert "--normalize=standard" in findings["preprocessing"]["remedy"]


def test_train_val_preprocessing_mismatch(data_dir, tmp_path):
    # The rows after the training split (validation and test under --split=time: the first
    # 189 of 300 train, test_fraction 0.3 and val_fraction 0.1 of the rest) recorded 20x larger.
    rng = np.random.default_rng(0)
    n, n_train, n_val = 300, 189, 21
    x = rng.normal(size=(n, 2)).round(4)
    y = (x[:, 0] > 0).astype(int)
    x[n_train:] *= 20.0
    path = _write_csv(tmp_path / "shifted.csv", {"a": x[:, 0], "b": x[:, 1], "y": y})
    findings = _doctor(
        data_dir, tmp_path / "w", dataset=f"csv:{path}", target="y", split="time", epochs=1
    )
    stats = _context(tmp_path / "w")["input_stats"]
    tr, va = stats["train"], stats["val"]
    # Validation standardised with the training rows' per-feature mean and std, from the CSV.
    val = (x[n_train : n_train + n_val] - x[:n_train].mean(0)) / x[:n_train].std(0)
    assert va["std"] == pytest.approx(val.std(), rel=1e-3)
    assert tr["std"] == pytest.approx(1.0, rel=1e-3)
    ratio = va["std"] / tr["std"]
    shift = abs(va["mean"] - tr["mean"]) / tr["std"]
    assert (
        f"validation inputs have mean {va['mean']:.4g} and std {va['std']:.4g} vs training "
        f"{tr['mean']:.4g} and {tr['std']:.4g} (shift {shift:.2f} training stds, spread ratio "
        f"{ratio:.2f})"
    ) in findings["preprocessing"]["saw"]


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
