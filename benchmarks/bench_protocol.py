"""pywharf vs pypiserver (and nginx for file downloads) on the same synthetic repository.

Builds N projects x K wheels (default 10,000 x 5), starts pywharf, pypiserver (pip-installable:
give its venv with --pypiserver_venv) and nginx (Debian package, for the download baseline) on
127.0.0.1, and measures with wrk (Debian package):

- random ``/simple/<project>/`` pages with basic auth, HTML and PEP 691 JSON: req/s and p99;
- ``/simple/`` over every project: median latency of single requests;
- a large-file download: MB/s through each server (nginx: sendfile from the same folder);
- a 1 GiB upload through pywharf: time and the server's peak RSS (VmHWM);
- server start time until /healthz (pywharf) or the index (pypiserver) answers.

Prints a table with the ratio to pypiserver. Run from the repo root inside the project venv:

    python -m benchmarks.bench_protocol [--projects 10000] [--seconds 10] \\
        [--pypiserver_venv /tmp/pypiserver-venv] [--download_mb 512] [--skip_upload] \\
        [--pywharf_args="--metrics_token=..."]   # extra `pywharf server` flags, for an A/B

pypiserver venv: ``python3 -m venv /tmp/pypiserver-venv && /tmp/pypiserver-venv/bin/pip install
'pypiserver[passlib]'``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import shutil
import signal
import statistics
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
  local path = string.format("{prefix}proj%05d/", math.random(0, {max_index}))
  return wrk.format("GET", path, {{["Authorization"] = "{auth}", ["Accept"] = "{accept}"}})
end
"""
FILE_LUA = """
request = function()
  return wrk.format("GET", "{path}", {{["Authorization"] = "{auth}"}})
end
"""
NGINX_CONF = """
worker_processes 2;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
"""
AUTH = "Basic " + base64.b64encode(b"bench:bench-read-secret").decode()
JSON_V1 = "application/vnd.pypi.simple.v1+json"


def wait_http(url: str, timeout: float = 120, **kwargs: object) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5, **kwargs).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} never answered 200")


def median_latency_ms(url: str, samples: int = 30, **headers: str) -> float:
    session = requests.Session()
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        response = session.get(url, headers={"Authorization": AUTH, **headers}, timeout=60)
        response.raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def page_script(tmp: Path, name: str, prefix: str, projects: int, accept: str) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(LUA.format(prefix=prefix, max_index=projects - 1, auth=AUTH, accept=accept))
    return script


def file_script(tmp: Path, name: str, path: str) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(FILE_LUA.format(path=path, auth=AUTH))
    return script


