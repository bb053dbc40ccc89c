"""What an API token costs per request: cached pages with the shared read secret vs a read token.

Issue 14 added tokens; a token's verdict is cached like a shared secret's (by the secret's
sha256, at most ``sync_index_interval``), so a page request with a token should cost what one
with the shared secret costs. Measured in one run, alternating, on the same server: random
``/simple/<project>/`` pages (wrk, HTML) with ``bench:<read secret>``, ``__token__:<token>``,
and the per-repository URL ``/repos/bench/simple/`` (issue 15) with ``__token__``.

    python -m benchmarks.bench_token_auth [--projects 2000] [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import base64
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from benchmarks.bench_protocol import LUA, wait_http
from benchmarks.corpus import build_corpus
from benchmarks.load import free_port, wrk

READ, WRITE = "bench-read-secret", "bench-write-secret"


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        build_corpus(root / "cache" / "bench" / "storage", args.projects, 3, file_bytes=64)
        config = tmp / "config.toml"
        config.write_text(f'[bench]\ntype = "file_system"\nread_secret = "{READ}"\nwrite_secret = "{WRITE}"\n')
        port = free_port()
        pywharf = str(Path(sys.executable).parent / "pywharf")
        proc = subprocess.Popen([pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1",
                                 "--port", str(port), "--extra_index_url=", "--workers=1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/simple/proj00000/", headers={"Authorization": basic("bench", READ)})
            token = requests.post(f"{base}/_/tokens/bench", data={"scope": "read"}, auth=("bench", WRITE),
                                  timeout=10).json()["token"]
            cases = {
                "shared secret, /simple/": ("/simple/", basic("bench", READ)),
                "token, /simple/": ("/simple/", basic("__token__", token)),
                "token, /repos/bench/simple/": ("/repos/bench/simple/", basic("__token__", token)),
            }
            results: dict[str, list[float]] = {name: [] for name in cases}
            for round_number in range(args.rounds):
                for name, (prefix, auth) in cases.items():
                    script = tmp / f"s{round_number}-{len(results[name])}-{abs(hash(name))}.lua"
                    script.write_text(LUA.format(prefix=prefix, max_index=args.projects - 1, auth=auth,
                                                 accept="text/html"))
                    check = requests.get(f"{base}{prefix}proj00001/", headers={"Authorization": auth}, timeout=10)
                    assert check.status_code == 200, f"{name}: {check.status_code}"
                    rate, p99, _ = wrk(base, script, args.seconds, args.connections)
                    results[name].append(rate)
                    print(f"round {round_number + 1}: {name:<30} {rate:>9,.0f} req/s  p99 {p99}")
            reference = max(results["shared secret, /simple/"])
            print(f"\n{args.projects} projects x 3 wheels, wrk -t2 -c{args.connections}, {args.seconds} s, "
                  f"best of {args.rounds}:")
            for name, rates in results.items():
                print(f"  {name:<30} {max(rates):>9,.0f} req/s  ({max(rates) / reference:.2f} of the shared secret)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
