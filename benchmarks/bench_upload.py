"""Legacy uploads (what twine sends) into a growing repository: throughput, and whether it holds.

Starts a real ``pywharf server`` on 127.0.0.1 with one ``file_system`` repository, builds N
distinct small wheels (``proj00000-1.0`` ...: real ``.dist-info/METADATA``, ``WHEEL``, ``RECORD``
from tests/distbuilder.py, ~3 KB each) and encodes each upload's multipart body before timing,
then uploads all N from T threads (one keep-alive ``requests.Session`` each) and reports:

- overall uploads/s, and the rate of the first and of the last ``--window`` uploads (by
  completion order) with their ratio: a cost per upload that grows with the repository shows up
  as a last-window rate below the first;
- p50/p99 latency of the first and last window, the rate of every window (the curve), the
  server's CPU per upload and its RSS at the end;
- a restart on the same ROOT: seconds until ``/readyz`` answers 200 and until ``/simple/`` lists
  all N projects (what N journalled uploads cost a start), the RSS then;
- random ``/simple/<project>/`` pages with basic auth for ``--page_seconds``: wrk if installed
  (as bench_protocol), else a threaded Python client (a floor: it shares the 2 cores);
- the reference: pypiserver (``--pypiserver_venv``, or ``pypi-server`` on PATH; skipped with a
  message when absent) receives the first ``--reference_files`` of the same uploads from the same
  threads, without auth, on its default server; the ratio compares pywharf's first window.

Writes the figures to benchmarks/results/bench_upload-<time>.json (or --out) and a summary on
stdout. Everything is bounded: uploads stop at --max_upload_seconds, servers are stopped in
``finally``. Run from the repo root inside the project venv:

    python -m benchmarks.bench_upload [--files 10000] [--threads 4] [--reference_files 1000]

pypiserver venv: ``python3 -m venv /tmp/pypiserver-venv && /tmp/pypiserver-venv/bin/pip install
'pypiserver[passlib]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks.bench_protocol import AUTH, JSON_V1, page_script, rss_mb, wait_http
from benchmarks.load import free_port, stop, threaded_get, wrk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from distbuilder import DistSpec, build_wheel

REPO, WRITE_SECRET = "bench", "bench-write-secret"  # bench_protocol.AUTH is bench:bench-read-secret
CONFIG = f'[{REPO}]\ntype = "file_system"\nread_secret = "bench-read-secret"\nwrite_secret = "{WRITE_SECRET}"\n'
BOUNDARY = "pywharf-upload-bench-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Upload:
    filename: str
    body: bytes  # the whole multipart/form-data body, encoded before timing


@dataclass(frozen=True)
class Done:
    index: int
    start: float  # seconds since the run started
    end: float
    status: int


def upload_form(wheel: Path, spec: DistSpec) -> Upload:
    """The form twine sends for a wheel (its digests and the main metadata fields)."""
    data = wheel.read_bytes()
    fields = [
        (":action", "file_upload"), ("protocol_version", "1"), ("name", spec.name), ("version", spec.version),
        ("filetype", "bdist_wheel"), ("pyversion", "py3"), ("metadata_version", "2.1"),
        ("summary", spec.summary), ("requires_python", spec.requires_python),
        *(("classifiers", c) for c in spec.classifiers), *(("requires_dist", r) for r in spec.requires_dist),
        ("description", spec.description), ("description_content_type", spec.description_content_type),
        ("md5_digest", hashlib.md5(data, usedforsecurity=False).hexdigest()),
        ("sha256_digest", hashlib.sha256(data).hexdigest()),
        ("blake2_256_digest", hashlib.blake2b(data, digest_size=32).hexdigest()),
    ]
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{wheel.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode())
    parts += [data, f"\r\n--{BOUNDARY}--\r\n".encode()]
    return Upload(wheel.name, b"".join(parts))


def build_uploads(folder: Path, count: int, seed: int = 0) -> list[Upload]:
    """``count`` distinct projects ``proj%05d`` 1.0 (the names bench_protocol's page script asks for)."""
    rng = random.Random(seed)
    uploads = []
    for i in range(count):
        spec = DistSpec(f"proj{i:05d}", "1.0", summary=f"Upload benchmark project {i}",
                        requires_dist=["requests>=2", "packaging"],
                        classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"])
        wheel = build_wheel(spec, folder, extra_bytes=rng.randbytes(2048))
        uploads.append(upload_form(wheel, spec))
        wheel.unlink()
    return uploads


def run_uploads(url: str, uploads: list[Upload], threads: int, max_seconds: float
                ) -> tuple[list[Done], list[str], float]:
    """Upload everything from ``threads`` sessions; completions in completion order, errors, seconds."""
    lock = threading.Lock()
    pending = iter(range(len(uploads)))
    done: list[Done] = []
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        session = requests.Session()
        session.auth = (REPO, WRITE_SECRET)
        headers = {"Content-Type": CONTENT_TYPE}
        mine: list[Done] = []
        try:
            while time.monotonic() < deadline:
                with lock:
                    index = next(pending, None)
                if index is None:
                    break
                started = time.perf_counter()
                try:
                    response = session.post(url, data=uploads[index].body, headers=headers, timeout=120)
                    status, reason = response.status_code, response.text[:200]
                except requests.RequestException as exc:
                    status, reason = 0, repr(exc)
                ended = time.perf_counter()
                mine.append(Done(index, started - t0, ended - t0, status))
                if status != 200:
                    with lock:
                        errors.append(f"{uploads[index].filename}: {status} {reason}")
        finally:
            session.close()
            with lock:
                done.extend(mine)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    t0 = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max(1.0, deadline - time.monotonic()) + 180)
    elapsed = time.perf_counter() - t0
    with lock:
        return sorted(done, key=lambda d: d.end), list(errors), elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def window_stats(done: list[Done], lo: int, hi: int) -> dict[str, float]:
    """Completions ``lo`` .. ``hi - 1``: their rate (from the previous completion, or the start)
    and latency."""
    chunk = done[lo:hi]
    since = done[lo - 1].end if lo else 0.0
    latencies = [(d.end - d.start) * 1000 for d in chunk]
    return {"uploads": len(chunk), "uploads_per_s": len(chunk) / (chunk[-1].end - since),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99)}


