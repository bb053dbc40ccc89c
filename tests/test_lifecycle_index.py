"""The index model of issue 16's lifecycle: project statuses (PEP 792) and deleted files
(tombstones) through every layer that carries changes (snapshot, local journal, remote log,
base document, lifecycle document) with their round trips, and older formats still read.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from backend_fixtures import staged_file

from pywharf_backends.memory import MemoryBackend, MemoryConfig, reset_stores
from pywharf_core.index.formats import (
    _parse_in_batches,
    dump_index,
    dump_index_json,
    index_log_position,
    parse_index,
    parse_index_changes,
    parse_index_json,
)
from pywharf_core.index.lifecycle_document import LIFECYCLE_KEY, Lifecycle, parse_tombstone
from pywharf_core.index.local import LocalIndexStore, journal_line, parse_journal_line
from pywharf_core.index.remote_log import RemoteLog, log_key
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.errors import FileConflict, UploadRejected
from pywharf_core.model.lifecycle import ProjectStatus, Tombstone
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord
from pywharf_core.service.package_store import INDEX_KEY, PackageStore, tombstone_key
from pywharf_core.service.repository import AuthExpiry, PkgRepo
from pywharf_core.storage.api import Storage
from pywharf_core.storage.backend import BackendContext, StagedFile, StoreOutcome
from pywharf_core.storage.config import ConfigSource, build_config

SHA_A, SHA_B = "a" * 64, "b" * 64


def record(filename: str, sha256: str = SHA_A) -> FileRecord:
    dist = parse_dist_filename(filename)
    return FileRecord(filename=filename, distrib=dist.project, version=str(dist.version), sha256=sha256,
                      size=3, upload_time="2026-01-02T03:04:05.000006Z")


def tomb(filename: str, sha256: str = SHA_A) -> Tombstone:
    return Tombstone.of(record(filename, sha256), "2026-02-03T04:05:06.000007Z")


# -- the model -----------------------------------------------------------------------------------


def test_status_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown project status"):
        ProjectStatus("demo", "frozen")
    with pytest.raises(ValueError, match="at most"):
        ProjectStatus("demo", "archived", "x" * 1001)
    assert ProjectStatus("demo", "archived").refuses_uploads
    assert not ProjectStatus("demo", "deprecated").refuses_uploads
    assert not ProjectStatus("demo", "quarantined").offers_files


def test_journal_lines_round_trip_every_kind_and_old_lines_still_parse() -> None:
    for change in (record("demo-1.0.tar.gz"), tomb("demo-1.0.tar.gz"), ProjectStatus("demo", "archived", "old")):
        assert parse_journal_line(journal_line(change)) == change
    old_line = b'{"filename":"demo-1.0.tar.gz","distrib":"demo","version":"1.0","sha256":"' + SHA_A.encode() + b'"}'
    assert parse_journal_line(old_line) == FileRecord("demo-1.0.tar.gz", "demo", "1.0", SHA_A, 0, "")


def test_an_older_server_finds_no_record_in_the_new_entries() -> None:
    """0.3's reader took any object with a ``filename`` as a record: a deletion entry with one
    would have been read as an upload of the deleted file. The new kinds have none, so the old
    reader raises (and the caller skips the entry)."""
    def old_reader(line: bytes) -> FileRecord:  # pywharf before issue 16 (index/local.py)
        table = json.loads(line)
        if not isinstance(table, dict) or not isinstance(table.get("filename"), str):
            raise ValueError("a journal line must be an object with a filename")
        return FileRecord.from_toml_table(table.pop("filename"), table)

    for change in (tomb("demo-1.0.tar.gz"), ProjectStatus("demo", "quarantined")):
        with pytest.raises(ValueError):
            old_reader(journal_line(change))


# -- the snapshot --------------------------------------------------------------------------------


def test_tombstone_removes_the_file_and_keeps_the_project_claimed() -> None:
    base = IndexSnapshot.build([record("demo-1.0.tar.gz"), record("demo-2.0.tar.gz"), record("other-1.0.tar.gz")])
    after = base.with_records([tomb("demo-1.0.tar.gz")])
    assert [r.filename for r in after.projects["demo"]] == ["demo-2.0.tar.gz"]
    assert "demo-1.0.tar.gz" not in after.files and "demo-1.0.tar.gz" in after.deleted
    assert after.projects["other"] is base.projects["other"]  # untouched projects keep their tuple
    gone = after.with_records([tomb("demo-2.0.tar.gz")])
    assert "demo" not in gone.projects and "demo" not in gone.project_names
    assert gone.holds("demo") and not gone.holds("never")  # a group must not fall through
    assert gone.with_records([tomb("demo-2.0.tar.gz")]) is gone  # nothing new: same snapshot


def test_a_record_after_its_tombstone_restores_the_file() -> None:
    deleted = IndexSnapshot.build([record("demo-1.0.tar.gz")]).with_records([tomb("demo-1.0.tar.gz")])
    back = deleted.with_records([record("demo-1.0.tar.gz")])
    assert "demo-1.0.tar.gz" in back.files and "demo-1.0.tar.gz" not in back.deleted
    # In one batch the last change of a file wins, whichever kind.
    both = IndexSnapshot.empty().with_records([record("demo-1.0.tar.gz"), tomb("demo-1.0.tar.gz")])
    assert "demo-1.0.tar.gz" not in both.files


def test_a_status_change_replaces_the_status_object_not_the_files() -> None:
    base = IndexSnapshot.build([record("demo-1.0.tar.gz")])
    archived = base.with_records([ProjectStatus("demo", "archived", "done")])
    assert archived is not base and archived.status_of("demo") == ProjectStatus("demo", "archived", "done")
    assert archived.projects["demo"] is base.projects["demo"]
    assert archived.with_records([ProjectStatus("demo", "archived", "done")]) is archived
    again = archived.with_records([ProjectStatus("demo", "archived", "other reason")])
    assert again.status_of("demo") is not archived.status_of("demo")  # what page caches compare


def test_build_applies_tombstones_after_records() -> None:
    snap = IndexSnapshot.build([tomb("demo-1.0.tar.gz"), record("demo-1.0.tar.gz"), record("demo-2.0.tar.gz")])
    assert sorted(snap.files) == ["demo-2.0.tar.gz"]


# -- the base document -----------------------------------------------------------------------------


def test_base_document_round_trips_statuses_and_tombstones() -> None:
    changes = [record(f"demo-{n}.0.tar.gz") for n in range(1, 4)]
    changes += [ProjectStatus("demo", "deprecated", 'use "demo2"'), tomb("demo-0.9.tar.gz")]
    data = dump_index(changes, log_position=7)
    assert index_log_position(data) == 7  # still in the head, before the first table
    parsed = parse_index_changes(data)
    assert sorted(map(repr, parsed)) == sorted(map(repr, changes))
    assert _parse_in_batches(data.decode()) is not None  # the fast path still applies
    assert [r.filename for r in parse_index(data)] == [f"demo-{n}.0.tar.gz" for n in range(1, 4)]
    assert sorted(map(repr, parse_index_json(dump_index_json(changes)))) == sorted(map(repr, changes))


def test_a_base_without_lifecycle_tables_still_parses() -> None:
    old = dump_index([record("demo-1.0.tar.gz")], log_position=3)
    assert b"[status" not in old and b"[deleted" not in old
    assert parse_index_changes(old) == [record("demo-1.0.tar.gz")]


# -- the local journal -----------------------------------------------------------------------------


def test_journal_keeps_the_latest_change_per_file_and_per_project(tmp_path: Path) -> None:
    store = LocalIndexStore(tmp_path, "r")
    store.append_journal(record("demo-1.0.tar.gz"))
    store.append_journal(ProjectStatus("demo", "archived"))
    store.append_journal(tomb("demo-1.0.tar.gz"))  # replaces the upload of the same file
    assert not store.append_journal(tomb("demo-1.0.tar.gz"))
    store.append_journal(ProjectStatus("demo", "active"))
    assert LocalIndexStore(tmp_path, "r").load_journal() == [tomb("demo-1.0.tar.gz"), ProjectStatus("demo", "active")]


def test_a_base_with_the_tombstone_drops_a_stale_journalled_upload(tmp_path: Path) -> None:
    """The upload this server journalled must not bring the file back once a base (written
    after the deletion) no longer lists it: the tombstone in the base names it."""
    store = LocalIndexStore(tmp_path, "r")
    store.append_journal(record("demo-1.0.tar.gz"))
    store.append_journal(record("keep-1.0.tar.gz"))
    store.save_synced([tomb("demo-1.0.tar.gz")], "token", 5, authoritative=True)
    assert store.load_journal() == [record("keep-1.0.tar.gz")]
    changes, _ = store.load_synced()
    assert changes == [tomb("demo-1.0.tar.gz")]
    snapshot = IndexSnapshot.build(changes).with_records(store.pending())
    assert sorted(snapshot.files) == ["keep-1.0.tar.gz"]


# -- the remote log and the store ------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> PackageStore:
    reset_stores()
    table = {"type": "memory", "read_secret": "read-secret-00", "write_secret": "write-secret-0"}
    config = build_config(MemoryConfig, "local", table, ConfigSource("test"))
    return PackageStore(MemoryBackend(config, BackendContext(root=tmp_path)))


def stage(tmp_path: Path, data: bytes) -> StagedFile:
    return staged_file(tmp_path / "staged", data)


def put(store: PackageStore, tmp_path: Path, filename: str, data: bytes) -> tuple[StoreOutcome, FileRecord]:
    staged = stage(tmp_path, data)
    dist = parse_dist_filename(filename)
    rec = FileRecord(filename, dist.project, str(dist.version), staged.sha256, staged.size,
                     "2026-01-01T00:00:00.000000Z")
    outcome = store.store(rec, staged, {"name": dist.project, "version": str(dist.version)}, None)
    store.announce(rec)
    return outcome, rec


def test_log_entries_of_every_kind_are_read_back(store: PackageStore) -> None:
    log = RemoteLog(store.storage)
    changes = [record("demo-1.0.tar.gz"), ProjectStatus("demo", "quarantined", "malware"), tomb("demo-1.0.tar.gz")]
    for change in changes:
        log.append(change)
    assert [c for _, c in log.read_after(0)] == changes
    store.storage.write_document(log_key(4), b'{"kind":"from the future"}', None)
    log.append(record("demo-2.0.tar.gz"))
    assert [c for _, c in log.read_after(3)] == [None, record("demo-2.0.tar.gz")]  # skipped, not fatal


def test_delete_removes_the_bytes_keeps_the_claim_and_rebuild_keeps_it_deleted(
        store: PackageStore, tmp_path: Path) -> None:
    _, first = put(store, tmp_path, "demo-1.0.tar.gz", b"first bytes")
    put(store, tmp_path, "demo-2.0.tar.gz", b"other bytes")
    store.set_project_status(ProjectStatus("demo", "deprecated", "use demo2"))
    [gone] = store.delete_files([first], "2026-03-01T00:00:00.000000Z")
    assert gone.sha256 == first.sha256
    assert not store.storage.has_blob("demo-1.0.tar.gz")
    assert store.storage.read_document(".pywharf/demo-1.0.tar.gz.toml") is None
    assert store.rebuild_index() == 1
    base = parse_index_changes(store.fetch_remote_index(None).data or b"")
    snapshot = IndexSnapshot.build(base)
    assert sorted(snapshot.files) == ["demo-2.0.tar.gz"]
    assert snapshot.status_of("demo") == ProjectStatus("demo", "deprecated", "use demo2")
    assert "demo-1.0.tar.gz" in snapshot.deleted

    with pytest.raises(FileConflict, match="was deleted"):
        put(store, tmp_path, "demo-1.0.tar.gz", b"new bytes")
    with pytest.raises(FileConflict, match=re.escape("was stored, and deleted, as 'demo-1.0.tar.gz'")):
        put(store, tmp_path, "Demo-1.0.0.tar.gz", b"new bytes")  # another spelling: the identity stays
    assert put(store, tmp_path, "demo-1.0.tar.gz", b"first bytes")[0] is StoreOutcome.CREATED  # same bytes: back
    assert store.storage.read_document(tombstone_key("demo-1.0.tar.gz")) is None  # the tombstone went first
    store.rebuild_index()
    rebuilt = IndexSnapshot.build(parse_index_changes(store.fetch_remote_index(None).data or b""))
    assert "demo-1.0.tar.gz" in rebuilt.files


def test_a_stored_file_with_a_tombstone_is_not_rebuilt(store: PackageStore, tmp_path: Path) -> None:
    """A deletion interrupted after its tombstone (the bytes still there) stays a deletion."""
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    store.storage.delete = lambda key: None  # type: ignore[method-assign]  # the bytes cannot be removed
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    assert store.storage.has_blob("demo-1.0.tar.gz")
    assert store.rebuild_index() == 0


def test_the_same_bytes_after_an_interrupted_deletion_are_announced(store: PackageStore, tmp_path: Path) -> None:
    """The deletion's log entry is written, its bytes are not removed: the same bytes uploaded
    back (IDENTICAL) must be announced after that entry, whatever the uploading server knew."""
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    real_delete = store.storage.delete
    store.storage.delete = lambda key: None  # type: ignore[method-assign]
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    store.storage.delete = real_delete  # type: ignore[method-assign]
    end = store.log.end()
    staged = stage(tmp_path, b"bytes")
    assert store.store(rec, staged, {"name": "demo", "version": "1.0"}, None) is StoreOutcome.IDENTICAL
    assert [c.filename for _, c in store.read_log(end) if isinstance(c, FileRecord)] == ["demo-1.0.tar.gz"]
    assert store.rebuild_index() == 1
    assert "demo-1.0.tar.gz" in base_snapshot(store).files


def test_a_retried_reupload_of_a_deleted_file_stays_listed(store: PackageStore, tmp_path: Path) -> None:
    """Uploaded back through server A, whose announce then fails (503, retry); the retry reaches
    server B, whose snapshot still lists the file (it has not applied the deletion): IDENTICAL,
    and B announces nothing. The store itself announced the file before removing its tombstone
    document, so the file's last log entry is the record, and update_index keeps it."""
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    metadata = {"name": "demo", "version": "1.0"}
    assert store.store(rec, stage(tmp_path, b"bytes"), metadata, None) is StoreOutcome.CREATED  # A, no announce
    assert store.store(rec, stage(tmp_path, b"bytes"), metadata, None) is StoreOutcome.IDENTICAL  # B, no announce
    last = [change for _, change in store.read_log(0) if change.filename == "demo-1.0.tar.gz"][-1]
    assert isinstance(last, FileRecord)
    assert store.rebuild_index() == 1 and "demo-1.0.tar.gz" in base_snapshot(store).files


