"""The audit log's store side (``pywharf_core.service.audit``), on a real ``file_system`` store:
day partitions, ``since``, pagination, two appenders on one store, damaged entries, the costly
store's buffer, write failures, field bounds and the append's cost."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import pywharf_core.service.audit as audit_module
from pywharf_backends.file_system import FileSystemBackend, FileSystemConfig
from pywharf_core.model.audit import FIELD_LIMITS, AuditEvent, parse_since
from pywharf_core.model.errors import BackendUnavailable
from pywharf_core.service.audit import AuditCursor, AuditLog, entry_key
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config

DAY1 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc).timestamp()
DAY = 86400


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStorage(FileSystemBackend):
    """A file_system store that counts its document calls (and can be told to fail writes)."""

    writes = 0
    existence_checks = 0
    fail_writes = False

    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        if self.fail_writes:
            raise BackendUnavailable("the store is down")
        self.writes += 1
        return super().write_document(key, data, expected)

    def document_version(self, key: str) -> str | None:
        self.existence_checks += 1
        return super().document_version(key)


class CostlyStorage(CountingStorage):
    cheap_documents = False  # as GitHub: every document write is a commit


def storage(tmp_path: Path, cls: type[FileSystemBackend] = CountingStorage) -> Any:
    config = build_config(FileSystemConfig, "local", {"type": "file_system", "read_secret": "read-secret-00",
                                                       "write_secret": "write-secret", "storage_path": "store"},
                          ConfigSource("<test>"))
    return cls(config, BackendContext(root=tmp_path))


def event(when: float, n: int = 0, action: str = "upload", status: int = 200) -> AuditEvent:
    return AuditEvent.make(action, repo="local", actor="write secret", client="10.0.0.1", status=status,
                           project="demo", filename=f"demo-{n}.0.tar.gz", when=when)


def read_all(log: AuditLog, since: float, limit: int) -> tuple[list[AuditEvent], int]:
    """Every page from ``since``; the events and the number of pages."""
    events: list[AuditEvent] = []
    cursor: AuditCursor | None = None
    for pages in range(1, 1000):
        page = log.read(since, limit=limit, cursor=cursor)
        events += page.events
        if page.next is None:
            return events, pages
        cursor = page.next
    raise AssertionError("the cursor never reached the end")


def test_events_are_kept_by_utc_day_and_since_reads_only_the_days_asked(tmp_path: Path) -> None:
    store = storage(tmp_path)
    clock = Clock(DAY1 + 2 * DAY)
    log = AuditLog(store, "local", clock)
    for day in range(3):
        for n in range(3):
            log.record(event(DAY1 + day * DAY + n, n=day * 10 + n))
    root = store.root / ".pywharf" / "audit"
    assert sorted(p.name for p in root.iterdir()) == ["2026-11-29", "2026-11-30", "2026-12-01"]
    assert sorted(p.name for p in (root / "2026-11-30").iterdir()) == ["000000001.json", "000000002.json",
                                                                      "000000003.json"]
    stored = json.loads((root / "2026-11-30" / "000000002.json").read_text())
    assert stored["events"][0]["filename"] == "demo-11.0.tar.gz" and stored["events"][0]["time"].endswith("Z")

    page = log.read(DAY1 + DAY + 1)  # from the second event of day 2
    assert [e.filename for e in page.events] == ["demo-11.0.tar.gz", "demo-12.0.tar.gz", "demo-20.0.tar.gz",
                                                 "demo-21.0.tar.gz", "demo-22.0.tar.gz"]
    assert page.next is None
    reads: list[str] = []
    original = store.read_document
    store.read_document = lambda key: reads.append(key) or original(key)  # type: ignore[method-assign]
    log.read(DAY1 + 2 * DAY)
    assert reads and all("/2026-12-01/" in key for key in reads)  # earlier days are not read


def test_pages_follow_the_cursor_without_gaps_or_repeats(tmp_path: Path) -> None:
    clock = Clock(DAY1 + DAY)
    log = AuditLog(storage(tmp_path), "local", clock)
    for n in range(25):
        log.record(event(DAY1 + n * 3000, n))  # spans two days
    events, pages = read_all(log, DAY1, limit=10)
    assert [e.filename for e in events] == [f"demo-{n}.0.tar.gz" for n in range(25)]
    assert pages == 3
    with pytest.raises(ValueError):
        AuditCursor.parse("2026-11-29.1.0; rm -rf")
    assert AuditCursor.parse(str(AuditCursor("2026-11-29", 7, 3))) == AuditCursor("2026-11-29", 7, 3)


def test_a_page_reads_a_bounded_number_of_empty_days(tmp_path: Path) -> None:
    clock = Clock(DAY1 + 100 * DAY)
    log = AuditLog(storage(tmp_path), "local", clock)
    log.record(event(DAY1 + 99 * DAY, 1))
    first = log.read(DAY1)
    assert first.events == [] and first.next is not None  # 31 empty days, then a cursor
    events, pages = read_all(log, DAY1, limit=100)
    assert [e.filename for e in events] == ["demo-1.0.tar.gz"] and pages == 4


def test_batched_entries_page_inside_an_entry(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    log = AuditLog(storage(tmp_path, CostlyStorage), "local", clock)
    for n in range(7):
        log.record(event(DAY1 + n, n))
    events, pages = read_all(log, DAY1 - 10, limit=3)
    assert [e.filename for e in events] == [f"demo-{n}.0.tar.gz" for n in range(7)] and pages == 3


def test_two_appenders_on_one_store_lose_nothing(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    first, second = AuditLog(storage(tmp_path), "local", clock), AuditLog(storage(tmp_path), "local", clock)
    start = threading.Barrier(2)

    def append(log: AuditLog, base: int) -> None:
        start.wait()
        for n in range(40):
            log.record(event(DAY1 + n, base + n))

    threads = [threading.Thread(target=append, args=(first, 0)), threading.Thread(target=append, args=(second, 100))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events, _ = read_all(AuditLog(storage(tmp_path), "local", clock), DAY1 - 10, limit=1000)
    assert sorted(e.filename for e in events) == sorted([f"demo-{n}.0.tar.gz" for n in range(40)]
                                                        + [f"demo-{n}.0.tar.gz" for n in range(100, 140)])
    day = store_day_files(tmp_path)
    assert day == [f"{n:09d}.json" for n in range(1, 81)]  # contiguous: one entry per event


def store_day_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "store" / ".pywharf" / "audit" / "2026-11-29").iterdir())


def test_damaged_entries_and_events_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = storage(tmp_path)
    clock = Clock(DAY1)
    log = AuditLog(store, "local", clock)
    log.record(event(DAY1, 1))
    store.write_document(entry_key("2026-11-29", 2), b"{not json", None)
    bad_event = {"events": [{"time": "yesterday", "action": "upload", "status": 200}, event(DAY1 + 2, 3).to_dict()]}
    store.write_document(entry_key("2026-11-29", 3), json.dumps(bad_event).encode(), None)
    log.record(event(DAY1 + 3, 4))
    caplog.set_level(logging.ERROR)
    page = log.read(DAY1 - 10)
    assert [e.filename for e in page.events] == ["demo-1.0.tar.gz", "demo-3.0.tar.gz", "demo-4.0.tar.gz"]
    assert page.skipped == 2
    assert "000000002.json is unreadable" in caplog.text


def test_a_costly_store_gets_one_write_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = storage(tmp_path, CostlyStorage)
    clock = Clock(DAY1)
    log = AuditLog(store, "local", clock)
    for n in range(5):
        log.record(event(DAY1, n))
    assert store.writes == 0
    log.flush_due()
    assert store.writes == 0  # not due yet
    clock.now += audit_module.FLUSH_SECONDS
    log.flush_due()
    assert store.writes == 1
    assert len(json.loads(store.read_document(entry_key("2026-11-29", 1)).data)["events"]) == 5
    monkeypatch.setattr(audit_module, "FLUSH_EVENTS", 3)
    for n in range(3):
        log.record(event(clock.now, n))
    assert store.writes == 2  # a full buffer is written at once
    log.record(event(clock.now, 9))
    assert [e.filename for e in log.read(DAY1 - 10).events][-1] == "demo-9.0.tar.gz"  # a read flushes first
    assert store.writes == 3


def test_a_failed_write_never_fails_the_caller_and_is_logged_whole(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = storage(tmp_path)
    log = AuditLog(store, "local", Clock(DAY1))
    store.fail_writes = True
    caplog.set_level(logging.ERROR)
    log.record(event(DAY1, 7))  # no exception
    assert log.failures == 1
    assert "audit event not written" in caplog.text and "demo-7.0.tar.gz" in caplog.text


def test_a_costly_stores_buffer_survives_a_failed_flush_within_its_bound(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "MAX_BUFFERED", 4)
    store = storage(tmp_path, CostlyStorage)
    log = AuditLog(store, "local", Clock(DAY1))
    monkeypatch.setattr(audit_module, "FLUSH_EVENTS", 2)
    store.fail_writes = True
    attempts: list[int] = []
    original = store.write_document
    store.write_document = lambda *args: attempts.append(1) or original(*args)  # type: ignore[method-assign]
    for n in range(6):
        log.record(event(DAY1, n))
    assert len(attempts) == 1  # the first full buffer tried once; then no retry per event
    assert log.failures == 2  # past MAX_BUFFERED the two oldest were dropped (and logged)
    store.fail_writes = False
    log.flush()
    assert [e.filename for e in log.read(DAY1 - 10).events] == [f"demo-{n}.0.tar.gz" for n in range(2, 6)]


def test_appending_costs_one_write_on_a_new_day_and_log_n_checks_for_a_new_writer(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    writer = AuditLog(storage(tmp_path), "local", clock)
    for n in range(200):
        writer.record(event(DAY1, n))
    fresh = storage(tmp_path)
    newcomer = AuditLog(fresh, "local", clock)
    newcomer.record(event(DAY1, 500))  # does not know the end: gallops to it
    assert fresh.existence_checks <= 2 * 9 + 2 and fresh.writes <= 2
    assert store_day_files(tmp_path)[-1] == "000000201.json"
    clock.now += DAY
    next_day = storage(tmp_path)
    AuditLog(next_day, "local", clock).record(event(clock.now, 1))
    assert (next_day.writes, next_day.existence_checks) == (1, 0)  # day 2 costs what day 1 did


def test_fields_are_bounded_and_printable() -> None:
    made = AuditEvent.make("upload", repo="local", actor="a" * 1000, client="1.2.3.4\x1b[31m", status=409,
                           filename="x" * 10_000, detail="line\nbreak", when=DAY1)
    assert len(made.filename) == FIELD_LIMITS["filename"] and made.filename.endswith("…")
    assert len(made.actor) == FIELD_LIMITS["actor"]
    assert "\x1b" not in made.client and "\n" not in made.detail
    assert AuditEvent.from_dict(made.to_dict()) == AuditEvent.from_dict(json.loads(json.dumps(made.to_dict())))
    with pytest.raises(ValueError):
        AuditEvent.make("rm-rf", repo="local", actor="", client="", status=200)
    for bad in ([], {"time": "2026-11-29T10:00:00.000Z", "action": "upload", "status": "200"},
                {"time": "2026-11-29T10:00:00", "action": "upload", "status": 200},
                {"time": "2026-11-29T10:00:00Z", "action": "upload", "status": 200, "actor": 5}):
        with pytest.raises(ValueError):
            AuditEvent.from_dict(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-29", DAY1 - 10 * 3600),
    ("2026-11-29T10:00:00Z", DAY1),
    ("2026-11-29T12:00:00+02:00", DAY1),
    ("90m", DAY1 + 2 * DAY - 5400),
    ("7d", DAY1 + 2 * DAY - 7 * DAY),
    ("2w", DAY1 + 2 * DAY - 14 * DAY),
])
def test_since_takes_dates_times_and_durations(text: str, expected: float) -> None:
    assert parse_since(text, DAY1 + 2 * DAY) == expected


@pytest.mark.parametrize("text", ["yesterday", "7y", "1900-01-01", "2999-01-01", "x" * 100, "-5d"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text, DAY1)


def test_the_sync_thread_flushes_a_costly_stores_buffer_when_due_and_at_shutdown(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pywharf_core.service.sync import IndexSyncService

    store = storage(tmp_path, CostlyStorage)
    clock = Clock(DAY1)
    log = AuditLog(store, "local", clock)
    config = SimpleNamespace(sync_index_interval=3600, retention_keep_prereleases=None, retention_max_age_days=None,
                             retention_version_pattern="")
    repo = SimpleNamespace(name="local", audit=log, last_sync_error=None, snapshot=(), config=config, mirror=None,
                           group=None, local_index=SimpleNamespace(mark_synced=lambda: None), sync_once=lambda: False)
    log.record(event(DAY1, 1))
    clock.now += audit_module.FLUSH_SECONDS
    service = IndexSyncService()
    service.start([repo])  # type: ignore[list-item]
    for _ in range(250):  # the first round runs at once: the event is due
        if store.writes:
            break
        threading.Event().wait(0.02)
    assert store.writes == 1
    log.record(event(clock.now, 2))  # not due: stays buffered until shutdown
    service.stop()
    assert store.writes == 2
    assert [e.filename for e in AuditLog(storage(tmp_path), "local", clock).read(DAY1 - 10).events] == [
        "demo-1.0.tar.gz", "demo-2.0.tar.gz"]
