"""One configured package repository at run time.

Holds the backend, the current :class:`IndexSnapshot` and the auth-verdict cache (the page
cache lives in ``pywharf_core.http.page_cache``). Readers take ``self.snapshot`` once per request
(a plain attribute read, atomic in CPython) and never lock; writers (upload, sync) build a new
snapshot and swap it in under ``self._write_lock``.

The snapshot is the remote index's base document, plus the entries of the remote index log
after the position the base covers, plus this server's journal (what it acknowledged and the
store does not show yet). A new base that shrinks implausibly (damage, not deletions: far fewer
files than storage holds) is refused and the last good index keeps being served.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from pywharf_core.index.formats import IndexFormatError, index_log_position, parse_index_changes
from pywharf_core.index.local import LocalIndexStore
from pywharf_core.index.remote_log import READ_BATCH
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.api_tokens import parse_token
from pywharf_core.model.errors import UploadRejected
from pywharf_core.model.lifecycle import IndexChange, ProjectStatus
from pywharf_core.model.records import FileRecord, utc_timestamp
from pywharf_core.service.audit import AuditLog
from pywharf_core.service.grants import Grant
from pywharf_core.service.package_store import PackageStore
from pywharf_core.service.proxy_mirror import ProxyMirror
from pywharf_core.service.tokens import TokenStore
from pywharf_core.storage.backend import Backend, Permission, RemoteIndex
from pywharf_core.storage.config import PkgRepoConfig

if TYPE_CHECKING:
    from pywharf_core.model.api_tokens import TokenRecord
    from pywharf_core.service.repo_group import RepoGroup

log = logging.getLogger(__name__)

_AUTH_CACHE_MAX = 10_000
# A new base listing fewer than this share of the files served now is checked against storage.
SHRINK_CHECK_RATIO = 0.5
SHRINK_CHECK_MIN_FILES = 5


class IndexRefused(IndexFormatError):
    """A new remote index was not applied (it would hide files storage still holds)."""


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


@dataclass(frozen=True)
class AuthExpiry:
    """How long a positive auth verdict is trusted, per permission (seconds)."""

    read: int = 3600
    write: int = 300


class PkgRepo:
    def __init__(
        self,
        config: PkgRepoConfig,
        backend: Backend,
        local_index: LocalIndexStore,
        auth_expiry: AuthExpiry,
    ) -> None:
        self.config = config
        self.name = config.name
        self.backend = backend
        self.local_index = local_index
        self.auth_expiry = auth_expiry
        self.snapshot = IndexSnapshot.empty()
        self.last_sync: float | None = None  # time of the last successful sync
        self.last_sync_error: str | None = None
        self.sync_failures = 0  # failed syncs since start (the /metrics counter)
        self._remote_token: str | None = None
        self._remote_records: list[IndexChange] = []
        self._log_position = 0  # index log entries 1..n are applied (stores with a log)
        self.has_log = isinstance(backend, PackageStore)
        self.has_local_copy = False  # an index synced before this start is served from ROOT
        self._write_lock = threading.Lock()
        self._auth_cache: dict[bytes, tuple[Grant, float]] = {}
        # API tokens live in the store beside the files (stores with documents only).
        self.tokens = TokenStore(backend.storage, self.name) if isinstance(backend, PackageStore) else None
        # The audit log too (service.audit): every server sharing the store writes and reads it.
        self.audit = AuditLog(backend.storage, self.name) if isinstance(backend, PackageStore) else None
        # A proxy repository's pages and files come from its upstream (server_state.build_repos).
        self.mirror: ProxyMirror | None = None
        self.group: RepoGroup | None = None  # a group repository's members (service.repo_group)
        # Worker processes of one server (``--workers``): told when this one ends a token.
        self.on_tokens_changed: Callable[[], None] | None = None
        self._synced_state: tuple[int, int] | None = None  # the base on disk this snapshot was built on

    # -- index -------------------------------------------------------------------------------

    @property
    def index_loaded(self) -> bool:
        """Whether this repository serves an index: synced since start, or the last good copy
        under ROOT. Before that, a name missing from the snapshot proves nothing: it may be one
        of this repository's own (private) projects."""
        return self.last_sync is not None or self.has_local_copy

    def load_local_index(self) -> None:
        """Serve what ROOT already holds, before the first sync completes."""
        with self._write_lock:
            self._remote_records, self._remote_token = self.local_index.load_synced()
            journal = self.local_index.load_journal()
            # The log is read on from what the journal holds; from the base's position when the
            # journal is damaged (the log is the store's truth, the journal only a cache).
            base_position = self.local_index.synced_log_position
            journalled = 0 if self.local_index.damaged else self.local_index.log_position
            self._log_position = max(base_position, journalled)
            self.snapshot = IndexSnapshot.build(self._remote_records).with_records(journal)
            self.has_local_copy = self._remote_token is not None
            self._synced_state = self.local_index.synced_state()
        gc.freeze()  # see sync_once

    def follow_local(self) -> bool:
        """For a worker process that does not sync (``--workers``): apply what the server's other
        processes wrote under ROOT: a new base the syncing worker installed (reloaded whole: rare,
        ``update_index``), else only the journal lines written since the last look. Returns True
        when the snapshot changed. Blocking (file I/O)."""
        state = self.local_index.synced_state()
        if state != self._synced_state:
            before = self.snapshot
            self.load_local_index()
            changed = self.snapshot is not before
        else:
            with self._write_lock:
                fresh = self.local_index.read_new()
                snapshot = self.snapshot.with_records(fresh) if fresh else self.snapshot
                changed = snapshot is not self.snapshot
                self.snapshot = snapshot
        synced = self.local_index.last_synced()
        if synced is not None and (self.last_sync is None or synced > self.last_sync):
            self.last_sync = synced
        return changed

    def forget_token_verdicts(self) -> None:
        """Drop every cached API-token verdict (another worker ended a token: check the store again)."""
        self._auth_cache = {k: v for k, v in self._auth_cache.items() if v[0].token is None}

    def record_upload(self, record: IndexChange) -> None:
        """Make an accepted upload (or a changed record) visible at once and durable in the journal."""
        with self._write_lock:
            self.local_index.append_journal(record)
            self.snapshot = self.snapshot.with_records([record])

    def set_yanked(self, project: str, target: str, yanked: bool, reason: str = "") -> list[str]:
        """Yank (PEP 592) or un-yank one file, or every file of a version; returns the filenames.

        Persisted by the backend (so ``update_index`` keeps it) and journalled for this server.
        """
        records = self.snapshot.projects.get(project, ())
        chosen = [r for r in records if r.filename == target]
        if not chosen:
            chosen = [r for r in records if _same_version(r.version, target)]
        done = []
        for record in chosen:
            try:
                self.backend.set_yanked(record.filename, yanked, reason)
            except FileNotFoundError:  # deleted through another server: this one has not synced yet
                continue
            changed = dataclasses.replace(record, yanked=yanked, yanked_reason=reason if yanked else "")
            self.backend.announce(changed)
            self.record_upload(changed)
            done.append(record.filename)
        return done

    def _lifecycle_store(self) -> PackageStore:
        if not isinstance(self.backend, PackageStore):
            raise UploadRejected(405, f"Repository {self.name!r} keeps its index itself (a custom backend): "
                                      "project statuses and deletions are not supported.")
        return self.backend

    def set_status(self, project: str, status: str, reason: str = "") -> ProjectStatus | None:
        """Set a project's PEP 792 status (``project`` normalised); None when the repository never
        held the project. Persisted in storage, announced in the log, journalled here. Blocking."""
        if not self.snapshot.holds(project):
            return None
        store = self._lifecycle_store()
        changed = ProjectStatus(project, status, reason, changed_time=utc_timestamp())
        store.set_project_status(changed)
        self.record_upload(changed)
        return changed

    def delete(self, project: str, target: str | None) -> list[str]:
        """Delete a file (``target`` a filename), every file of a version, or (None) the whole
        project; returns the deleted filenames (empty: nothing matched). Blocking."""
        records = self.snapshot.projects.get(project, ())
        if target is None:
            chosen = list(records)
        else:
            chosen = [r for r in records if r.filename == target] or [
                r for r in records if _same_version(r.version, target)]
        return self.delete_records(chosen)

    def delete_records(self, chosen: list[FileRecord]) -> list[str]:
        """Delete these files (from storage, then every index); returns their filenames. Blocking."""
        if not chosen:
            return []
        tombstones = self._lifecycle_store().delete_files(chosen, utc_timestamp())
        with self._write_lock:
            self.local_index.append_many(tombstones)  # one journal write (and fsync) for the batch
            self.snapshot = self.snapshot.with_records(tombstones)
        return [t.filename for t in tombstones]

    def sync_once(self) -> bool:
        """Pull the remote index: a new base if there is one, then the log entries after it.

        Returns True when anything new was applied. Raises on failure (the caller logs it); what
        was applied before the failure (whole batches of log entries) stays, the rest is retried
        at the next sync.
        """
        remote = self.backend.fetch_remote_index(self._remote_token)
        records: list[IndexChange] = []
        position = self._log_position
        if remote is not None:
            data = remote.data or b""
            try:
                records = parse_index_changes(data) if data else []
            except IndexFormatError as exc:
                raise IndexFormatError(f"remote index of {self.name!r} is corrupt: {exc}") from exc
            position = index_log_position(data)
        entries = self.backend.read_log(position)
        logged = [record for _, record in entries if record is not None]
        if remote is not None:
            self._check_plausible(records, logged, remote)
        changed = self._apply(remote, records, position, entries)
        while len(entries) >= READ_BATCH:  # a long log: applied batch by batch, so progress stays
            entries = self.backend.read_log(self._log_position)
            changed = self._apply(None, [], self._log_position, entries) or changed
        if remote is not None:
            # A big index is a million long-lived objects; left in the collector's generations,
            # each full collection walks them all (tens of ms, seen as p99 spikes). They hold no
            # cycles and are freed by reference counting when a later snapshot replaces them.
            gc.freeze()
        self.last_sync = time.time()
        self.last_sync_error = None
        return remote is not None or changed

    def _apply(self, remote: RemoteIndex | None, records: list[IndexChange], position: int,
               entries: list[tuple[int, IndexChange | None]]) -> bool:
        """Swap in a new snapshot: a new base (if any) and log ``entries`` read after ``position``."""
        logged = [record for _, record in entries if record is not None]
        with self._write_lock:
            if remote is not None:
                self.local_index.save_synced(records, remote.token, position, authoritative=self.has_log)
                self._remote_records, self._remote_token = records, remote.token
                snapshot = IndexSnapshot.build(records).with_records(self.local_index.pending())
            else:
                # Unchanged base: only what other processes sharing ROOT journalled since the
                # last look (O(changes), not O(files)).
                fresh = self.local_index.read_new()
                snapshot = self.snapshot.with_records(fresh) if fresh else self.snapshot
            self._log_position = entries[-1][0] if entries else position
            if entries:
                self.local_index.append_many(logged, self._log_position)
                snapshot = snapshot.with_records(logged)
            changed = snapshot is not self.snapshot
            self.snapshot = snapshot
        return changed

    def _check_plausible(self, records: list[IndexChange], logged: list[IndexChange], remote: RemoteIndex) -> None:
        """Refuse a base that would hide files storage still holds (an empty, unrelated or
        truncated document); a base that shrank because storage did is applied. What counts is
        the base plus the log entries after it (a store whose uploads are all still in the log
        has an empty base). A deleted file counts as listed: its tombstone says where it went
        (storage may still hold its bytes while a deletion is under way)."""
        files = {r.filename for r in records if not isinstance(r, ProjectStatus)}
        files.update(r.filename for r in logged if not isinstance(r, ProjectStatus))
        serving = len(self.snapshot)
        listed = len(files)
        if serving < SHRINK_CHECK_MIN_FILES or listed >= serving * SHRINK_CHECK_RATIO:
            return
        stored = self.backend.count_files()
        if listed >= stored * SHRINK_CHECK_RATIO and (listed or not stored):
            return
        raise IndexRefused(
            f"the remote index of {self.name!r} ({self.backend.describe_remote_index()}, version "
            f"{remote.token[:40]!r}) lists {listed} files but storage holds {stored}: refused as "
            f"damaged; serving the last good index ({serving} files). Rebuild it from storage with "
            "`pywharf update_index`."
        )

    # -- auth --------------------------------------------------------------------------------

    @staticmethod
    def _auth_key(secret: str) -> bytes:
        return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()

    def cached_grant(self, secret: str) -> Grant | None:
        """A still-valid cached verdict for ``secret``, or None (cheap: safe on the event loop)."""
        cached = self._auth_cache.get(self._auth_key(secret))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def grant_for(self, secret: str) -> Grant:
        """What ``secret`` (a shared secret, a backend credential or an API token) grants, cached
        by the secret's hash.

        A cached token verdict lives at most ``sync_index_interval`` seconds (and never past the
        token's expiry): that bounds how long a token revoked through another server still works
        here. May call the backend (network for some): run it off the event loop.
        """
        key = self._auth_key(secret)
        now = time.monotonic()
        cached = self._auth_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        grant = self._decide(secret)
        if grant.permission is not Permission.NONE:
            ttl: float = self.auth_expiry.write if grant.permission is Permission.WRITE else self.auth_expiry.read
            if grant.token is not None:
                ttl = min(ttl, self.config.sync_index_interval, grant.token.expires - time.time())
            if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                self._auth_cache = {k: v for k, v in self._auth_cache.items() if v[1] > now}
            self._auth_cache[key] = (grant, now + ttl)
        else:
            self._auth_cache.pop(key, None)
        return grant

    def _decide(self, secret: str) -> Grant:
        grant = self._decide_any(secret)
        if grant.permission is Permission.WRITE and self.config.read_only:
            # Nothing is ever uploaded to a read-only repository (a proxy), whatever a backend
            # or an upload token says: reading is all such a secret can do.
            return Grant(Permission.READ, grant.token)
        return grant

    def _decide_any(self, secret: str) -> Grant:
        parsed = parse_token(secret)
        if parsed is not None:
            # A pywharf token is checked against the store only: never sent on to a backend that
            # decides credentials itself (GitHub would see it as a GitHub token). One of another
            # repository opens nothing here.
            record = self.tokens.find(secret) if self.tokens is not None and parsed.repo == self.name else None
            if record is None:
                return Grant(Permission.NONE)
            return Grant(Permission.WRITE if record.scope == "upload" else Permission.READ, record)
        return Grant(self.backend.authenticate(secret))

    def revoke_token(self, token_id: str) -> TokenRecord | None:
        """End the API token ``token_id`` in the store and here at once (other servers: within
        ``sync_index_interval``); None when unknown. Blocking."""
        assert self.tokens is not None
        found = self.tokens.revoke(token_id)
        self._forget_token(token_id)
        return found

    def burn_token(self, text: str) -> TokenRecord | None:
        """End token ``text`` on behalf of whoever holds it (``/_/oidc/burn-token``), in the store
        and here at once; None when it is no live token of this repository. Blocking."""
        assert self.tokens is not None
        burned = self.tokens.burn(text)
        if burned is not None:
            self._forget_token(burned.token_id)
        return burned

    def _forget_token(self, token_id: str) -> None:
        """Drop cached verdicts of a token ended through this server (refused here at once, and
        by this server's other worker processes before their next request)."""
        self._auth_cache = {k: v for k, v in self._auth_cache.items()
                            if v[0].token is None or v[0].token.token_id != token_id}
        if self.on_tokens_changed is not None:
            self.on_tokens_changed()
