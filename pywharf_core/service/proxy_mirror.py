"""What a proxy repository serves: project pages and files of an upstream index, cached.

:class:`ProxyMirror` sits between the HTTP layer and the two building blocks
(:class:`~pywharf_core.service.upstream_index.UpstreamIndex` for pages,
:class:`~pywharf_core.service.pull_through.PullThrough` for files):

- **Pages** (:meth:`ProxyMirror.project_records`). A page fetched less than ``page_ttl`` ago is
  answered from memory, as the *same* tuple object while it is unchanged (the HTTP page cache
  keys rendered pages on identity, so an unchanged page is never re-rendered). After that, one
  upstream request per project at a time (a per-project lock; whoever waited reuses its result),
  conditional on the page's ETag so an unchanged page costs a 304. The cooldown
  (``exclude_newer_than``) and :func:`to_record` decide what is offered. Pages in memory are a
  bounded LRU, so a scan of a million names cannot grow the server without limit.
- **The last good page survives the upstream and a restart.** Every fetched page is also written
  to the cache store (``.pywharf/proxy/pages/<project>.json``): with the upstream down or broken
  the last good page is served (with one log line per retry period, and the upstream is not asked
  again before then, so an outage does not make every request wait for a timeout), also by a
  restarted server. With nothing to serve, :class:`MirrorUnavailable` (the HTTP layer answers
  503, never a 500 and never a 404 that would let a resolver pick another index's file).
- **404 upstream is an answer**: None, cached for ``page_ttl`` like a page. So is a name the
  config's ``allow`` / ``deny`` refuses (never sent upstream).
- **Files** (:meth:`ProxyMirror.open`): only a file on the project's page, stored under the
  PackageStore layout (``<filename>``, ``.pywharf/<filename>.metadata``) and fetched through
  :class:`PullThrough` against the page's sha256 and size: nothing unverified is cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pywharf_core.model.errors import InvalidName, PywharfError
from pywharf_core.model.names import normalize_project, parse_dist_filename
from pywharf_core.model.records import FileRecord
from pywharf_core.service.package_store import metadata_key
from pywharf_core.service.pull_through import PullThrough
from pywharf_core.service.upstream_index import (
    NotModified,
    UpstreamFile,
    UpstreamIndex,
    UpstreamUnavailable,
    filter_cooldown,
    to_record,
)
from pywharf_core.storage.api import Storage, VersionConflict
from pywharf_core.storage.backend import DownloadTarget
from pywharf_core.storage.proxy_config import ProxyConfig

log = logging.getLogger(__name__)

MAX_PAGES = 10_000  # project pages kept in memory (LRU)
MAX_METADATA_BYTES = 16 << 20  # a PEP 658 metadata file; real ones are a few KiB
RETRY_SECONDS = 30.0  # after a failed upstream fetch, how long the stale page (or the failure) is served
PAGES_PREFIX = ".pywharf/proxy/pages/"
PAGE_FORMAT = 1


class MirrorUnavailable(PywharfError):
    """The upstream cannot answer and the proxy has no page of the project to serve (503)."""


@dataclass
class _Page:
    """One project's page as the proxy knows it."""

    files: tuple[UpstreamFile, ...] | None  # as the upstream listed them; None: not upstream (404)
    etag: str | None
    fetched: float  # clock time the upstream last confirmed it (200 or 304)
    records: tuple[FileRecord, ...] | None = None  # what is offered (cooldown, to_record)
    # filename -> (the upstream's entry, its record): what downloads and ETags look up
    offered: dict[str, tuple[UpstreamFile, FileRecord]] = dataclasses.field(default_factory=dict)
    fresh_until: float = 0.0
    error: str | None = None  # set while a failed fetch with nothing to serve is remembered


