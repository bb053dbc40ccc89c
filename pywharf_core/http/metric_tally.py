"""The traffic counters ``GET /metrics`` shows, as a value one worker process writes to a file
and a scrape sums over every worker of the server (``pywharf server --workers N``, issue 17).

Each worker counts its own requests (``pywharf_core.http.metrics``); a scrape reaches one of
them. So each worker also keeps a :class:`Tally` of its folded counters in
``ROOT/cache/metrics/<run id>/<slot>.json`` (:class:`TallyFiles`), and the worker that answers
a scrape adds up every slot's file. Why files and not ``prometheus_client``'s multiprocess mode: that
mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before the library is imported and its own
``Counter`` objects, each update a lock and an mmap write, while the request path here stays
one list append (see :class:`pywharf_core.http.metrics.Metrics`).

- A file is replaced whole (a temporary file, then ``os.replace``): a reader sees the old
  counts or the new ones, never half. There is no ``fsync``: the files only have to outlive a
  worker process, not the machine (a new server run starts from zero anyway).
- One writer per file: the worker holding the slot (a replacement takes over a dead worker's
  slot and starts from its file, so the server's sums never go down).
- The files are bounded: their series are (route classes x configured repositories x statuses
  the code answers), and a file over :data:`MAX_FILE_BYTES` is neither written nor read.
- The folder is the run's own (``ROOT/cache/metrics/<run id>/``: several servers may share a
  ROOT), held with a lock by its supervisor (:class:`TallyClaim`), which removes the folders of
  runs no longer holding theirs before it forks the workers, and its own when it stops: counts
  of an earlier run are never summed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from bisect import bisect_left
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.utils import floatToGoString

# Cached pages answer in well under a millisecond; uploads and big downloads take minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0)
# A worker's file: a few kB for a handful of repositories; this many bytes is far beyond any config.
MAX_FILE_BYTES = 16 << 20
_FORMAT = 1


class Latency:
    """One histogram series: observations per bucket (not cumulative), their sum and count."""

    __slots__ = ("per_bucket", "total")

    def __init__(self) -> None:
        self.per_bucket = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.per_bucket[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.per_bucket, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class Tally:
    """Folded counters: requests by (route class, repository, status), latency by route class,
    uploads and downloads by repository as ``[count, bytes]``."""

    __slots__ = ("downloads", "latency", "requests", "uploads")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Latency] = {}
        self.uploads: dict[str, list[int]] = {}
        self.downloads: dict[str, list[int]] = {}

    def add(self, other: Tally) -> None:
        """Add ``other``'s counts to these (``other`` is left as it is, and shares nothing)."""
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        for route, series in other.latency.items():
            mine = self.latency.get(route)
            if mine is None:
                mine = self.latency[route] = Latency()
            mine.per_bucket = [a + b for a, b in zip(mine.per_bucket, series.per_bucket, strict=True)]
            mine.total += series.total
        for mine_table, table in ((self.uploads, other.uploads), (self.downloads, other.downloads)):
            for repository, (count, size) in table.items():
                totals = mine_table.setdefault(repository, [0, 0])
                totals[0] += count
                totals[1] += size

    def encode(self) -> bytes:
        return json.dumps({
            "format": _FORMAT,
            "requests": [[route, repository, status, count]
                         for (route, repository, status), count in self.requests.items()],
            "latency": {route: [series.per_bucket, series.total] for route, series in self.latency.items()},
            "uploads": self.uploads,
            "downloads": self.downloads,
        }, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Tally:
        """The tally :meth:`encode` wrote; ``ValueError`` for anything else (a damaged file)."""
        try:
            document = json.loads(data)
        except RecursionError:
            raise ValueError("nested too deep") from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError("not a pywharf metrics tally")
        tally = cls()
        for entry in _list(document.get("requests")):
            route, repository, status, count = _list(entry, 4)
            tally.requests[(_str(route), _str(repository), _count(status))] = _count(count)
        for route, entry in _dict(document.get("latency")).items():
            per_bucket, total = _list(entry, 2)
            series = tally.latency[route] = Latency()
            series.per_bucket = [_count(n) for n in _list(per_bucket, len(LATENCY_BUCKETS) + 1)]
            if isinstance(total, bool) or not isinstance(total, (int, float)) or not 0 <= total < math.inf:
                raise ValueError("a latency sum is not a finite number >= 0")
            series.total = float(total)
        for name, table in (("uploads", tally.uploads), ("downloads", tally.downloads)):
            for repository, entry in _dict(document.get(name)).items():
                table[repository] = [_count(n) for n in _list(entry, 2)]
        return tally


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ValueError("unexpected list")
    return value


def _dict(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("unexpected object")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("unexpected label")
    return value


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("a count is not an integer >= 0")
    return value


def tally_folder(root: Path, server: str) -> Path:
    """Where the workers of the server run ``server`` (:attr:`WorkerPeers.server`) keep their
    tallies (per run, not per ROOT: several servers may share a ROOT)."""
    return root / "cache" / "metrics" / server


class TallyClaim:
    """The supervisor's hold on its run's tally folder: an exclusive ``flock`` on
    ``<folder>.lock``, held (by the supervisor and, inherited, its workers) until the server
    stops. A starting supervisor removes the folders whose lock it can take: their server is
    gone (the kernel, or the NFS server, released its lock), whichever host or container it
    ran in; a pid could not tell that (pids repeat across containers).
    """

    def __init__(self, root: Path, server: str) -> None:
        self.folder = tally_folder(root, server)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder.with_suffix(".lock"), "a+b")  # noqa: SIM115 (held open on purpose)
        fcntl.flock(self._file, fcntl.LOCK_EX)
        for lock in self.folder.parent.glob("*.lock"):
            if lock.stem != server:
                _remove_if_ended(lock)
        for folder in self.folder.parent.iterdir():  # folders without a lock: none of a live run
            if folder.is_dir() and folder != self.folder and not folder.with_suffix(".lock").exists():
                shutil.rmtree(folder, ignore_errors=True)

    def release(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.with_suffix(".lock").unlink(missing_ok=True)
        self._file.close()


def _remove_if_ended(lock: Path) -> None:
    try:
        with open(lock, "a+b") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a running server's
            shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
            lock.unlink(missing_ok=True)
    except OSError:
        return


class TallyFiles:
    """The tally files of a server's ``count`` workers, one per slot."""

    def __init__(self, root: Path, count: int, server: str) -> None:
        self.folder = tally_folder(root, server)
        self.count = count

    def path(self, slot: int) -> Path:
        return self.folder / f"{slot}.json"

    def write(self, slot: int, tally: Tally) -> None:
        """Replace ``slot``'s file with ``tally`` (atomically); ``OSError`` or ``ValueError`` (too
        big) when it cannot: the slot's previous file then stays."""
        data = tally.encode()
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"the tally is {len(data)} bytes, over {MAX_FILE_BYTES}")
        temporary = self.folder / f".{slot}.{os.getpid()}.tmp"
        try:
            temporary.write_bytes(data)
        except FileNotFoundError:  # the first write of this run (the supervisor removed the folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
        try:
            os.replace(temporary, self.path(slot))
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

    def read(self, slot: int) -> Tally | None:
        """``slot``'s last tally; None when its worker has written none yet. ``OSError`` or
        ``ValueError`` when the file cannot be read or is damaged."""
        try:
            with open(self.path(slot), "rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"over {MAX_FILE_BYTES} bytes")
        return Tally.decode(data)
