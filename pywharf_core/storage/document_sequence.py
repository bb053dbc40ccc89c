"""An append-only sequence of create-only documents, numbered 1, 2, 3... in one store.

What the index log (``pywharf_core.index.remote_log``) and the audit log
(``pywharf_core.service.audit``) are built on: many servers sharing one store append to the same
sequence with no lock and no listing, using only the storage seam's create-only documents.

- **Appending**: entry ``n`` is written create-only; a writer that loses the slot to another
  takes the next one. Entries are therefore contiguous (a slot is only ever taken as the first
  free one at or after a position the writer saw filled), so a writer that does not know the end
  finds it with a galloping then binary search: O(log N) existence checks, and one write when
  it knows the end already (the usual case: it remembers the last entry it saw).
- **Reading**: entries in order from a position until the first free slot. An empty document
  is read as the end too: on stores whose creates are not atomic it is one being written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from pywharf_core.model.errors import BackendUnavailable
from pywharf_core.storage.api import Document, Storage, VersionConflict

MAX_APPEND_ATTEMPTS = 1000  # slots lost to concurrent writers before giving up (503)


class DocumentSequence:
    """The documents ``key_of(1)``, ``key_of(2)``... of ``storage`` (see the module docstring)."""

    def __init__(self, storage: Storage, key_of: Callable[[int], str], what: str = "log") -> None:
        self.storage = storage
        self.key_of = key_of
        self.what = what  # for the 503 message
        self._known_end = 0  # a position this process saw filled (entries 1..n exist)
        self._lock = threading.Lock()

    def _exists(self, seq: int) -> bool:
        return self.storage.document_version(self.key_of(seq)) is not None

    def saw(self, position: int) -> None:
        """Entries 1..``position`` are known to exist (from a base document or a read)."""
        with self._lock:
            self._known_end = max(self._known_end, position)

    @property
    def known_end(self) -> int:
        return self._known_end

    def end(self) -> int:
        """The number of entries (the last one's sequence number): O(log N) existence checks."""
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

    def append(self, data: bytes) -> int:
        """Write ``data`` as the next entry; returns its sequence number."""
        seq = self._known_end + 1
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                self.storage.write_document(self.key_of(seq), data, None)
            except VersionConflict:
                seq = max(seq + 1, self.end() + 1)  # taken: skip to the end as it is now
                continue
            self.saw(seq)
            return seq
        raise BackendUnavailable(f"could not append to the {self.what}: {MAX_APPEND_ATTEMPTS} slots lost to others")

    def read_after(self, position: int, limit: int) -> Iterator[tuple[int, Document]]:
        """Entries after ``position``, in order, until the first free (or empty) slot or ``limit``."""
        seq = position + 1
        while seq <= position + limit:
            document = self.storage.read_document(self.key_of(seq))
            if document is None or not document.data.strip():
                return
            self.saw(seq)
            yield seq, document
            seq += 1
