"""Issue 17: pywharf with one worker and with N worker processes vs nginx serving the same pages.

Builds a synthetic repository (default 10,000 projects x 5 wheels = 50,000 files), then in one
run, back to back, drives each server with the same wrk command (random ``/simple/<project>/``
HTML pages, basic auth header, ``wrk -t2 -c16``):

- ``pywharf server --workers 1``;
- ``pywharf server --workers N`` (default: the CPUs this process may use);
- nginx (2 worker processes) serving the page bodies pywharf rendered, as static files.

Memory is the proportional set size (PSS, /proc/PID/smaps_rollup) summed over the supervisor
and its workers after the wrk run (page caches full): RSS would count the pages the workers
share copy-on-write once per process.

Run from the repo root inside the project venv (needs ``wrk`` and ``nginx``):
``python -m benchmarks.bench_workers [--projects 10000] [--files 5] [--workers 2] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.bench_protocol import AUTH, LUA, NGINX_CONF, wait_http
from benchmarks.corpus import build_corpus
from benchmarks.load import free_port

CONFIG = '[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\nwrite_secret = "bench-write-secret"\n'


def pss_mb(pid: int) -> float:
    """PSS of ``pid`` and its children, in MB."""
    pids = [pid, *map(int, subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())]
    total = 0
    for one in pids:
        text = Path(f"/proc/{one}/smaps_rollup").read_text()
        total += int(re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE).group(1))
    return total * 1024 / 1e6


def wrk_full(url: str, script: Path, seconds: int, connections: int) -> tuple[float, str, int]:
    """req/s, p99 and the count of non-2xx/3xx answers of one wrk run."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return rps, p99 + (f" ({errors.group(0)})" if errors else ""), int(bad.group(1)) if bad else 0


def start_pywharf(root: Path, config: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    pywharf = shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf"
    proc = subprocess.Popen([pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--extra_index_url=", f"--workers={workers}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/simple/proj00000/", headers={"Authorization": AUTH})
    for _ in range(4 * workers):  # every worker has loaded (a fresh connection each)
        requests.get(f"{base}/simple/proj00000/", headers={"Authorization": AUTH}, timeout=30).raise_for_status()
    return proc, base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        build_corpus(root / "cache" / "bench" / "storage", args.projects, args.files, file_bytes=64)
        config = tmp / "config.toml"
        config.write_text(CONFIG)
        script = tmp / "pages.lua"
        script.write_text(LUA.format(prefix="/simple/", max_index=args.projects - 1, auth=AUTH, accept="text/html"))
        print(f"corpus: {args.projects} projects x {args.files} wheels; wrk -t2 -c{args.connections} "
              f"-d{args.seconds}s, random /simple/<project>/ (HTML, basic auth)")

        results = {}
        for workers in (1, args.workers):
            proc, base = start_pywharf(root, config, workers)
            try:
                if workers == 1:  # the page bodies nginx will serve: exactly pywharf's
                    static = tmp / "static"
                    with requests.Session() as session:
                        for p in range(args.projects):
                            page = session.get(f"{base}/simple/proj{p:05d}/", headers={"Authorization": AUTH},
                                               timeout=30)
                            folder = static / "simple" / f"proj{p:05d}"
                            folder.mkdir(parents=True)
                            (folder / "index.html").write_bytes(page.content)
                results[workers] = (*wrk_full(base, script, args.seconds, args.connections), pss_mb(proc.pid))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)

        nginx_port = free_port()
        conf = tmp / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=static, user=user))
        subprocess.run(["nginx", "-c", str(conf), "-e", str(tmp / "nginx-error.log")], check=True)
        try:
            wait_http(f"http://127.0.0.1:{nginx_port}/simple/proj00000/")
            nginx = wrk_full(f"http://127.0.0.1:{nginx_port}", script, args.seconds, args.connections)
        finally:
            subprocess.run(["nginx", "-c", str(conf), "-s", "stop"], check=False)
            time.sleep(0.5)

    one, many = results[1], results[args.workers]
    rows.append(("nginx, static page bodies: req/s (p99), non-2xx", f"{nginx[0]:,.0f} ({nginx[1]}), {nginx[2]}"))
    rows.append(("pywharf --workers 1: req/s (p99), non-2xx", f"{one[0]:,.0f} ({one[1]}), {one[2]}"))
    rows.append((f"pywharf --workers {args.workers}: req/s (p99), non-2xx", f"{many[0]:,.0f} ({many[1]}), {many[2]}"))
    rows.append((f"--workers {args.workers} / nginx", f"{many[0] / nginx[0]:.2f} (target >= 0.5)"))
    rows.append((f"--workers {args.workers} / --workers 1", f"{many[0] / one[0]:.2f}"))
    rows.append(("PSS, --workers 1 (MB)", f"{one[3]:,.0f}"))
    rows.append((f"PSS, --workers {args.workers}, supervisor + workers (MB)",
                 f"{many[3]:,.0f} ({many[3] / one[3]:.2f}x; target < 2x)"))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}} | {value}")


if __name__ == "__main__":
    main()
