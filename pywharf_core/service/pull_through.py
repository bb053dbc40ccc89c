"""Fetch-once, stream-while-caching downloads of upstream files for proxy repositories.

:meth:`PullThrough.open` answers a download of a blob the cache may not hold yet:

- **Cached**: ``storage.locate(key)``, as for any stored file.
- **Not cached: one upstream GET per key, whoever asks (single flight).** The first request
  starts a *flight*: a background thread that downloads into a temp file in
  ``storage.staging_dir()`` as fast as the upstream sends, hashing as it writes. Every request
  for the key while the flight runs, the first one included, is a *reader* of that growing temp
  file through its own descriptor (``os.pread`` of what the writer has announced, waiting on a
  condition for more). So the first client is streamed to while the file is being written, 20
  concurrent first requests cost one upstream GET, a slow client slows nobody else, and a
  client that disconnects does not abort the fill (the next one finds the file cached). Memory
  stays flat: 1 MiB chunks in and out, never the whole file.
- **Verified before the last byte leaves.** A reader is always held one byte behind the writer
  until the flight has checked the size and sha256 of the whole file. On a mismatch, a
  truncated or oversize upstream body, or an upstream error, the temp file is deleted, nothing
  is stored, and every reader raises :class:`UpstreamFileError` instead of its last byte: the
  HTTP layer aborts the connection, so no client ever receives a complete response with
  unverified bytes (a ``Content-Length`` response would otherwise look complete).
- **Stored create-only.** A verified file is put with ``storage.put_blob(key, ...)``; losing a
  race (another server stored it first) is fine. The flight leaves the in-flight table only
  after that, and the temp file is deleted only after it has left the table: a request either
  joins the flight (and can still open the temp file) or finds the blob stored. Readers keep
  reading through their open descriptors after the temp file is unlinked (POSIX semantics).
  If storing fails the verified bytes still reach the readers; the next request fetches again.
- **Errors before the first byte are synchronous**: ``open`` waits until the upstream has
  answered, so a 404 or 5xx is raised from ``open`` (the HTTP layer can still choose the status)
  rather than from a stream whose 200 was already sent.

Upstream credentials are the fetch function's business: :meth:`UpstreamIndex.open_file` sends
them only to the upstream's own origin, never to a CDN host file URLs point at.

Temp files are named like staged uploads (``.upload-*.part``), so ones a crash left behind are
removed by ``Storage.cleanup_staging`` at the next start.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from pywharf_core.model.errors import PywharfError
from pywharf_core.service.upstream_index import UpstreamNotFound
from pywharf_core.storage.api import Storage
from pywharf_core.storage.atomic_write import create_temp, write_fully
from pywharf_core.storage.backend import DownloadTarget, StreamedFile

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_FILE_BYTES = 5 * (1 << 30)  # the file_system backend's default max_file_bytes, rounded
MAX_FLIGHTS = 64  # concurrent upstream downloads (threads, temp files) per PullThrough
ANSWER_TIMEOUT = 60.0  # seconds ``open`` waits for the upstream to start answering
STALL_TIMEOUT = 120.0  # seconds a reader waits for the next byte before giving up


class FileBody(Protocol):
    """An open upstream download (``UpstreamIndex.open_file`` returns one)."""

    content_length: int | None

    def chunks(self, size: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


Fetch = Callable[[str], FileBody]


class UpstreamFileError(PywharfError):
    """The file could not be fetched, or failed verification; nothing was stored.

    ``status`` is the HTTP status the caller may answer with while it has sent nothing yet:
    404 (the upstream has no such file), 503 (too many downloads at once) or 502 (anything
    else). Raised from a stream, it means "abort the connection".
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class _State(enum.Enum):
    CONNECTING = "connecting"  # waiting for the upstream's answer
    RUNNING = "running"  # receiving; readers stay one byte behind
    VERIFIED = "verified"  # complete and checked: readers may read everything
    FAILED = "failed"


class _Flight:
    """One key's download: the temp file, how much of it is written, and the outcome."""

    def __init__(self, key: str, url: str, sha256: str | None, size: int | None, max_bytes: int, path: Path) -> None:
        self.key = key
        self.url = url
        self.sha256 = sha256
        self.size = size  # the size to deliver (expected, else the upstream's Content-Length)
        self.max_bytes = max_bytes
        self.path = path
        self.cond = threading.Condition()
        self.state = _State.CONNECTING
        self.written = 0
        self.error = ""
        self.status = 502

    def visible(self) -> int:
        """How many bytes a reader may have: all once verified, else all but the last written."""
        return self.written if self.state is _State.VERIFIED else max(self.written - 1, 0)

    def fail(self, error: str, status: int = 502) -> None:
        with self.cond:
            self.state, self.error, self.status = _State.FAILED, error, status
            self.cond.notify_all()


