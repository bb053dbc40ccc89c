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

Appending and reading are :class:`~pywharf_core.storage.document_sequence.DocumentSequence`'s
(create-only slots, a galloping search for the end: O(log N) reads when the end is unknown).
Entries are never deleted (they are a few hundred bytes; pruning them safely is lifecycle work).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pywharf_core.index.local import journal_line, parse_journal_line
from pywharf_core.model.errors import InvalidName
from pywharf_core.model.lifecycle import IndexChange
from pywharf_core.storage.api import Storage
from pywharf_core.storage.document_sequence import DocumentSequence

log = logging.getLogger(__name__)

LOG_PREFIX = ".pywharf/log/"
READ_BATCH = 1000  # entries read (and then applied) at a time, so a long log makes progress


def log_key(seq: int) -> str:
    return f"{LOG_PREFIX}{seq:012d}.json"


class RemoteLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._entries = DocumentSequence(storage, log_key, "index log")

    def saw(self, position: int) -> None:
        """Entries 1..``position`` are known to exist (from a base document or a read)."""
        self._entries.saw(position)

    def end(self) -> int:
        """The number of entries in the log (the last one's sequence number)."""
        return self._entries.end()

    def append(self, record: IndexChange) -> int:
        """Write ``record`` (any index change) as the next entry; returns its sequence number."""
        return self._entries.append(journal_line(record))

    def entry(self, seq: int) -> IndexChange | None:
        """Entry ``seq`` alone; None when its slot is free, empty (being written) or unreadable.

        For ``update_index``, which reads a known range (possibly in parallel) and must learn
        of a slot it could not read rather than stop there as :meth:`read_after` does."""
        document = self.storage.read_document(log_key(seq))
        if document is None or not document.data.strip():
            return None
        try:
            return parse_journal_line(document.data)
        except (ValueError, TypeError, KeyError, InvalidName) as exc:
            log.error("index log entry %s is unreadable, skipped: %s", log_key(seq), exc)
            return None

    def read_after(self, position: int, limit: int = READ_BATCH) -> Iterator[tuple[int, IndexChange | None]]:
        """Entries after ``position``, in order, until the first free slot (or ``limit``).

        An unreadable entry yields None for its record (its slot still counts), so one damaged
        document cannot stop the log.
        """
        for seq, document in self._entries.read_after(position, limit):
            try:
                record: IndexChange | None = parse_journal_line(document.data)
            except (ValueError, TypeError, KeyError, InvalidName) as exc:
                log.error("index log entry %s is unreadable, skipped: %s", log_key(seq), exc)
                record = None
            yield seq, record
