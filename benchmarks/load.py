"""Load-generation helpers shared by the benchmarks: free ports, wrk runs, a threaded GET client."""

from __future__ import annotations

import http.client
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, str, float]:
    """req/s, p99 and transfer MB/s from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    scale = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}[unit]
    return rps, p99, float(value) * scale


def threaded_get(
    port: int, paths: list[str], seconds: float, threads: int, headers: dict[str, str]
) -> dict[str, float]:
    """req/s and latency of GETs of random ``paths`` from ``threads`` keep-alive connections.

    The fallback when wrk is not installed: a Python client shares the GIL and the cores with the
    server, so on a small machine this measures a floor, not the server's ceiling."""
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        failed = 0
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    conn.request("GET", rng.choice(paths), headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    conn.close()
                    ok = False
                if ok:
                    mine.append(time.perf_counter() - started)
                else:
                    failed += 1
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                errors[0] += failed

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + 60)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "requests": len(latencies), "errors": errors[0], "seconds": elapsed}


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server started by a benchmark; kill it if it does not stop within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