def test_a_deletion_racing_the_same_bytes_uploaded_back_ends_deleted(store: PackageStore, tmp_path: Path) -> None:
    """The same bytes uploaded back while a deletion removes them (IDENTICAL: still stored) take
    the tombstone document away and announce the file; the deletion then removes the bytes. It
    sees its tombstone gone and writes and announces it again: the index never lists a file
    whose bytes are gone."""
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    real_delete = store.storage.delete
    raced: list[StoreOutcome] = []

    def delete(key: str) -> None:
        if key == rec.filename and not raced:
            raced.append(store.store(rec, stage(tmp_path, b"bytes"), {"name": "demo", "version": "1.0"}, None))
        real_delete(key)

    store.storage.delete = delete  # type: ignore[method-assign]
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    store.storage.delete = real_delete  # type: ignore[method-assign]
    assert raced == [StoreOutcome.IDENTICAL]
    changes = [change for _, change in store.read_log(0) if change.filename == rec.filename]
    assert [type(change).__name__ for change in changes] == ["FileRecord", "Tombstone", "FileRecord", "Tombstone"]
    assert not store.storage.has_blob(rec.filename)
    assert store.storage.document_version(tombstone_key(rec.filename)) is not None
    assert store.rebuild_index() == 0 and rec.filename in base_snapshot(store).deleted


