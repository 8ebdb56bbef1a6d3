"""The data features through the real orchestrator (`engine.fit`), offline.

Catalog datasets from generated TFDS files, image folders, CSV tables, time splits, class
balancing, on-device augmentation and the streaming input path, each driven the way a user's
run drives them: a `Config` handed to `engine.fit` (or, to look inside a
run, to `engine.workflows.build.build`, which is what it calls first).
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from catalog_fixtures import prepare
from engine_helpers import fast_config, read_lines, records_without_timings
from folder_fixtures import make_digits_folder

from engine.data import catalog, class_counts
from engine.programs import optim, steps
from engine.programs import state as state_lib
from engine.runtime.program import summing_eval
from engine.workflows import setup
from engine.workflows.fit import fit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CATALOG_SIZES = {"cifar10": {"train": 300, "test": 100}, "mnist": {"train": 200, "test": 60}}
CATALOG_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1)}


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    """A data_dir holding cifar10 and mnist prepared from generated, learnable images."""
    data_dir = str(tmp_path_factory.mktemp("catalog_engine"))
    for name, sizes in CATALOG_SIZES.items():
        prepare(name, data_dir, CATALOG_SHAPES[name], sizes, learnable=True)
    return data_dir


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to download or prepare a catalog dataset fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to prepare a dataset that is already prepared")

    monkeypatch.setattr(catalog, "_prepare", refuse)
    monkeypatch.setattr(catalog, "_online", lambda: False)


def _build(config):
    """The run `engine.fit` would build for `config` (its data, model, task and loaders)."""
    return setup.prepare(config).run


def _rows(source):
    """All `(inputs, targets)` of a source, in its order."""
    return source.get(np.arange(len(source)))


def _epoch_arrays(loader, epoch=0):
    """A loader's whole epoch as concatenated host arrays (inputs, targets, mask)."""
    batches = list(loader.epoch(epoch))
    return tuple(np.concatenate([b[k] for b in batches]) for k in ("inputs", "targets", "mask"))


# --- 1. TFDS catalog datasets ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "arch"), [("cifar10", "mlp"), ("mnist", "lenet")])
def test_catalog_dataset_trains_and_tests_on_its_own_test_split(
    catalog_dir, offline, tmp_path, capsys, name, arch
):
    sizes = CATALOG_SIZES[name]
    config = fast_config(
        catalog_dir, str(tmp_path / name), dataset=name, arch=arch, epochs=2, batch_size=32
    )
    results = fit(config)
    out = capsys.readouterr().out
    # The dataset's own test split, every example once; validation is 10% of its train split
    # (round(0.1 * n)), as it has no validation split of its own.
    assert results["test"]["count"] == sizes["test"]
    val = round(0.1 * sizes["train"])
    shape = CATALOG_SHAPES[name]
    assert f"input {shape}) split train {sizes['train'] - val} / val {val} / " in out
    assert f"test {sizes['test']}" in out
    # The images show their labels (catalog_fixtures.examples), so only images that reach the
    # model with their own labels, in train and test alike, beat chance (0.1) by this much.
    assert results["test"]["accuracy"] > 0.6


# --- 2. Image folders ----------------------------------------------------------------------------

# A validation split of 30% of the rest (377 examples): the tested checkpoint is the first epoch
# of top validation accuracy, and on the default 126 an early, undertrained epoch often tied for
# the top (test accuracies 0.944..0.985 across seeds and variants). With these flags, seeds 0-5
# gave folder minus digits accuracies of -0.009..+0.011 (grey and colour).
FOLDER_FLAGS = dict(arch="lenet", epochs=10, lr=1e-2, val_fraction=0.3)


