"""The command line: bad input fails fast with one line and a non-zero exit, touching nothing."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, cwd=None, timeout=120):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *flags],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def _tree_digest(path):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(path)):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            h.update(full.encode())
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A real workdir from a one-epoch run, which no failing command may change."""
    root = tmp_path_factory.mktemp("cli")
    workdir, data = str(root / "run"), str(root / "data")
    done = _run(
        f"--workdir={workdir}",
        f"--data_dir={data}",
        "--epochs=1",
        "--hidden_sizes=16",
        "--noprogress",
    )
    assert done.returncode == 0, done.stderr
    assert "test (" in done.stdout
    return workdir, data


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--arch=resnett"], "--arch='resnett' is not valid; choose one of:"),
        (["--loss=hubber"], "--loss='hubber' is not valid; choose one of:"),
        (["--dataset=no_such_dataset_xyz"], "no_such_dataset_xyz"),
        (["--lr=0"], "--lr must be > 0"),
        (["--lr=-0.1"], "--lr must be > 0"),
        (["--batch_size=5000"], "larger than the training split"),
        (["--dataset=diabetes", "--loss=cross_entropy"], "regression dataset"),
        (["--loss=triplet_margin"], "triplet"),
        (["--dataset=diabetes", "--arch=lenet", "--loss=mse"], "needs images"),
        (["--cv_folds=1"], "--cv_folds must be >= 2"),
        (["--fold=2"], "--fold and --cv_refit need --cv_folds=K"),
        (["--schedule=plateau", "--plateau_factor=1.5"], "--plateau_factor must be in (0, 1)"),
        (["--early_stopping=-2"], "--early_stopping must be >= 0"),
        (["--schedule=plateau"], "--schedule='cosine' (now 'plateau')"),
        (["--profile=5"], "--profile=5 must be START:STOP"),
        (["--profile=9:3"], "1 <= START <= STOP"),
        (["--mode=doctor", "--workdir=/no/such/run"], "/no/such/run has no config.json"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(trained_workdir, flags, expected):
    workdir, data = trained_workdir
    before = _tree_digest(workdir)
    done = _run(f"--workdir={workdir}", f"--data_dir={data}", "--epochs=1", *flags)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert _tree_digest(workdir) == before


def test_mode_doctor_reads_a_trained_workdir(trained_workdir):
    workdir, _ = trained_workdir
    done = _run("--mode=doctor", f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{workdir}: ")
    assert os.path.exists(os.path.join(workdir, "doctor.json"))


def test_help_lists_flags_with_registry_choices():
    done = _run("--help")
    assert done.returncode == 0
    for text in ("--arch", "resnet", "--loss", "huber", "--optimizer", "adamw", "--schedule"):
        assert text in done.stdout


# --- Trained workdirs from the command line: eval, predict, --config, plugins ------------------


@pytest.fixture(scope="module")
def momentum_workdir(tmp_path_factory):
    """A workdir trained with optimizer flags whose state a default optimizer cannot restore."""
    root = tmp_path_factory.mktemp("momentum")
    workdir, data = str(root / "run"), str(root / "data")
    flags = ("--optimizer=momentum", "--lr=0.05", "--grad_accum_steps=2", "--clip_grad_norm=1")
    done = _run(f"--workdir={workdir}", f"--data_dir={data}", "--epochs=2", "--noprogress", *flags)
    assert done.returncode == 0, done.stderr
    return workdir, data


def test_eval_takes_the_training_settings_from_the_workdir(momentum_workdir):
    workdir, data = momentum_workdir
    before = _tree_digest(workdir)
    done = _run("--mode=eval", f"--workdir={workdir}", f"--data_dir={data}")  # no optimizer flags
    assert done.returncode == 0, done.stderr
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert f"acc {results['test']['accuracy']:.4f}" in done.stdout.splitlines()[-1]
    assert _tree_digest(workdir) == before


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # A resume whose optimizer state would not fit: refused before config.json is written.
        (["--epochs=3", "--optimizer=adam"], "--optimizer='momentum' (now 'adam')"),
        (["--epochs=3", "--optimizer=momentum", "--clip_grad_norm=1"], "--grad_accum_steps=2"),
        (["--epochs=3", "--optimizer=momentum", "--grad_accum_steps=2"], "--clip_grad_norm=1.0"),
        # Eval and predict may not change how the model was trained.
        (["--mode=eval", "--lr=0.1"], "--lr cannot be changed"),
        (["--mode=predict"], "--mode=predict needs --inputs="),
        (["--mode=predict", "--inputs=npy:/no/such.npy"], "does not exist"),
        (["--mode=eval", "--monitor=val_r2"], "--monitor cannot be changed"),
        (["--config=/no/such/config.json"], "cannot read config file"),
    ],
)
def test_refused_workdir_commands_change_nothing(momentum_workdir, flags, expected):
    workdir, data = momentum_workdir
    before = _tree_digest(workdir)
    done = _run(f"--workdir={workdir}", f"--data_dir={data}", *flags)
    assert done.returncode == 2, done.stdout[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]
    assert _tree_digest(workdir) == before


