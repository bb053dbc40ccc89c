"""A repository's audit log, kept by its store beside the files: appended by every server
sharing the store, read by any of them.

Layout: ``.pywharf/audit/<YYYY-MM-DD>/<seq>.json``, one append-only
:class:`~pywharf_core.storage.document_sequence.DocumentSequence` per UTC day, each entry
``{"events": [...]}`` (one event, or a batch where writes are costly). So:

- an append is one create-only document write, the same on day 1 and on day 1000 (a new day
  starts a new sequence; a writer that does not know a day's end finds it in O(log N));
- a query ``since`` a time reads only the days from then on, and a page reads at most
  ``limit`` events and :data:`MAX_DAYS_PER_PAGE` days, whatever the size of the log; the
  answer carries a cursor to the next page;
- nothing is kept by a server that the store does not hold (a restart loses nothing but what a
  costly store's buffer held, below).

**Costly stores** (``Storage.cheap_documents`` False: on GitHub each document write is a
commit): events are buffered and written as one entry per flush, when :data:`FLUSH_EVENTS`
are waiting, when the oldest has waited :data:`FLUSH_SECONDS` (the repository's sync thread
asks, :meth:`AuditLog.flush_due`) and at shutdown: at most one commit per batch, never one per
upload. A crash loses what was buffered; the server log keeps a line for each write (the
upload, yank and token log lines) so nothing is untraceable.

**A failed audit write does not fail the request** (logged loudly instead: an ERROR line holding
the whole event, so the server log is the fallback record, and :attr:`AuditLog.failures` counts
them). The event is recorded after the change it describes, which is already durable and cannot
be undone (a stored file is never deleted again: another server may have acknowledged the same
bytes); answering 503 for it would make clients retry a change that happened, and fail the
refusals the log exists to record. The store that holds the audit log is the store the change
was written to, so an audit write that fails where the change did not is a transient fault, not
a way around the log. A costly store's buffer that cannot be written is kept up to
:data:`MAX_BUFFERED` events, then the oldest are dropped, each with its ERROR line.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pywharf_core.model.audit import AuditEvent, utc_day
from pywharf_core.storage.api import Storage
from pywharf_core.storage.document_sequence import DocumentSequence

log = logging.getLogger(__name__)

AUDIT_PREFIX = ".pywharf/audit/"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # events per page
MAX_DAYS_PER_PAGE = 31  # days one page may look through (empty days cost one read each)
MAX_READS_PER_PAGE = 2000  # entries one page may read (events before `since` are read, then passed over)
MAX_EVENTS_PER_ENTRY = 500  # a batch entry stays well under 1 MB (events are at most ~1.6 KB)
FLUSH_EVENTS = 200  # costly stores: write the buffer once this many events wait...
FLUSH_SECONDS = 60.0  # ...or once the oldest has waited this long
MAX_BUFFERED = 10_000  # costly stores: events kept while the store cannot be written
_DAYS_KEPT = 3  # day sequences a writer remembers the end of (yesterday's, for late batches)
_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d{1,12})\.(\d{1,4})$")


def entry_key(day: str, seq: int) -> str:
    return f"{AUDIT_PREFIX}{day}/{seq:09d}.json"


def encode_entry(events: list[AuditEvent]) -> bytes:
    return json.dumps({"events": [e.to_dict() for e in events]}, ensure_ascii=False, sort_keys=True).encode()


def decode_entry(data: bytes) -> list[AuditEvent | None]:
    """The events of an entry, None for each damaged one; ValueError when the entry itself is damaged."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    events = raw.get("events") if isinstance(raw, dict) else None
    if not isinstance(events, list):
        raise ValueError("no 'events' list")
    decoded: list[AuditEvent | None] = []
    for item in events:
        try:
            decoded.append(AuditEvent.from_dict(item))
        except ValueError:
            decoded.append(None)
    return decoded


