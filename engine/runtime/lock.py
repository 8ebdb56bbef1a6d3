"""The workdir lock: one training run per workdir; a lock left by a killed run is taken over."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket

from engine import paths
from engine.config import ConfigError

LOCK_FILE = ".lock"


class WorkdirLock:
    """An exclusive `flock` on `<workdir>/.lock`, which names the holder's pid and host.

    The kernel drops a `flock` when its process dies, however it dies (SIGKILL included), so a
    lock file left by a killed run is simply locked again by the next one: taking over needs no
    guess about whether the old pid still lives. The file is removed on release; an acquirer
    that locked a file someone removed meanwhile sees that its inode is no longer the path's
    and tries again.

    Object stores have no locks (nor a rename to build one from), so a remote workdir
    (`gs://...`) is not locked: `acquire` says so, and keeping one run per workdir is up to
    the user there.
    """

    def __init__(self, workdir: str):
        self.path = paths.join(workdir, LOCK_FILE)
        self._fd: int | None = None
        self._remote = paths.is_remote(workdir)

    def acquire(self) -> str | None:
        """Takes the lock; returns a note when a dead run's lock was taken over, else None.

        Raises:
          ConfigError: another live process holds it (its pid and host are named).
        """
        if self._remote:
            return f"{os.path.dirname(self.path)} is remote and not locked: run one job on it"
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise ConfigError(
                    f"workdir {os.path.dirname(self.path)} is in use by pid "
                    f"{holder.get('pid', '?')} on host {holder.get('host', '?')} (since "
                    f"{holder.get('since', '?')}); wait for that run or use another --workdir"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our lock
                os.close(fd)
                continue
            previous = _read(fd)
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            if previous.get("pid"):
                return (
                    f"took over the lock of pid {previous['pid']} on host "
                    f"{previous.get('host', '?')}, which ended without releasing it"
                )
            return None
        raise ConfigError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Removes the lock file and unlocks it (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        value = json.loads(data.decode()) if data else {}
        return value if isinstance(value, dict) else {}
    except (ValueError, OSError):
        return {}
