"""The index model: one record per stored file, immutable snapshots, and the TOML format.

Requests never parse TOML: an :class:`IndexSnapshot` is built off the request path (at start,
after a sync, after an upload) and swapped in atomically; a request only does dictionary
lookups on the snapshot it started with.

Index file format (``format = 2``)::

    format = 2
    log_position = 42           # this document covers index log entries 1..42 (remote_log.py)
    [files."demo-1.0-py3-none-any.whl"]
    distrib = "demo"            # normalised project name
    version = "1.0"
    sha256 = "..."
    size = 1234
    upload_time = "2026-11-23T12:00:00.000000Z"
    requires_python = ">=3.10"
    [files."demo-1.0-py3-none-any.whl".meta]   # core-metadata fields as uploaded
    classifiers = ["...", "..."]                # multi-valued fields stay lists

and, written before ``files`` when there are any (``pywharf_core.model.lifecycle``; servers
that predate them ignore both tables)::

    [status.demo]                               # PEP 792 project status
    status = "archived"
    reason = "superseded by demo2"
    [deleted."demo-0.9.tar.gz"]                 # a deleted file (its tombstone)
    distrib = "demo"
    version = "0.9"
    sha256 = "..."
    deleted_time = "2026-11-23T12:00:00.000000Z"

Large fields (``description``) are kept beside the file, not in the index. The original 0.2.3
layout (``mtime`` + ``[[pkgs]]`` with ``[pkgs.meta]``) is still read.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.lifecycle import IndexChange, ProjectStatus, Tombstone
from pywharf_core.model.names import normalize_project, parse_dist_filename
from pywharf_core.model.records import FileRecord, freeze_meta

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INDEX_FORMAT = 2


# -- TOML (de)serialisation ---------------------------------------------------------------------


class IndexFormatError(ValueError):
    """The index document is not a pywharf index."""


def parse_index(data: bytes | str) -> list[FileRecord]:
    """Parse an index document (current or 0.2.3 format) into records (files only).

    Raises IndexFormatError on malformed TOML or structure, so a caller can keep the last good
    index. Entries whose filename is unusable are skipped rather than failing the whole index.
    """
    return [change for change in parse_index_changes(data) if isinstance(change, FileRecord)]


def parse_index_changes(data: bytes | str) -> list[IndexChange]:
    """Parse an index document into its records, then its project statuses and tombstones
    (in that order, so a tombstone wins over a record of the same file)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"index is not valid TOML: {exc}") from exc
    batched = _parse_in_batches(text)
    if batched is not None:
        return batched
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IndexFormatError(f"index is not valid TOML: {exc}") from exc
    return [*records_from_document(document), *lifecycle_from_document(document)]


_ENTRY_HEADER = '[files."'
_BATCH_ENTRIES = 256


def _parse_in_batches(text: str) -> list[IndexChange] | None:
    """Parse an index as we write it, a few hundred ``[files."<name>"]`` tables at a time.

    One ``tomllib.loads`` of a 50,000-file index builds a 30 MB document of fresh objects
    before any record exists: a 320 MB peak that the allocator never gives back (server RSS
    stayed at 430 MB). Batches keep the peak at the records plus one batch. Only documents
    without multi-line strings qualify (then every line starting with ``[`` is a table header,
    as tomli_w writes them); anything else, or any batch that does not parse or repeats a
    filename, returns None and the caller parses the whole document (same result, same errors).
    """
    if '"""' in text or "'''" in text or "\n" + _ENTRY_HEADER not in text:
        return None
    head, _, body = text.partition("\n" + _ENTRY_HEADER)
    try:
        top = tomllib.loads(head)
    except tomllib.TOMLDecodeError:
        return None
    if set(top) - {"format", "log_position", "status", "deleted"}:
        return None
    blocks = (_ENTRY_HEADER + body).split("\n" + _ENTRY_HEADER)
    records: list[FileRecord] = []
    seen: set[str] = set()
    batch: list[str] = []
    entries = 0
    for index, block in enumerate(blocks):
        block = block if index == 0 else _ENTRY_HEADER + block
        # A block that opens a subtable of the previous entry (e.g. ``.meta``) stays with it.
        is_new_entry = not block.split("\n", 1)[0].rstrip().endswith('".meta]') and not (
            batch and block.startswith(_ENTRY_HEADER) and _same_entry(batch[-1], block)
        )
        if is_new_entry and entries >= _BATCH_ENTRIES:
            if not _parse_batch(batch, records, seen):
                return None
            batch, entries = [], 0
        batch.append(block)
        entries += is_new_entry
    if batch and not _parse_batch(batch, records, seen):
        return None
    return [*records, *lifecycle_from_document(top)]


def _same_entry(previous: str, block: str) -> bool:
    """Whether ``block``'s header names a subtable of the entry ``previous`` opened."""
    first = previous.split("\n", 1)[0].rstrip()
    header = block.split("\n", 1)[0].rstrip()
    return first.endswith("]") and header.startswith(first[:-1] + ".")


def _parse_batch(blocks: list[str], records: list[FileRecord], seen: set[str]) -> bool:
    try:
        files = tomllib.loads("\n".join(blocks)).get("files", {})
    except tomllib.TOMLDecodeError:
        return False
    if seen.intersection(files):
        return False  # a repeated table: let the full parser report it
    seen.update(files)
    records.extend(records_from_document({"files": files}))
    return True


