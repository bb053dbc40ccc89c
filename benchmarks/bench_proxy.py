"""Proxy repositories (issue 15): cached proxied pages vs hosted pages, and big files through a proxy.

Two pywharf servers on 127.0.0.1, both started with the venv's ``pywharf server``:

- the **upstream**: a ``file_system`` repository ``up`` holding N projects x K wheels
  (``benchmarks/corpus.py``) plus one ``--big_mb`` MB wheel ``bigfile-1.0-py3-none-any.whl``;
- the **server under test**: a hosted ``file_system`` repository ``hosted`` holding the same
  corpus (built a second time into its storage), and a proxy ``pypi`` of the upstream
  (``upstream = ".../repos/up/simple/"``, ``page_ttl = 3600``, upstream credentials in the
  admin secret), both served by the same process.

Then, in one run:

1. warms both: every project page once through the hosted repository and through the proxy
   (the proxy fetches and caches every page from the upstream), and one small file of every
   10th project through the proxy (fetched from the upstream and cached);
2. random ``/repos/<repo>/simple/projNNNNN/`` pages, HTML, basic auth, with wrk (default -t2
   -c16, ``--seconds`` each): hosted, proxy, hosted, proxy; req/s, p99 and the ratio
   proxy/hosted (issue target: ~1.0, "as fast as a hosted one");
3. the first fetch of the big wheel through the proxy (cache empty; the upstream streams it from
   its own storage) with a streaming client that discards the bytes: time, and the proxy
   server's RSS growth (VmHWM after, reset via ``/proc/PID/clear_refs`` before, minus VmRSS
   before; target < 64 MB);
4. the big wheel again through the proxy, now from its cache, with wrk (4 connections,
   ``--seconds``) vs nginx (sendfile) serving the same cached file from the proxy's cache
   folder: MB/s each and the ratio (target >= 0.8).

Run from the repo root inside the project venv (needs ``wrk`` and ``nginx``, Debian packages):

    python -m benchmarks.bench_proxy [--projects 2000] [--files 3] [--big_mb 500] [--seconds 10]

A quick smoke run: ``--projects 50 --big_mb 20 --seconds 2``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import tomli_w

from benchmarks.bench_protocol import FILE_LUA, LUA, NGINX_CONF, rss_mb, wait_http, write_big_file
from benchmarks.corpus import build_corpus
from benchmarks.load import free_port, stop, wrk
from pywharf_core.index.formats import dump_index
from pywharf_core.model.records import FileRecord, freeze_meta, utc_timestamp

UP_READ, UP_WRITE = "bench-upstream-read", "bench-upstream-write"
HOSTED_READ, HOSTED_WRITE = "bench-hosted-read", "bench-hosted-write"
PROXY_READ = "bench-proxy-read-secret"
BIG_PROJECT = "bigfile"
BIG_NAME = f"{BIG_PROJECT}-1.0-py3-none-any.whl"
TEXT_HTML = "text/html"

def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def add_big_wheel(storage: Path, records: list[FileRecord], size_mb: int) -> Path:
    """One ``size_mb`` MB wheel of project ``bigfile`` in ``storage``, with its sidecar and index entry."""
    path = storage / BIG_NAME
    write_big_file(path, size_mb)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    meta = {"name": BIG_PROJECT, "version": "1.0", "filetype": "bdist_wheel", "pyversion": "py3",
            "metadata_version": "2.1", "summary": "One big synthetic wheel", "requires_python": ">=3.8"}
    record = FileRecord(filename=BIG_NAME, distrib=BIG_PROJECT, version="1.0", sha256=digest.hexdigest(),
                        size=path.stat().st_size, upload_time=utc_timestamp(), requires_python=">=3.8",
                        meta=freeze_meta(meta))
    sidecar = {**meta, "sha256": record.sha256, "size": record.size, "upload_time": record.upload_time}
    (storage / ".pywharf" / f"{BIG_NAME}.toml").write_bytes(tomli_w.dumps(sidecar).encode())
    (storage / "index.toml").write_bytes(dump_index([*records, record]))
    return path


def start_pywharf(pywharf: str, root: Path, config: dict[str, object], admin: dict[str, object] | None,
                  log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    root.mkdir(parents=True, exist_ok=True)
    config_path = root.parent / f"{root.name}-config.toml"
    config_path.write_text(tomli_w.dumps(config))
    port = free_port()
    cmd = [pywharf, "server", str(root), "--config", str(config_path), "--host", "127.0.0.1",
           "--port", str(port), "--extra_index_url=", "--workers=1", *extra]
    if admin is not None:
        admin_path = root.parent / f"{root.name}-admin.toml"
        admin_path.write_text(tomli_w.dumps(admin))
        cmd += ["--admin_secret", str(admin_path)]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return proc, base


def get_all(session_auth: str, urls: list[str], threads: int = 4) -> None:
    """GET every URL once (4 threads, keep-alive sessions); raise on anything but 200."""
    def worker(chunk: list[str]) -> None:
        with requests.Session() as session:
            session.headers.update({"Authorization": session_auth, "Accept": TEXT_HTML})
            for url in chunk:
                response = session.get(url, timeout=120)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]!r}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [urls[i::threads] for i in range(threads)]))


def streamed_download(url: str, auth: str) -> tuple[float, int]:
    """Seconds and bytes of one GET, read in 1 MiB chunks and discarded."""
    started = time.perf_counter()
    received = 0
    with requests.get(url, headers={"Authorization": auth}, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
    return time.perf_counter() - started, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--files", type=int, default=3, help="wheels per project")
    parser.add_argument("--big_mb", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for pages")
    parser.add_argument("--rounds", type=int, default=2, help="hosted/proxy page runs, alternated")
    parser.add_argument("--pywharf", default=shutil.which("pywharf", path=str(Path(sys.executable).parent))
                        or "pywharf", help="the pywharf executable to run (default: the venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs) and print it")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.perf_counter()
        up_storage = tmp / "upstream" / "cache" / "up" / "storage"
        records = build_corpus(up_storage, args.projects, args.files, file_bytes=2048)
        add_big_wheel(up_storage, records, args.big_mb)
        hosted_storage = tmp / "server" / "cache" / "hosted" / "storage"
        add_big_wheel(hosted_storage, build_corpus(hosted_storage, args.projects, args.files, file_bytes=2048),
                      args.big_mb)  # a hosted big file too: the proxy's cached download vs a hosted one
        print(f"corpus: {args.projects} projects x {args.files} wheels + one {args.big_mb} MB wheel, "
              f"twice (upstream, hosted), built in {time.perf_counter() - t0:.1f} s", flush=True)

        up_config = {"up": {"type": "file_system", "read_secret": UP_READ, "write_secret": UP_WRITE}}
        # The upstream's access log counts what the proxy asks it.
        up_proc, up_base = start_pywharf(args.pywharf, tmp / "upstream", up_config, None, tmp / "upstream.log",
                                         "--access_log")
        procs.append(up_proc)
        up_auth = basic("reader", UP_READ)
        wait_http(f"{up_base}/repos/up/simple/proj00000/", headers={"Authorization": up_auth})

        config = {
            "hosted": {"type": "file_system", "read_secret": HOSTED_READ, "write_secret": HOSTED_WRITE},
            "pypi": {"type": "proxy", "upstream": f"{up_base}/repos/up/simple/", "read_secret": PROXY_READ,
                     "page_ttl": 3600},
        }
        admin = {"pypi": {"type": "proxy", "raw": f"reader:{UP_READ}"}}
        proc, base = start_pywharf(args.pywharf, tmp / "server", config, admin, tmp / "server.log")
        procs.append(proc)
        hosted_auth, proxy_auth = basic("x", HOSTED_READ), basic("x", PROXY_READ)
        wait_http(f"{base}/repos/hosted/simple/proj00000/", headers={"Authorization": hosted_auth})
        cache = tmp / "server" / "cache" / "pypi" / "storage"

        # -- warm-up ------------------------------------------------------------------------------
        names = [f"proj{p:05d}" for p in range(args.projects)]
        started = time.perf_counter()
        get_all(hosted_auth, [f"{base}/repos/hosted/simple/{n}/" for n in names])
        hosted_warm = time.perf_counter() - started
        started = time.perf_counter()
        get_all(proxy_auth, [f"{base}/repos/pypi/simple/{n}/" for n in names])
        proxy_warm = time.perf_counter() - started
        small = [f"{base}/repos/pypi/simple/{n}/{n}-1.0-py3-none-any.whl" for n in names[::10]]
        started = time.perf_counter()
        get_all(proxy_auth, small)
        small_warm = time.perf_counter() - started
        cached_small = sum(1 for n in names[::10] if (cache / f"{n}-1.0-py3-none-any.whl").is_file())
        print(f"warm-up: {args.projects} hosted pages {hosted_warm:.1f} s; {args.projects} proxy pages (first "
              f"fetch from upstream) {proxy_warm:.1f} s; {len(small)} small files through the proxy "
              f"{small_warm:.1f} s ({cached_small} cached)", flush=True)

        # -- pages: hosted vs cached proxy, alternated ---------------------------------------------
        scripts = {}
        for repo, auth in (("hosted", hosted_auth), ("pypi", proxy_auth)):
            script = tmp / f"pages-{repo}.lua"
            script.write_text(LUA.format(prefix=f"/repos/{repo}/simple/", max_index=args.projects - 1,
                                              auth=auth, accept=TEXT_HTML))
            scripts[repo] = script
        def upstream_requests() -> int:
            return (tmp / "upstream.log").read_text().count(" /repos/up/")

        asked_before = upstream_requests()
        page_runs: dict[str, list[tuple[float, str, float]]] = {"hosted": [], "pypi": []}
        for round_ in range(args.rounds):
            for repo in ("hosted", "pypi"):
                result = wrk(base, scripts[repo], args.seconds, args.connections)
                page_runs[repo].append(result)
                print(f"  pages round {round_ + 1} {repo:>6}: {result[0]:,.0f} req/s, p99 {result[1]}", flush=True)
        upstream_asked = upstream_requests() - asked_before

        # -- first fetch of the big wheel through the proxy ---------------------------------------
        big_url = f"{base}/repos/pypi/simple/{BIG_PROJECT}/{BIG_NAME}"
        requests.get(f"{base}/repos/pypi/simple/{BIG_PROJECT}/", headers={"Authorization": proxy_auth},
                     timeout=60).raise_for_status()  # the page (small), so only the file is measured
        rss_before = rss_mb(proc.pid, "VmRSS")
        up_rss_before = rss_mb(up_proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
        Path(f"/proc/{up_proc.pid}/clear_refs").write_text("5")
        first_s, first_bytes = streamed_download(big_url, proxy_auth)
        rss_peak = rss_mb(proc.pid)
        up_rss_peak = rss_mb(up_proc.pid)
        if first_bytes != args.big_mb << 20:
            raise RuntimeError(f"first fetch: {first_bytes} bytes, expected {args.big_mb << 20}")
        deadline = time.monotonic() + 60
        while not (cache / BIG_NAME).is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not (cache / BIG_NAME).is_file():
            raise RuntimeError(f"{BIG_NAME} was not cached in {cache}")

        # -- cached big wheel: proxy vs nginx on the cache folder ---------------------------------
        file_script = tmp / "big.lua"
        file_script.write_text(FILE_LUA.format(path=f"/repos/pypi/simple/{BIG_PROJECT}/{BIG_NAME}", auth=proxy_auth))
        streamed_download(big_url, proxy_auth)  # the cached copy is in the page cache for both
        rss_before_cached = rss_mb(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        proxy_dl = wrk(base, file_script, args.seconds, 4)
        rss_cached_peak = rss_mb(proc.pid)
        hosted_script = tmp / "hosted-big.lua"
        hosted_script.write_text(FILE_LUA.format(path=f"/repos/hosted/simple/{BIG_PROJECT}/{BIG_NAME}",
                                                 auth=hosted_auth))
        streamed_download(f"{base}/repos/hosted/simple/{BIG_PROJECT}/{BIG_NAME}", hosted_auth)
        hosted_dl = wrk(base, hosted_script, args.seconds, 4)

        nginx_port = free_port()
        conf = tmp / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read our 0700 temp folder
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=cache, user=user))
        subprocess.run(["nginx", "-c", str(conf), "-e", str(tmp / "nginx-error.log")], check=True)
        try:
            wait_http(f"http://127.0.0.1:{nginx_port}/{BIG_NAME}", stream=True)
            nginx_script = tmp / "nginx.lua"
            nginx_script.write_text(FILE_LUA.format(path=f"/{BIG_NAME}", auth=proxy_auth))
            nginx_dl = wrk(f"http://127.0.0.1:{nginx_port}", nginx_script, args.seconds, 4)
        finally:
            subprocess.run(["nginx", "-c", str(conf), "-s", "stop"], check=False)
        server_log = (tmp / "server.log").read_text()
    finally:
        for p in reversed(procs):
            stop(p)
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    hosted_rps = [r[0] for r in page_runs["hosted"]]
    proxy_rps = [r[0] for r in page_runs["pypi"]]
    ratio = sum(proxy_rps) / sum(hosted_rps)
    growth = rss_peak - rss_before
    dl_ratio = proxy_dl[2] / nginx_dl[2]

    def runs(results: list[tuple[float, str, float]]) -> str:
        return ", ".join(f"{r[0]:,.0f} ({r[1]})" for r in results)

    rows = [
        (f"hosted page, random of {args.projects}, HTML, basic auth: req/s (p99), wrk -t2 -c{args.connections}",
         runs(page_runs["hosted"]), ""),
        ("cached proxied page, same: req/s (p99)", runs(page_runs["pypi"]), ""),
        ("proxy / hosted pages (sum of runs)", f"{ratio:.2f}", "~1.0: " + ("met" if ratio >= 0.9 else "MISSED")),
        (f"first fetch of the {args.big_mb} MB wheel through the proxy",
         f"{first_s:.2f} s ({args.big_mb * 1.048576 / first_s:,.0f} MB/s)", ""),
        ("  proxy server RSS growth during it (VmHWM - VmRSS before)",
         f"+{growth:.1f} MB over {rss_before:.0f} MB", "< 64 MB: " + ("met" if growth < 64 else "MISSED")),
        ("  upstream server RSS growth during it", f"+{up_rss_peak - up_rss_before:.1f} MB over "
                                                   f"{up_rss_before:.0f} MB", ""),
        (f"cached {args.big_mb} MB wheel, wrk -c4 {args.seconds} s: proxy MB/s",
         f"{proxy_dl[2]:,.0f} ({proxy_dl[0]:.2f} req/s)", ""),
        ("  the hosted repository's big wheel, same wrk: MB/s", f"{hosted_dl[2]:,.0f} ({hosted_dl[0]:.2f} req/s)",
         ""),
        ("  nginx (sendfile) on the proxy's cache folder: MB/s", f"{nginx_dl[2]:,.0f} ({nginx_dl[0]:.2f} req/s)", ""),
        ("  proxy / nginx", f"{dl_ratio:.2f}", ">= 0.8: " + ("met" if dl_ratio >= 0.8 else "MISSED")),
        ("  proxy server RSS growth during the cached downloads",
         f"+{rss_cached_peak - rss_before_cached:.1f} MB over {rss_before_cached:.0f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\n{'metric':<{width}} | {'value':>{value_width}} | target")
    for metric, value, target in rows:
        print(f"{metric:<{width}} | {value:>{value_width}} | {target}")
    print(f"(upstream requests during the page runs: {upstream_asked}; "
          f"server log warnings: {server_log.count('WARNING')})")


if __name__ == "__main__":
    main()
