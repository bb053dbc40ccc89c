"""Background index synchronisation (and scheduled retention): one daemon thread per package
repository.

Threads rather than asyncio tasks so the same service runs under uvicorn and waitress alike,
and so a backend's blocking I/O (PyGithub, boto3) never touches the event loop. A failed sync
logs one line and keeps the last good snapshot; the next attempt comes one interval later.

With several worker processes (``pywharf server --workers N``) one of them syncs, not all: the
one holding :class:`SyncLeadership` (an exclusive ``flock`` under ROOT, released by the kernel
when its holder dies, then taken by another worker at its next round). The others *follow*:
they apply what the syncing worker wrote to the local index under ROOT
(``PkgRepo.follow_local``), at once when told through ``worker_peers`` and every second in
any case.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from pywharf_core.model.audit import AuditEvent
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.retention import RetentionPolicy, apply_retention

log = logging.getLogger(__name__)

FOLLOW_INTERVAL = 1.0  # seconds between a following worker's looks at ROOT (besides the per-request check)


class SyncLeadership:
    """Which worker process of a server syncs the indexes: the holder of an exclusive lock on
    ``path``. Tried at each round until held; held until the process exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Not thread-local: the repositories' sync threads share this process's leadership.
        self._lock = FileLock(str(path), timeout=0, thread_local=False)
        self._guard = threading.Lock()

    def held(self) -> bool:
        with self._guard:
            if self._lock.is_locked:
                return True
            try:
                self._lock.acquire()
            except Timeout:
                return False
            log.info("this worker (pid %d) syncs the indexes", os.getpid())
            return True


class RepoSyncThread(threading.Thread):
    def __init__(self, repo: PkgRepo, retention_interval: int = 0, leadership: SyncLeadership | None = None) -> None:
        super().__init__(name=f"pywharf-sync-{repo.name}", daemon=True)
        self.repo = repo
        self.leadership = leadership
        self._stop_event = threading.Event()
        # Retention runs only on hosted repositories with rules, after a sync (so it plans from
        # what the store holds), at most every retention_interval seconds.
        hosted = repo.mirror is None and repo.group is None and RetentionPolicy.of(repo.config) is not None
        self.retention_interval = retention_interval if hosted else 0
        self._next_retention = time.monotonic()

    def run(self) -> None:
        interval = self.repo.config.sync_index_interval
        while not self._stop_event.is_set():
            if self.leadership is None or self.leadership.held():
                self.sync_round()
                if self.retention_interval and time.monotonic() >= self._next_retention:
                    self.retention_round()  # by the syncing worker only: once per server
                self._stop_event.wait(interval)
            else:
                self.follow_round()
                self._stop_event.wait(min(interval, FOLLOW_INTERVAL))

    def follow_round(self) -> None:
        """Apply what the syncing worker wrote under ROOT; never raised."""
        try:
            self.repo.follow_local()
        except Exception as exc:
            log.error("repo %r: cannot read the local index: %s: %s", self.repo.name, type(exc).__name__, exc)
        if self.repo.audit is not None:
            self.repo.audit.flush_due()  # this worker's own buffered audit events (costly stores)

    def retention_round(self) -> None:
        """One run of the repository's retention rules; a failure is logged, never raised."""
        self._next_retention = time.monotonic() + self.retention_interval
        if self.repo.last_sync_error is not None or not self.repo.index_loaded:
            return  # never plan deletions from an index that may be stale
        try:
            doomed = apply_retention(self.repo, dry_run=False)
            if self.repo.audit is not None:
                for item in doomed:
                    self.repo.audit.record(AuditEvent.make(
                        "delete", repo=self.repo.name, actor="retention schedule", client="-", status=200,
                        project=item.record.distrib, filename=item.record.filename, detail=f"retention: {item.why}"))
        except Exception as exc:
            log.error("repo %r: retention run failed: %s: %s", self.repo.name, type(exc).__name__, exc)

    def sync_round(self) -> None:
        """One sync; a failure is logged once per distinct message and never raised."""
        try:
            if self.repo.sync_once():
                log.info("repo %r: synced %d files", self.repo.name, len(self.repo.snapshot))
            if self.leadership is not None:  # workers that do not sync read when this one did
                self.repo.local_index.mark_synced()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.repo.sync_failures += 1
            if message != self.repo.last_sync_error:
                log.error("repo %r: index sync failed, serving the last good index: %s", self.repo.name, message)
            self.repo.last_sync_error = message
        if self.repo.audit is not None:
            self.repo.audit.flush_due()  # a costly store's buffered audit events (never raises)

    def stop(self) -> None:
        self._stop_event.set()


class IndexSyncService:
    """Starts and stops the sync threads of a set of repositories."""

    def __init__(self, retention_interval: int = 0) -> None:
        self._threads: list[RepoSyncThread] = []
        self.retention_interval = retention_interval

    def start(self, repos: Iterable[PkgRepo], leadership: SyncLeadership | None = None) -> None:
        for repo in repos:
            thread = RepoSyncThread(repo, self.retention_interval, leadership)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(timeout)
        for thread in threads:
            if thread.repo.audit is not None:
                thread.repo.audit.flush()  # what a costly store's audit buffer still holds