def test_predict_writes_one_row_per_input(momentum_workdir, tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits

    import engine

    workdir, data = momentum_workdir
    images = load_digits().images[:7].reshape(7, 8, 8, 1)  # raw digits, as the dataset gives
    np.save(tmp_path / "x.npy", images)
    out = tmp_path / "p.csv"
    done = _run(
        "--mode=predict",
        f"--workdir={workdir}",
        f"--data_dir={data}",
        f"--inputs=npy:{tmp_path / 'x.npy'}",
        f"--output={out}",
    )
    assert done.returncode == 0, done.stderr
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "input,prediction,probability" and len(rows) == 8
    predictor = engine.load(workdir, data_dir=data)
    expected = predictor.predict(images)
    for i, row in enumerate(rows[1:]):
        name, predicted, probability = row.split(",")
        assert (name, predicted) == (str(i), str(int(expected[i])))
        assert 0.1 <= float(probability) <= 1.0  # the arg-max of 10 probabilities


def test_config_file_runs_with_its_settings_and_flags_override(momentum_workdir, tmp_path):
    workdir, data = momentum_workdir
    other = str(tmp_path / "again")
    done = _run(
        f"--config={os.path.join(workdir, 'config.json')}",
        f"--workdir={other}",
        "--epochs=1",
        f"--data_dir={data}",
    )
    assert done.returncode == 0, done.stderr
    with open(os.path.join(other, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert (saved["optimizer"], saved["grad_accum_steps"], saved["epochs"]) == ("momentum", 2, 1)


PLUGIN = """
import flax.linen as nn
import jax.numpy as jnp

import architectures
import losses


class Tiny(nn.Module):
    num_classes: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def sum_of_squares(predictions, targets, *, reduction="mean", where=None):
    return losses.mse(predictions, targets, reduction=reduction, where=where) * targets.shape[-1]


architectures.register("tiny", Tiny, needs_image=False, options=("dropout",))
losses.register("sum_of_squares", sum_of_squares, kind="values")
"""


def test_registered_names_work_from_the_command_line_through_plugins(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN, encoding="utf-8")
    workdir, data = str(tmp_path / "run"), str(tmp_path / "data")
    common = (f"--workdir={workdir}", f"--data_dir={data}")
    done = _run(
        *common,
        "--plugins=my_plugin",
        "--arch=tiny",
        "--loss=sum_of_squares",
        "--epochs=2",
        "--noprogress",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "tiny: 650 parameters" in done.stdout  # 64 x 10 + 10, digits' pixels to 10 classes
    evaluated = _run("--mode=eval", *common, cwd=tmp_path)  # the plugin is saved with the run
    assert evaluated.returncode == 0, evaluated.stderr
    missing = _run(*common, "--plugins=no_such_plugin", "--epochs=2", cwd=tmp_path)
    assert missing.returncode == 2 and "--plugins=no_such_plugin" in missing.stderr


def test_search_honours_plugins(tmp_path):
    # search.py parses its flags as run.py does: a plugin's architecture is known to both.
    (tmp_path / "my_plugin.py").write_text(PLUGIN, encoding="utf-8")
    study, data = str(tmp_path / "study"), str(tmp_path / "data")
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "search.py"),
            "--plugins=my_plugin",
            "--arch=tiny",
            f"--study_dir={study}",
            "--trials=1",
            "--space=lr=loguniform(1e-3,1e-2)",
            f"--data_dir={data}",
            "--epochs=1",
            "--noprogress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(study, "best_config.json"), encoding="utf-8") as f:
        assert json.load(f)["arch"] == "tiny"


def test_printed_figures_say_what_the_run_does(momentum_workdir, tmp_path):
    workdir, data = momentum_workdir
    # 18 batches an epoch with an update every 2: 9 updates an epoch (set by --epochs).
    accumulating = _run(
        f"--workdir={tmp_path / 'accumulate'}",
        f"--data_dir={data}",
        "--grad_accum_steps=4",
        "--epochs=2",
        "--noprogress",
    )
    assert accumulating.returncode == 0, accumulating.stderr
    assert "epochs: 2 (set) at 4.5 updates an epoch: 9 updates" in accumulating.stdout
    # Evaluation prints no training plan; a --config file's epochs are labelled as set too.
    evaluated = _run("--mode=eval", f"--workdir={workdir}", f"--data_dir={data}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert not any(line.startswith("epochs:") for line in evaluated.stdout.splitlines())
    again = _run(
        f"--config={os.path.join(workdir, 'config.json')}",
        f"--workdir={tmp_path / 'from_config'}",
        "--epochs=1",
        "--noprogress",
    )
    assert again.returncode == 0, again.stderr
    assert "epochs: 1 (set) at 9 updates an epoch: 9 updates" in again.stdout
