"""Background index synchronisation: one daemon thread per package repository.

Threads rather than asyncio tasks so the same service runs under uvicorn and waitress alike,
and so a backend's blocking I/O (PyGithub, boto3) never touches the event loop. A failed sync
logs one line and keeps the last good snapshot; the next attempt comes one interval later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from pywharf_core.service.repository import PkgRepo

log = logging.getLogger(__name__)


class RepoSyncThread(threading.Thread):
    def __init__(self, repo: PkgRepo) -> None:
        super().__init__(name=f"pywharf-sync-{repo.name}", daemon=True)
        self.repo = repo
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = self.repo.config.sync_index_interval
        while not self._stop_event.is_set():
            self.sync_round()
            self._stop_event.wait(interval)

    def sync_round(self) -> None:
        """One sync; a failure is logged once per distinct message and never raised."""
        try:
            if self.repo.sync_once():
                log.info("repo %r: synced %d files", self.repo.name, len(self.repo.snapshot))
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.repo.sync_failures += 1
            if message != self.repo.last_sync_error:
                log.error("repo %r: index sync failed, serving the last good index: %s", self.repo.name, message)
            self.repo.last_sync_error = message

    def stop(self) -> None:
        self._stop_event.set()


class IndexSyncService:
    """Starts and stops the sync threads of a set of repositories."""

    def __init__(self) -> None:
        self._threads: list[RepoSyncThread] = []

    def start(self, repos: Iterable[PkgRepo]) -> None:
        for repo in repos:
            thread = RepoSyncThread(repo)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(timeout)