class _FlightReader:
    """A reader of a flight's temp file: an iterator of chunks with ``close`` (a StreamedFile's)."""

    def __init__(self, flight: _Flight, fd: int, stall_timeout: float) -> None:
        self._flight = flight
        self._fd: int | None = fd
        self._pos = 0
        self._stall_timeout = stall_timeout

    def __iter__(self) -> _FlightReader:
        return self

    def __next__(self) -> bytes:
        if self._fd is None:
            raise StopIteration
        flight = self._flight
        with flight.cond:
            while True:
                if flight.state is _State.FAILED:
                    self.close()
                    raise UpstreamFileError(flight.error, flight.status)
                available = flight.visible() - self._pos
                if available > 0:
                    break
                if flight.state is _State.VERIFIED:  # everything read
                    self.close()
                    raise StopIteration
                before = (flight.state, flight.written)
                flight.cond.wait(self._stall_timeout)
                if (flight.state, flight.written) == before:
                    self.close()
                    raise UpstreamFileError(f"upstream file {flight.url}: no data for {self._stall_timeout:g} s")
        data = os.pread(self._fd, min(available, CHUNK), self._pos)
        if not data:  # cannot happen while the writer only appends
            self.close()
            raise UpstreamFileError(f"temp file of {flight.key!r} ended early")
        self._pos += len(data)
        return data

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class PullThrough:
    """Single-flight, verified, streamed caching of upstream files into one ``Storage``."""

    def __init__(
        self,
        storage: Storage,
        fetch: Fetch,
        *,
        max_bytes: int = MAX_FILE_BYTES,
        max_flights: int = MAX_FLIGHTS,
        answer_timeout: float = ANSWER_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.storage = storage
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.max_flights = max_flights
        self.answer_timeout = answer_timeout
        self.stall_timeout = stall_timeout
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()  # guards _flights; never taken while holding a flight's cond

    def in_flight(self) -> int:
        """How many downloads are running (for health pages and tests)."""
        with self._lock:
            return len(self._flights)

    def open(self, key: str, url: str, sha256: str | None, size: int | None = None, *,
             max_bytes: int | None = None) -> DownloadTarget:
        """Where the bytes of ``key`` come from: the cache, else a stream of the upstream ``url``.

        ``sha256`` is the digest the upstream page gave (64 lowercase hex digits); the file is
        stored only if its bytes match it. None stores whatever arrives (complete per
        Content-Length): pass it only where no digest exists and that is acceptable. ``size``,
        when known, must match too. ``max_bytes`` (default: the instance's) caps the download:
        pass a small one for ``.metadata`` files.

        Blocks until the upstream has answered; raises :class:`UpstreamFileError` when it
        answered with an error (``status`` 404 for a missing file). The returned stream raises
        it when the transfer fails later (see the module docstring).
        """
        target = self.storage.locate(key)
        if target is not None:
            return target
        flight, fd = self._join_or_start(key, url, sha256, size, max_bytes or self.max_bytes)
        reader = _FlightReader(flight, fd, self.stall_timeout)
        try:
            with flight.cond:
                answered = flight.cond.wait_for(lambda: flight.state is not _State.CONNECTING, self.answer_timeout)
                if not answered:
                    raise UpstreamFileError(f"upstream file {url}: no answer within {self.answer_timeout:g} s", 504)
                if flight.state is _State.FAILED:
                    raise UpstreamFileError(flight.error, flight.status)
                known_size = flight.size
        except BaseException:
            reader.close()
            raise
        return StreamedFile(reader, known_size)

    def _join_or_start(self, key: str, url: str, sha256: str | None, size: int | None,
                       max_bytes: int) -> tuple[_Flight, int]:
        """The running flight for ``key`` (started if there is none) and a read descriptor on its
        temp file, opened while the flight is certainly in the table (so the file exists)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, os.open(flight.path, os.O_RDONLY)
            if len(self._flights) >= self.max_flights:
                raise UpstreamFileError(f"{self.max_flights} upstream downloads are running already", 503)
            folder = self.storage.staging_dir()
            folder.mkdir(parents=True, exist_ok=True)
            write_fd, path = create_temp(folder, prefix=".upload-proxy-", suffix=".part")
            flight = _Flight(key, url, sha256, size, max_bytes, path)
            self._flights[key] = flight
            try:
                read_fd = os.open(path, os.O_RDONLY)
                threading.Thread(target=self._run, args=(flight, write_fd), name=f"pywharf-pull-{key[:60]}",
                                 daemon=True).start()
            except BaseException:
                del self._flights[key]
                os.close(write_fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                raise
        return flight, read_fd

    # -- the flight's thread -----------------------------------------------------------------------

    def _run(self, flight: _Flight, fd: int) -> None:
        """The flight's thread. Another process of this server (``--workers``) fetching the same
        file holds its peer lock until the blob is stored: this flight waits for it (its readers
        up to ``answer_timeout``), then finds the blob and copies it (``_download``), so
        concurrent first requests make one upstream fetch per server, not one per worker."""
        with _PeerLock(self.storage.staging_dir(), flight.key, self.answer_timeout):
            self._run_alone(flight, fd)

    def _run_alone(self, flight: _Flight, fd: int) -> None:
        try:
            try:
                digest, size = self._download(flight, fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception as exc:
            status = 404 if isinstance(exc, UpstreamNotFound) else 502
            if isinstance(exc, UpstreamFileError):
                status = exc.status
            if not isinstance(exc, PywharfError):  # urllib3 and OS errors: say which file
                message = f"upstream file {flight.url}: {type(exc).__name__}: {exc}"
            else:
                message = str(exc)
            log.warning("pull-through of %r failed, nothing stored: %s", flight.key, message)
            self._finish(flight)
            flight.fail(message, status)
            return
        with flight.cond:  # readers may now have the last byte
            flight.state = _State.VERIFIED
            flight.cond.notify_all()
        try:
            created = self.storage.put_blob(flight.key, flight.path, size, digest)
            log.info("pull-through: %s %r (%d bytes) from %s", "cached" if created else "already had",
                     flight.key, size, flight.url)
        except Exception as exc:
            log.error("pull-through of %r: verified but not stored (served anyway): %s: %s",
                      flight.key, type(exc).__name__, exc)
        finally:
            self._finish(flight)

    def _download(self, flight: _Flight, fd: int) -> tuple[str, int]:
        """Write the file into ``fd``, announcing progress; its sha256 and size once verified."""
        # A flight that starts just after another one stored the blob copies the blob instead of
        # asking the upstream again (the window between ``locate`` and joining the table).
        try:
            stored = self.storage.has_blob(flight.key)
        except Exception:  # a store that cannot answer now: the upstream still can
            stored = False
        body = _StorageBody(self.storage, flight.key) if stored else self.fetch(flight.url)
        try:
            length = body.content_length
            if flight.size is not None and length is not None and length != flight.size:
                raise UpstreamFileError(f"upstream file {flight.url}: {length} bytes, the page said {flight.size}")
            expected = flight.size if flight.size is not None else length
            if expected is not None and expected > flight.max_bytes:
                raise UpstreamFileError(f"upstream file {flight.url}: larger than {flight.max_bytes} bytes")
            with flight.cond:
                flight.size, flight.state = expected, _State.RUNNING
                flight.cond.notify_all()
            hasher = hashlib.sha256()
            written = 0
            for chunk in body.chunks(CHUNK):
                written += len(chunk)
                if written > (expected if expected is not None else flight.max_bytes):
                    raise UpstreamFileError(f"upstream file {flight.url}: more bytes than expected")
                write_fully(fd, chunk)
                hasher.update(chunk)
                with flight.cond:
                    flight.written = written
                    flight.cond.notify_all()
        finally:
            body.close()
        if expected is not None and written != expected:
            raise UpstreamFileError(f"upstream file {flight.url}: truncated at {written} of {expected} bytes")
        digest = hasher.hexdigest()
        if flight.sha256 is not None and digest != flight.sha256:
            raise UpstreamFileError(f"upstream file {flight.url}: sha256 {digest} is not the page's {flight.sha256}")
        return digest, written

    def _finish(self, flight: _Flight) -> None:
        """Leave the table, then delete the temp file (readers keep their descriptors)."""
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(flight.path)


class _StorageBody:
    """A stored blob read like an upstream body (see ``_download``)."""

    def __init__(self, storage: Storage, key: str) -> None:
        self._handle = storage.open_blob(key)
        if self._handle is None:
            raise UpstreamFileError(f"{key!r} vanished from storage")
        self.content_length: int | None = None

    def chunks(self, size: int) -> Iterator[bytes]:
        assert self._handle is not None
        return iter(lambda: self._handle.read(size), b"")  # type: ignore[union-attr]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class _PeerLock:
    """An exclusive file lock per file in the staging folder, shared by the processes of one
    server (``--workers``): the holder fetches, the others wait. Waiting stops after ``timeout``
    seconds, and a lock that cannot be made is skipped: the fetch then goes ahead (at worst a
    second upstream fetch, never a wrong file, since blobs are stored create-only and verified).
    filelock removes the lock file on release, so the folder does not fill with them."""

    def __init__(self, folder: Path, key: str, timeout: float) -> None:
        self.path = folder / f".pull-{hashlib.sha256(key.encode()).hexdigest()[:40]}.lock"
        self._lock = FileLock(str(self.path), timeout=timeout, thread_local=False)
        self._held = False

    def __enter__(self) -> _PeerLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            self._held = True
        except Timeout:
            log.warning("pull-through: waited %gs for another worker's fetch of the same file: fetching it too",
                        self._lock.timeout)
        except OSError as exc:  # no lock, no harm (the flight must run)
            log.warning("pull-through: no peer lock at %s: %s", self.path, exc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._held:
            self._lock.release()
