"""Where a search's study lives: SQLite in the study folder, or a database server (`--storage`).

Every storage gets optuna's heartbeat: a trial whose process died is failed once its heartbeat
is stale and retried with the same parameters (`RetryHeartbeatStaleTrialCallback`). A bad URL,
a missing driver or an unreachable server is a one-line `ConfigError` that names the URL
without its password.
"""

from __future__ import annotations

import json
import os
import socket

import optuna
import sqlalchemy
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from engine import paths
from engine.config import ConfigError

DB = "study.db"
EXAMPLE = "postgresql+psycopg://USER@HOST:5432/DB"
# The driver modules SQLAlchemy imports for a URL, and how to install each.
DRIVERS = {
    "psycopg": "pip install -e '.[postgres]' (psycopg)",
    "psycopg2": "pip install psycopg2-binary, or use postgresql+psycopg:// with "
    "pip install -e '.[postgres]'",
    "MySQLdb": "pip install mysqlclient, or use mysql+pymysql:// with pip install pymysql",
    "pymysql": "pip install pymysql",
}
# Seconds to wait for a server before saying it is unreachable (the drivers' default: forever).
CONNECT_TIMEOUT = 10


def shown(url: str) -> str:
    """`url` as it may be printed: its password replaced by `***`.

    >>> shown("postgresql+psycopg://me:secret@db:5432/study")
    'postgresql+psycopg://me:***@db:5432/study'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:  # not a URL at all: print none of it, it may hold a password
        return "(not a URL)"


def _problem(url: str, error: Exception) -> str:
    """What is wrong with `--storage`, and what to do, in one line."""
    if isinstance(error, exc.NoSuchModuleError):
        return f"{make_url(url).drivername!r} is not a database SQLAlchemy knows; e.g. {EXAMPLE}"
    if isinstance(error, ImportError):
        module = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "?"
        hint = DRIVERS.get(module, f"pip install the driver that provides {module}")
        return f"its database driver {module} is not installed: {hint}"
    if isinstance(error, exc.DBAPIError):
        first = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
        password = make_url(url).password
        if password:  # a driver may echo connection parameters
            first = first.replace(str(password), "***")
        return f"cannot reach the database ({first}); check the URL and that the server is running"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def open_storage(study_dir: str, url: str = "") -> optuna.storages.RDBStorage:
    """The study's storage: `url`'s database, or (empty) SQLite in `study_dir/study.db`.

    Raises:
      ConfigError: one line: the URL (password hidden) and what is wrong with it, or a remote
        `study_dir` with the SQLite default.
    """
    kwargs = {}
    if not url:
        if paths.is_remote(study_dir):  # SQLite locks a local file; an object store has none
            raise ConfigError(
                f"--study_dir={study_dir} is remote; the default SQLite study file needs a local "
                f"or shared (NFS) folder: give --storage={EXAMPLE} (a database server) for it"
            )
        paths.make_dirs(study_dir)
        url = f"sqlite:///{os.path.abspath(os.path.join(study_dir, DB))}"
    else:
        try:
            backend = make_url(url).get_backend_name()
        except exc.ArgumentError:
            raise ConfigError(f"--storage is not a database URL; give one like {EXAMPLE}") from None
        if backend in ("postgresql", "mysql", "mariadb"):
            kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=5,
            grace_period=20,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )
    except (ImportError, exc.SQLAlchemyError) as e:
        raise ConfigError(f"--storage={shown(url)}: {_problem(url, e)}") from None


def process_name() -> str:
    """This process as a report names it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_once(storage: optuna.storages.RDBStorage, study: str, key: str, value: str) -> str | None:
    """Records `key=value` on the study named `study` unless a process did: None if this won.

    The claim is one INSERT into optuna's study attributes table, whose (study, key) pair is
    unique: of processes racing, exactly one insert succeeds, on SQLite and servers alike.
    optuna's own `set_study_system_attr` would not do: it reads then updates, so a second
    process would overwrite the first's claim.

    Returns:
      None when this call recorded `value`; else the value another process recorded.
    """
    study_id = storage.get_study_id_from_name(study)
    table = sqlalchemy.table(
        "study_system_attributes",
        sqlalchemy.column("study_id"),
        sqlalchemy.column("key"),
        sqlalchemy.column("value_json"),
    )
    try:
        with storage.engine.begin() as connection:
            connection.execute(
                sqlalchemy.insert(table).values(
                    study_id=study_id, key=key, value_json=json.dumps(value)
                )
            )
        return None
    except exc.IntegrityError:
        return storage.get_study_system_attrs(study_id).get(key, "another process")