def test_a_server_that_missed_a_deletion_cannot_yank_the_file_back(store: PackageStore, tmp_path: Path) -> None:
    """Server B has not applied the deletion (its snapshot lists the file) and the deletion
    stopped before removing the bytes: B's yank must not announce the file after its tombstone."""
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    stale = PkgRepo(store.config, store, LocalIndexStore(tmp_path / "b", "local"), AuthExpiry())
    stale.snapshot = stale.snapshot.with_records([rec])
    real_delete = store.storage.delete
    store.storage.delete = lambda key: None  # type: ignore[method-assign]
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    store.storage.delete = real_delete  # type: ignore[method-assign]
    end = store.log.end()
    with pytest.raises(FileNotFoundError):
        store.set_yanked(rec.filename, True, "late")
    assert stale.set_yanked("demo", "1.0", True, "late") == []  # the route answers 404
    assert store.log.end() == end
    assert store.rebuild_index() == 0 and rec.filename in base_snapshot(store).deleted


def test_archived_and_quarantined_refuse_at_the_store(store: PackageStore, tmp_path: Path) -> None:
    """Checked against storage too: another server may have archived the project a moment ago."""
    store.set_project_status(ProjectStatus("demo", "archived", "moved to demo2"))
    with pytest.raises(UploadRejected, match=r"archived.*moved to demo2") as refused:
        put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    assert refused.value.status == 403
    store.set_project_status(ProjectStatus("demo", "deprecated"))
    assert put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")[0] is StoreOutcome.CREATED


