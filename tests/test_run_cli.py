"""The command line: bad input fails fast with one line and a non-zero exit, touching nothing."""

import hashlib
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