@dataclass(frozen=True, slots=True)
class AuditCursor:
    """Where a page ends: the next event to read is number ``offset`` of entry ``seq`` of ``day``."""

    day: str
    seq: int = 1
    offset: int = 0

    def __str__(self) -> str:
        return f"{self.day}.{self.seq}.{self.offset}"

    @classmethod
    def parse(cls, text: str) -> AuditCursor:
        match = _CURSOR.match(text)
        if match is None:
            raise ValueError("not a cursor of this audit log (it comes from a previous page's 'next')")
        day, seq, offset = match.group(1), int(match.group(2)), int(match.group(3))
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise ValueError("not a cursor of this audit log") from None
        if seq < 1 or offset >= MAX_EVENTS_PER_ENTRY:
            raise ValueError("not a cursor of this audit log")
        return cls(day, seq, offset)

    def after(self, index: int) -> AuditCursor:
        """The cursor after event ``index`` of this cursor's entry."""
        if index + 1 >= MAX_EVENTS_PER_ENTRY:
            return AuditCursor(self.day, self.seq + 1, 0)
        return AuditCursor(self.day, self.seq, index + 1)


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Events in log order (by day, then append order); ``next`` is None once the present end
    of the log is reached."""

    events: list[AuditEvent]
    next: AuditCursor | None
    skipped: int = 0  # damaged entries or events passed over


def _next_day(day: str) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")


class AuditLog:
    def __init__(self, storage: Storage, repo: str, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.repo = repo
        self.clock = clock
        self.buffered = not storage.cheap_documents
        self.failures = 0  # events that could not be written (each logged at ERROR)
        self._days: dict[str, DocumentSequence] = {}
        self._days_lock = threading.Lock()
        self._pending: list[AuditEvent] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._retry_at = 0.0  # after a failed flush, a full buffer waits for this before writing again

    # -- writing ---------------------------------------------------------------------------------

    def _sequence(self, day: str) -> DocumentSequence:
        with self._days_lock:
            sequence = self._days.get(day)
            if sequence is None:
                sequence = DocumentSequence(self.storage, lambda seq: entry_key(day, seq), "audit log")
                self._days[day] = sequence
                for old in sorted(self._days)[:-_DAYS_KEPT]:
                    del self._days[old]
            return sequence

    def record(self, event: AuditEvent) -> None:
        """Append ``event`` (blocking: one document write; on a costly store, into the buffer).
        Never raises for a storage failure (see the module docstring)."""
        if not self.buffered:
            self._write([event])
            return
        with self._pending_lock:
            self._pending.append(event)
            full = len(self._pending) >= FLUSH_EVENTS
            dropped = self._trim()
        for old in dropped:
            self._lost(old, "the buffer is full")
        if full and self.clock() >= self._retry_at:  # a store that just failed is not retried per request
            self.flush()

    def flush_due(self) -> None:
        """Write the buffer if its oldest event has waited :data:`FLUSH_SECONDS` (the sync thread
        asks every ``sync_index_interval``)."""
        with self._pending_lock:
            due = bool(self._pending) and self.clock() - self._pending[0].time >= FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Write every buffered event (one entry per day and :data:`MAX_EVENTS_PER_ENTRY`)."""
        with self._flush_lock:
            with self._pending_lock:
                events, self._pending = self._pending, []
            if not events:
                return
            unwritten = self._write(events, log_failures=False)
            if not unwritten:
                return
            self._retry_at = self.clock() + FLUSH_SECONDS
            with self._pending_lock:
                self._pending[:0] = unwritten  # kept for the next flush, oldest first
                dropped = self._trim()
            for event in dropped:
                self._lost(event, "the buffer is full")

    def _trim(self) -> list[AuditEvent]:
        """Drop (and return) the oldest buffered events past :data:`MAX_BUFFERED` (hold the lock)."""
        overflow = len(self._pending) - MAX_BUFFERED
        if overflow <= 0:
            return []
        dropped, self._pending = self._pending[:overflow], self._pending[overflow:]
        return dropped

    def _write(self, events: list[AuditEvent], *, log_failures: bool = True) -> list[AuditEvent]:
        """Append ``events`` in entries by day; the events that could not be written."""
        by_day: dict[str, list[AuditEvent]] = {}
        for event in events:
            by_day.setdefault(utc_day(event.time), []).append(event)
        unwritten: list[AuditEvent] = []
        for day, batch in by_day.items():
            for start in range(0, len(batch), MAX_EVENTS_PER_ENTRY):
                chunk = batch[start:start + MAX_EVENTS_PER_ENTRY]
                try:
                    self._sequence(day).append(encode_entry(chunk))
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if log_failures:
                        for event in chunk:
                            self._lost(event, reason)
                    else:
                        log.error("repo %r: %d audit events not written yet (kept, retried at the next flush): %s",
                                  self.repo, len(chunk), reason)
                        unwritten.extend(chunk)
        return unwritten

    def _lost(self, event: AuditEvent, reason: str) -> None:
        self.failures += 1
        log.error("repo %r: audit event not written to the store (%s): %s", self.repo, reason,
                  json.dumps(event.to_dict(), ensure_ascii=False, sort_keys=True))

    # -- reading ---------------------------------------------------------------------------------

    def read(self, since: float, *, limit: int = DEFAULT_LIMIT, cursor: AuditCursor | None = None) -> AuditPage:
        """Events at or after ``since`` (from ``cursor`` when continuing), at most ``limit``
        (capped at :data:`MAX_LIMIT`); one page reads at most :data:`MAX_READS_PER_PAGE` entries
        and :data:`MAX_DAYS_PER_PAGE` days. A costly store's buffer is written first, so a
        reader sees every event recorded before it asked."""
        if self.buffered:
            self.flush()
        limit = max(1, min(limit, MAX_LIMIT))
        today = utc_day(self.clock())
        position = cursor or AuditCursor(utc_day(since))
        events: list[AuditEvent] = []
        skipped = reads = days_read = 0
        while position.day <= today:
            sequence = DocumentSequence(self.storage, lambda n, day=position.day: entry_key(day, n), "audit log")
            for number, document in sequence.read_after(position.seq - 1, MAX_READS_PER_PAGE - reads):
                reads += 1
                entry = AuditCursor(position.day, number)
                try:
                    decoded = decode_entry(document.data)
                except ValueError as exc:
                    log.error("repo %r: audit entry %s is unreadable, skipped: %s", self.repo,
                              entry_key(entry.day, number), exc)
                    decoded = [None] if position.offset == 0 or number != position.seq else []
                start = position.offset if number == position.seq else 0
                for index in range(start, len(decoded)):
                    event = decoded[index]
                    if event is None:
                        skipped += 1
                    elif event.time >= since:
                        events.append(event)
                    if len(events) >= limit:
                        return AuditPage(events, entry.after(index), skipped)
                position_next = AuditCursor(position.day, number + 1)
                if reads >= MAX_READS_PER_PAGE:
                    return AuditPage(events, position_next, skipped)
            if position.day == today:
                break
            days_read += 1
            position = AuditCursor(_next_day(position.day))
            if days_read >= MAX_DAYS_PER_PAGE:
                return AuditPage(events, position, skipped)
        return AuditPage(events, None, skipped)
