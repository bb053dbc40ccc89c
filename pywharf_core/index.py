"""The index model: one record per stored file, immutable snapshots, and the TOML format.

Requests never parse TOML: an :class:`IndexSnapshot` is built off the request path (at start,
after a sync, after an upload) and swapped in atomically; a request only does dictionary
lookups on the snapshot it started with.

Index file format (``format = 2``)::

    format = 2
    [files."demo-1.0-py3-none-any.whl"]
    distrib = "demo"            # normalised project name
    version = "1.0"
    sha256 = "..."
    size = 1234
    upload_time = "2026-11-23T12:00:00.000000Z"
    requires_python = ">=3.10"
    [files."demo-1.0-py3-none-any.whl".meta]   # core-metadata fields as uploaded
    classifiers = ["...", "..."]                # multi-valued fields stay lists

Large fields (``description``) are kept beside the file, not in the index. The original 0.2.3
layout (``mtime`` + ``[[pkgs]]`` with ``[pkgs.meta]``) is still read.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import tomli_w

from pywharf_core.errors import InvalidDigest, InvalidName
from pywharf_core.names import DIST_SUFFIXES, check_safe_filename, normalize_project, parse_dist_filename

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INDEX_FORMAT = 2

# Form fields of the legacy upload API that may repeat (PEP 345/566 multiple-use fields).
MULTI_VALUED_FIELDS = frozenset(
    {
        "classifiers",
        "requires_dist",
        "provides_dist",
        "obsoletes_dist",
        "requires_external",
        "project_urls",
        "platform",
        "supported_platform",
        "provides_extra",
        "dynamic",
        "license_files",
    }
)
# Fields that describe the transfer, not the distribution: never stored.
TRANSPORT_FIELDS = frozenset({":action", "protocol_version", "content", "gpg_signature", "attestations"})
# Fields kept beside the file instead of in the index, because of their size.
SIDECAR_ONLY_FIELDS = frozenset({"description"})


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a sha256 as the index stores it: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``, the form PEP 700 ``upload-time`` uses."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Everything the index knows about one stored distribution file."""

    filename: str
    distrib: str
    version: str
    sha256: str
    size: int
    upload_time: str
    requires_python: str = ""
    meta: Mapping[str, str | tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # sha256 of the PEP 658 metadata file stored beside the distribution; "" when there is none.
    metadata_sha256: str = ""
    # PEP 592: yanked files stay installable by exact pin but are skipped by resolvers.
    yanked: bool = False
    yanked_reason: str = ""

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.sha256) or (self.metadata_sha256 and not is_sha256_hex(self.metadata_sha256)):
            raise InvalidDigest(f"index entry {self.filename!r} has a malformed sha256")

    def state_key(self) -> tuple[str, str, bool, str]:
        """What a remote index must agree on before a local journal entry can be dropped."""
        return (self.sha256, self.metadata_sha256, self.yanked, self.yanked_reason)

    def to_toml_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {
            "distrib": self.distrib,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "upload_time": self.upload_time,
            "requires_python": self.requires_python,
        }
        if self.metadata_sha256:
            table["metadata_sha256"] = self.metadata_sha256
        if self.yanked:
            table["yanked"] = True
            table["yanked_reason"] = self.yanked_reason
        meta = {k: list(v) if isinstance(v, tuple) else v for k, v in self.meta.items()}
        if meta:
            table["meta"] = meta
        return table

    @classmethod
    def from_toml_table(cls, filename: str, table: Mapping[str, Any]) -> FileRecord:
        check_safe_filename(filename)
        if not filename.endswith(DIST_SUFFIXES):
            raise InvalidName(f"Invalid distribution filename {filename!r}")
        distrib, version = table.get("distrib"), table.get("version")
        if not distrib or not version:  # parse only when needed: it dominates load time
            parsed = parse_dist_filename(filename)
            distrib, version = distrib or parsed.project, version or str(parsed.version)
        meta = table.get("meta", {})
        if not isinstance(meta, dict):
            raise TypeError("'meta' must be a table")
        meta = freeze_meta(meta)
        return cls(
            filename=filename,
            distrib=str(distrib),
            version=str(version),
            sha256=str(table["sha256"]).lower(),
            size=int(table.get("size", 0)),
            upload_time=str(table.get("upload_time", "")),
            requires_python=_shared_str(str(table.get("requires_python", ""))),
            meta=meta,
            metadata_sha256=str(table.get("metadata_sha256", "")),
            yanked=bool(table.get("yanked", False)),
            yanked_reason=str(table.get("yanked_reason", "")),
        )


# Most metadata values repeat across files (classifiers, requires_dist, filetype, pyversion,
# Requires-Python): sharing one object per distinct value keeps a 50,000-file index at a
# fraction of the memory a parser's fresh copies take (benchmarks/README.md, "Memory").
_SHARE_MAX_LEN = 256


def _shared_str(value: str) -> str:
    return sys.intern(value) if len(value) <= _SHARE_MAX_LEN else value