def parse_index_json(data: bytes) -> list[IndexChange]:
    """Parse the JSON form of an index document (the local cache: ~30x faster than TOML)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"index is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or "files" not in document:
        raise IndexFormatError("index must be an object with 'files'")
    return [*records_from_document(document), *lifecycle_from_document(document)]


def records_from_document(document: Mapping[str, Any]) -> list[FileRecord]:
    """Records of a parsed index document (current or 0.2.3 layout)."""
    if "pkgs" in document and "files" not in document:
        return _parse_legacy_index(document)
    files = document.get("files", {})
    if not isinstance(files, dict):
        raise IndexFormatError("index 'files' must be a table")
    records = []
    for filename, table in files.items():
        if not isinstance(table, dict):
            raise IndexFormatError(f"index entry {filename!r} must be a table")
        try:
            records.append(FileRecord.from_toml_table(filename, table))
        except InvalidName:
            continue
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise IndexFormatError(f"index entry {filename!r} is malformed: {exc}") from exc
    return records


def lifecycle_from_document(document: Mapping[str, Any]) -> list[IndexChange]:
    """The project statuses and tombstones of a parsed index document (none in older ones)."""
    changes: list[IndexChange] = []
    for key, kind in (("status", ProjectStatus), ("deleted", Tombstone)):
        tables = document.get(key, {})
        if not isinstance(tables, dict):
            raise IndexFormatError(f"index {key!r} must be a table")
        for name, table in tables.items():
            try:
                changes.append(kind.from_table(name, table))
            except InvalidName:
                continue
            except (KeyError, ValueError, TypeError) as exc:
                raise IndexFormatError(f"index {key} entry {name!r} is malformed: {exc}") from exc
    return changes


def _parse_legacy_index(document: Mapping[str, Any]) -> list[FileRecord]:
    """The original pywharf 0.2.3 layout: ``[[pkgs]]`` with ``package`` + ``ext``."""
    pkgs = document.get("pkgs", [])
    if not isinstance(pkgs, list):
        raise IndexFormatError("legacy index 'pkgs' must be an array of tables")
    records = []
    for entry in pkgs:
        if not isinstance(entry, dict):
            raise IndexFormatError("legacy index entries must be tables")
        try:
            records.append(_legacy_record(entry))
        except InvalidName:
            continue  # an unusable name is skipped, not fatal
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise IndexFormatError(f"legacy index entry {entry.get('package')!r} is malformed: {exc}") from exc
    return records


def _legacy_record(entry: Mapping[str, Any]) -> FileRecord:
    package, ext = str(entry.get("package", "")), str(entry.get("ext", ""))
    filename = package + ext if ext.startswith(".") or not ext else f"{package}.{ext}"
    parsed = parse_dist_filename(filename)
    meta = entry.get("meta", {})
    if not isinstance(meta, dict):
        raise TypeError("'meta' must be a table")
    # 0.2.3 joined multi-valued fields into one string; we cannot split them reliably.
    return FileRecord(
        filename=filename,
        distrib=str(normalize_project(str(entry.get("distrib") or parsed.project))),
        version=str(meta.get("version") or parsed.version),
        sha256=str(entry.get("sha256", "")).lower(),
        size=int(entry.get("size", 0) or 0),
        upload_time="",
        requires_python=str(meta.get("requires_python", "")),
        meta=freeze_meta(meta),
    )


def dump_index(records: Iterable[IndexChange], log_position: int | None = None) -> bytes:
    """Serialise records (and statuses, tombstones) to the current index format (sorted, so
    output is reproducible).

    ``log_position``: the last index log entry the records reflect (None: the store keeps no log).
    """
    document: dict[str, Any] = {"format": INDEX_FORMAT}
    if log_position is not None:
        document["log_position"] = log_position
    document.update(_tables(records, sort=True))
    return tomli_w.dumps(document).encode("utf-8")


def _tables(changes: Iterable[IndexChange], sort: bool) -> dict[str, dict[str, Any]]:
    """The ``status``, ``deleted`` (only when not empty) and ``files`` tables of a document."""
    files: dict[str, Any] = {}
    statuses: dict[str, Any] = {}
    deleted: dict[str, Any] = {}
    for change in sorted(changes, key=_sort_key) if sort else changes:
        if isinstance(change, FileRecord):
            files[change.filename] = change.to_toml_table()
        elif isinstance(change, Tombstone):
            deleted[change.filename] = change.to_table()
        else:
            statuses[change.project] = change.to_table()
    tables: dict[str, dict[str, Any]] = {}
    if statuses:
        tables["status"] = statuses
    if deleted:
        tables["deleted"] = deleted
    tables["files"] = files
    return tables


def _sort_key(change: IndexChange) -> str:
    return change.project if isinstance(change, ProjectStatus) else change.filename


_LOG_POSITION = re.compile(rb"^log_position\s*=\s*(\d{1,18})\s*$", re.M)


def index_log_position(data: bytes | None) -> int:
    """The ``log_position`` of an index document (0 when it has none: read the log from its start).

    Only the document's head (before its first table) is searched, so this costs nothing on a
    big index and a value inside a table can never pass for it.
    """
    if not data:
        return 0
    head = data.split(b"\n[", 1)[0]
    match = _LOG_POSITION.search(head)
    return int(match.group(1)) if match else 0


def dump_index_json(records: Iterable[IndexChange]) -> bytes:
    """The same document as :func:`dump_index`, as JSON (for the local cache under ROOT)."""
    return json.dumps({"format": INDEX_FORMAT, **_tables(records, sort=False)}, separators=(",", ":")).encode()


def dump_record_entry(record: FileRecord) -> bytes:
    """One ``[files."<filename>"]`` table, appendable to an index or journal document."""
    return tomli_w.dumps({"files": {record.filename: record.to_toml_table()}}).encode("utf-8")
