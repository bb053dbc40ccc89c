"""Fetch-once, stream-while-caching (pywharf_core/service/pull_through.py) with a real upstream on
loopback and the file_system storage adapter as the cache."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fs_config
from test_upload_rules import make_wheel, upload
from upstream_standin import Route, Upstream, file_system_storage

from pywharf_backends.file_system import FileSystemBackend
from pywharf_core.service.pull_through import PullThrough, UpstreamFileError
from pywharf_core.service.upstream_index import NotModified, UpstreamIndex, UpstreamPage, UpstreamUnavailable, to_record
from pywharf_core.storage.backend import LocalFile, StreamedFile

WHEEL = "demo-1.0-py3-none-any.whl"
MIB = 1 << 20


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def storage(tmp_path: Path) -> FileSystemBackend:
    return file_system_storage(tmp_path / "root")


def pull_through(storage: FileSystemBackend, upstream: Upstream, **kwargs) -> PullThrough:
    return PullThrough(storage, UpstreamIndex(f"{upstream.base}/simple/", timeout=5).open_file, **kwargs)


def serve(upstream: Upstream, data: bytes, path: str = f"/files/{WHEEL}", **route) -> tuple[str, str]:
    upstream.routes[path] = Route(body=data, **route)
    return f"{upstream.base}{path}", hashlib.sha256(data).hexdigest()


def read_all(target: object) -> bytes:
    assert isinstance(target, StreamedFile)
    return b"".join(target.chunks)


def leftovers(storage: FileSystemBackend) -> list[str]:
    return sorted(p.name for p in storage.root.iterdir() if p.name.startswith(".upload-"))


def test_first_request_is_streamed_and_cached_then_served_from_storage_with_upstream_stopped(
        storage: FileSystemBackend, upstream: Upstream) -> None:
    data = os.urandom(3 * MIB + 5)
    url, sha256 = serve(upstream, data)
    pull = pull_through(storage, upstream)
    target = pull.open(WHEEL, url, sha256, size=len(data))
    assert isinstance(target, StreamedFile) and target.size == len(data)
    assert read_all(target) == data
    pull_wait_idle(pull)
    assert storage.blob_sha256(WHEEL) == sha256 and leftovers(storage) == []
    upstream.stop()
    again = pull.open(WHEEL, url, sha256, size=len(data))
    assert isinstance(again, LocalFile) and again.path.read_bytes() == data
    # A new PullThrough (a restarted server) over the same storage too.
    assert isinstance(PullThrough(storage, lambda url: pytest.fail("fetched")).open(WHEEL, url, sha256), LocalFile)


def pull_wait_idle(pull: PullThrough, timeout: float = 10) -> None:
    """The flight stores the blob after the last byte was released: wait for it to finish."""
    deadline = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pull.in_flight() == 0:
            return
        deadline.wait(0.01)
    raise AssertionError("the download did not finish")


def test_first_client_gets_bytes_while_the_upstream_is_still_sending(storage: FileSystemBackend,
                                                                     upstream: Upstream) -> None:
    data = os.urandom(4 * MIB)
    gate = threading.Event()
    url, sha256 = serve(upstream, data, gate=gate, gate_after=2 * MIB)
    pull = pull_through(storage, upstream)
    target = pull.open(WHEEL, url, sha256)
    assert isinstance(target, StreamedFile)
    chunks = iter(target.chunks)
    received = bytearray(next(chunks))
    while len(received) < 2 * MIB - 1:  # all but the held-back byte of what the upstream sent
        received += next(chunks)
    assert len(received) == 2 * MIB - 1 and not storage.has_blob(WHEEL)
    gate.set()
    received += b"".join(chunks)
    assert bytes(received) == data
    pull_wait_idle(pull)
    assert storage.has_blob(WHEEL)


def test_twenty_concurrent_first_requests_make_one_upstream_get(storage: FileSystemBackend,
                                                                upstream: Upstream) -> None:
    data = os.urandom(6 * MIB + 123)
    gate = threading.Event()
    url, sha256 = serve(upstream, data, gate=gate, gate_after=MIB)
    pull = pull_through(storage, upstream)
    start = threading.Barrier(20)
    results: list[bytes | BaseException] = [b""] * 20
    kinds: list[str] = []
    opened = threading.Semaphore(0)

    def client(i: int) -> None:
        try:
            start.wait()
            target = pull.open(WHEEL, url, sha256, size=len(data))
            kinds.append(type(target).__name__)
            opened.release()
            results[i] = read_all(target)
        except BaseException as exc:
            results[i] = exc
            opened.release()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    # The upstream holds the body after 1 MiB until every client has joined the flight.
    for _ in range(20):
        assert opened.acquire(timeout=30)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert kinds == ["StreamedFile"] * 20  # every one a reader of the one flight, none from storage
    assert all(result == data for result in results), [type(r) for r in results if r != data]
    assert upstream.hits[f"/files/{WHEEL}"] == 1
    pull_wait_idle(pull)
    assert storage.blob_sha256(WHEEL) == sha256 and leftovers(storage) == []


def test_sha256_mismatch_stores_nothing_and_the_stream_fails(storage: FileSystemBackend,
                                                             upstream: Upstream) -> None:
    data = os.urandom(2 * MIB)
    url, _ = serve(upstream, data)
    pull = pull_through(storage, upstream)
    target = pull.open(WHEEL, url, "0" * 64, size=len(data))
    assert isinstance(target, StreamedFile)
    received = bytearray()
    with pytest.raises(UpstreamFileError, match="sha256") as caught:
        for chunk in target.chunks:
            received += chunk
    assert caught.value.status == 502
    assert len(received) < len(data)  # the last byte is never released unverified
    pull_wait_idle(pull)
    assert not storage.has_blob(WHEEL) and leftovers(storage) == []
    # Nothing is cached: the next request asks the upstream again (and fails again).
    with pytest.raises(UpstreamFileError):
        read_all(pull.open(WHEEL, url, "0" * 64))
    assert upstream.hits[f"/files/{WHEEL}"] == 2


def test_truncated_upstream_stores_nothing(storage: FileSystemBackend, upstream: Upstream) -> None:
    data = os.urandom(3 * MIB)
    url, sha256 = serve(upstream, data, truncate_at=MIB + 7)  # Content-Length says 3 MiB, then closes
    pull = pull_through(storage, upstream)
    target = pull.open(WHEEL, url, sha256)
    with pytest.raises(UpstreamFileError):
        read_all(target)
    pull_wait_idle(pull)
    assert not storage.has_blob(WHEEL) and leftovers(storage) == []


def test_body_without_length_that_stops_short_of_the_page_size_stores_nothing(storage: FileSystemBackend,
                                                                             upstream: Upstream) -> None:
    data = os.urandom(MIB)
    url, sha256 = serve(upstream, data, send_length=False, truncate_at=1000)
    pull = pull_through(storage, upstream)
    with pytest.raises(UpstreamFileError, match="truncated at 1000 of"):
        read_all(pull.open(WHEEL, url, sha256, size=len(data)))
    pull_wait_idle(pull)
    assert not storage.has_blob(WHEEL) and leftovers(storage) == []


def test_errors_before_the_first_byte_are_raised_by_open(storage: FileSystemBackend, upstream: Upstream) -> None:
    pull = pull_through(storage, upstream)
    with pytest.raises(UpstreamFileError) as missing:
        pull.open(WHEEL, f"{upstream.base}/files/{WHEEL}", "a" * 64)
    assert missing.value.status == 404
    url, sha256 = serve(upstream, b"oops", status=503)
    with pytest.raises(UpstreamFileError, match="HTTP 503") as down:
        pull.open(WHEEL, url, sha256)
    assert down.value.status == 502
    url, sha256 = serve(upstream, b"x" * 100)
    with pytest.raises(UpstreamFileError, match="the page said 99"):  # Content-Length is not the page's size
        pull.open(WHEEL, url, sha256, size=99)
    with pytest.raises(UpstreamFileError, match="larger than 50 bytes"):
        pull.open(WHEEL, url, sha256, max_bytes=50)
    pull_wait_idle(pull)
    assert not storage.has_blob(WHEEL) and leftovers(storage) == []
    base = upstream.base
    upstream.stop()
    with pytest.raises(UpstreamFileError, match="ConnectionError"):
        pull.open(WHEEL, f"{base}/files/{WHEEL}", "a" * 64)


def test_oversize_body_without_length_is_cut_off(storage: FileSystemBackend, upstream: Upstream) -> None:
    data = os.urandom(3 * MIB)
    url, sha256 = serve(upstream, data, send_length=False)
    pull = pull_through(storage, upstream, max_bytes=MIB)
    with pytest.raises(UpstreamFileError, match="more bytes than expected"):
        read_all(pull.open(WHEEL, url, sha256))
    pull_wait_idle(pull)
    assert not storage.has_blob(WHEEL) and leftovers(storage) == []


def test_metadata_file_is_verified_and_cached(storage: FileSystemBackend, upstream: Upstream) -> None:
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    url, sha256 = serve(upstream, metadata, path=f"/files/{WHEEL}.metadata")
    pull = pull_through(storage, upstream)
    key = f".pywharf/{WHEEL}.metadata"
    with pytest.raises(UpstreamFileError, match="sha256"):
        read_all(pull.open(key, url, "f" * 64, max_bytes=1 << 16))
    pull_wait_idle(pull)
    assert not storage.has_blob(key)
    assert read_all(pull.open(key, url, sha256, max_bytes=1 << 16)) == metadata
    pull_wait_idle(pull)
    assert storage.blob_sha256(key) == sha256
    assert isinstance(pull.open(key, url, sha256), LocalFile)


def test_too_many_concurrent_downloads_is_503(storage: FileSystemBackend, upstream: Upstream) -> None:
    gate = threading.Event()
    data = os.urandom(MIB)
    url, sha256 = serve(upstream, data, gate=gate, gate_after=256 << 10)
    pull = pull_through(storage, upstream, max_flights=1)
    first = pull.open(WHEEL, url, sha256)
    with pytest.raises(UpstreamFileError) as busy:
        pull.open("other-1.0.tar.gz", url, sha256)
    assert busy.value.status == 503
    gate.set()
    assert read_all(first) == data


def test_a_reader_closed_early_does_not_stop_the_fill(storage: FileSystemBackend, upstream: Upstream) -> None:
    data = os.urandom(3 * MIB)
    url, sha256 = serve(upstream, data)
    pull = pull_through(storage, upstream)
    target = pull.open(WHEEL, url, sha256)
    assert isinstance(target, StreamedFile)
    next(iter(target.chunks))
    target.chunks.close()  # type: ignore[attr-defined]  # the client went away
    pull_wait_idle(pull)
    assert storage.blob_sha256(WHEEL) == sha256


def test_50_mb_file_streams_with_flat_memory(storage: FileSystemBackend, upstream: Upstream,
                                             tmp_path: Path) -> None:
    source = tmp_path / "big.whl"
    hasher = hashlib.sha256()
    with open(source, "wb") as handle:
        block = os.urandom(MIB)
        for i in range(50):
            chunk = block[:-4] + i.to_bytes(4, "big")
            handle.write(chunk)
            hasher.update(chunk)
    size = source.stat().st_size
    upstream.routes[f"/files/{WHEEL}"] = Route(body=source)
    pull = pull_through(storage, upstream)
    rss_before = _rss_bytes()
    tracemalloc.start()
    try:
        target = pull.open(WHEEL, f"{upstream.base}/files/{WHEEL}", hasher.hexdigest(), size=size)
        assert isinstance(target, StreamedFile)
        received = hashlib.sha256()
        count = 0
        for chunk in target.chunks:
            received.update(chunk)
            count += len(chunk)
        pull_wait_idle(pull)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = _rss_bytes() - rss_before
    assert count == size and received.hexdigest() == hasher.hexdigest()
    assert storage.blob_sha256(WHEEL) == hasher.hexdigest()
    print(f"50 MiB through the pull-through: peak Python allocations {peak / MIB:.1f} MiB, "
          f"RSS growth {rss_growth / MIB:.1f} MiB")
    assert peak < 16 * MIB, f"peak Python allocations {peak / MIB:.1f} MiB"
    assert rss_growth < 64 * MIB, f"RSS grew by {rss_growth / MIB:.1f} MiB"


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- credentials ------------------------------------------------------------------------------------------


def test_credentials_go_only_to_the_upstream_origin(storage: FileSystemBackend, upstream: Upstream) -> None:
    cdn = Upstream()  # another origin (port), as files.pythonhosted.org is for pypi.org
    try:
        same, other, redirected = os.urandom(1000), os.urandom(1000), os.urandom(1000)
        upstream.routes["/simple/demo/"] = Route(body=(
            f'<a href="/files/demo-1.0.tar.gz#sha256={hashlib.sha256(same).hexdigest()}">a</a>'
            f'<a href="{cdn.base}/files/demo-1.1.tar.gz#sha256={hashlib.sha256(other).hexdigest()}">b</a>'
            f'<a href="/files/demo-1.2.tar.gz#sha256={hashlib.sha256(redirected).hexdigest()}">c</a>'
        ).encode(), content_type="text/html")
        upstream.routes["/files/demo-1.0.tar.gz"] = Route(body=same)
        upstream.routes["/files/demo-1.2.tar.gz"] = Route(status=302, headers={
            "Location": f"{cdn.base}/files/demo-1.2.tar.gz"})
        cdn.routes["/files/demo-1.1.tar.gz"] = Route(body=other)
        cdn.routes["/files/demo-1.2.tar.gz"] = Route(body=redirected)
        index = UpstreamIndex(f"{upstream.base}/simple/", auth=("proxy", "s3cret"))
        result = index.fetch_project("demo")
        assert isinstance(result, UpstreamPage)
        pull = PullThrough(storage, index.open_file)
        for file, data in zip(result.files, (same, other, redirected), strict=True):
            assert read_all(pull.open(file.filename, file.url, file.sha256)) == data
        pull_wait_idle(pull)
        assert upstream.auth_headers("/simple/demo/") == ["Basic cHJveHk6czNjcmV0"]
        assert upstream.auth_headers("/files/demo-1.0.tar.gz") == ["Basic cHJveHk6czNjcmV0"]
        assert upstream.auth_headers("/files/demo-1.2.tar.gz") == ["Basic cHJveHk6czNjcmV0"]
        assert cdn.auth_headers("/files/demo-1.1.tar.gz") == [None]
        assert cdn.auth_headers("/files/demo-1.2.tar.gz") == [None]  # not over a redirect either
    finally:
        cdn.stop()


# -- a real pywharf server as the upstream ------------------------------------------------------------------


def test_a_pywharf_server_as_upstream(server_factory, storage: FileSystemBackend, tmp_path: Path) -> None:
    """Page (PEP 691 JSON with size, upload time and core-metadata), file and .metadata, all
    through the upstream's basic auth, then served from the cache with the upstream stopped."""
    server = server_factory(fs_config(), "--extra_index_url=")
    dist = make_wheel(tmp_path / "dists", name="Real_Demo", version="2.0", requires_python=">=3.8")
    assert upload(server, dist).status_code == 200
    index = UpstreamIndex(f"{server.base}/simple/", auth=("local", "read-secret-00"))
    result = index.fetch_project("real-demo")
    assert isinstance(result, UpstreamPage) and result.api_version == "1.1" and result.etag
    (file,) = result.files
    record = to_record(file)
    assert record is not None
    assert (record.filename, record.sha256, record.size, record.requires_python) == (
        dist.filename, dist.sha256, len(dist.data), ">=3.8")
    assert record.upload_time.endswith("Z") and record.metadata_sha256
    assert file.url == f"{server.base}/simple/real-demo/{dist.filename}"
    pull = PullThrough(storage, index.open_file)
    assert read_all(pull.open(file.filename, file.url, file.sha256, file.size)) == dist.data
    metadata_key = f".pywharf/{file.filename}.metadata"
    metadata = read_all(pull.open(metadata_key, file.metadata_url, file.core_metadata_sha256, max_bytes=1 << 20))
    assert b"Name: Real_Demo" in metadata or b"Name: real-demo" in metadata.lower()
    pull_wait_idle(pull)
    assert index.fetch_project("real-demo", etag=result.etag) == NotModified(result.etag)  # type: ignore[arg-type]
    server.stop()
    assert isinstance(pull.open(file.filename, file.url, file.sha256), LocalFile)
    assert isinstance(pull.open(metadata_key, file.metadata_url, file.core_metadata_sha256), LocalFile)
    with pytest.raises(UpstreamUnavailable):
        index.fetch_project("real-demo")
