"""What ``/metrics`` costs per request: A/B of the same server with and without it, interleaved.

Starts two ``pywharf server`` processes on one synthetic repository (``bench_protocol``'s
corpus): A without metrics, B with ``--metrics_token`` (the middleware counting and timing every
request). Then runs wrk on random ``/simple/<project>/`` HTML pages against A, B, A, B... so
both see the same machine load (on a shared VM, runs minutes apart differ by more than the
effect being measured), and prints each run, the medians and B's cost relative to A. Also
measures the in-process cost of one cached page through the app (no sockets, CPU time, batches
of each app alternating in one loop), where the middleware's share is largest and the noise of
a shared machine smallest.

    python -m benchmarks.bench_metrics [--projects 2000] [--seconds 10] [--rounds 6]  # 0: in-process only
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_protocol import page_script, wait_http
from benchmarks.corpus import build_corpus
from benchmarks.load import free_port, wrk

TOKEN = "bench-metrics-token-0123456789"
CONFIG = '[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\nwrite_secret = "bench-write-secret"\n'
AUTH = b"Basic " + base64.b64encode(b"bench:bench-read-secret")


def start(root: Path, config: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    pywharf = shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf"
    proc = subprocess.Popen([pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--extra_index_url=", "--workers=1", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    wait_http(f"{base}/simple/proj00000/", headers={"Authorization": AUTH.decode()})
    return proc, base


def _app(metrics: bool) -> Any:
    """The app over a 100-project repository, with or without metrics, its pages cached."""
    from pywharf_core.http.app import create_app
    from pywharf_core.model.records import FileRecord
    from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

    settings = ServerSettings(root=Path(tempfile.mkdtemp()), extra_index_url="",
                              metrics_token=TOKEN if metrics else None)
    state = ServerState(settings)
    state.repos = build_repos(load_setup(CONFIG, None, is_text=True), settings)
    repo = state.repos["bench"]
    for n in range(100):
        repo.record_upload(FileRecord(f"p{n}-1.0-py3-none-any.whl", f"p{n}", "1.0",
                                      hashlib.sha256(str(n).encode()).hexdigest(), 10, "2026-01-01T00:00:00Z"))
    repo.last_sync = time.time()
    state.configured = True
    return create_app(state)


def in_process_us(batches: int, batch: int = 300) -> tuple[float, float]:
    """CPU microseconds per cached ``/simple/<project>/`` page through the ASGI app, without and
    with metrics: batches of each alternate in one event loop, so both see the same machine."""
    apps = (_app(False), _app(True))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/simple/p5/", "raw_path": b"/simple/p5/", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"x"), (b"authorization", AUTH), (b"accept", b"text/html")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        return None

    async def run(app: Any, count: int) -> float:
        started = time.process_time()
        for _ in range(count):
            await app(dict(scope), receive, send)
        return time.process_time() - started

    async def measure() -> tuple[float, float]:
        for app in apps:
            await run(app, 3000)  # warm: the page is rendered and cached
        totals = [0.0, 0.0]
        for _ in range(batches):
            for index, app in enumerate(apps):
                totals[index] += await run(app, batch)
        return totals[0] / (batches * batch) * 1e6, totals[1] / (batches * batch) * 1e6

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    for _ in range(3):
        off, on = in_process_us(200)
        print(f"in-process, one cached page (CPU us, 60,000 each, interleaved): without {off:.1f}, "
              f"with metrics {on:.1f} ({on - off:+.1f} us, {(on / off - 1) * 100:+.1f} %)", flush=True)

    if args.rounds < 1:  # --rounds 0: the in-process figure only
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        storage = tmp / "storage"
        build_corpus(storage, args.projects, 5, file_bytes=64)
        config = tmp / "config.toml"
        config.write_text(CONFIG + f'storage_path = "{storage}"\n')
        script = page_script(tmp, "h", "/simple/", args.projects, "text/html")
        a, a_base = start(tmp / "root-a", config)
        b, b_base = start(tmp / "root-b", config, f"--metrics_token={TOKEN}")
        rates: dict[str, list[float]] = {"A": [], "B": []}
        try:
            for base in (a_base, b_base):  # warm both page caches
                wrk(base, script, 3, args.connections)
            for n in range(args.rounds):
                for name, base in (("A", a_base), ("B", b_base)) if n % 2 == 0 else (("B", b_base), ("A", a_base)):
                    rps, p99, _ = wrk(base, script, args.seconds, args.connections)
                    rates[name].append(rps)
                    print(f"round {n + 1} {name}: {rps:,.0f} req/s (p99 {p99})", flush=True)
        finally:
            for proc in (a, b):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    median_a, median_b = statistics.median(rates["A"]), statistics.median(rates["B"])
    print(f"HTML pages, wrk -t2 -c{args.connections}, {args.rounds} x {args.seconds} s each: without metrics "
          f"{median_a:,.0f} req/s, with {median_b:,.0f} req/s ({(median_b / median_a - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