@pytest.fixture(scope="module")
def digits_lenet(data_dir, tmp_path_factory):
    """Test accuracy of LeNet on the built-in digits with FOLDER_FLAGS."""
    workdir = str(tmp_path_factory.mktemp("digits_lenet"))
    return fit(fast_config(data_dir, workdir, **FOLDER_FLAGS))["test"]


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_folder_of_digit_pngs_trains_lenet_as_well_as_builtin_digits(
    data_dir, digits_lenet, tmp_path, capsys, colour
):
    folder = make_digits_folder(tmp_path / "图像", colour=colour, chinese=True)
    config = fast_config(
        data_dir, str(tmp_path / "run"), dataset=f"folder:{folder.root}", **FOLDER_FLAGS
    )
    results = fit(config)["test"]
    out = capsys.readouterr().out
    # The class list with counts is printed, by the folders' (Chinese) names.
    assert "training classes (10): 类别_0: " in out
    assert f"input (8, 8, {3 if colour else 1})" in out
    # Same 1797 images, same split fractions: round(0.3 * 1797) = 539 test examples.
    assert results["count"] == digits_lenet["count"] == 539
    # The folder stores round(v * 255 / 16) (an affine map of digits' 0..16, up to rounding),
    # which standard normalisation undoes; the issue asks for digits' accuracy within 2 points.
    assert results["accuracy"] >= digits_lenet["accuracy"] - 0.02


# --- 3. CSV regression ---------------------------------------------------------------------------

WEIGHTS, BIAS, NOISE = np.array([1.5, -2.0, 0.5, 3.0]), 0.7, 0.05


def _linear_csv(path, n=400, seed=0):
    """A table x0..x3, y with y = x @ WEIGHTS + BIAS + N(0, NOISE^2); returns its y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(WEIGHTS)))
    y = x @ WEIGHTS + BIAS + NOISE * rng.normal(size=n)
    header = ",".join([*(f"x{i}" for i in range(len(WEIGHTS))), "y"])
    rows = [",".join(f"{v:.6f}" for v in (*xi, yi)) for xi, yi in zip(x, y)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return y


def test_csv_linear_regression_reaches_near_zero_error(data_dir, tmp_path):
    path = tmp_path / "linear.csv"
    y = _linear_csv(path)
    config = fast_config(
        data_dir,
        str(tmp_path / "run"),
        dataset=f"csv:{path}",
        target="y",
        arch="mlp",
        loss="mse",
        hidden_sizes=(64,),
        epochs=10,
        lr=1e-2,
        batch_size=8,
    )
    test = fit(config)["test"]
    assert test["count"] == round(0.3 * 400)
    # std(y) is about |WEIGHTS| = 3.9 and the noise alone leaves RMSE 0.05 (R^2 0.9998): the
    # ReLU net's piecewise-linear fit must stay within 5% of y's spread (R^2 > 0.995).
    assert test["r2"] > 0.995
    assert test["rmse"] < 0.05 * y.std()


def test_csv_missing_target_is_one_line_listing_the_columns(tmp_path):
    path = tmp_path / "linear.csv"
    _linear_csv(path, n=20)
    workdir = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "run.py"),
            f"--dataset=csv:{path}",
            "--target=price",
            f"--data_dir={tmp_path / 'data'}",
            f"--workdir={workdir}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "'price'" in lines[0]
    assert "x0, x1, x2, x3, y" in lines[0]
    assert not workdir.exists()


# --- 4. Time split -------------------------------------------------------------------------------


def _time_csv(path, n=200, seed=0):
    """A time-ordered table: t = 0..n-1 in file order, a noisy feature, a target of both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.01 * np.arange(n) + x
    lines = ["t,x,y", *(f"{t},{xi:.6f},{yi:.6f}" for t, (xi, yi) in enumerate(zip(x, y)))]
    path.write_text("\n".join(lines) + "\n")


