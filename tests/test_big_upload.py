"""A 1 GiB upload through a real server, streamed end to end.

Private indexes hold big wheels (CUDA builds are often over 1 GB). The upload path promises to
stream the ``content`` part straight to the storage folder while hashing it, so the server's
memory must not grow with the file. The client side streams too: the body is generated on the
fly and sent with an explicit Content-Length (no chunked encoding, like twine), so the test
never holds the file in memory either.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fs_config

FILE_SIZE = 1 << 30  # 1 GiB
BLOCK = 1 << 20  # generated and sent 1 MiB at a time
PEAK_RSS_LIMIT_BYTES = 150 * 1000 * 1000  # 150 MB
FILENAME = "big-1.0-py3-none-any.whl"
BOUNDARY = "pywharf-big-upload-boundary-7d1f0c2a"


def field_part(name: str, value: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()


def file_header() -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{FILENAME}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


class StreamedForm:
    """The multipart body of a legacy upload, produced piece by piece.

    The sha256 of the file is computed while its bytes are generated and sent as the
    ``sha256_digest`` field *after* the file part (the server validates fields only once the
    whole form is in). Its length is fixed (64 hex digits), so Content-Length is known up front.
    """

    def __init__(self, size: int, seed: int = 1234) -> None:
        self.size = size
        self.seed = seed
        self.sha256 = hashlib.sha256()
        self.head = b"".join(field_part(k, v) for k, v in [
            (":action", "file_upload"), ("protocol_version", "1"), ("name", "big"), ("version", "1.0"),
            ("filetype", "bdist_wheel"), ("pyversion", "py3"), ("metadata_version", "2.1"),
        ]) + file_header()
        self.tail_length = len(b"\r\n" + field_part("sha256_digest", "0" * 64) + f"--{BOUNDARY}--\r\n".encode())

    @property
    def content_length(self) -> int:
        return len(self.head) + self.size + self.tail_length

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        rng = random.Random(self.seed)
        remaining = self.size
        while remaining:
            chunk = rng.randbytes(min(BLOCK, remaining))
            self.sha256.update(chunk)
            remaining -= len(chunk)
            yield chunk
        tail = b"\r\n" + field_part("sha256_digest", self.sha256.hexdigest()) + f"--{BOUNDARY}--\r\n".encode()
        assert len(tail) == self.tail_length
        yield tail


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size the process has had since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB"
            return int(value) * 1024
    raise AssertionError("no VmHWM in /proc status")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK * 4), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_gib_upload_streams_with_bounded_memory(server_factory):
    """1 GiB with the default max_file_bytes: accepted (200), stored byte-exact, and the server
    process never goes above 150 MB resident (it streams instead of buffering the file)."""
    server = server_factory(fs_config(), "--extra_index_url=")
    form = StreamedForm(FILE_SIZE)
    stored = server.root / "cache" / "local" / "storage" / FILENAME
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        started = time.monotonic()
        conn.putrequest("POST", "/simple/")
        conn.putheader("Authorization", "Basic bG9jYWw6d3JpdGUtc2VjcmV0")  # local:write-secret
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(form.content_length))
        conn.endheaders()
        for piece in form:
            conn.send(piece)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        elapsed = time.monotonic() - started
        conn.close()
        peak = peak_rss_bytes(server.proc.pid)  # before the fixture stops the server
        print(f"\n1 GiB upload: HTTP {response.status} in {elapsed:.1f} s "
              f"({FILE_SIZE / elapsed / 1e6:.0f} MB/s); server peak RSS (VmHWM) {peak / 1e6:.1f} MB")

        assert response.status == 200, body
        assert stored.stat().st_size == FILE_SIZE
        assert sha256_of(stored) == form.sha256.hexdigest()
        leftovers = [p.name for p in stored.parent.iterdir() if p.name.endswith(".part")]
        assert leftovers == [], "staging files left behind"
        assert peak < PEAK_RSS_LIMIT_BYTES, f"server peak RSS {peak / 1e6:.1f} MB"
    finally:
        stored.unlink(missing_ok=True)
        for part in stored.parent.glob(".upload-*.part"):
            part.unlink()
