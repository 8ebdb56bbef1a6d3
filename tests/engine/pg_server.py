"""A real PostgreSQL server for tests, on loopback, from pip packages alone (no root, no apt).

The server binaries come in the `pgserver` wheel (PostgreSQL 16 built for manylinux); this
module runs them itself: `initdb` into a fresh folder, then `postgres` on 127.0.0.1 and a free
port, with trust authentication (nothing but this machine can connect). PostgreSQL refuses to
run as root, so under root (CI, containers) the server runs as the `nobody` user, in a folder
it owns. The driver is psycopg 3 (`psycopg[binary]`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path:
    """The folder of the PostgreSQL programs shipped in the `pgserver` wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install pgserver (the test extra) for the PostgreSQL tests")
    return Path(spec.origin).parent / "pginstall" / "bin"


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`initdb` + `pg_ctl start` on 127.0.0.1:port; `url(db)` connects as user `postgres`."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="jaxtrain-pg-")
        self.data, self.port = os.path.join(self.folder, "data"), free_port()
        self.as_user: dict = {}
        self.bin = binaries()
        if os.geteuid() == 0:  # postgres will not run as root
            nobody = pwd.getpwnam("nobody")
            os.chown(self.folder, nobody.pw_uid, nobody.pw_gid)
            self.as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            # `nobody` may not reach the wheel's own copy: a virtual environment under /root or
            # a `mktemp -d` folder (mode 700, as .ci/run makes) is closed to other users. The
            # programs find their libraries relative to themselves (RPATH
            # $ORIGIN/../../../pgserver.libs), so a copy of both folders, laid out as in
            # site-packages, runs from the server's folder (34 MB).
            package = self.bin.parent.parent  # site-packages/pgserver
            for name in ("pgserver.libs", "pgserver/pginstall"):
                shutil.copytree(package.parent / name, os.path.join(self.folder, name))
            self.bin = Path(self.folder) / "pgserver" / "pginstall" / "bin"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bin / program), *args], check=True, capture_output=True,
                       cwd=self.folder, timeout=60, **self.as_user)  # fmt: skip

    def start(self) -> Server:
        """Creates the cluster and starts the server; returns once it accepts connections."""
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync",
                  "--encoding=UTF8")  # fmt: skip
        # -F: no fsync (a test's database need not survive a power cut); -k: the Unix socket
        # in our own folder, not /var/run/postgresql, which may not exist or be writable.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F -c max_connections=50"
        log = os.path.join(self.folder, "log")
        self._run("pg_ctl", "-D", self.data, "-l", log, "-w", "-t", "30", "-o", options, "start")
        return self

    def stop(self) -> None:
        """Stops the server (fast: open connections are closed) and removes its files."""
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` on this server (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Creates the empty database `name` and returns its URL (one per test's study)."""
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
