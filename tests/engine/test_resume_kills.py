"""Interrupted runs end equal to uninterrupted ones: SIGTERM/SIGINT mid-epoch, SIGKILL anywhere."""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import fast_config

import engine
from benchmarks import kill_resume


def _config(data_dir, workdir):
    """The Config of `kill_resume.FLAGS` (the subprocess runs' flags), for in-process runs."""
    return fast_config(
        data_dir,
        workdir,
        hidden_sizes=(64,),
        batch_size=8,
        epochs=3,
        lr=0.01,
        checkpoint_every=7,
        max_to_keep=2,
    )


def _start_and_signal(workdir, data_dir, signums, extra=(), flags=kill_resume.FLAGS):
    """Starts the run, sends `signums` once it has saved inside an epoch; returns the result."""
    proc = subprocess.Popen(
        kill_resume.command(workdir, data_dir, extra, flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    mid = os.path.join(workdir, "checkpoints", "mid_epoch")
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.isdir(mid) and any(n.isdigit() for n in os.listdir(mid)):
            break
        time.sleep(0.005)
    for signum in signums:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_sigterm_mid_epoch_exits_143_and_the_rerun_is_bit_identical(data_dir, tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    code, out, err = _start_and_signal(killed, data_dir, [signal.SIGTERM])
    assert code == 143, err
    assert "stopped by SIGTERM after step" in out and "run the same command again" in out
    assert "Traceback" not in err
    engine.fit(_config(data_dir, killed))  # the rerun: continues the epoch where it stopped
    engine.fit(_config(data_dir, reference))
    assert kill_resume.differences(reference, killed) == []


@pytest.mark.slow  # the supervised case above covers the mechanism by default
def test_a_distilled_run_resumes_bit_identically_after_sigterm(data_dir, tmp_path):
    """The distillation program (a frozen teacher in the state) resumes like the supervised one."""
    teacher = str(tmp_path / "teacher")
    engine.fit(fast_config(data_dir, teacher, epochs=1))
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    code, _, err = _start_and_signal(killed, data_dir, [signal.SIGTERM], (f"--teacher={teacher}",))
    assert code == 143, err
    engine.fit(dataclasses.replace(_config(data_dir, killed), teacher=teacher))
    engine.fit(dataclasses.replace(_config(data_dir, reference), teacher=teacher))
    assert kill_resume.differences(reference, killed) == []
    assert "frozen" in str(kill_resume.final_state(killed).keys())


# A step that never ends: only a second Ctrl-C can stop the process (a first one waits for the
# step boundary). The handlers are the real ones; the fit is reduced to what they read.
NEVER_ENDING_STEP = """
import os, signal, sys, time, types
sys.path.insert(0, sys.argv[1])
from engine.runtime.callbacks.midepoch import Preemption
fit = types.SimpleNamespace(plan=types.SimpleNamespace(num_processes=1))
Preemption(saver=None).on_fit_start(fit)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.5)
print("first SIGINT handled; still in the step", flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(60)
print("not reached", flush=True)
"""


def test_a_second_sigint_exits_at_once():
    root = os.path.dirname(os.path.dirname(kill_resume.__file__))
    done = subprocess.run(
        [sys.executable, "-c", NEVER_ENDING_STEP, root], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130
    assert done.stdout.splitlines() == ["first SIGINT handled; still in the step"]
    assert "SIGINT: saving at the next step boundary" in done.stderr
    assert "SIGINT again: exiting at once" in done.stderr


def test_a_config_of_the_benchmark_flags_is_the_same_run(data_dir, tmp_path):
    """The in-process config above must be the subprocess runs' flags, or the test is void."""
    import run
    from engine.config import cli as settings_cli

    config = _config(data_dir, "w")
    run.cli(["run.py", "--helpshort"])  # resets and parses nothing but defaults
    run.FLAGS(["run.py", "--workdir=w", f"--data_dir={data_dir}", *kill_resume.FLAGS])
    parsed = settings_cli.config_from_flags()

    def settings(c):  # what decides the run: `given` only records which flags were typed
        return {k: v for k, v in dataclasses.asdict(c).items() if k != "given"}

    assert settings(parsed) == settings(config)


@pytest.mark.slow
def test_ten_random_sigkills_end_bit_identical(data_dir, tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    log = kill_resume.killed_run(killed, data_dir, 10, random.Random(0))
    assert len(log) == 10
    assert any("during a save" in line for line in log)
    kill_resume.run_to_end(reference, data_dir)
    assert kill_resume.differences(reference, killed) == []
