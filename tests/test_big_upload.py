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
import time
from pathlib import Path

import pytest
from conftest import fs_config
from streamed_upload import BOUNDARY, StreamedWheel

FILE_SIZE = 1 << 30  # 1 GiB
BLOCK = 1 << 20
PEAK_RSS_LIMIT_BYTES = 150 * 1000 * 1000  # 150 MB


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
    form = StreamedWheel("big", FILE_SIZE, seed=1234)
    stored = server.root / "cache" / "local" / "storage" / form.filename
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
