"""A fake Google Cloud Storage for tests: `gs://` through both of the engine's storage stacks.

The engine reaches a `gs://` workdir two ways: orbax writes array data with TensorStore's own
GCS driver (HTTP, JSON API), and everything else goes through `etils.epath`, which uses fsspec's
`gs` protocol. Neither can be pointed at a local directory by a flag, so this module provides:

- `Server`: a loopback HTTP server speaking the part of the GCS JSON API TensorStore uses
  (media download with ranges and generation preconditions, media upload, delete, list),
  found by TensorStore through `TENSORSTORE_GCS_HTTP_URL` (its documented testing hook, with
  `GOOGLE_AUTH_TOKEN_FOR_TESTING` instead of credentials);
- `FakeGCSFileSystem`: fsspec's `gs` protocol as a directory of the local disk.

Both keep bucket `B`'s object `a/b` in the file `ROOT/B/a/b`, so they see one store, and a
run's files stay under ROOT: nothing lands in the working directory. `python fake_gcs.py ROOT
script.py ARGS` runs a script (e.g. run.py) with both installed, as a subprocess test needs.
"""

from __future__ import annotations

import http.server
import json
import os
import runpy
import sys
import threading
import urllib.parse

from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class FakeGCSFileSystem(DirFileSystem):
    """fsspec's `gs://` protocol over the directory in `FAKE_GCS_ROOT`."""

    protocol = ("gs", "gcs")

    def __init__(self, *args, **kwargs):
        root = os.environ["FAKE_GCS_ROOT"]
        super().__init__(path=root, fs=LocalFileSystem(auto_mkdir=True))

    @classmethod
    def _strip_protocol(cls, path):
        path = path[0] if isinstance(path, list) else path
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/")

    def _join(self, path):
        if isinstance(path, str):
            path = self._strip_protocol(path)
        return super()._join(path)

    def unstrip_protocol(self, name):
        return "gs://" + self._strip_protocol(name)


def install_filesystem(root: str) -> None:
    """Makes fsspec (and so `etils.epath`) open `gs://` paths under `root`."""
    import fsspec

    os.environ["FAKE_GCS_ROOT"] = root
    fsspec.register_implementation("gs", FakeGCSFileSystem, clobber=True)
    fsspec.register_implementation("gcs", FakeGCSFileSystem, clobber=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = ""  # set on the subclass a server makes

    def log_message(self, *args):  # quiet
        pass

    # -- helpers
    def _file(self, bucket: str, name: str) -> str:
        return os.path.join(self.root, bucket, *name.split("/"))

    @staticmethod
    def _generation(path: str) -> int:
        return os.stat(path).st_mtime_ns  # changes with every rewrite of the file

    def _meta(self, bucket: str, name: str, path: str) -> dict:
        size = os.path.getsize(path)
        gen = self._generation(path)
        return {
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "size": str(size),
            "generation": str(gen),
            "metageneration": "1",
            "id": f"{bucket}/{name}/{gen}",
        }

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, kind="json"):
        self.send_response(code)
        types = {"json": "application/json", "bin": "application/octet-stream"}
        self.send_header("Content-Type", types[kind])
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: dict):
        self._send(code, json.dumps(obj).encode())

    def _error(self, code: int, message: str):
        self._json(code, {"error": {"code": code, "message": message}})

    def _route(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        return url.path, url.path.split("/"), query

    def _precondition(self, path: str, query: dict) -> bool:
        exists = os.path.isfile(path)
        gen = self._generation(path) if exists else 0
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != gen:
            return False
        return not ("ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == gen)

    # -- verbs
    def do_GET(self):
        _, parts, query = self._route()
        # /storage/v1/b/BUCKET/o/OBJECT  or  /storage/v1/b/BUCKET/o  or  /storage/v1/b/BUCKET
        if parts[1:4] != ["storage", "v1", "b"]:
            return self._error(404, "unknown path")
        bucket = parts[4]
        if len(parts) == 5:
            return self._json(200, {"kind": "storage#bucket", "name": bucket})
        if len(parts) == 6:
            return self._list(bucket, query)
        name = urllib.parse.unquote("/".join(parts[6:]))
        file = self._file(bucket, name)
        if not os.path.isfile(file):
            return self._error(404, "no such object")
        if not self._precondition(file, query):
            code = 304 if "ifGenerationNotMatch" in query else 412
            return self._send(code, b"") if code == 304 else self._error(412, "precondition")
        if query.get("alt") != "media":
            return self._json(200, self._meta(bucket, name, file))
        with open(file, "rb") as f:
            data = f.read()
        headers = {"x-goog-generation": str(self._generation(file))}
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start, _, end = wanted[6:].partition("-")
            start = int(start) if start else max(len(data) - int(end), 0)
            stop = int(end) + 1 if end and wanted[6] != "-" else len(data)
            if start >= len(data) and len(data) > 0:
                return self._error(416, "range")
            chunk = data[start:stop]
            headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
            return self._send(206, chunk, headers, kind="bin")
        return self._send(200, data, headers, kind="bin")

    do_HEAD = do_GET

    def _list(self, bucket: str, query: dict):
        prefix = query.get("prefix", "")
        start, end = query.get("startOffset", ""), query.get("endOffset", "")
        base = os.path.join(self.root, bucket)
        names = []
        for folder, _, files in os.walk(base):
            for f in files:
                name = os.path.relpath(os.path.join(folder, f), base).replace(os.sep, "/")
                if name.startswith(prefix) and name >= start and (not end or name < end):
                    names.append(name)
        items = [self._meta(bucket, n, self._file(bucket, n)) for n in sorted(names)]
        self._json(200, {"kind": "storage#objects", "items": items})

    def do_POST(self):
        _, parts, query = self._route()
        if parts[1:5] != ["upload", "storage", "v1", "b"]:
            return self._error(404, "unknown path")
        bucket, name = parts[5], query["name"]
        file = self._file(bucket, name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self._precondition(file, query):
            return self._error(412, "precondition")
        os.makedirs(os.path.dirname(file), exist_ok=True)
        tmp = f"{file}.upload-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, file)
        self._json(200, self._meta(bucket, name, file))

    def do_DELETE(self):
        _, parts, query = self._route()
        bucket, name = parts[4], urllib.parse.unquote("/".join(parts[6:]))
        file = self._file(bucket, name)
        if not os.path.isfile(file):
            return self._error(404, "no such object")
        if not self._precondition(file, query):
            return self._error(412, "precondition")
        os.remove(file)
        self._send(204)


class Server:
    """The fake GCS on 127.0.0.1 (a free port) for objects under `root`, in a thread."""

    def __init__(self, root: str):
        handler = type("Handler", (_Handler,), {"root": root})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def environ(self) -> dict:
        """What TensorStore (in this or a child process) needs to use this server."""
        return {"TENSORSTORE_GCS_HTTP_URL": self.url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake"}


if __name__ == "__main__":  # python fake_gcs.py ROOT SCRIPT ARGS...: the script with fake gs://
    root, script = sys.argv[1], sys.argv[2]
    install_filesystem(root)
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
