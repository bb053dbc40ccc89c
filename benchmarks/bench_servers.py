"""uvicorn vs waitress serving pywharf's simple pages, measured with wrk.

Builds a synthetic repo (default 10,000 projects x 5 wheels), starts `pywharf server` once per
server choice on 127.0.0.1, and drives it with wrk (Debian package `wrk`) requesting random
`/simple/<project>/` pages with basic auth. Prints requests/s and p99 latency.

Run from the repo root: python -m benchmarks.bench_servers [--projects 10000] [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.corpus import build_corpus
from benchmarks.load import free_port, wrk

LUA = """
math.randomseed(os.time())
request = function()
  local path = string.format("/simple/proj%05d/", math.random(0, {max_index}))
  return wrk.format("GET", path, {{["Authorization"] = "{auth}"}})
end
"""


def start(root: Path, config: Path, server: str) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    pywharf = shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--server", server, "--extra_index_url=", "--workers=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.02)
    return proc, port, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    auth = "Basic " + base64.b64encode(b"bench:bench-read-secret").decode()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "root"
        build_corpus(root / "cache" / "bench" / "storage", args.projects, args.files, file_bytes=64)
        config = tmp_path / "config.toml"
        config.write_text('[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\n'
                          'write_secret = "bench-write-secret"\n')
        script = tmp_path / "random.lua"
        script.write_text(LUA.format(max_index=args.projects - 1, auth=auth))
        print(f"corpus: {args.projects} projects x {args.files} files; wrk -t2 -c{args.connections} "
              f"-d{args.seconds}s, random /simple/<project>/ with basic auth")
        print(f"{'server':<10} {'start (s)':>10} {'req/s':>10} {'p99':>10}")
        for server in ("uvicorn", "waitress"):
            proc, port, start_s = start(root, config, server)
            try:
                # wait for the first sync so pages are served from the full index
                deadline = time.time() + 60
                while time.time() < deadline:
                    r = requests.get(f"http://127.0.0.1:{port}/simple/proj00000/", headers={"Authorization": auth})
                    if r.status_code == 200:
                        break
                    time.sleep(0.1)
                rps, p99, _ = wrk(f"http://127.0.0.1:{port}", script, args.seconds, args.connections)
                print(f"{server:<10} {start_s:>10.2f} {rps:>10.0f} {p99:>10}")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        os.sync()


if __name__ == "__main__":
    main()
