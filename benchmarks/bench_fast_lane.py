"""The fast lane's own cost, in process: ``FastLane.answer`` alone, and one whole request through
pywharf's HTTP protocol (httptools parsing, the lane, the write), with no network and no client.

Builds a ``file_system`` repository of ``--projects`` projects (3 wheels each) under a temp
ROOT, syncs it, warms the verdict and page caches with one request through the application,
then times ``--requests`` answers of random project pages both ways. The end-to-end rate with a
real client is ``bench_workers.py``'s.

Run from the repo root inside the project venv: ``python -m benchmarks.bench_fast_lane``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient
from uvicorn.config import Config
from uvicorn.server import ServerState as UvicornState

from benchmarks.corpus import build_corpus
from pywharf_core.http.app import create_app
from pywharf_core.http.fast_lane import FastLane
from pywharf_core.http.limits import TransportLimits
from pywharf_core.http.transport import protocol_class
from pywharf_core.index.formats import dump_index
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

CONFIG = '[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\nwrite_secret = "bench-write-secret"\n'
AUTH = b"Basic " + base64.b64encode(b"bench:bench-read-secret")
DATE = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__({"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 6), "socket": None})
        self.writes = 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name) / "root"
        storage = root / "cache" / "bench" / "storage"
        records = build_corpus(storage, args.projects, 3, file_bytes=64)
        (storage / "index.toml").write_bytes(dump_index(records))
        settings = ServerSettings(root=root, extra_index_url="")
        state = ServerState(settings)
        state.repos = build_repos(load_setup(CONFIG, None, is_text=True), settings)
        state.configured = True
        for repo in state.repos.values():
            repo.sync_once()
        app = create_app(state)
        client = TestClient(app)
        paths = [f"/simple/proj{p:05d}/" for p in range(args.projects)]
        for path in paths:  # every page rendered once, the verdict cached
            assert client.get(path, headers={"Authorization": AUTH.decode()}).status_code == 200
        lane = FastLane(app.state)
        headers = [(b"host", b"localhost"), (b"authorization", AUTH), (b"accept", b"text/html")]
        chosen = [random.choice(paths).encode() for _ in range(args.requests)]
        started = time.perf_counter()
        for url in chosen:
            assert lane.answer(url, headers, "127.0.0.1", DATE) is not None
        lane_us = (time.perf_counter() - started) / args.requests * 1e6

        async def through_protocol() -> float:
            config = Config(app=app, lifespan="off", log_level="error")
            config.load()
            server_state = UvicornState()
            server_state.default_headers = DATE
            protocol = protocol_class(TransportLimits(), lane)(
                config=config, server_state=server_state, app_state={}, _loop=asyncio.get_running_loop())
            transport = _Transport()
            protocol.connection_made(transport)
            heads = [b"GET " + url + b" HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + AUTH
                     + b"\r\nAccept: text/html\r\n\r\n" for url in chosen]
            begun = time.perf_counter()
            for head in heads:
                protocol.data_received(head)
            elapsed = time.perf_counter() - begun
            assert transport.writes == len(heads), "a request left the fast lane"
            protocol.connection_lost(None)
            return elapsed / len(heads) * 1e6

        protocol_us = asyncio.run(through_protocol())
    print(f"{args.projects} projects, {args.requests} random pages (HTML, basic auth), in process:")
    print(f"  FastLane.answer:                      {lane_us:.2f} us per page")
    print(f"  through the protocol (parse + write): {protocol_us:.2f} us per request")


if __name__ == "__main__":
    main()
