"""One path layer for workdirs and inputs: local paths and remote URLs (`gs://...`) alike.

Every file the engine writes or reads under a workdir goes through here, as an `etils.epath`
path: the layer orbax and tensorflow-datasets already use, so a `gs://bucket/run` workdir
works wherever its file system is installed (`pip install -e '.[gcs]'`: fsspec's gcsfs for
files, google-cloud-storage for orbax's bucket checks; orbax writes arrays with TensorStore's
own GCS driver). Local paths stay plain `os` paths, so nothing changes for them.

Object stores have no rename, append or directories. So a file is written whole: locally into
a temporary file renamed over the target (a reader never sees half a file), remotely as one
object upload (an object is replaced whole, which is as atomic).
"""

from __future__ import annotations

import io
import os

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (`gs://b/x`, `s3://...`) rather than a local path.

    >>> is_remote("gs://bucket/run"), is_remote("runs/digits"), is_remote("/tmp/x")
    (True, False, False)
    """
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """`path` made absolute if local (orbax needs that); a URL unchanged.

    >>> absolute("gs://bucket/run")
    'gs://bucket/run'
    """
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def join(path: str | os.PathLike, *parts: str) -> str:
    """`path/part/...` as a string, for a local path or a URL.

    >>> join("gs://bucket/run", "checkpoints", "best")
    'gs://bucket/run/checkpoints/best'
    """
    return (
        os.fspath(epath.Path(path).joinpath(*parts))
        if is_remote(path)
        else os.path.join(path, *parts)
    )


def exists(path: str | os.PathLike) -> bool:
    """Whether a file or folder is at `path`."""
    return epath.Path(path).exists()


def is_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder (on an object store: a prefix with objects under it)."""
    return epath.Path(path).is_dir()


def make_dirs(path: str | os.PathLike) -> None:
    """Creates the folder `path` and its parents (nothing to do on an object store)."""
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def list_dir(path: str | os.PathLike) -> list[str]:
    """The names in folder `path` (empty when there is none)."""
    folder = epath.Path(path)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file `path`."""
    return epath.Path(path).read_text(encoding="utf-8")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the file `path`."""
    return epath.Path(path).read_bytes()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` whole: a reader sees the old file or the new one."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` whole: a reader sees the old file or the new one."""
    if is_remote(path):
        epath.Path(path).write_bytes(data)
        return
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the file or folder `source` to `target` (a copy and delete on object stores)."""
    if is_remote(source):
        epath.Path(source).rename(target)
    else:
        os.replace(source, target)


def save_figure(fig, path: str | os.PathLike, **kwargs) -> str:
    """Saves a matplotlib figure as the PNG `path` (rendered in memory, written whole)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    write_bytes(path, buffer.getvalue())
    return os.fspath(path)
