"""Upstream indexes on loopback for the proxy's building blocks (tests/test_upstream_index.py,
tests/test_pull_through.py).

- :class:`Upstream`: a scriptable HTTP server (``ThreadingHTTPServer`` in a thread) answering
  each path from a :class:`Route`: a PEP 691 JSON page, a file from memory or from disk, a
  redirect, an error. It counts requests per path and keeps the headers they came with, and can
  answer slowly, stop half-way (truncated body), hold a body at a gate, or send no length.
- :func:`static_tree`: a plain static web server (the standard library's
  ``SimpleHTTPRequestHandler``) over a folder, for the PEP 503 HTML-only case.
- :func:`file_system_storage`: the ``file_system`` storage adapter over a folder, the cache the
  pull-through writes to.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pywharf_backends.file_system import FileSystemBackend, FileSystemConfig
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config

JSON_V1 = "application/vnd.pypi.simple.v1+json"


@dataclass
class Route:
    status: int = 200
    body: bytes | Path = b""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # answered 304 when the request's If-None-Match holds it
    delay: float = 0.0  # seconds before answering
    truncate_at: int | None = None  # send only this many bytes of the body, then close
    send_length: bool = True  # False: no Content-Length, the end of the body is the connection's close
    gate: threading.Event | None = None  # once gate_after bytes are sent (256 KiB steps), wait for it
    gate_after: int = 0


def json_page(name: str, files: list[dict[str, Any]], api_version: str = "1.1", **extra: Any) -> Route:
    document = {"meta": {"api-version": api_version}, "name": name, "files": files, **extra}
    return Route(body=json.dumps(document).encode(), content_type=JSON_V1)


class Upstream:
    """A loopback HTTP server answering from :attr:`routes` (path -> Route)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with upstream._lock:
                    upstream.hits[path] += 1
                    upstream.requests.append((path, dict(self.headers.items())))
                upstream.answer(self, upstream.routes.get(path))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, handler: BaseHTTPRequestHandler, route: Route | None) -> None:
        if route is None:
            route = Route(status=404, body=b"not found", content_type="text/plain")
        if route.delay:
            time.sleep(route.delay)
        if route.etag is not None and route.etag in handler.headers.get("If-None-Match", ""):
            handler.send_response(304)
            handler.send_header("ETag", route.etag)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        size = route.body.stat().st_size if isinstance(route.body, Path) else len(route.body)
        handler.send_response(route.status)
        handler.send_header("Content-Type", route.content_type)
        if route.etag is not None:
            handler.send_header("ETag", route.etag)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        if route.send_length:
            handler.send_header("Content-Length", str(size))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        sent = 0
        limit = route.truncate_at if route.truncate_at is not None else size
        try:
            gated = route.gate is None
            for chunk in _chunks(route.body):
                if not gated and sent >= route.gate_after:
                    handler.wfile.flush()
                    route.gate.wait(30)  # type: ignore[union-attr]
                    gated = True
                chunk = chunk[: max(limit - sent, 0)]
                handler.wfile.write(chunk)
                sent += len(chunk)
                if sent >= limit:
                    break
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if route.truncate_at is not None:
            handler.close_connection = True

    def auth_headers(self, path: str) -> list[str | None]:
        """The Authorization header of every request for ``path`` (None when it had none)."""
        return [headers.get("Authorization") for seen, headers in self.requests if seen == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _chunks(body: bytes | Path) -> Iterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), 256 << 10):
            yield body[start : start + (256 << 10)]
        return
    with open(body, "rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


class StaticTree:
    """A plain static web server (``SimpleHTTPRequestHandler``) over ``folder``."""

    def __init__(self, folder: Path) -> None:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def file_system_storage(root: Path, name: str = "cache") -> FileSystemBackend:
    table = {"type": "file_system", "read_secret": "read-secret-00", "write_secret": "write-secret"}
    config = build_config(FileSystemConfig, name, table, ConfigSource(str(root / "config.toml")))
    return FileSystemBackend(config, BackendContext(root=root))  # type: ignore[arg-type]