def test_allow_reupload_of_deleted_lifts_the_rule(tmp_path: Path) -> None:
    reset_stores()
    table = {"type": "memory", "read_secret": "read-secret-00", "write_secret": "write-secret-0",
             "allow_reupload_of_deleted": True}
    store = PackageStore(MemoryBackend(build_config(MemoryConfig, "local", table, ConfigSource("test")),
                                       BackendContext(root=tmp_path)))
    _, rec = put(store, tmp_path, "demo-1.0.tar.gz", b"first")
    store.delete_files([rec], "2026-03-01T00:00:00.000000Z")
    assert put(store, tmp_path, "demo-1.0.tar.gz", b"second")[0] is StoreOutcome.CREATED


def test_static_pages_read_no_deleted_or_quarantined_file(store: PackageStore, tmp_path: Path) -> None:
    """``read_remote_index`` (what ``github.gen_gh_pages`` renders) serves what a server would."""
    from pywharf_core.service.backends import read_remote_index

    _, gone = put(store, tmp_path, "demo-1.0.tar.gz", b"one")
    put(store, tmp_path, "demo-2.0.tar.gz", b"two")
    put(store, tmp_path, "bad-1.0.tar.gz", b"bad")
    store.delete_files([gone], "2026-03-01T00:00:00.000000Z")
    store.set_project_status(ProjectStatus("bad", "quarantined"))
    assert [r.filename for r in read_remote_index(store.storage)] == ["demo-2.0.tar.gz"]
    store.rebuild_index()
    assert [r.filename for r in read_remote_index(store.storage)] == ["demo-2.0.tar.gz"]


