"""The local index a server keeps under ``ROOT/cache/<repo>/``.

Two files, both rebuildable from the backend:

- ``index.json`` + ``index.token``: the last good copy of the remote index (as JSON: parsing
  it at start-up is ~30x faster than TOML, see benchmarks/) and its version token, replaced
  atomically by a sync.
- ``uploads.toml``: an append-only journal of uploads this server (or another sharing ROOT)
  accepted that the remote index does not list yet. An upload appends one small entry instead
  of rewriting the index; a sync drops the entries the remote index has caught up with.

A ``filelock`` lock serialises writers, so several server processes may share one ROOT.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from filelock import FileLock

from pywharf_core.index.formats import (
    IndexFormatError,
    dump_index_json,
    dump_record_entry,
    parse_index,
    parse_index_json,
)
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.atomic_write import write_atomically

log = logging.getLogger(__name__)

_ENTRY_MARK = b"# -- pywharf journal entry --\n"
_ENTRY_END = b"# -- end of entry --\n"
LOCK_TIMEOUT_SECONDS = 60


class LocalIndexStore:
    def __init__(self, root: Path, repo_name: str) -> None:
        self.folder = root / "cache" / repo_name
        self.index_path = self.folder / "index.json"
        self.token_path = self.folder / "index.token"
        self.journal_path = self.folder / "uploads.toml"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.folder / ".index.lock"), timeout=LOCK_TIMEOUT_SECONDS)

    def load_synced(self) -> tuple[list[FileRecord], str | None]:
        """The last synced remote index and its token; empty when never synced or unreadable."""
        try:
            data = self.index_path.read_bytes()
            token = self.token_path.read_text().strip() or None
        except FileNotFoundError:
            return [], None
        try:
            return parse_index_json(data), token
        except IndexFormatError as exc:
            log.error("local index %s is unreadable (%s); it will be re-synced", self.index_path, exc)
            return [], None

    def load_journal(self) -> list[FileRecord]:
        """Uploads not yet in the remote index. A torn last entry (crash) is skipped."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return []
        records: list[FileRecord] = []
        for chunk in data.split(_ENTRY_MARK):
            if not chunk.strip():
                continue
            # An entry counts only if complete (a torn write can still be valid TOML); bytes
            # after its end marker are the start of a torn next mark.
            end = chunk.find(_ENTRY_END)
            if end < 0:
                log.warning("skipping a torn entry in %s", self.journal_path)
                continue
            try:
                records.extend(parse_index(chunk[:end]))
            except IndexFormatError:
                log.warning("skipping an unreadable entry in %s", self.journal_path)
        return records

    @staticmethod
    def _entry(record: FileRecord) -> bytes:
        return _ENTRY_MARK + dump_record_entry(record) + _ENTRY_END

    def append_journal(self, record: FileRecord) -> None:
        """Journal one accepted upload or changed record.

        The journal stays one valid TOML document with one entry per file: a byte-identical
        retry (e.g. through another server sharing ROOT) adds nothing, and a changed record
        (a yank) replaces the file's entry in an atomic rewrite. The journal only holds what the
        remote index has not caught up with, so reading it here stays cheap.
        """
        entry = self._entry(record)
        with self.lock:
            pending = self.load_journal()
            previous = {r.filename: r for r in pending}.get(record.filename)
            if previous is not None:
                if previous.state_key() != record.state_key():
                    kept = [r for r in pending if r.filename != record.filename] + [record]
                    write_atomically(self.journal_path, b"".join(self._entry(r) for r in kept))
                return
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, entry)
                os.fsync(fd)
            finally:
                os.close(fd)

    def save_synced(self, records: list[FileRecord], token: str) -> None:
        """Replace the synced copy and drop journal entries the remote index now lists."""
        remote = {r.filename: r.state_key() for r in records}
        with self.lock:
            write_atomically(self.index_path, dump_index_json(records))
            write_atomically(self.token_path, token.encode())
            # Keep entries the remote index does not reflect yet (new files, and yank changes).
            # Only the latest entry per file counts (an upload followed by a yank).
            latest = {r.filename: r for r in self.load_journal()}
            pending = [r for r in latest.values() if remote.get(r.filename) != r.state_key()]
            write_atomically(self.journal_path, b"".join(self._entry(r) for r in pending))
