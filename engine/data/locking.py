"""An exclusive file lock, so processes preparing the same dataset at once take turns."""

from __future__ import annotations

import contextlib
import fcntl
import os


@contextlib.contextmanager
def exclusive(lock_path: str):
    """Holds an exclusive advisory lock on `lock_path`, blocking until other holders release it.

    A second process preparing the same dataset waits, then finds it prepared. (`flock` may be
    unreliable on some network filesystems.)
    """
    os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