@functools.lru_cache(maxsize=1 << 16)
def _shared_tuple(values: tuple[str, ...]) -> tuple[str, ...]:
    return values


def freeze_meta(fields: Mapping[str, Any]) -> Mapping[str, str | tuple[str, ...]]:
    """Metadata as an immutable mapping: multi-valued fields become tuples, others strings.

    Equal values are shared between records (see ``_shared_str``)."""
    frozen: dict[str, str | tuple[str, ...]] = {}
    for key, value in fields.items():
        if key in TRANSPORT_FIELDS or key in SIDECAR_ONLY_FIELDS:
            continue
        key = _shared_str(key)
        if isinstance(value, (list, tuple)):
            values = _shared_tuple(tuple(_shared_str(str(v)) for v in value))
            frozen[key] = values if key in MULTI_VALUED_FIELDS or len(values) != 1 else values[0]
        elif key in MULTI_VALUED_FIELDS:
            frozen[key] = _shared_tuple((_shared_str(str(value)),)) if value != "" else ()
        else:
            frozen[key] = _shared_str(str(value))
    return MappingProxyType(frozen)


class IndexSnapshot:
    """An immutable view of a repository's files, indexed for O(1) lookups.

    ``projects[name]`` is a tuple sorted by filename; unchanged projects keep the *same* tuple
    object across snapshots, which lets page caches detect staleness by identity.
    """

    __slots__ = ("files", "project_names", "projects")

    def __init__(
        self,
        files: Mapping[str, FileRecord],
        projects: Mapping[str, tuple[FileRecord, ...]],
    ) -> None:
        self.files = files
        self.projects = projects
        self.project_names: tuple[str, ...] = tuple(sorted(projects))

    @classmethod
    def build(cls, records: Iterable[FileRecord]) -> IndexSnapshot:
        files = {r.filename: r for r in records}
        grouped: dict[str, list[FileRecord]] = {}
        for record in files.values():
            grouped.setdefault(record.distrib, []).append(record)
        projects = {name: tuple(sorted(rs, key=lambda r: r.filename)) for name, rs in grouped.items()}
        return cls(files, projects)

    @classmethod
    def empty(cls) -> IndexSnapshot:
        return cls({}, {})

    def with_records(self, records: Iterable[FileRecord]) -> IndexSnapshot:
        """A new snapshot with ``records`` added (replacing same-named files).

        Costs a shallow copy of two dicts; only the touched projects get new tuples.
        """
        new = [r for r in records if self.files.get(r.filename) != r]
        if not new:
            return self
        files = dict(self.files)
        projects = dict(self.projects)
        touched: dict[str, dict[str, FileRecord]] = {}
        for record in new:
            old = files.get(record.filename)
            files[record.filename] = record
            for name in {record.distrib, old.distrib if old else record.distrib}:
                if name not in touched:
                    touched[name] = {r.filename: r for r in projects.get(name, ())}
            if old is not None:
                touched[old.distrib].pop(record.filename, None)
            touched[record.distrib][record.filename] = record
        for name, members in touched.items():
            if members:
                projects[name] = tuple(sorted(members.values(), key=lambda r: r.filename))
            else:
                projects.pop(name, None)
        return IndexSnapshot(files, projects)

    def __len__(self) -> int:
        return len(self.files)


# -- TOML (de)serialisation ---------------------------------------------------------------------


class IndexFormatError(ValueError):
    """The index document is not a pywharf index."""


def parse_index(data: bytes | str) -> list[FileRecord]:
    """Parse an index document (current or 0.2.3 format) into records.

    Raises IndexFormatError on malformed TOML or structure, so a caller can keep the last good
    index. Entries whose filename is unusable are skipped rather than failing the whole index.
    """
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
    return records_from_document(document)


_ENTRY_HEADER = '[files."'
_BATCH_ENTRIES = 256


def _parse_in_batches(text: str) -> list[FileRecord] | None:
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
    if set(top) - {"format"}:
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
    return records


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


def parse_index_json(data: bytes) -> list[FileRecord]:
    """Parse the JSON form of an index document (the local cache: ~30x faster than TOML)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"index is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise IndexFormatError("index must be an object")
    return records_from_document(document)


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


def dump_index(records: Iterable[FileRecord]) -> bytes:
    """Serialise records to the current index format (sorted, so output is reproducible)."""
    files = {r.filename: r.to_toml_table() for r in sorted(records, key=lambda r: r.filename)}
    return tomli_w.dumps({"format": INDEX_FORMAT, "files": files}).encode("utf-8")


def dump_index_json(records: Iterable[FileRecord]) -> bytes:
    """The same document as :func:`dump_index`, as JSON (for the local cache under ROOT)."""
    files = {r.filename: r.to_toml_table() for r in records}
    return json.dumps({"format": INDEX_FORMAT, "files": files}, separators=(",", ":")).encode()


def dump_record_entry(record: FileRecord) -> bytes:
    """One ``[files."<filename>"]`` table, appendable to an index or journal document."""
    return tomli_w.dumps({"files": {record.filename: record.to_toml_table()}}).encode("utf-8")
