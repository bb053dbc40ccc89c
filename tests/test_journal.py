"""The local journal: appends cost O(1) whatever its length, are durable and whole, and are
seen by every server process sharing ROOT (issue 12: the old journal was re-read and
re-parsed on every upload, so N uploads cost O(N^2) and a short write could tear an entry).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import pywharf_core.index.local as local_module
from pywharf_core.index.local import LocalIndexStore, journal_line
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord, freeze_meta

SHA = "a" * 64


def record(n: int, **meta: str) -> FileRecord:
    filename = f"proj{n}-1.0-py3-none-any.whl"
    dist = parse_dist_filename(filename)
    return FileRecord(filename=filename, distrib=dist.project, version="1.0", sha256=SHA, size=n,
                      upload_time="2026-01-02T03:04:05.000006Z", meta=freeze_meta(meta))


def test_append_reads_nothing_it_already_knows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 3,000 entries journalled, 200 more appends parse no line at all (the old journal
    parsed every entry on every append)."""
    store = LocalIndexStore(tmp_path, "r")
    for n in range(3000):
        store.append_journal(record(n))
    parsed: list[bytes] = []
    real = local_module.parse_journal_line
    monkeypatch.setattr(local_module, "parse_journal_line", lambda line: parsed.append(line) or real(line))
    for n in range(3000, 3200):
        assert store.append_journal(record(n))
    assert parsed == []
    assert len(LocalIndexStore(tmp_path, "r").load_journal()) == 3200


def test_identical_entry_is_not_appended_twice_and_a_change_is(tmp_path: Path) -> None:
    store = LocalIndexStore(tmp_path, "r")
    first = record(1, summary="x")
    assert store.append_journal(first)
    assert not store.append_journal(first)
    yanked = dataclasses.replace(first, yanked=True, yanked_reason="bad")
    assert store.append_journal(yanked)
    assert store.journal_path.read_bytes().count(b"\n") == 2
    assert LocalIndexStore(tmp_path, "r").load_journal() == [yanked]  # the latest line wins


def test_two_processes_sharing_root_see_each_others_entries(tmp_path: Path) -> None:
    """Two stores over one ROOT stand for two server processes: each reads only what the other
    added, and an entry the other already journalled is not appended again."""
    a, b = LocalIndexStore(tmp_path, "r"), LocalIndexStore(tmp_path, "r")
    a.load_journal()
    b.load_journal()
    a.append_journal(record(1))
    assert b.read_new() == [record(1)]
    assert not b.append_journal(record(1))
    b.append_journal(record(2))
    assert a.read_new() == [record(2)]
    assert a.read_new() == []
    # A rewrite by one (a new base arrived) is noticed by the other: it re-reads from the start.
    a.save_synced([record(1)], "token")
    assert b.read_new() == [record(2)]
    assert b.pending() == [record(2)]


def test_short_writes_still_write_the_whole_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.write`` may write fewer bytes than asked (full disk, signals): the rest must follow."""
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data[: max(1, len(data) // 3)]))

    store = LocalIndexStore(tmp_path, "r")
    monkeypatch.setattr(os, "write", short_write)
    rich = record(7, summary="s" * 5000)
    store.append_journal(rich)
    monkeypatch.undo()
    assert store.journal_path.read_bytes() == journal_line(rich)
    assert LocalIndexStore(tmp_path, "r").load_journal() == [rich]


def test_a_torn_line_is_skipped_and_the_next_append_stays_whole(tmp_path: Path) -> None:
    store = LocalIndexStore(tmp_path, "r")
    store.append_journal(record(1))
    with open(store.journal_path, "ab") as handle:
        handle.write(journal_line(record(2))[:40])  # a crash mid-append: never acknowledged
    fresh = LocalIndexStore(tmp_path, "r")
    assert fresh.load_journal() == [record(1)]
    fresh.append_journal(record(3))
    assert LocalIndexStore(tmp_path, "r").load_journal() == [record(1), record(3)]


def test_a_failed_write_raises_so_the_upload_is_not_acknowledged(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalIndexStore(tmp_path, "r")

    def no_space(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space"):
        store.append_journal(record(1))
    monkeypatch.undo()
    assert store.pending() == []


def test_a_0_3_0_journal_is_migrated(tmp_path: Path) -> None:
    """pywharf 0.3.0 kept ``uploads.toml`` (TOML entries between markers): its acknowledged
    entries carry over once; a torn last entry (never acknowledged) does not."""
    folder = tmp_path / "cache" / "r"
    folder.mkdir(parents=True)
    entry = (b"# -- pywharf journal entry --\n"
             b'[files."proj1-1.0-py3-none-any.whl"]\ndistrib = "proj1"\nversion = "1.0"\n'
             b'sha256 = "' + SHA.encode() + b'"\nsize = 1\nupload_time = "2026-01-02T03:04:05.000006Z"\n'
             b'requires_python = ""\n# -- end of entry --\n')
    (folder / "uploads.toml").write_bytes(entry + b"# -- pywharf journal entry --\n[files.\"proj2")
    store = LocalIndexStore(tmp_path, "r")
    loaded = store.load_journal()
    assert [r.filename for r in loaded] == ["proj1-1.0-py3-none-any.whl"]
    assert not (folder / "uploads.toml").exists()
    assert [r.filename for r in LocalIndexStore(tmp_path, "r").load_journal()] == ["proj1-1.0-py3-none-any.whl"]
