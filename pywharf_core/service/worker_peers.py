"""Read-your-writes across the worker processes of one server (``pywharf server --workers N``).

Every worker serves from its own in-memory snapshot. What one worker writes (an upload, a yank,
a sync applied by the worker that syncs) goes to the local journal under ROOT before it is
acknowledged; what a revoked token must stop goes to the store. Other workers must see both
before they answer their next request, not at their next sync:

- each worker owns one slot of an **index** vector and one of a **tokens** vector in memory
  shared by all workers (an anonymous shared mapping made before the workers are forked), and
  bumps its own slot after each write (one writer per slot: no cross-process lock);
- every authenticated request compares the two vectors with what this worker last saw (one
  slice compare of a few dozen bytes, ~0.2 us); when they differ, the worker first catches up:
  the journal lines written since it last looked (``LocalIndexStore.read_new``; O(changes)),
  a new base document if the syncing worker installed one, and its cached token verdicts.

In a single process (``--workers 1``) none of this exists: nothing is shared.
"""

from __future__ import annotations

import mmap
import secrets
import struct
import threading

_SLOT = struct.Struct("<Q")


class WorkerPeers:
    """The shared change vectors of ``count`` workers; :meth:`as_worker` picks this process's slot."""

    def __init__(self, count: int, server: str | None = None) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        # This run of the server, for its workers (made by the supervisor): random, since pids
        # repeat across containers sharing one ROOT (every container's supervisor is pid 1).
        self.server = server or secrets.token_hex(8)
        self._map = mmap.mmap(-1, 2 * count * _SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS: survives fork
        self._slot = -1
        self._lock = threading.Lock()  # this process's threads share its slots
        self._seen = self._map[:]

    def as_worker(self, slot: int) -> None:
        """Called in a freshly forked worker: its slot (a replacement takes over a dead one's)."""
        if not 0 <= slot < self.count:
            raise ValueError(f"slot {slot} out of range")
        self._slot = slot
        self._seen = self._map[:]

    @property
    def slot(self) -> int:
        """This process's slot; -1 in the supervisor (before :meth:`as_worker`)."""
        return self._slot

    def _bump(self, offset: int) -> None:
        if self._slot < 0:
            return  # the supervisor writes nothing
        with self._lock:
            position = (offset + self._slot) * _SLOT.size
            _SLOT.pack_into(self._map, position, _SLOT.unpack_from(self._map, position)[0] + 1)
            # This worker sees its own bump as a change too: its catch-up then finds nothing new
            # (its journal offset is past its own lines), which is cheaper than being clever.

    def index_written(self) -> None:
        """This worker changed the local journal or base (upload, yank, status, sync)."""
        self._bump(0)

    def tokens_changed(self) -> None:
        """This worker ended an API token (revoked or burned): others drop cached verdicts."""
        self._bump(self.count)

    def changed(self) -> bool:
        """Whether another worker wrote since this one last caught up (the per-request check)."""
        return self._map[:] != self._seen

    def take(self) -> tuple[bool, bool]:
        """Mark everything as seen; returns (index changed, tokens changed) since the last take.

        Read *before* catching up, so a write that lands during the catch-up is seen next time."""
        current = self._map[:]
        half = self.count * _SLOT.size
        index, tokens = current[:half] != self._seen[:half], current[half:] != self._seen[half:]
        self._seen = current
        return index, tokens