# -- one document per tombstone (a deletion's cost does not grow with the deletions before it) ----


def base_snapshot(store: PackageStore) -> IndexSnapshot:
    """What the base document alone says (no log entries after it)."""
    return IndexSnapshot.build(parse_index_changes(store.fetch_remote_index(None).data or b""))


def test_each_deletion_writes_its_own_tombstone_document(store: PackageStore, tmp_path: Path) -> None:
    _, one = put(store, tmp_path, "demo-1.0.tar.gz", b"one")
    _, two = put(store, tmp_path, "demo-2.0.tar.gz", b"two")
    store.set_project_status(ProjectStatus("demo", "deprecated"))
    store.delete_files([one, two], "2026-03-01T00:00:00.000000Z")
    for rec in (one, two):
        document = store.storage.read_document(tombstone_key(rec.filename))
        assert document is not None
        assert parse_tombstone(rec.filename, document.data) == Tombstone.of(rec, "2026-03-01T00:00:00.000000Z")
    lifecycle = json.loads(store.storage.read_document(LIFECYCLE_KEY).data)  # type: ignore[union-attr]
    assert "deleted" not in lifecycle and lifecycle["status"] == {"demo": {"status": "deprecated"}}
    # announced before the bytes went: the deletion's entries are the last two of the log
    assert [c for _, c in store.read_log(store.log.end() - 2)] == [
        Tombstone.of(one, "2026-03-01T00:00:00.000000Z"), Tombstone.of(two, "2026-03-01T00:00:00.000000Z")]