class ProxyMirror:
    """Pages and files of one proxy repository (blocking: run off the event loop)."""

    def __init__(self, config: ProxyConfig, cache: Storage, upstream: UpstreamIndex, pull: PullThrough, *,
                 clock: Callable[[], float] = time.time, max_pages: int = MAX_PAGES) -> None:
        self.config = config
        self.cache = cache
        self.upstream = upstream
        self.pull = pull
        self.clock = clock
        self.max_pages = max_pages
        self.cooldown = config.cooldown_seconds
        self._pages: OrderedDict[str, _Page] = OrderedDict()
        self._guard = threading.Lock()  # guards _pages and _locks (held only for dict operations)
        self._locks: dict[str, list[Any]] = {}  # project -> [lock, users]

    # -- pages -----------------------------------------------------------------------------------

    def project_records(self, project: str) -> tuple[FileRecord, ...] | None:
        """The files the proxy offers for ``project``; None when it offers none (404).

        Raises :class:`MirrorUnavailable` when the upstream cannot answer and no page was ever
        fetched (none in memory, none in the cache store).
        """
        page = self._page(project)
        return None if page is None else page.records

    def fresh_page(self, project: str) -> tuple[tuple[FileRecord, ...] | None] | None:
        """Non-blocking: ``(records,)`` when a fresh page of the normalised ``project`` is in
        memory (``records`` None: not offered), else None (ask :meth:`project_records` in a
        worker thread). Serving a cached page this way skips the thread hop, which halved the
        proxy's page rate (benchmarks/README.md, bench_proxy)."""
        page = self._fresh(project)  # only an offered name ever gets a page: checked first (hot path)
        if page is not None and page.error is None:
            return (page.records,)
        if not self.config.offers(project):
            return (None,)
        return None

    def record(self, project: str, filename: str) -> FileRecord | None:
        """The offered record of ``filename`` (for ETags and HEAD); None when not offered."""
        page = self._page(project)
        entry = page.offered.get(filename) if page is not None else None
        return entry[1] if entry is not None else None

    def known_projects(self) -> list[str]:
        """Projects the proxy can show on its root page: pages in memory that the upstream has,
        and projects of files in the cache (so a restarted server does not list nothing)."""
        with self._guard:
            names = {name for name, page in self._pages.items() if page.records}
        try:
            for blob in self.cache.list_blobs():
                with contextlib.suppress(InvalidName):
                    names.add(parse_dist_filename(blob.key).project)
        except Exception as exc:  # the root page is a convenience: never fail it on the store
            log.warning("proxy %r: cannot list the cache: %s: %s", self.config.name, type(exc).__name__, exc)
        return sorted(names)

    def _page(self, project: str) -> _Page | None:
        try:
            name = normalize_project(project)
        except InvalidName:
            return None
        if not self.config.offers(name):
            return None
        page = self._fresh(name)
        if page is None:
            with self._project_lock(name):
                # Whoever waited for the lock finds the page its holder fetched.
                page = self._fresh(name)
                if page is None:
                    page = self._refresh(name)
        if page.error is not None:
            raise MirrorUnavailable(page.error)
        return page

    def _fresh(self, name: str) -> _Page | None:
        with self._guard:
            page = self._pages.get(name)
            if page is None or page.fresh_until <= self.clock():
                return None
            self._pages.move_to_end(name)
            return page

    def _refresh(self, name: str) -> _Page:
        """Ask the upstream (conditionally when a page is known); keep and persist the answer."""
        old = self._known(name)
        now = self.clock()
        etag = old.etag if old is not None and old.files is not None else None
        try:
            answer = self.upstream.fetch_project(name, etag)
        except UpstreamUnavailable as exc:
            return self._unavailable(name, old, str(exc), now)
        if isinstance(answer, NotModified):
            if old is None:  # a 304 to a request without If-None-Match: a broken upstream
                return self._unavailable(name, old, "upstream answered 304 to an unconditional request", now)
            page = _Page(old.files, answer.etag or old.etag, now)
        elif answer is None:
            page = _Page(None, None, now)
        else:
            page = _Page(answer.files, answer.etag, now)
        self._offer(page, old, now)
        self._remember(name, page)
        if not isinstance(answer, NotModified):  # the stored copy is that page already
            self._persist(name, page)
        return page

    def _offer(self, page: _Page, old: _Page | None, now: float) -> None:
        """Compute what ``page`` offers now; keep ``old``'s tuple when that is unchanged."""
        page.fresh_until = now + self.config.page_ttl
        if page.files is None:
            return
        moment = datetime.fromtimestamp(now, timezone.utc)
        offered: dict[str, tuple[UpstreamFile, FileRecord]] = {}
        records: list[FileRecord] = []
        for file in filter_cooldown(page.files, self.cooldown, moment):
            record = to_record(file)
            if record is not None:
                offered[file.filename] = (file, record)
                records.append(record)
        result = tuple(records)
        page.records = old.records if old is not None and old.records == result else result
        page.offered = offered

    def _unavailable(self, name: str, old: _Page | None, message: str, now: float) -> _Page:
        retry = min(float(self.config.page_ttl), RETRY_SECONDS)
        if old is not None and old.error is None:
            log.warning("proxy %r: upstream unavailable for %r, serving the page of %s: %s", self.config.name,
                        name, datetime.fromtimestamp(old.fetched, timezone.utc).isoformat(timespec="seconds"),
                        message)
            page = dataclasses.replace(old, fresh_until=now + retry)
            if page.records is None and page.files is not None:  # loaded from the store: compute it
                self._offer(page, None, now)
                page.fresh_until = now + retry
        else:
            log.warning("proxy %r: upstream unavailable for %r and no page cached: %s", self.config.name, name, message)
            page = _Page(None, None, now, fresh_until=now + retry,
                         error=f"proxy {self.config.name!r}: the upstream cannot answer for {name!r} "
                               f"and no page of it is cached")
        self._remember(name, page)
        return page

    def _known(self, name: str) -> _Page | None:
        """The page in memory (stale), else the last good one in the cache store, else None."""
        with self._guard:
            page = self._pages.get(name)
        if page is not None and page.error is None:
            return page
        return self._load(name)

    def _remember(self, name: str, page: _Page) -> None:
        with self._guard:
            self._pages[name] = page
            self._pages.move_to_end(name)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    @contextlib.contextmanager
    def _project_lock(self, name: str) -> Iterator[None]:
        """One upstream fetch per project at a time; the lock table holds only projects in use."""
        with self._guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[name]

    # -- the last good page in the cache store ---------------------------------------------------

    @staticmethod
    def page_key(name: str) -> str:
        return f"{PAGES_PREFIX}{name}.json"

    def _persist(self, name: str, page: _Page) -> None:
        """Best effort: a store that cannot write now only costs the restart fallback."""
        document = {
            "format": PAGE_FORMAT,
            "project": name,
            "etag": page.etag,
            "fetched": page.fetched,
            "files": None if page.files is None else [dataclasses.asdict(f) for f in page.files],
        }
        data = json.dumps(document, separators=(",", ":")).encode()
        key = self.page_key(name)
        try:
            for _ in range(3):  # another server sharing the store may write the same page
                current = self.cache.document_version(key)
                try:
                    self.cache.write_document(key, data, current)
                    return
                except VersionConflict:
                    continue
        except Exception as exc:
            log.warning("proxy %r: cannot keep the page of %r in the cache: %s: %s", self.config.name, name,
                        type(exc).__name__, exc)

    def _load(self, name: str) -> _Page | None:
        try:
            document = self.cache.read_document(self.page_key(name))
        except Exception as exc:
            log.warning("proxy %r: cannot read the cached page of %r: %s: %s", self.config.name, name,
                        type(exc).__name__, exc)
            return None
        if document is None:
            return None
        try:
            content = json.loads(document.data)
            if content.get("format") != PAGE_FORMAT or content.get("project") != name:
                raise ValueError("not a page of this project")
            raw = content["files"]
            files = None if raw is None else tuple(UpstreamFile(**entry) for entry in raw)
            etag = content.get("etag")
            return _Page(files, etag if isinstance(etag, str) else None, float(content["fetched"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("proxy %r: ignoring the damaged cached page of %r: %s", self.config.name, name, exc)
            return None

    # -- files -----------------------------------------------------------------------------------

    def open(self, project: str, filename: str, metadata: bool) -> DownloadTarget:
        """The bytes of ``filename`` (or of its PEP 658 metadata file) from the cache or upstream.

        FileNotFoundError when the project's page does not offer it (or offers no verifiable
        metadata file); :class:`MirrorUnavailable` as for pages; ``UpstreamFileError`` (with
        its ``status``) when the upstream fails before the first byte.
        """
        page = self._page(project)
        entry = page.offered.get(filename) if page is not None else None
        if entry is None:
            raise FileNotFoundError(filename)
        file = entry[0]
        if metadata:
            if not file.core_metadata_sha256:  # none offered, or one that cannot be verified
                raise FileNotFoundError(metadata_key(filename))
            return self.pull.open(metadata_key(filename), file.metadata_url, file.core_metadata_sha256,
                                  max_bytes=MAX_METADATA_BYTES)
        return self.pull.open(filename, file.url, file.sha256, file.size, max_bytes=self.config.max_file_bytes)


def open_mirror(config: ProxyConfig, cache: Storage, admin_secret: str | None) -> ProxyMirror:
    """The mirror ``build_repos`` gives a proxy repository (``repo.mirror``)."""
    if config.upstream.lower().startswith("http://"):
        log.warning("proxy %r: upstream %s is plain http: pages are verified only against what the "
                    "network delivered", config.name, config.upstream)
    upstream = UpstreamIndex(config.upstream, auth=config.upstream_credentials(admin_secret))
    pull = PullThrough(cache, upstream.open_file, max_bytes=config.max_file_bytes)
    return ProxyMirror(config, cache, upstream, pull)