def test_time_split_tests_only_rows_after_every_training_row(data_dir, tmp_path):
    path = tmp_path / "series.csv"
    _time_csv(path)
    config = fast_config(
        data_dir, str(tmp_path / "run"), dataset=f"csv:{path}", target="y", loss="mse"
    )
    t = 0  # column index of t among the features (t, x)

    def times(loader):
        inputs, _, mask = _epoch_arrays(loader)
        return inputs[mask, t]

    run = _build(dataclasses.replace(config, split="time"))
    assert run.splits.info.feature_names[t] == "t"
    train, val, test = times(run.train_loader), times(run.val_loader), times(run.test_loader)
    # round(0.3 * 200) = 60 test rows, round(0.1 * 140) = 14 validation rows: the last ones.
    np.testing.assert_array_equal(np.sort(test), np.arange(140, 200))
    np.testing.assert_array_equal(np.sort(val), np.arange(126, 140))
    np.testing.assert_array_equal(np.sort(train), np.arange(126))
    assert train.max() < val.min() and val.max() < test.min()
    # The default random split does mix them (so the check above can fail).
    run = _build(config)
    assert times(run.train_loader).max() > times(run.test_loader).min()


# --- 5. Class imbalance --------------------------------------------------------------------------

IMBALANCED = {"a": 240, "b": 60, "c": 30}  # largest / smallest = 8 > 3