def test_rebuild_carries_tombstones_forward_from_the_base_and_the_log(store: PackageStore, tmp_path: Path) -> None:
    """No tombstone document is listed: the first rebuild takes them from the log, the next ones
    from the previous base plus the log after it; a record after a tombstone brings the file back."""
    _, first = put(store, tmp_path, "demo-1.0.tar.gz", b"first")
    _, second = put(store, tmp_path, "demo-2.0.tar.gz", b"second")
    put(store, tmp_path, "demo-3.0.tar.gz", b"third")
    store.delete_files([first], "2026-03-01T00:00:00.000000Z")
    assert store.rebuild_index() == 2
    assert sorted(base_snapshot(store).deleted) == ["demo-1.0.tar.gz"]
    store.delete_files([second], "2026-03-02T00:00:00.000000Z")
    assert store.rebuild_index() == 1
    assert sorted(base_snapshot(store).deleted) == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    assert store.rebuild_index() == 1  # nothing new in the log: still both, from the base alone
    assert sorted(base_snapshot(store).deleted) == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    put(store, tmp_path, "demo-1.0.tar.gz", b"first")  # back, same bytes
    assert store.rebuild_index() == 2
    rebuilt = base_snapshot(store)
    assert sorted(rebuilt.deleted) == ["demo-2.0.tar.gz"] and "demo-1.0.tar.gz" in rebuilt.files


