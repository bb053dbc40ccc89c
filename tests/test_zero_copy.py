"""Zero-copy downloads (``pywharf_core.http.zero_copy``): files leave through sendfile(2) on
plain TCP, byte for byte, without holding up other requests, and never over TLS.

Each test talks to a real ``pywharf server`` (uvicorn with pywharf's protocol), because the
extension exists only there; the protocol-level test checks what the scope advertises.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import trustme
from conftest import fs_config, start_server
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.http.limits import TransportLimits
from pywharf_core.http.transport import protocol_class
from pywharf_core.http.zero_copy import PATHSEND, ZeroCopyCycle

REPO, READ, WRITE = "local", "read-secret-123", "write-secret-123"


def _upload_big(base: str, tmp_path: Path, megabytes: int, **requests_kwargs) -> tuple[str, bytes]:
    dist = make_wheel(tmp_path, extra_bytes=os.urandom(megabytes << 20))
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    response = requests.post(f"{base}/simple/", data=body, headers={"Content-Type": content_type},
                             auth=(REPO, WRITE), timeout=60, **requests_kwargs)
    assert response.status_code == 200, response.text
    return f"{base}/simple/demo/{dist.filename}", dist.data


def _slow_download(url: str, auth: str, rcvbuf: int, pause: float) -> bytes:
    """A raw HTTP/1.1 GET read in small bites with pauses: the server's socket buffer fills
    again and again, so sendfile hits EAGAIN and must wait for writability many times."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with sock:
        sock.connect((host, int(port)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        sock.settimeout(30)
        while chunk := sock.recv(1 << 16):
            data += chunk
            if pause:
                time.sleep(pause)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    assert length == len(body)
    return body


def test_big_file_is_byte_exact_through_sendfile_while_other_requests_are_answered(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=")
    try:
        url, data = _upload_big(server.base, tmp_path, 24)
        auth = requests.auth._basic_auth_str(REPO, READ)
        result: dict[str, bytes] = {}
        reader = threading.Thread(target=lambda: result.setdefault("body", _slow_download(url, auth, 8192, 0.0005)))
        reader.start()
        # While the slow download waits for its socket, the event loop keeps answering others.
        latencies = []
        while reader.is_alive() and len(latencies) < 50:
            started = time.monotonic()
            assert requests.get(f"{server.base}/healthz", timeout=5).status_code == 200
            latencies.append(time.monotonic() - started)
        reader.join(60)
        assert hashlib.sha256(result["body"]).digest() == hashlib.sha256(data).digest()
        assert latencies and max(latencies) < 1.0, latencies
        # Fast clients, several at once, each gets the exact bytes.
        with requests.Session() as session:
            for _ in range(3):
                response = session.get(url, auth=(REPO, READ), timeout=30)
                assert response.status_code == 200 and response.content == data
        # What sendfile does not serve still works: a range, a conditional GET, HEAD.
        part = requests.get(url, auth=(REPO, READ), headers={"Range": "bytes=1000-1999"}, timeout=10)
        assert part.status_code == 206 and part.content == data[1000:2000]
        etag = requests.head(url, auth=(REPO, READ), timeout=10).headers["ETag"]
        assert requests.get(url, auth=(REPO, READ), headers={"If-None-Match": etag}, timeout=10).status_code == 304
        head = requests.head(url, auth=(REPO, READ), timeout=10)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_over_tls_files_are_encrypted_not_sent_raw(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    server = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=", tls=paths)
    try:
        url, data = _upload_big(server.base, tmp_path, 4, verify=str(paths["ca"]))
        response = requests.get(url, auth=(REPO, READ), timeout=30, verify=str(paths["ca"]))
        assert response.status_code == 200 and response.content == data
    finally:
        server.stop()


class _Transport(asyncio.Transport):
    def __init__(self, extra: dict[str, object]) -> None:
        super().__init__(extra)
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.parametrize(("tls", "advertised"), [(False, True), (True, False)])
def test_pathsend_is_advertised_on_plain_tcp_only(tls: bool, advertised: bool) -> None:
    seen: list[dict] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> type:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        config = Config(app=app, lifespan="off", log_level="error")
        config.load()
        protocol = protocol_class(TransportLimits())(config=config, server_state=ServerState(),
                                                      app_state={}, _loop=asyncio.get_running_loop())
        left, right = socket.socketpair()
        extra = {"socket": left, "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}
        if tls:
            extra["ssl_object"] = object()
        try:
            protocol.connection_made(_Transport(extra))
            protocol.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            cycle_class = type(protocol.cycle)
            await asyncio.sleep(0.05)
            protocol.connection_lost(None)
        finally:
            left.close()
            right.close()
        return cycle_class

    cycle_class = asyncio.run(run())
    assert seen, "the app was not called"
    assert (PATHSEND in seen[0].get("extensions", {})) is advertised
    assert issubclass(cycle_class, ZeroCopyCycle) is advertised


def test_a_client_leaving_mid_download_is_no_application_error(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=")
    try:
        url, _ = _upload_big(server.base, tmp_path, 24)
        path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        auth = requests.auth._basic_auth_str(REPO, READ)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
            received = 0
            while received < 1 << 20:
                received += len(sock.recv(1 << 16))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.close()
        time.sleep(0.5)
        assert requests.get(f"{server.base}/healthz", timeout=5).status_code == 200
        log = server.log()
        assert "without completing response" not in log and "Traceback" not in log, log
    finally:
        server.stop()