def summarize(done: list[Done], errors: list[str], elapsed: float, window: int, wanted: int) -> dict[str, object]:
    ok = [d for d in done if d.status == 200]
    result: dict[str, object] = {
        "uploads_wanted": wanted, "uploads_ok": len(ok), "errors": len(errors), "first_errors": errors[:5],
        "seconds": elapsed, "uploads_per_s": len(ok) / elapsed if elapsed else 0.0,
    }
    if not ok:
        return result
    size = max(1, min(window, len(ok) // 2))  # small debug runs: two non-overlapping halves
    first, last = window_stats(ok, 0, size), window_stats(ok, len(ok) - size, len(ok))
    step = max(1, min(size, len(ok) // 10))  # at least ten points on the curve
    result.update({
        "window": size, "first_window": first, "last_window": last,
        "last_over_first": last["uploads_per_s"] / first["uploads_per_s"],
        "curve_step": step,
        "curve": [window_stats(ok, lo, min(lo + step, len(ok))) for lo in range(0, len(ok), step)],
    })
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def steal_share(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor took between two /proc/stat ``cpu`` samples."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return delta[7] / sum(delta) if sum(delta) else 0.0


def cpu_sample() -> list[int]:
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def start_pywharf(root: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    pywharf = shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf"
    return subprocess.Popen(
        [pywharf, "server", str(root), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--extra_index_url=", "--workers=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listed_projects(base: str) -> int:
    response = requests.get(f"{base}/simple/", headers={"Authorization": AUTH, "Accept": JSON_V1}, timeout=60)
    return len(response.json()["projects"]) if response.status_code == 200 else -1


def restart(root: Path, config: Path, expected: int, timeout: float) -> tuple[subprocess.Popen[bytes], str, dict]:
    """Start on the existing ROOT; seconds until /readyz is 200 and until /simple/ lists everything."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = start_pywharf(root, config, port)
    wait_http(f"{base}/readyz", timeout=timeout)
    ready = time.perf_counter() - started
    deadline = time.monotonic() + timeout
    while (count := listed_projects(base)) != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"/simple/ lists {count} projects, not {expected}, after {timeout} s")
        time.sleep(0.02)
    listed = time.perf_counter() - started
    return proc, base, {"ready_s": ready, "all_listed_s": listed, "projects_listed": count,
                        "rss_mb": rss_mb(proc.pid, "VmRSS")}


def page_load(tmp: Path, base: str, port: int, projects: int, seconds: int, threads: int) -> dict[str, object]:
    if shutil.which("wrk"):
        rps, p99, _ = wrk(base, page_script(tmp, "pages", "/simple/", projects, "text/html"), seconds, 32)
        return {"client": "wrk -t2 -c32", "requests_per_s": rps, "p99": p99}
    paths = [f"/simple/proj{i:05d}/" for i in range(projects)]
    result: dict[str, object] = {"client": f"threaded http.client x{threads} (wrk not installed)"}
    result.update(threaded_get(port, paths, seconds, threads, {"Authorization": AUTH}))
    return result


def pypiserver_reference(args: argparse.Namespace, tmp: Path, uploads: list[Upload]) -> dict[str, object]:
    venv_exe = Path(args.pypiserver_venv) / "bin" / "pypi-server"
    exe = str(venv_exe) if venv_exe.exists() else shutil.which("pypi-server")
    if not exe:
        return {"skipped": f"pypiserver not found at {venv_exe} nor on PATH (see the docstring to install it)"}
    python = Path(exe).parent / "python"
    version = subprocess.run([str(python), "-c", "import pypiserver; print(pypiserver.__version__)"],
                             capture_output=True, text=True, timeout=60).stdout.strip() or "?"
    server = args.pypiserver_server
    if server == "auto":  # what bottle picks: waitress if installed, ..., else the single-threaded wsgiref
        guess = "from pypiserver.__main__ import guess_auto_server as g; print(g().name)"
        server = "auto: " + (subprocess.run([str(python), "-c", guess], capture_output=True, text=True,
                                            timeout=60).stdout.strip() or "?")
    folder = tmp / "pypiserver-packages"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "-i", "127.0.0.1", "-p", str(port), "-P", ".", "-a", ".", "--disable-fallback",
         "--server", args.pypiserver_server, str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        done, errors, elapsed = run_uploads(f"http://127.0.0.1:{port}/", uploads, args.threads,
                                            args.max_upload_seconds)
        rss = rss_mb(proc.pid, "VmRSS")
    finally:
        stop(proc)
    result = summarize(done, errors, elapsed, len(uploads), len(uploads))
    result.update({"version": version, "server": server,
                   "files_stored": len(list(folder.glob("*.whl"))), "rss_mb": rss})
    return result


def machine() -> dict[str, object]:
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def print_summary(results: dict) -> None:
    ours, start, pages, ref = results["pywharf"], results["restart"], results["pages"], results["pypiserver"]
    args = results["args"]
    print(f"\npywharf {results['machine']['commit']}, {args['files']} uploads from {args['threads']} threads "
          f"(load average {results['machine']['loadavg_at_start'][0]:.2f} at start, "
          f"{results['machine']['loadavg_at_end'][0]:.2f} at the end, "
          f"CPU steal during uploads {ours.get('cpu_steal', 0):.0%})")
    print(f"  uploads: {ours['uploads_ok']} ok, {ours['errors']} errors, {ours['seconds']:.1f} s, "
          f"{rate(ours['uploads_per_s'])}/s overall")
    if "first_window" in ours:
        first, last, w = ours["first_window"], ours["last_window"], ours["window"]
        for label, stats in (("first", first), ("last ", last)):
            print(f"  {label} {w}: {rate(stats['uploads_per_s'])}/s, p50 {stats['p50_ms']:.1f} ms, "
                  f"p99 {stats['p99_ms']:.1f} ms")
        print(f"  last/first rate: {ours['last_over_first']:.0%} (target >= 80 %); overall target >= 200/s")
        curve = ", ".join(rate(c["uploads_per_s"]) for c in ours["curve"])
        print(f"  uploads/s per {ours['curve_step']} uploads: {curve}")
    print(f"  server CPU {ours['server_cpu_ms_per_upload']:.1f} ms/upload; client CPU "
          f"{ours['client_cpu_ms_per_upload']:.1f} ms/upload; server RSS at the end {ours['rss_mb']:.0f} MB "
          f"(peak {ours['peak_rss_mb']:.0f} MB); journal {ours['journal_bytes'] / 1e6:.1f} MB")
    print(f"restart on the same ROOT: /readyz 200 after {start['ready_s']:.2f} s, /simple/ lists all "
          f"{start['projects_listed']} projects after {start['all_listed_s']:.2f} s, RSS {start['rss_mb']:.0f} MB")
    latency = f"p99 {pages['p99']}" if "p99" in pages else f"p50 {pages['p50_ms']:.1f} ms, p99 {pages['p99_ms']:.1f} ms"
    print(f"random /simple/<project>/ pages ({pages['client']}): {pages['requests_per_s']:,.0f} req/s, {latency}")
    if "skipped" in ref:
        print(f"pypiserver reference: skipped ({ref['skipped']})")
    elif "first_window" in ours and "first_window" in ref:
        first, last = ref["first_window"], ref["last_window"]
        print(f"pypiserver {ref['version']} (server {ref['server']}, no auth): {ref['uploads_ok']} uploads, "
              f"{ref['errors']} errors, {rate(ref['uploads_per_s'])}/s (first {ref['window']}: "
              f"{rate(first['uploads_per_s'])}/s, p50 {first['p50_ms']:.1f} ms; last {ref['window']}: "
              f"{rate(last['uploads_per_s'])}/s, p50 {last['p50_ms']:.1f} ms)")
        print(f"  pywharf's first {ours['window']} / pypiserver's {ref['uploads_ok']}: "
              f"{results['pywharf_over_pypiserver']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--backend", choices=["file_system"], default="file_system")
    parser.add_argument("--window", type=int, default=1_000, help="uploads in the first/last windows")
    parser.add_argument("--reference_files", type=int, default=1_000)
    parser.add_argument("--pypiserver_venv", default="/tmp/pypiserver-venv")
    parser.add_argument("--pypiserver_server", default="auto", help="pypi-server --server (its default: auto)")
    parser.add_argument("--page_seconds", type=int, default=5)
    parser.add_argument("--max_upload_seconds", type=float, default=1800, help="stop uploading after this")
    parser.add_argument("--start_timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, object] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                  "machine": machine()}

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp_name:
        tmp = Path(tmp_name)
        root, config = tmp / "root", tmp / "config.toml"
        config.write_text(CONFIG)
        started = time.perf_counter()
        uploads = build_uploads(tmp / "wheels", max(args.files, args.reference_files))
        sizes = [len(u.body) for u in uploads]
        print(f"built {len(uploads)} wheels + forms in {time.perf_counter() - started:.1f} s "
              f"(form {min(sizes)}-{max(sizes)} bytes)")

        # -- uploads into a growing repository ------------------------------------------------
        port = free_port()
        proc = start_pywharf(root, config, port)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=args.start_timeout)
            cpu_before, steal_before, client_before = cpu_seconds(proc.pid), cpu_sample(), time.process_time()
            done, errors, elapsed = run_uploads(f"http://127.0.0.1:{port}/simple/", uploads[:args.files],
                                                args.threads, args.max_upload_seconds)
            ours = summarize(done, errors, elapsed, args.window, args.files)
            ok = max(1, ours["uploads_ok"])
            ours.update({
                "server_cpu_ms_per_upload": (cpu_seconds(proc.pid) - cpu_before) * 1000 / ok,
                "client_cpu_ms_per_upload": (time.process_time() - client_before) * 1000 / ok,
                "cpu_steal": steal_share(steal_before, cpu_sample()),
                "rss_mb": rss_mb(proc.pid, "VmRSS"), "peak_rss_mb": rss_mb(proc.pid, "VmHWM"),
            })
        finally:
            stop(proc)
        journal = root / "cache" / REPO / "uploads.jsonl"
        ours["journal_bytes"] = journal.stat().st_size if journal.exists() else 0
        results["pywharf"] = ours

        # -- restart with N journalled uploads, then read load ---------------------------------
        proc, base, results["restart"] = restart(root, config, ours["uploads_ok"], args.start_timeout)
        try:
            results["pages"] = page_load(tmp, base, int(base.rsplit(":", 1)[1]), ours["uploads_ok"],
                                         args.page_seconds, args.threads)
        finally:
            stop(proc)

        # -- reference --------------------------------------------------------------------------
        if args.reference_files > 0:
            reference = pypiserver_reference(args, tmp, uploads[:args.reference_files])
        else:
            reference = {"skipped": "--reference_files 0"}
        results["pypiserver"] = reference
        if "first_window" in ours and reference.get("uploads_per_s"):
            results["pywharf_over_pypiserver"] = ours["first_window"]["uploads_per_s"] / reference["uploads_per_s"]

    results["machine"]["loadavg_at_end"] = os.getloadavg()
    out = args.out or RESULTS / f"bench_upload-{time.strftime('%Y%m%d-%H%M%S')}-{args.files}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
