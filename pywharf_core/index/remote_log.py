"""The remote index log: one small document per accepted upload (or yank, deletion, project
status change: ``pywharf_core.model.lifecycle``), kept in storage.

The remote index is a compacted **base** document (``index.toml``, the TOML that
``update_index`` writes; ``log_position = N`` says it covers entries 1..N) plus this
append-only **log** of ``.pywharf/log/<seq>.json`` entries, each one journal line. So:

- an upload costs one create-only document write, whatever the size of the index (the s3
  backend used to rewrite the whole index per upload, the journal was re-read per upload);
- servers sharing one store (a folder over NFS, a bucket) see each other's uploads at their
  next sync with no separate job, and a sync reads only the entries after its position: its
  cost is what changed, not the index size;
- an upload is acknowledged only once its entry is in the log, so no server, and no
  ``update_index`` run from a stale view, can hide it.

Appending: entry ``n`` is written create-only; a writer that loses the slot to another takes the
next one. Entries are therefore contiguous (a slot is only ever taken as the first free one at
or after a position the writer saw filled), which lets a writer that does not know the end find
it with a galloping then binary search: O(log N) reads. Entries are never deleted (they are a
few hundred bytes; pruning them safely is lifecycle work).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from pywharf_core.index.local import journal_line, parse_journal_line
from pywharf_core.model.errors import BackendUnavailable, InvalidName
from pywharf_core.model.lifecycle import IndexChange
from pywharf_core.storage.api import Storage, VersionConflict

log = logging.getLogger(__name__)

LOG_PREFIX = ".pywharf/log/"
MAX_APPEND_ATTEMPTS = 1000  # slots lost to concurrent writers before giving up (503)
READ_BATCH = 1000  # entries read (and then applied) at a time, so a long log makes progress


def log_key(seq: int) -> str:
    return f"{LOG_PREFIX}{seq:012d}.json"


class RemoteLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._known_end = 0  # a position this process saw filled (entries 1..n exist)
        self._lock = threading.Lock()

    def _exists(self, seq: int) -> bool:
        return self.storage.document_version(log_key(seq)) is not None

    def saw(self, position: int) -> None:
        """Entries 1..``position`` are known to exist (from a base document or a read)."""
        with self._lock:
            self._known_end = max(self._known_end, position)

    def end(self) -> int:
        """The number of entries in the log (the last one's sequence number)."""
        low = self._known_end  # low exists (or is 0), find the first free slot above it
        step = 1
        high = low + step
        while self._exists(high):
            low, step = high, step * 2
            high = low + step
        while high - low > 1:  # low exists, high does not
            middle = (low + high) // 2
            if self._exists(middle):
                low = middle
            else:
                high = middle
        self.saw(low)
        return low

    def append(self, record: IndexChange) -> int:
        """Write ``record`` (any index change) as the next entry; returns its sequence number."""
        data = journal_line(record)
        seq = self._known_end + 1
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                self.storage.write_document(log_key(seq), data, None)
            except VersionConflict:
                seq = max(seq + 1, self.end() + 1)  # taken: skip to the end as it is now
                continue
            self.saw(seq)
            return seq
        raise BackendUnavailable(f"could not append to the index log: {MAX_APPEND_ATTEMPTS} slots lost to others")

    def read_after(self, position: int, limit: int = READ_BATCH) -> Iterator[tuple[int, IndexChange | None]]:
        """Entries after ``position``, in order, until the first free slot (or ``limit``).

        An unreadable entry yields None for its record (its slot still counts), so one damaged
        document cannot stop the log.
        """
        seq = position + 1
        while seq <= position + limit:
            document = self.storage.read_document(log_key(seq))
            if document is None or not document.data.strip():
                return  # the end (an empty entry is one being written where creates are not atomic)
            try:
                record: IndexChange | None = parse_journal_line(document.data)
            except (ValueError, TypeError, KeyError, InvalidName) as exc:
                log.error("index log entry %s is unreadable, skipped: %s", log_key(seq), exc)
                record = None
            self.saw(seq)
            yield seq, record
            seq += 1