def test_a_damaged_base_falls_back_to_each_listed_files_tombstone(
        store: PackageStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, gone = put(store, tmp_path, "demo-1.0.tar.gz", b"gone")
    _, stuck = put(store, tmp_path, "demo-2.0.tar.gz", b"stuck")
    put(store, tmp_path, "demo-3.0.tar.gz", b"kept")
    store.delete_files([gone], "2026-03-01T00:00:00.000000Z")
    real_delete = store.storage.delete
    store.storage.delete = lambda key: None  # type: ignore[method-assign]  # an interrupted deletion
    store.delete_files([stuck], "2026-03-01T00:00:00.000000Z")
    store.storage.delete = real_delete  # type: ignore[method-assign]
    store.rebuild_index()
    store.storage.write_document(INDEX_KEY, b"[files\nthis is not toml", store.storage.document_version(INDEX_KEY))
    with caplog.at_level(logging.WARNING):
        assert store.rebuild_index() == 1  # not failed; the stored file with a tombstone stays out
    assert "unreadable" in caplog.text and "not carried" in caplog.text
    rebuilt = base_snapshot(store)
    assert sorted(rebuilt.files) == ["demo-3.0.tar.gz"]
    assert sorted(rebuilt.deleted) == ["demo-2.0.tar.gz"]  # the fully deleted file's is lost, as warned


def test_an_unreadable_log_entry_falls_back_to_each_listed_files_tombstone(
        store: PackageStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, stuck = put(store, tmp_path, "demo-1.0.tar.gz", b"stuck")
    put(store, tmp_path, "demo-2.0.tar.gz", b"kept")
    store.storage.delete = lambda key: None  # type: ignore[method-assign]  # an interrupted deletion
    store.delete_files([stuck], "2026-03-01T00:00:00.000000Z")
    end = store.log.end()
    store.storage.write_document(log_key(end), b"{damaged", store.storage.document_version(log_key(end)))
    with caplog.at_level(logging.WARNING):
        assert store.rebuild_index() == 1
    assert "could not be read" in caplog.text
    assert sorted(base_snapshot(store).deleted) == ["demo-1.0.tar.gz"]


def test_a_legacy_deleted_map_still_counts_and_is_never_added_to(store: PackageStore, tmp_path: Path) -> None:
    """Stores written before one document per tombstone kept them in lifecycle.json."""
    _, kept = put(store, tmp_path, "demo-1.0.tar.gz", b"one")  # its old deletion was interrupted
    _, other = put(store, tmp_path, "demo-2.0.tar.gz", b"two")
    legacy = Lifecycle({"demo": ProjectStatus("demo", "deprecated")},
                       {"demo-1.0.tar.gz": Tombstone.of(kept, "2026-01-01T00:00:00.000000Z"),
                        "demo-0.5.tar.gz": tomb("demo-0.5.tar.gz", SHA_B)})
    store.storage.write_document(LIFECYCLE_KEY, legacy.dump(), None)
    assert store.rebuild_index() == 1
    rebuilt = base_snapshot(store)
    assert sorted(rebuilt.files) == ["demo-2.0.tar.gz"]
    assert sorted(rebuilt.deleted) == ["demo-0.5.tar.gz", "demo-1.0.tar.gz"]
    with pytest.raises(FileConflict, match="was deleted"):
        put(store, tmp_path, "demo-0.5.tar.gz", b"not the deleted bytes")
    with pytest.raises(FileConflict, match="was deleted"):
        put(store, tmp_path, "demo-1.0.tar.gz", b"other")
    store.delete_files([other], "2026-03-01T00:00:00.000000Z")  # a new deletion: its own document
    assert set(store.read_lifecycle().deleted) == {"demo-0.5.tar.gz", "demo-1.0.tar.gz"}
    store.set_project_status(ProjectStatus("demo", "archived"))  # rewrites the document, map as it was
    assert set(store.read_lifecycle().deleted) == {"demo-0.5.tar.gz", "demo-1.0.tar.gz"}
    store.set_project_status(ProjectStatus("demo", "active"))
    assert put(store, tmp_path, "demo-1.0.tar.gz", b"one")[0] is StoreOutcome.IDENTICAL  # back: leaves the map
    assert set(store.read_lifecycle().deleted) == {"demo-0.5.tar.gz"}
    assert store.rebuild_index() == 1
    rebuilt = base_snapshot(store)
    assert sorted(rebuilt.files) == ["demo-1.0.tar.gz"]
    assert sorted(rebuilt.deleted) == ["demo-0.5.tar.gz", "demo-2.0.tar.gz"]


class CountingStorage:
    """A Storage seen through a proxy that counts calls, and document bytes read and written."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.bytes_read = 0
        self.bytes_written = 0

    def reset(self) -> None:
        self.calls.clear()
        self.bytes_read = self.bytes_written = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            result = attr(*args, **kwargs)
            if name == "read_document" and result is not None:
                self.bytes_read += len(result.data)
            elif name == "write_document":
                self.bytes_written += len(args[1])
            return result
        return counted


def deletion_and_upload_cost(tmp_path: Path, tombstones: int) -> dict[str, Any]:
    """Storage calls and bytes of one deletion and one upload in a store with that many tombstones."""
    table = {"type": "memory", "read_secret": "read-secret-00", "write_secret": "write-secret-0",
             "store_id": f"cost-{tombstones}"}
    config = build_config(MemoryConfig, "local", table, ConfigSource("test"))
    counting = CountingStorage(MemoryBackend(config, BackendContext(root=tmp_path)))
    store = PackageStore(cast(Storage, counting))
    store.set_project_status(ProjectStatus("other", "deprecated"))
    store.delete_files([record(f"old-{n}.0.tar.gz") for n in range(tombstones)], "2026-03-01T00:00:00.000000Z")
    _, victim = put(store, tmp_path, "demo-1.0.tar.gz", b"bytes")
    cost: dict[str, Any] = {}
    counting.reset()
    store.delete_files([victim], "2026-03-02T00:00:00.000000Z")
    cost["delete"] = (dict(counting.calls), counting.bytes_read, counting.bytes_written)
    counting.reset()
    put(store, tmp_path, "demo-2.0.tar.gz", b"other bytes")
    cost["upload"] = (dict(counting.calls), counting.bytes_read, counting.bytes_written)
    return cost


def test_a_deletion_and_an_upload_cost_the_same_after_5000_deletions(tmp_path: Path) -> None:
    reset_stores()
    few, many = deletion_and_upload_cost(tmp_path, 10), deletion_and_upload_cost(tmp_path, 5000)
    assert many == few
    assert few["delete"][0]["write_document"] == 2  # the tombstone document and the log entry
