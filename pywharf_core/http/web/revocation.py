"""Sessions ended by ``POST /logout/``: a bounded set of session ids, kept under ROOT.

Why: a session cookie is stateless (signed and encrypted), so without this a copy of it would
keep working after logout until it expires. Logout records the cookie's random session id
with the time the cookie would have expired anyway; a revoked id is refused from then on.

- **Bounded.** An entry lives only until its cookie's own expiry (at most
  ``--auth_read_expires``), and at most ``max_entries`` are kept: when full, the entry
  closest to its expiry is dropped first (that cookie had the least time left) and a warning is
  logged.
- **Survives a restart, and is shared by servers sharing a ROOT.** ``ROOT/revoked-sessions``
  holds one line ``<expiry> <session id>`` per logout, appended with ``O_APPEND`` (one small
  write per line, so servers appending at once do not tear each other's lines). Each lookup
  reads what other processes appended since the last look (a ``stat`` when nothing changed);
  when the file holds many expired lines it is compacted by an atomic replace. Losing the file
  only forgets logouts: the server rebuilds it empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

REVOKED_FILENAME = "revoked-sessions"
# Logouts remembered at once. Each entry lives at most --auth_read_expires (1 h by default):
# 10,000 logouts an hour is far more than a private index sees; ~60 bytes each on disk.
MAX_REVOKED_SESSIONS = 10_000
_LINE = re.compile(r"^(\d{1,12}) ([A-Za-z0-9_-]{16,64})$")


class RevokedSessions:
    def __init__(self, root: Path, max_entries: int = MAX_REVOKED_SESSIONS,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = root / REVOKED_FILENAME
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, float] = {}  # session id -> the cookie's expiry (Unix time)
        self._offset = 0  # bytes of the file already read
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file read
        self._lines = 0  # lines in the file, expired or not (compaction trigger)

    def is_revoked(self, session_id: str) -> bool:
        with self._lock:
            self._refresh()
            expiry = self._entries.get(session_id)
            return expiry is not None and expiry > self._clock()

    def revoke(self, session_id: str, expires_at: float) -> None:
        """Refuse ``session_id`` until ``expires_at`` (after which its cookie is refused anyway)."""
        if not _LINE.match(f"{int(expires_at)} {session_id}"):
            return  # not an id this server issues
        with self._lock:
            self._refresh()
            self._remember(session_id, expires_at)
            line = f"{int(expires_at) + 1} {session_id}\n".encode("ascii")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.error("cannot record a logout in %s (%s): the session ends on this server only",
                          self.path, exc.strerror or exc)
                return
            self._refresh()
            if self._lines > 2 * max(len(self._entries), 1000):
                self._compact()

    # -- internals (called with the lock held) -------------------------------------------------

    def _remember(self, session_id: str, expiry: float) -> None:
        now = self._clock()
        if expiry <= now:
            return
        if session_id not in self._entries and len(self._entries) >= self.max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v > now}
            if len(self._entries) >= self.max_entries:
                soonest = min(self._entries, key=self._entries.__getitem__)
                del self._entries[soonest]
                log.warning("more than %d sessions revoked at once: forgetting the one closest to expiry",
                            self.max_entries)
        self._entries[session_id] = max(expiry, self._entries.get(session_id, 0.0))

    def _refresh(self) -> None:
        """Read what was appended since the last look; everything again if the file was replaced."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc.strerror or exc)
            return
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._offset:
            self._identity, self._offset, self._lines = identity, 0, 0
        if stat.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read(stat.st_size - self._offset)
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc.strerror or exc)
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
        self._offset += len(complete)
        for raw in complete.splitlines():
            self._lines += 1
            match = _LINE.match(raw.decode("ascii", "replace"))
            if match:
                self._remember(match.group(2), float(match.group(1)))

    def _compact(self) -> None:
        """Rewrite the file with the live entries only (atomic replace: readers see old or new)."""
        now = self._clock()
        live = {k: v for k, v in self._entries.items() if v > now}
        text = "".join(f"{int(v)} {k}\n" for k, v in live.items()).encode("ascii")
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".revoked-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
            os.replace(temp, self.path)
        except OSError as exc:
            log.warning("cannot compact %s: %s", self.path, exc.strerror or exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        self._entries = live
        self._identity = None  # re-read the new file from its start at the next look
        self._refresh()