def _imbalanced_csv(path, seed=0):
    """Three well-separated classes (means 0, 3, 6 on two features), 8:2:1, shuffled rows."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[k] * n for k, n in IMBALANCED.items()])
    rng.shuffle(labels)
    centre = {k: 3.0 * i for i, k in enumerate(IMBALANCED)}
    lines = ["f1,f2,label"]
    for k in labels:
        f1, f2 = centre[k] + rng.normal(size=2)
        lines.append(f"{f1:.6f},{f2:.6f},{k}")
    path.write_text("\n".join(lines) + "\n")


def test_oversampling_balances_training_only(data_dir, tmp_path):
    path = tmp_path / "imbalanced.csv"
    _imbalanced_csv(path)
    config = fast_config(data_dir, str(tmp_path / "run"), dataset=f"csv:{path}", target="label")
    plain = _build(config)
    over = _build(dataclasses.replace(config, balance="oversample"))
    counts = class_counts(plain.splits.train, 3)
    assert counts.max() > 3 * counts.min()
    # Training: every class at the largest class's count, every row one of the training rows.
    assert class_counts(over.train_loader.source, 3).tolist() == [counts.max()] * 3
    assert over.train_loader.num_examples == 3 * counts.max()
    train_rows = {r.tobytes() for r in _rows(plain.splits.train)[0]}
    assert {r.tobytes() for r in _rows(over.train_loader.source)[0]} == train_rows
    # Validation and test: the very same batches as without balancing.
    for name in ("val_loader", "test_loader"):
        for a, b in zip(_epoch_arrays(getattr(plain, name)), _epoch_arrays(getattr(over, name))):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flags", [{"balance": "oversample"}, {"class_weights": "balanced"}])
def test_imbalanced_run_prints_distribution_and_warning_and_trains(
    data_dir, tmp_path, capsys, flags
):
    path = tmp_path / "imbalanced.csv"
    _imbalanced_csv(path)
    workdir = str(tmp_path / "run")
    config = fast_config(
        data_dir, workdir, dataset=f"csv:{path}", target="label", epochs=15, batch_size=32, **flags
    )
    results = fit(config)
    out = capsys.readouterr().out
    # 330 rows: test round(0.3 * 330) = 99, val round(0.1 * 231) = 23, train 208, stratified
    # (each class within one row of its share, largest remainders first): test a 72, b 18, c 9,
    # val a 17, b 4, c 2, train a 151, b 38, c 19; 151 / 19 = 7.9 > 3.
    assert "training classes (3): a: 151, b: 38, c: 19" in out
    warning = r"warning: class imbalance: largest class \S+ has 151 examples, smallest \S+ has 19 "
    assert re.search(warning + r"\(7\.9x\)", out)
    if "balance" in flags:
        assert "oversampled training split: 453 examples" in out  # 3 x 151
    assert results["test"]["count"] == 99
    # It learns the separated classes: the last epoch classifies validation far better than
    # always answering the majority class (17 of 23). (The last epoch, not the reported best
    # checkpoint: that is picked on 23 examples.)
    last = json.loads(read_lines(workdir)[-1])
    assert last["val"]["accuracy"] > 0.9 and last["train"]["accuracy"] > 0.9


# --- 6. Augmentation -----------------------------------------------------------------------------


def test_augmentation_changes_training_inputs_never_evaluation(data_dir, tmp_path):
    config = fast_config(data_dir, str(tmp_path / "run"), augment="standard")  # digits, MLP
    run = _build(config)
    cfg = run.step_config
    plain_cfg = dataclasses.replace(cfg, augment=None)
    sample = np.zeros((1, *run.input_shape), np.float32)
    tx = optim.make(optim.settings(config), len(run.train_loader))
    state = state_lib.create(
        run.model, tx, rng=jax.random.PRNGKey(0), sample_input=sample, norm=run.norm
    )
    batch = next(run.train_loader.epoch(0))

    prep = jax.jit(lambda s, x, k: steps.preprocess(s.norm, x, cfg, k))
    prep_eval = jax.jit(lambda s, x: steps.preprocess(s.norm, x, cfg))
    prep_plain = jax.jit(lambda s, x: steps.preprocess(s.norm, x, plain_cfg))
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    evaluated = np.asarray(prep_eval(state, batch["inputs"]))
    # Without a key (evaluation) the configured augmentation is not applied at all.
    np.testing.assert_array_equal(evaluated, np.asarray(prep_plain(state, batch["inputs"])))
    a1, a1_again, a2 = (np.asarray(prep(state, batch["inputs"], k)) for k in (k1, k1, k2))
    assert a1.shape == evaluated.shape
    assert not np.array_equal(a1, evaluated) and not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, a1_again)  # a pure function of the key

    # The steps: the MLP has no dropout, so augmentation is the train step's only randomness.
    # Two states differing only in their key train differently with augmentation, identically
    # without; evaluation gives identical sums whatever the key and the augment setting.
    s1, s2 = state, state.replace(rng=jax.random.PRNGKey(99))
    for step_cfg, differ in ((cfg, True), (plain_cfg, False)):
        train_step = jax.jit(steps.make_train_step(run.model, tx, run.task, step_cfg))
        m1, m2 = (train_step(s, batch)[1]["loss_sum"] for s in (s1, s2))
        assert (float(m1) != float(m2)) == differ
    made = [
        summing_eval(steps.eval_metrics(run.model, run.task, c), None) for c in (cfg, plain_cfg)
    ]
    zeros = made[0][1](state, batch)
    eval_steps = [jax.jit(eval_step) for eval_step, _ in made]
    totals = [eval_step(s, batch, zeros) for eval_step in eval_steps for s in (s1, s2)]
    for other in totals[1:]:
        for key in totals[0]:
            np.testing.assert_array_equal(np.asarray(other[key]), np.asarray(totals[0][key]))


def test_augmented_runs_are_deterministic(data_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        workdir = str(tmp_path / name)
        fit(fast_config(data_dir, workdir, augment="standard", epochs=2))
        runs.append(records_without_timings(workdir))
    assert len(runs[0]) == 2
    assert runs[0] == runs[1]


# --- 7. Streaming and in-memory ------------------------------------------------------------------


def test_streaming_and_in_memory_runs_are_identical(catalog_dir, offline, tmp_path):
    results, lines = {}, {}
    for streaming in ("stream", "memory"):
        workdir = str(tmp_path / streaming)
        config = fast_config(
            catalog_dir,
            workdir,
            dataset="cifar10",
            streaming=streaming,
            num_workers=1,
            epochs=1,
            batch_size=32,
        )
        run = _build(config)
        loaders = (run.train_loader, run.val_loader, run.test_loader)
        assert all(loader.streaming == (streaming == "stream") for loader in loaders)
        results[streaming] = fit(config)["test"]
        lines[streaming] = records_without_timings(workdir)
    assert len(lines["stream"]) == 1
    assert lines["stream"] == lines["memory"]
    assert results["stream"] == results["memory"]
