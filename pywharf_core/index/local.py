"""The local index a server keeps under ``ROOT/cache/<repo>/``, all of it rebuildable.

- ``index.json`` + ``index.token``: the last good copy of the remote index's base document (as
  JSON: ~30x faster to load than TOML), its version token and the index log position it covers,
  replaced atomically by a sync that found a new base.
- ``uploads.jsonl``: the journal, one JSON line per change that the base does not reflect yet
  (uploads this server or another sharing ROOT accepted, entries read from the remote log,
  yank changes, deletions and project statuses: ``pywharf_core.model.lifecycle``). The latest
  line for a file (record or tombstone) or a project's status wins. A ``{"log_position": N}`` line records that
  index log entries up to N are in it, so a restart reads only the log entries after N (unless
  the journal is damaged: then from the base's position, the log being the store's truth).

Cost model (issue 12): an append writes one line and reads nothing but the lines other
processes appended since this one last looked, so an upload costs the same at 10 or 100,000
files. The journal is rewritten only when a new base arrives (it then keeps only what the base
does not reflect). A line counts only once it ends with its newline, so a crash mid-append
(a torn line) loses nothing that was acknowledged: the append is acknowledged only after the
whole line is written and fsynced.

A ``filelock`` lock serialises writers, so several server processes may share one ROOT.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pywharf_core.index.formats import IndexFormatError, dump_index_json, parse_index, parse_index_json
from pywharf_core.model.errors import InvalidName
from pywharf_core.model.lifecycle import (
    ChangeKey,
    IndexChange,
    change_from_json,
    change_key,
    change_state,
    change_to_json,
)
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.atomic_write import write_atomically, write_fully
from pywharf_core.storage.process_lock import ProcessFileLock

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 60
_LEGACY_JOURNAL = "uploads.toml"  # pywharf 0.3.0's journal (TOML entries between markers)
_LEGACY_MARK, _LEGACY_END = b"# -- pywharf journal entry --\n", b"# -- end of entry --\n"


def journal_line(change: IndexChange) -> bytes:
    """One journal line: a record's index table plus its filename (or a tombstone, a project
    status: ``pywharf_core.model.lifecycle``), as compact JSON."""
    return json.dumps(change_to_json(change), separators=(",", ":")).encode() + b"\n"


def parse_journal_line(line: bytes) -> IndexChange:
    """The change of one complete journal line; raises ValueError/InvalidName when unusable."""
    return change_from_json(json.loads(line))


class LocalIndexStore:
    def __init__(self, root: Path, repo_name: str) -> None:
        self.folder = root / "cache" / repo_name
        self.index_path = self.folder / "index.json"
        self.token_path = self.folder / "index.token"
        self.journal_path = self.folder / "uploads.jsonl"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = ProcessFileLock(str(self.folder / ".index.lock"), timeout=LOCK_TIMEOUT_SECONDS)
        # What this process has read of the journal: the file's identity (a rewrite replaces
        # it), how far it has read, and the latest record per file.
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._pending: dict[ChangeKey, IndexChange] = {}
        self.synced_log_position = 0  # the index log position the synced base covers (load_synced)
        self.log_position = 0  # the highest index log position journalled
        self.damaged = False  # an unreadable or torn line was found: do not trust log_position
        # Called after every write (journal lines, a new base): worker processes of one server
        # tell each other through it (pywharf_core.service.worker_peers). None: nobody listens.
        self.on_change: Callable[[], None] | None = None
        self.synced_marker = self.folder / "synced-at"

    # -- the synced base ------------------------------------------------------------------------

    def load_synced(self) -> tuple[list[IndexChange], str | None]:
        """The last synced base and its token; empty when never synced or unreadable.

        Also sets :attr:`synced_log_position`, the index log position that base covers.
        """
        self.synced_log_position = 0
        try:
            data = self.index_path.read_bytes()
            lines = self.token_path.read_text().split("\n")
        except FileNotFoundError:
            return [], None
        try:
            records = parse_index_json(data)
        except IndexFormatError as exc:
            log.error("local index %s is unreadable (%s); it will be re-synced", self.index_path, exc)
            return [], None
        token = lines[0].strip() or None
        if token and len(lines) > 1 and lines[1].strip().isdigit():
            self.synced_log_position = int(lines[1])
        return records, token

    def save_synced(self, records: list[IndexChange], token: str, log_position: int = 0,
                    authoritative: bool = False) -> None:
        """Replace the synced base and drop the journal entries it reflects; others stay.

        ``authoritative``: the store keeps an index log, so every acknowledged change is in the
        base or in the log after ``log_position`` (read next): entries of files the base lists
        go, whatever their state (a stale local entry must not override a newer base: a deleted
        file's tombstone in the base drops a journalled upload of it). Without a log, an entry
        goes only when the base shows the same state.
        """
        remote = {change_key(r): change_state(r) for r in records}
        with self.lock:
            write_atomically(self.index_path, dump_index_json(records))
            write_atomically(self.token_path, f"{token}\n{log_position}\n".encode())
            self.synced_log_position = log_position
            self._catch_up()
            if authoritative:
                kept = [r for key, r in self._pending.items() if key not in remote]
            else:
                kept = [r for key, r in self._pending.items() if remote.get(key) != change_state(r)]
            if len(kept) != len(self._pending):
                self._rewrite(kept)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def synced_state(self) -> tuple[int, int] | None:
        """Identity of the synced base on disk (inode, mtime): a worker that does not sync reloads
        the base when it changes (``PkgRepo.follow_local``); None when there is none."""
        try:
            st = os.stat(self.token_path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def mark_synced(self) -> None:
        """Record that a sync succeeded now (its time is the marker's mtime): the workers of a
        server that do not sync themselves report it (``PkgRepo.follow_local``)."""
        try:
            os.utime(self.synced_marker)
        except FileNotFoundError:
            self.synced_marker.touch()

    def last_synced(self) -> float | None:
        """When a process sharing this ROOT last synced this repository (see :meth:`mark_synced`)."""
        try:
            return self.synced_marker.stat().st_mtime
        except FileNotFoundError:
            return None

    # -- the journal ----------------------------------------------------------------------------

    def load_journal(self) -> list[IndexChange]:
        """Every change of the journal (latest per key, in last-journalled order); reads it whole."""
        with self.lock:
            self._migrate_legacy_journal()
            self._identity, self._offset, self._pending = None, 0, {}
            self.log_position, self.damaged = 0, False
            self._catch_up()
            try:
                if self.journal_path.stat().st_size > self._offset:
                    self.damaged = True  # a torn last line
            except FileNotFoundError:
                pass
            return list(self._pending.values())

    def pending(self) -> list[IndexChange]:
        """The journal as this process last read it (no I/O)."""
        return list(self._pending.values())

    def read_new(self) -> list[IndexChange]:
        """Records other processes sharing ROOT journalled since this one last looked."""
        with self.lock:
            return self._catch_up()

    def append_journal(self, record: IndexChange) -> bool:
        """Journal one accepted upload or other change; False when it was already there.

        Durable when this returns: the whole line is written and fsynced.
        """
        with self.lock:
            self._catch_up()
            previous = self._pending.get(change_key(record))
            if previous is not None and change_state(previous) == change_state(record):
                return False
            self._append([record])
            return True

    def append_many(self, records: Iterable[IndexChange], log_position: int | None = None) -> None:
        """Journal a batch of changes (read from the remote log, or a deletion's tombstones) and
        the log position they reach, if any, in one write."""
        with self.lock:
            self._catch_up()
            latest = {change_key(r): r for r in records}  # a yank then an unyank: the unyank counts
            fresh = [r for key, r in latest.items() if (p := self._pending.get(key)) is None or p != r]
            marker = log_position is not None and log_position > self.log_position
            if fresh or marker:
                self._append(fresh, log_position if marker else None)

    def _append(self, records: list[IndexChange], log_position: int | None = None) -> None:
        data = b"".join(journal_line(r) for r in records)
        if log_position is not None:
            data += b'{"log_position":%d}\n' % log_position
        fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            st = os.fstat(fd)
            if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                data = b"\n" + data  # end a torn line a crash left, so ours stays whole
            write_fully(fd, data)
            os.fsync(fd)
            identity = (st.st_dev, st.st_ino)
            if self._identity in (None, identity) and self._offset == st.st_size:
                self._identity, self._offset = identity, st.st_size + len(data)
        finally:
            os.close(fd)
        for record in records:
            key = change_key(record)
            self._pending.pop(key, None)  # re-insert: order follows the latest line
            self._pending[key] = record
        if log_position is not None:
            self.log_position = max(self.log_position, log_position)
        if records:
            self._changed()

    def _catch_up(self) -> list[IndexChange]:
        """Read the journal from where this process stopped (all of it after a rewrite)."""
        try:
            handle = open(self.journal_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self._identity, self._offset, self._pending = None, 0, {}
            return []
        with handle:
            st = os.fstat(handle.fileno())
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self._offset:
                self._identity, self._offset, self._pending = identity, 0, {}
                self.log_position = 0
            if st.st_size == self._offset:
                return []
            handle.seek(self._offset)
            data = handle.read(st.st_size - self._offset)
        end = data.rfind(b"\n") + 1  # a last line without its newline is torn (or in flight)
        fresh: list[IndexChange] = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            if line.startswith(b'{"log_position":'):
                try:
                    self.log_position = max(self.log_position, int(json.loads(line)["log_position"]))
                except (ValueError, TypeError, KeyError):
                    self.damaged = True
                continue
            try:
                record = parse_journal_line(line)
            except (ValueError, TypeError, KeyError, InvalidName) as exc:
                log.warning("skipping an unreadable line of %s: %s", self.journal_path, exc)
                self.damaged = True
                continue
            key = change_key(record)
            self._pending.pop(key, None)
            self._pending[key] = record
            fresh.append(record)
        self._offset += end
        return fresh

    def _rewrite(self, records: list[IndexChange]) -> None:
        write_atomically(self.journal_path, b"".join(journal_line(r) for r in records))
        self._identity, self._offset, self._pending = None, 0, {}
        self._catch_up()

    def _migrate_legacy_journal(self) -> None:
        """Carry a 0.3.0 ``uploads.toml`` journal over once (its entries are acknowledged uploads)."""
        legacy = self.folder / _LEGACY_JOURNAL
        try:
            data = legacy.read_bytes()
        except FileNotFoundError:
            return
        records: dict[str, FileRecord] = {}
        for chunk in data.split(_LEGACY_MARK):
            end = chunk.find(_LEGACY_END)
            if end < 0:
                continue  # torn: it was never acknowledged
            try:
                records.update((r.filename, r) for r in parse_index(chunk[:end]))
            except IndexFormatError:
                log.warning("skipping an unreadable entry in %s", legacy)
        if records:
            self._catch_up()
            self._append(list(records.values()))
        legacy.unlink()
        log.info("migrated %d entries of %s to %s", len(records), legacy, self.journal_path.name)

