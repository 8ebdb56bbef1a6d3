"""The workdir lock: a second run is refused naming the holder; a dead holder's is taken over."""

import os
import signal
import socket
import subprocess
import sys

import pytest
from engine_helpers import fast_config

import engine
from engine.config import ConfigError
from engine.runtime.lock import LOCK_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); "
    "from engine.runtime.lock import WorkdirLock; WorkdirLock(sys.argv[2]).acquire(); "
    "print('locked', flush=True); time.sleep(600)"
)


def test_second_run_is_refused_then_a_killed_holders_lock_is_taken_over(data_dir, tmp_path, capsys):
    workdir = tmp_path / "w"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, ROOT, str(workdir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = fast_config(data_dir, str(workdir), epochs=1)
        with pytest.raises(ConfigError) as refused:
            engine.fit(config)
        message = str(refused.value)
        assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in message
        assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # the refused run wrote nothing
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays
        holder.wait(timeout=60)
        assert os.path.exists(workdir / LOCK_FILE)
        capsys.readouterr()
        results = engine.fit(config)
        assert f"took over the lock of pid {holder.pid}" in capsys.readouterr().out
        assert results["checkpoint_epoch"] == 1
        assert not os.path.exists(workdir / LOCK_FILE)  # released at the end
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
