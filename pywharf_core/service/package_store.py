"""Every storage-independent policy, once: a :class:`Storage` adapter becomes a package store.

A backend only adapts a store (``pywharf_core.storage.api``); this class decides, the same way
for all of them:

- **names and identity**: only valid distribution filenames become keys, and one distribution
  (normalised project + PEP 440 version + build tag + tags) can be stored under one spelling
  only: an identity claim (a create-only document) is taken before the file, so of two servers
  racing with ``Demo-1.0`` and ``demo-1.0.0`` one gets a 409 naming the other's file;
- **the conflict rule**: the same bytes under a stored name are IDENTICAL (nothing changes),
  different bytes are a 409;
- **what is kept beside a file**: the sidecar (``pywharf_core.model.sidecar``) and the PEP 658
  metadata file;
- **rebuilding records from storage** (``update_index``): from the sidecar when it is
  consistent with the file, else from the file itself (and the sidecar is then written so the
  next rebuild is cheap);
- **the remote index**: a base document plus the append-only log (``pywharf_core.index.remote_log``);
  an upload is acknowledged only once its log entry is written (a stored file is never deleted
  again by an upload: see :meth:`PackageStore.store`);
- **lifecycle** (issue 16): PEP 792 project statuses (the lifecycle document) and deleted files
  (one tombstone document each: ``pywharf_core.index.lifecycle_document``), announced in the
  log; an upload to an archived or quarantined project is refused (403), and a deleted filename
  comes back only with the same bytes (409 otherwise) unless ``allow_reupload_of_deleted``. A
  deletion and an upload's check cost the same however many files were deleted before.

Layout in the store (the file_system and s3 layout of pywharf 0.3, so existing stores keep
working)::

    index.toml                          the base document (TOML, written by update_index)
    <filename>                          each distribution file, immutable
    .pywharf/<filename>.toml            its sidecar
    .pywharf/<filename>.metadata        its PEP 658 metadata file, immutable
    .pywharf/log/<seq>.json             the index log
    .pywharf/identity/<hash>.txt        identity claims: the filename that holds the identity
                                        (kept when the file is deleted)
    .pywharf/lifecycle.json             project statuses (and, written by pywharf before 2026-12,
                                        tombstones: still read, never added to)
    .pywharf/deleted/<filename>.json    the tombstone of each deleted file
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pywharf_core.index.formats import IndexFormatError, dump_index, index_log_position, parse_index_changes
from pywharf_core.index.lifecycle_document import (
    LIFECYCLE_KEY,
    Lifecycle,
    LifecycleFormatError,
    dump_tombstone,
    parse_tombstone,
)
from pywharf_core.index.remote_log import READ_BATCH, RemoteLog
from pywharf_core.model.errors import BackendUnavailable, FileConflict, InvalidName, UploadRejected
from pywharf_core.model.lifecycle import IndexChange, ProjectStatus, Tombstone, upload_refusal
from pywharf_core.model.metadata import (
    MAX_METADATA_BYTES,
    description_of,
    extract_core_metadata,
    read_core_metadata,
    sdist_metadata_is_reliable,
)
from pywharf_core.model.names import DIST_SUFFIXES, DistFilename, parse_dist_filename
from pywharf_core.model.records import FileRecord, is_sha256_hex, utc_timestamp
from pywharf_core.model.sidecar import (
    dump_sidecar,
    parse_sidecar,
    record_from_sidecar,
    sidecar_fields,
    usable_sha256,
)
from pywharf_core.storage.api import BlobInfo, Storage, VersionConflict
from pywharf_core.storage.atomic_write import write_synced_temp
from pywharf_core.storage.backend import (
    Backend,
    DownloadTarget,
    Permission,
    RemoteIndex,
    StagedFile,
    StoreOutcome,
)
from pywharf_core.storage.shared_secrets import shared_secret_permission

log = logging.getLogger(__name__)

INDEX_KEY = "index.toml"
ABSENT = "absent"  # the version token of a repository without a base document yet
COMPANIONS = ".pywharf/"
STALE_STAGING_SECONDS = 6 * 3600  # an upload still being received after this was abandoned
REBUILD_THREADS = 16  # network stores answer faster to parallel reads
PUBLISH_ATTEMPTS = 5


def sidecar_key(filename: str) -> str:
    return f"{COMPANIONS}{filename}.toml"


def metadata_key(filename: str) -> str:
    return f"{COMPANIONS}{filename}.metadata"


def tombstone_key(filename: str) -> str:
    """The tombstone document of a deleted file (``filename`` a validated distribution filename)."""
    return f"{COMPANIONS}deleted/{filename}.json"


def identity_key(dist: DistFilename) -> str:
    return f"{COMPANIONS}identity/{hashlib.sha256(dist.identity.encode()).hexdigest()[:40]}.txt"


# Rounds of a deletion racing the same bytes uploaded back (each round: tombstone, log, bytes).
DELETE_ATTEMPTS = 3


class PackageStore(Backend):
    """The core's :class:`Backend`, built on a storage adapter."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage.config, storage.context)
        self.storage = storage
        self.log = RemoteLog(storage)
        self._lifecycle: tuple[str, Lifecycle] | None = None  # (version, parsed) of the last read
        self._lifecycle_lock = threading.Lock()
        with contextlib.suppress(OSError):
            removed = storage.cleanup_staging(STALE_STAGING_SECONDS)
            if removed:
                log.info("repo %r: removed %d abandoned staged uploads", storage.config.name, removed)

    # -- auth ------------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Permission:
        decided = self.storage.authenticate(secret)
        if decided is not None:
            return decided
        config: Any = self.config
        return shared_secret_permission(secret, config.read_secret, config.write_secret)

    # -- uploads ---------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return self.storage.staging_dir()

    def store(
        self,
        record: FileRecord,
        staged: StagedFile,
        metadata: Mapping[str, Any],
        core_metadata: bytes | None,
    ) -> StoreOutcome:
        dist = parse_dist_filename(record.filename)
        lifecycle = self.read_lifecycle()
        status = lifecycle.statuses.get(dist.project)
        if status is not None and status.refuses_uploads:
            raise UploadRejected(403, upload_refusal(status))
        tombstone = self._tombstone_of(record.filename, lifecycle.deleted)
        if (tombstone is not None and tombstone.sha256 != staged.sha256
                and not getattr(self.config, "allow_reupload_of_deleted", False)):
            raise FileConflict(
                f"File already exists: {record.filename!r} was deleted and a deleted filename cannot be "
                "uploaded again with different content (as on pypi.org): use a new version. The same "
                "bytes may be uploaded back.")
        self._claim_identity(dist, lifecycle.deleted)
        created = self.storage.put_blob(record.filename, staged.path, staged.size, staged.sha256)
        if not created:
            known = self.stored_record(record.filename)
            stored = known.sha256 if known is not None and known.size == staged.size else None
            if stored != staged.sha256:
                stored = self.storage.blob_sha256(record.filename)  # no usable sidecar: read the file
            if stored != staged.sha256:
                raise FileConflict(f"File already exists: {record.filename!r} is stored with different content.")
        # Once the file is stored it is never deleted again, even if a later step fails: the
        # same bytes may meanwhile have been acknowledged through another server (IDENTICAL).
        # A failure below leaves a complete file that no index lists yet; the client's retry
        # (IDENTICAL) or update_index completes it.
        if core_metadata is not None:
            self._put_bytes(metadata_key(record.filename), core_metadata)
        fields = sidecar_fields(record, metadata)
        if created:
            self._write_sidecar(record.filename, fields)
        else:  # same bytes: finish what an interrupted earlier upload may have left undone
            with contextlib.suppress(VersionConflict):
                self.storage.write_document(sidecar_key(record.filename), dump_sidecar(fields), None)
        if tombstone is not None:
            # The file is back. Its entry goes to the log before its tombstone document goes: a
            # retry that reaches a server whose snapshot predates the deletion (IDENTICAL, the
            # file "already listed") would otherwise announce nothing, and the tombstone, the
            # file's last log entry, would hide an acknowledged upload for good. Same when a
            # deletion stopped between its log entry and removing the bytes. (The caller may
            # announce a CREATED file once more: a repeated entry changes nothing.)
            self.announce(record if created else (self.stored_record(record.filename) or record))
            self.storage.delete(tombstone_key(record.filename))
            if record.filename in lifecycle.deleted:
                self._change_lifecycle(lambda doc: doc.deleted.pop(record.filename, None) is not None)
        return StoreOutcome.CREATED if created else StoreOutcome.IDENTICAL

    def _tombstone_of(self, filename: str, legacy: Mapping[str, Tombstone]) -> Tombstone | None:
        """The tombstone of ``filename`` (a validated distribution filename): its document, else
        the legacy map of the lifecycle document. One ``document_version`` when it has none.

        Raises BackendUnavailable when the document is unreadable (not read as "not deleted")."""
        key = tombstone_key(filename)
        if self.storage.document_version(key) is not None:
            document = self.storage.read_document(key)
            if document is not None:
                try:
                    return parse_tombstone(filename, document.data)
                except LifecycleFormatError as exc:
                    raise BackendUnavailable(f"{self.storage.describe(key)}: {exc}") from exc
        return legacy.get(filename)

    def _was_deleted(self, filename: str, legacy: Mapping[str, Tombstone]) -> bool:
        if filename in legacy:
            return True
        try:
            parse_dist_filename(filename)  # read from storage: only a valid name becomes a key
        except InvalidName:
            return False
        return self.storage.document_version(tombstone_key(filename)) is not None

    def _claim_identity(self, dist: DistFilename, legacy: Mapping[str, Tombstone] | None = None) -> None:
        """Take the distribution's identity for this spelling, or 409 naming the spelling that has it.

        Claims are never taken over or deleted: a claim whose file is not stored yet may belong
        to an upload still in progress on another server (taking it over let two spellings
        through). The cost: a spelling whose upload failed for good keeps the identity, and only
        that spelling can then be uploaded.
        """
        key = identity_key(dist)
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                self.storage.write_document(key, dist.filename.encode(), None)
                return
            except VersionConflict:
                pass
            current = self.storage.read_document(key)
            holder = current.data.decode("utf-8", "replace").strip() if current is not None else ""
            if holder == dist.filename:
                return
            if holder:
                if self._was_deleted(holder, legacy or {}):
                    stored = " was stored, and deleted, as"  # the deleted spelling keeps the identity
                elif self.storage.has_blob(holder):
                    stored = " is"
                else:
                    stored = " was claimed (its upload may be in progress) as"
                raise FileConflict(
                    f"File already exists: the same distribution as {dist.filename!r} (same project, version "
                    f"and tags){stored} {holder!r}; a release cannot be replaced."
                )
            time.sleep(0.05 * (attempt + 1))  # a claim being written (no atomic create on this store)
        raise FileConflict(f"Could not claim {dist.filename!r}: concurrent uploads of the same distribution.")

    def _put_bytes(self, key: str, data: bytes) -> None:
        """A small immutable blob (PEP 658 file) from memory, create-only (an existing one stays)."""
        folder = self.storage.staging_dir()
        folder.mkdir(parents=True, exist_ok=True)
        # Named like a staged upload, so an abandoned one is cleaned up like them.
        path = write_synced_temp(folder, data, prefix=".upload-", suffix=".part")
        try:
            self.storage.put_blob(key, path, len(data), hashlib.sha256(data).hexdigest())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _write_sidecar(self, filename: str, fields: Mapping[str, Any]) -> None:
        """Write (or replace) a sidecar, whatever version is there (this writer owns the file)."""
        self._replace_document(sidecar_key(filename), dump_sidecar(fields), f"the sidecar of {filename!r}")

    def _replace_document(self, key: str, data: bytes, what: str) -> None:
        """Write (or replace) a document, whatever version is there."""
        current: str | None = None  # usually there is none yet: one conditional write, no read
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                self.storage.write_document(key, data, current)
                return
            except VersionConflict:
                current = self.storage.document_version(key)
        raise VersionConflict(f"{what} keeps changing")

    def stored_record(self, filename: str) -> FileRecord | None:
        try:
            dist = parse_dist_filename(filename)
        except InvalidName:
            return None
        document = self.storage.read_document(sidecar_key(filename))
        fields = parse_sidecar(document.data) if document is not None else None
        if not fields or not is_sha256_hex(fields.get("sha256")) or not isinstance(fields.get("size"), int):
            return None
        metadata_sha256 = str(fields.get("metadata_sha256") or "")
        return record_from_sidecar(dist, fields, sha256=str(fields["sha256"]), size=int(fields["size"]),
                                   metadata_sha256=metadata_sha256 if is_sha256_hex(metadata_sha256) else "")

    def announce(self, record: IndexChange) -> None:
        self.log.append(record)

    # -- lifecycle: statuses and deletions --------------------------------------------------------

    def read_lifecycle(self) -> Lifecycle:
        """The lifecycle document as storage holds it now (parsed again only when it changed).

        Raises BackendUnavailable when it is unreadable: an upload or a rebuild must not take a
        damaged document for "nothing deleted, nothing archived"."""
        version = self.storage.document_version(LIFECYCLE_KEY)
        if version is None:
            return Lifecycle()
        cached = self._lifecycle
        if cached is not None and cached[0] == version:
            return cached[1]
        document = self.storage.read_document(LIFECYCLE_KEY)
        if document is None:
            return Lifecycle()
        try:
            parsed = Lifecycle.parse(document.data)
        except LifecycleFormatError as exc:
            raise BackendUnavailable(f"{self.storage.describe(LIFECYCLE_KEY)}: {exc}") from exc
        self._lifecycle = (document.version, parsed)
        return parsed

    def _change_lifecycle(self, change: Callable[[Lifecycle], bool]) -> None:
        """Apply ``change`` to the document with compare-and-swap (``change`` says whether it
        changed anything; retried on a concurrent writer)."""
        with self._lifecycle_lock:
            for _ in range(PUBLISH_ATTEMPTS * 4):
                document = self.storage.read_document(LIFECYCLE_KEY)
                try:
                    current = Lifecycle.parse(document.data) if document is not None else Lifecycle()
                except LifecycleFormatError as exc:
                    raise BackendUnavailable(f"{self.storage.describe(LIFECYCLE_KEY)}: {exc}") from exc
                if not change(current):
                    return
                try:
                    self.storage.write_document(LIFECYCLE_KEY, current.dump(),
                                                document.version if document is not None else None)
                    return
                except VersionConflict:
                    time.sleep(0.02)
                    continue
        raise BackendUnavailable(f"{LIFECYCLE_KEY} keeps changing: retry")

    def set_project_status(self, status: ProjectStatus) -> None:
        """Persist a project's PEP 792 status, then announce it to every server (index log)."""
        def change(doc: Lifecycle) -> bool:
            if doc.statuses.get(status.project) == status:
                return False
            doc.statuses[status.project] = status
            return True
        self._change_lifecycle(change)
        self.announce(status)

    def delete_files(self, records: list[FileRecord], deleted_time: str) -> list[Tombstone]:
        """Delete stored files, each in three steps: its tombstone document (an upload on any
        server sees the deletion from then on), its log entry (every server and ``update_index``
        from then on), then the file, its PEP 658 file and its sidecar. The tombstone is written
        before the bytes go, so a rebuild that lists the bytes still knows the file was deleted
        (see :meth:`rebuild_index`). The identity claim stays: the distribution keeps its spelling.

        Per file: one document write, one log entry, three deletes, whatever was deleted before."""
        tombstones = [Tombstone.of(record, deleted_time) for record in records]
        for tombstone in tombstones:
            for _ in range(DELETE_ATTEMPTS):
                self._replace_document(tombstone_key(tombstone.filename), dump_tombstone(tombstone),
                                       f"the tombstone of {tombstone.filename!r}")
                self.announce(tombstone)
                for key in (tombstone.filename, metadata_key(tombstone.filename), sidecar_key(tombstone.filename)):
                    self.storage.delete(key)
                # The same bytes uploaded back meanwhile (IDENTICAL while they were still stored)
                # took the tombstone document away and announced the file, whose bytes are now
                # gone: this deletion comes last, so its tombstone is written and announced again.
                if self.storage.document_version(tombstone_key(tombstone.filename)) is not None:
                    break
        return tombstones

    # -- downloads -------------------------------------------------------------------------------

    def locate(self, filename: str) -> DownloadTarget | None:
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        return self.storage.locate(filename)

    def locate_metadata(self, filename: str) -> DownloadTarget | None:
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        return self.storage.locate(metadata_key(filename))

    def read_description(self, filename: str) -> tuple[str, str] | None:
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        document = self.storage.read_document(sidecar_key(filename))
        return description_of(parse_sidecar(document.data) or {}) if document is not None else None

    # -- yank ------------------------------------------------------------------------------------

    def set_yanked(self, filename: str, yanked: bool, reason: str) -> None:
        """FileNotFoundError for a file no longer stored, or deleted (its tombstone written, its
        bytes maybe not removed yet): a server that has not seen the deletion would otherwise
        announce the file again after its tombstone, listing a file that is gone."""
        dist = parse_dist_filename(filename)
        if not self.storage.has_blob(filename) or self.storage.document_version(tombstone_key(filename)) is not None:
            raise FileNotFoundError(filename)
        for _ in range(PUBLISH_ATTEMPTS):
            document = self.storage.read_document(sidecar_key(filename))
            fields = parse_sidecar(document.data) if document is not None else None
            if not fields:
                fields = self._fields_from_file(dist, BlobInfo(filename, -1))[0]
            fields.update(yanked=yanked, yanked_reason=reason if yanked else "")
            try:
                self.storage.write_document(sidecar_key(filename), dump_sidecar(fields),
                                            document.version if document is not None else None)
                return
            except VersionConflict:
                continue
        raise VersionConflict(f"the sidecar of {filename!r} keeps changing")

    # -- the remote index ------------------------------------------------------------------------

    def fetch_remote_index(self, known_token: str | None) -> RemoteIndex | None:
        version = self.storage.document_version(INDEX_KEY)
        if version is not None and version == known_token:
            return None
        document = self.storage.read_document(INDEX_KEY) if version is not None else None
        if document is None:
            return None if known_token == ABSENT else RemoteIndex(ABSENT, None)
        return RemoteIndex(document.version, document.data)

    def describe_remote_index(self) -> str:
        return self.storage.describe(INDEX_KEY)

    def read_log(self, after: int) -> list[tuple[int, IndexChange | None]]:
        return list(self.log.read_after(after))

    def publish_remote_index(self, data: bytes) -> None:
        """Replace the base document (compare-and-swap on the version read just before)."""
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                self.storage.write_document(INDEX_KEY, data, self.storage.document_version(INDEX_KEY))
                return
            except VersionConflict:
                continue
        raise VersionConflict("the remote index keeps changing: another update_index is running?")

    def rebuild_index(self) -> int:
        """``update_index``: a base document of every file storage holds, covering the log so far.

        The log's end is read *before* listing, so every entry up to it belongs to a file the
        listing sees (a file is stored before its entry is written); later entries stay in the
        log for readers. Nothing acknowledged can be dropped: a file leaves the index only when
        storage no longer holds it, or its tombstone is known (a deletion, possibly still
        removing the bytes). Statuses come from the lifecycle document, read before listing.

        Tombstone documents cannot be listed, so tombstones are carried forward: those of the
        previous base, then the log entries after its position up to the end read before
        listing (O(new entries), not O(every deletion ever)), plus the lifecycle document's
        legacy map. A deletion writes its tombstone document, then its log entry, then removes
        the bytes: one whose entry is up to that end is carried here (and its bytes, if still
        listed, excluded); a later one is applied by readers on top of this base. When the
        previous base or a log entry cannot be read, each listed file's tombstone document is
        checked instead (O(files) checks, on that recovery path only).
        """
        previous = self.storage.read_document(INDEX_KEY)  # before the end: its position <= the end
        position = self.log.end()
        lifecycle = self.read_lifecycle()
        carried, complete = self._carried_tombstones(previous.data if previous is not None else None, position)
        tombstones = {**lifecycle.deleted, **carried}
        listed = list(self.list_files())
        if not complete:
            tombstones.update(self._tombstones_of_listed(
                [record.filename for record in listed if record.filename not in tombstones]))
        records = [record for record in listed if record.filename not in tombstones]
        changes: list[IndexChange] = [*records, *lifecycle.statuses.values(), *tombstones.values()]
        self.publish_remote_index(dump_index(changes, log_position=position))
        return len(records)

    def _carried_tombstones(self, base: bytes | None, end: int) -> tuple[dict[str, Tombstone], bool]:
        """The tombstones of the base document ``base`` (None: there is none yet) with the log
        entries after its position up to ``end`` applied (a record after a tombstone is the file
        uploaded back), and whether every one of them could be read."""
        tombstones: dict[str, Tombstone] = {}
        after = 0
        if base is not None:
            try:
                changes = parse_index_changes(base)
            except IndexFormatError as exc:
                log.warning("repo %r: the previous %s is unreadable (%s): each stored file's tombstone is "
                            "checked instead; tombstones of files no longer stored are not carried into "
                            "the new index this time", self.config.name, self.describe_remote_index(), exc)
                return {}, False
            tombstones = {change.filename: change for change in changes if isinstance(change, Tombstone)}
            after = index_log_position(base)
        unreadable = 0
        with ThreadPoolExecutor(max_workers=REBUILD_THREADS, thread_name_prefix="pywharf-rebuild") as pool:
            for start in range(after + 1, end + 1, READ_BATCH):
                for change in pool.map(self.log.entry, range(start, min(start + READ_BATCH, end + 1))):
                    if isinstance(change, Tombstone):
                        tombstones[change.filename] = change
                    elif isinstance(change, FileRecord):
                        tombstones.pop(change.filename, None)
                    elif change is None:
                        unreadable += 1
        if unreadable:
            log.warning("repo %r: %d index log entries up to %d could not be read: each stored file's "
                        "tombstone is checked instead; tombstones they may hold of files no longer stored "
                        "are not carried into the new index this time", self.config.name, unreadable, end)
        return tombstones, not unreadable

    def _tombstones_of_listed(self, filenames: list[str]) -> dict[str, Tombstone]:
        """The tombstone documents of these stored files (one check each: the recovery path)."""
        with ThreadPoolExecutor(max_workers=REBUILD_THREADS, thread_name_prefix="pywharf-rebuild") as pool:
            found = pool.map(lambda filename: self._tombstone_of(filename, {}), filenames)
            return {tombstone.filename: tombstone for tombstone in found if tombstone is not None}

    def count_files(self) -> int:
        return sum(1 for blob in self.storage.list_blobs() if _dist_or_none(blob.key) is not None)

    def list_files(self) -> Iterator[FileRecord]:
        blobs = []
        for blob in self.storage.list_blobs():
            dist = _dist_or_none(blob.key)
            if dist is not None:
                blobs.append((dist, blob))
            elif _is_top_level(blob.key) and blob.key.endswith(DIST_SUFFIXES):
                # e.g. a non-ASCII or control character put in by hand: never served, said once
                log.warning("repo %r: skipping stored file %r: not a valid distribution filename",
                            self.config.name, blob.key)
        blobs.sort(key=lambda pair: pair[1].key)
        with ThreadPoolExecutor(max_workers=REBUILD_THREADS, thread_name_prefix="pywharf-rebuild") as pool:
            for record in pool.map(lambda pair: self._rebuild_record(*pair), blobs):
                if record is not None:
                    yield record

    def _rebuild_record(self, dist: DistFilename, blob: BlobInfo) -> FileRecord | None:
        if self.storage.cheap_documents:
            self._backfill_claim(dist)
        document = self.storage.read_document(sidecar_key(dist.filename))
        fields = parse_sidecar(document.data) if document is not None else None
        sha256 = usable_sha256(fields, blob.size) if fields else None
        metadata_sha256 = fields.get("metadata_sha256") if fields and sha256 else None
        if not (isinstance(metadata_sha256, str) and (metadata_sha256 == "" or is_sha256_hex(metadata_sha256))):
            metadata_sha256 = None
        rewrite = False
        if sha256 is None or metadata_sha256 is None or fields is None:
            found = self._fields_from_file(dist, blob, fields)  # extraction applies PEP 643 itself
            if found is None:
                return None
            fields, sha256, metadata_sha256 = found
            rewrite = True
        elif metadata_sha256 and dist.filetype == "sdist" and not self._reliable_sdist_metadata(dist.filename):
            # Stored before pywharf checked PEP 643 (or by hand): dynamic dependencies must not be
            # served as static metadata. Record the verdict so the next rebuild need not re-read.
            metadata_sha256 = ""
            fields = {**fields, "metadata_sha256": ""}
            rewrite = True
        if rewrite:
            with contextlib.suppress(VersionConflict):  # a concurrent change (an upload, a yank) wins
                self.storage.write_document(sidecar_key(dist.filename), dump_sidecar(fields),
                                            document.version if document is not None else None)
        upload_time = utc_timestamp(blob.modified) if blob.modified else ""
        return record_from_sidecar(dist, fields, sha256=sha256, size=blob.size, metadata_sha256=metadata_sha256,
                                   upload_time=upload_time)

    def _backfill_claim(self, dist: DistFilename) -> None:
        """Files stored before identity claims existed get theirs, so another spelling of them is
        refused by every server, not only by one whose index lists them. (Skipped on stores
        where a document write is costly, e.g. a commit on GitHub: there the servers' indexes,
        which list every file after a sync, refuse respellings.)"""
        key = identity_key(dist)
        if self.storage.document_version(key) is not None:
            return
        try:
            self.storage.write_document(key, dist.filename.encode(), None)
        except VersionConflict:
            holder = self.storage.read_document(key)
            if holder is not None and holder.data.decode("utf-8", "replace") != dist.filename:
                log.warning("repo %r: %s and %s are the same distribution (stored before pywharf refused "
                            "respellings); new uploads of either spelling are refused", self.config.name,
                            dist.filename, holder.data.decode("utf-8", "replace"))

    def _reliable_sdist_metadata(self, filename: str) -> bool:
        source = self.storage.open_blob(metadata_key(filename))
        if source is None:
            return False
        with contextlib.closing(source):
            data = source.read(MAX_METADATA_BYTES + 1)
        return len(data) <= MAX_METADATA_BYTES and sdist_metadata_is_reliable(data)

    def _fields_from_file(
        self, dist: DistFilename, blob: BlobInfo, fields: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str, str] | None:
        """Read a stored file (without a usable sidecar): its metadata, sha256 and PEP 658 digest.

        The PEP 658 file is stored too when missing. The file goes through a temporary copy in
        the staging folder, never memory.
        """
        source = self.storage.open_blob(dist.filename)
        if source is None:
            return None
        folder = self.storage.staging_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".rebuild-") as tmp:
            path = Path(tmp) / dist.filename
            digest = hashlib.sha256()
            size = 0
            with contextlib.closing(source), open(path, "wb") as handle:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            sha256 = digest.hexdigest()
            kept = dict(fields) if fields and fields.get("sha256") == sha256 else None
            found = kept if kept is not None else read_core_metadata(path)
            core = extract_core_metadata(path, dist.filename)
        metadata_sha256 = hashlib.sha256(core).hexdigest() if core is not None else ""
        if core is not None:
            self._put_bytes(metadata_key(dist.filename), core)
        found.update(sha256=sha256, size=size, metadata_sha256=metadata_sha256)
        if not found.get("upload_time"):
            found["upload_time"] = utc_timestamp(blob.modified) if blob.modified else utc_timestamp()
        found.setdefault("yanked", False)
        found.setdefault("yanked_reason", "")
        return found, sha256, metadata_sha256


def _is_top_level(key: str) -> bool:
    """A key where distribution files live: not in a folder, not a companion (``.pywharf/``)."""
    return "/" not in key and not key.startswith(".")


def _dist_or_none(key: str) -> DistFilename | None:
    if not _is_top_level(key) or key == INDEX_KEY:
        return None
    try:
        return parse_dist_filename(key)
    except InvalidName:
        return None