def write_big_file(path: Path, size_mb: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(size_mb):
            handle.write(block)


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (peak resident set, resettable via /proc/PID/clear_refs) or VmRSS, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


HELLO_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b"x" * 900


async def page(request):
    return Response(BODY, media_type="text/html")


app = Starlette(routes=[Route("/simple/{project}/", page)])
"""


def hello_world_ceiling(tmp: Path, script: Path, seconds: int, connections: int) -> tuple[float, str, float]:
    """A one-route Starlette app on the same uvicorn: what this machine allows any such app.

    Shared, noisy machines (CPU steal) vary by 2x between runs; this row makes the others
    comparable across machines."""
    (tmp / "hello_app.py").write_text(HELLO_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp), "hello_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--lifespan", "off", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/simple/x/")
        return wrk(f"http://127.0.0.1:{port}", script, seconds, connections)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def upload_one_gib(port: int) -> float:
    """The streamed 1 GiB legacy upload the tests use (tests/streamed_upload.py); returns seconds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from streamed_upload import BOUNDARY, StreamedWheel

    form = StreamedWheel("big", 1 << 30)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.putrequest("POST", "/simple/")
    conn.putheader("Authorization", "Basic " + base64.b64encode(b"bench:write").decode())
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(form.content_length))
    conn.endheaders()
    for piece in form:
        conn.send(piece)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"upload failed: {response.status} {body[:200]!r}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pypiserver_venv", default="/tmp/pypiserver-venv")
    parser.add_argument("--pypiserver_seconds", type=int, default=10)
    parser.add_argument("--download_mb", type=int, default=512)
    parser.add_argument("--skip_upload", action="store_true")
    # e.g. --pywharf_args="--metrics_token=..." for an A/B of a server option (benchmarks/README.md, "Metrics")
    parser.add_argument("--pywharf_args", default="", help="extra `pywharf server` flags, split on spaces")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []  # metric, pywharf, pypiserver, ratio

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        storage = root / "cache" / "bench" / "storage"
        build_corpus(storage, args.projects, args.files, file_bytes=64)
        big = storage / "bigfile-1.0-py3-none-any.whl"
        write_big_file(big, args.download_mb)
        # pypiserver reads a plain folder: the same files, hard-linked, without pywharf's sidecars.
        flat = tmp / "flat"
        flat.mkdir()
        for path in storage.glob("*.whl"):
            os.link(path, flat / path.name)
        config = tmp / "config.toml"
        config.write_text('[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\n'
                          'write_secret = "bench-write-secret"\n')
        print(f"corpus: {args.projects} projects x {args.files} wheels + one {args.download_mb} MB file; "
              f"wrk -t2 -c{args.connections}")

        # -- pywharf ---------------------------------------------------------------------------
        port = free_port()
        started = time.perf_counter()
        pywharf = shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf"
        proc = subprocess.Popen(
            [pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--extra_index_url=", "--workers=1", *args.pywharf_args.split()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/healthz")
            start_s = time.perf_counter() - started
            wait_http(f"{base}/simple/proj00000/", headers={"Authorization": AUTH})
            ours = {
                "start (s)": f"{start_s:.2f}",
                "html": wrk(base, page_script(tmp, "h", "/simple/", args.projects, "text/html"),
                            args.seconds, args.connections),
                "json": wrk(base, page_script(tmp, "j", "/simple/", args.projects, JSON_V1),
                            args.seconds, args.connections),
                "root_ms": median_latency_ms(f"{base}/simple/"),
                "root_json_ms": median_latency_ms(f"{base}/simple/", Accept=JSON_V1),
                "download": wrk(base, file_script(tmp, "d", f"/simple/bigfile/{big.name}"), args.seconds, 4),
            }
            ours["rss_loaded"] = rss_mb(proc.pid)
            if not args.skip_upload:
                resident = rss_mb(proc.pid, "VmRSS")
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                seconds = upload_one_gib(port)
                growth = rss_mb(proc.pid) - resident
                ours["upload"] = f"{seconds:.1f} s, RSS +{growth:.0f} MB over {resident:.0f} MB"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

        ceiling = hello_world_ceiling(tmp, page_script(tmp, "hw", "/simple/", args.projects, "text/html"),
                                      args.seconds, args.connections)

        # -- nginx (download baseline) ---------------------------------------------------------
        nginx_port = free_port()
        conf = tmp / "nginx.conf"
        # workers must read the temp folder (0700, ours): run them as this user
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=storage, user=user))
        subprocess.run(["nginx", "-c", str(conf), "-e", str(tmp / "nginx-error.log")], check=True)
        try:
            wait_http(f"http://127.0.0.1:{nginx_port}/{big.name}", stream=True)
            nginx_download = wrk(f"http://127.0.0.1:{nginx_port}", file_script(tmp, "n", f"/{big.name}"),
                                 args.seconds, 4)
        finally:
            subprocess.run(["nginx", "-c", str(conf), "-s", "stop"], check=False)

        # -- pypiserver ------------------------------------------------------------------------
        theirs: dict[str, object] = {}
        pypi_server = Path(args.pypiserver_venv) / "bin" / "pypi-server"
        if pypi_server.exists():
            htpasswd = tmp / "htpasswd"
            subprocess.run(  # passlib lives in pypiserver's venv
                [str(pypi_server.parent / "python"), "-c",
                 "import sys; from passlib.apache import HtpasswdFile as H; h = H(sys.argv[1], new=True); "
                 "h.set_password('bench', 'bench-read-secret'); h.save()", str(htpasswd)], check=True)
            pport = free_port()
            started = time.perf_counter()
            pproc = subprocess.Popen(
                [str(pypi_server), "run", "-i", "127.0.0.1", "-p", str(pport), "-P", str(htpasswd),
                 "-a", "download,list,update", str(flat)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pbase = f"http://127.0.0.1:{pport}"
            try:
                wait_http(f"{pbase}/simple/proj00000/", headers={"Authorization": AUTH})
                theirs["start (s)"] = f"{time.perf_counter() - started:.2f}"
                theirs["html"] = wrk(pbase, page_script(tmp, "ph", "/simple/", args.projects, "text/html"),
                                     args.pypiserver_seconds, args.connections)
                theirs["root_ms"] = median_latency_ms(f"{pbase}/simple/", samples=5)
                theirs["download"] = wrk(pbase, file_script(tmp, "pd", f"/packages/{big.name}"),
                                         args.pypiserver_seconds, 4)
            finally:
                pproc.send_signal(signal.SIGTERM)
                pproc.wait(30)
        else:
            print(f"(pypiserver not found at {pypi_server}: its column stays empty)")

    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:.0f}x" if b else "-"

    html, json_page, download = ours["html"], ours["json"], ours["download"]
    p_html, p_download = theirs.get("html"), theirs.get("download")
    rows.append(("random /simple/<project>/ HTML req/s (p99)", f"{html[0]:,.0f} ({html[1]})",
                 f"{p_html[0]:,.1f} ({p_html[1]})" if p_html else "-", ratio(html[0], p_html and p_html[0])))
    rows.append(("  same wrk on a hello-world Starlette route", f"{ceiling[0]:,.0f} ({ceiling[1]})", "-", "-"))
    rows.append(("random /simple/<project>/ JSON req/s (p99)", f"{json_page[0]:,.0f} ({json_page[1]})",
                 "n/a (no PEP 691)", "-"))
    p_root = theirs.get("root_ms")
    rows.append(("/simple/ median ms (HTML)", f"{ours['root_ms']:.1f}", f"{p_root:.0f}" if p_root else "-",
                 ratio(p_root, ours["root_ms"]) if p_root else "-"))
    rows.append(("/simple/ median ms (JSON)", f"{ours['root_json_ms']:.1f}", "n/a", "-"))
    rows.append((f"download {args.download_mb} MB file, MB/s (nginx {nginx_download[2]:,.0f})",
                 f"{download[2]:,.0f} ({download[2] / nginx_download[2]:.0%} of nginx)",
                 f"{p_download[2]:,.0f}" if p_download else "-", ratio(download[2], p_download and p_download[2])))
    if "upload" in ours:
        rows.append(("1 GiB upload", str(ours["upload"]), "-", "-"))
    rows.append(("server peak RSS before the upload (MB)", f"{ours['rss_loaded']:.0f}", "-", "-"))
    rows.append(("start (s)", str(ours["start (s)"]), str(theirs.get("start (s)", "-")), "-"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'metric':<{width}} | {'pywharf':>30} | {'pypiserver':>18} | ratio")
    for metric, a, b, r in rows:
        print(f"{metric:<{width}} | {a:>30} | {b:>18} | {r}")


if __name__ == "__main__":
    main()
