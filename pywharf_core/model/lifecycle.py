"""The index changes besides a file's record: a project's status (PEP 792) and a deleted file.

The index (base document, remote log, local journal, snapshot) is a sequence of *changes*,
the latest per key winning: a :class:`~pywharf_core.model.records.FileRecord` (an upload, a
yank), a :class:`Tombstone` (the file was deleted; same key as the file, so a later upload of
the same name replaces it and a stale record can never bring a deleted file back) or a
:class:`ProjectStatus` (keyed by project).

On the wire (log entries, journal lines) a record is ``{"filename": ..., <its index table>}``
as before; the new kinds carry no ``filename`` key, so a server that predates them finds no
record in them and skips the entry (it logs and skips unreadable entries) rather than reading
a deletion as an upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import check_safe_filename, normalize_project
from pywharf_core.model.records import FileRecord, is_sha256_hex

# PEP 792: a project always has exactly one status; without a marker it is "active".
ACTIVE, ARCHIVED, QUARANTINED, DEPRECATED = "active", "archived", "quarantined", "deprecated"
STATUSES = (ACTIVE, ARCHIVED, QUARANTINED, DEPRECATED)
UPLOAD_REFUSING_STATUSES = frozenset({ARCHIVED, QUARANTINED})
MAX_REASON_CHARS = 1000  # a status reason is shown in pages and 403 bodies: bounded


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """A project's PEP 792 status marker and its optional free-text reason."""

    project: str  # normalised
    status: str
    reason: str = ""
    changed_time: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown project status {self.status!r} (one of: {', '.join(STATUSES)})")
        if normalize_project(self.project) != self.project:
            raise InvalidName(f"project status for a non-normalised name {self.project!r}")
        if len(self.reason) > MAX_REASON_CHARS:
            raise ValueError(f"a status reason is at most {MAX_REASON_CHARS} characters")

    @property
    def refuses_uploads(self) -> bool:
        return self.status in UPLOAD_REFUSING_STATUSES

    @property
    def offers_files(self) -> bool:
        """PEP 792: a quarantined project's files are offered for download by no index."""
        return self.status != QUARANTINED

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"status": self.status}
        if self.reason:
            table["reason"] = self.reason
        if self.changed_time:
            table["changed_time"] = self.changed_time
        return table

    @classmethod
    def from_table(cls, project: str, table: Mapping[str, Any]) -> ProjectStatus:
        if not isinstance(table, Mapping):
            raise TypeError("a project status must be a table")
        return cls(project=str(project), status=str(table["status"]), reason=str(table.get("reason", "")),
                   changed_time=str(table.get("changed_time", "")))


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted file: what it was (its sha256 decides whether the same name may come back)."""

    filename: str
    distrib: str
    version: str
    sha256: str
    deleted_time: str = ""

    def __post_init__(self) -> None:
        check_safe_filename(self.filename)
        if not is_sha256_hex(self.sha256):
            raise ValueError(f"the tombstone of {self.filename!r} has a malformed sha256")

    @classmethod
    def of(cls, record: FileRecord, deleted_time: str) -> Tombstone:
        return cls(record.filename, record.distrib, record.version, record.sha256, deleted_time)

    def to_table(self) -> dict[str, Any]:
        return {"distrib": self.distrib, "version": self.version, "sha256": self.sha256,
                "deleted_time": self.deleted_time}

    @classmethod
    def from_table(cls, filename: str, table: Mapping[str, Any]) -> Tombstone:
        if not isinstance(table, Mapping):
            raise TypeError("a tombstone must be a table")
        return cls(filename=str(filename), distrib=str(table["distrib"]), version=str(table["version"]),
                   sha256=str(table["sha256"]).lower(), deleted_time=str(table.get("deleted_time", "")))


def upload_refusal(status: ProjectStatus) -> str:
    """The 403 body of an upload to an archived or quarantined project."""
    reason = f": {status.reason}" if status.reason else ""
    return (f"Project {status.project!r} is {status.status} (PEP 792) and accepts no uploads{reason}")


IndexChange = FileRecord | Tombstone | ProjectStatus
ChangeKey = tuple[str, str]


def change_key(change: IndexChange) -> ChangeKey:
    """What a change replaces: a file's latest state (record or tombstone), or a project's status."""
    if isinstance(change, ProjectStatus):
        return ("status", change.project)
    return ("file", change.filename)


def change_state(change: IndexChange) -> tuple[object, ...]:
    """What two copies of a change must agree on to be the same state (journal pruning)."""
    if isinstance(change, FileRecord):
        return ("file", *change.state_key())
    if isinstance(change, Tombstone):
        return ("deleted", change.sha256)
    return ("status", change.status, change.reason)


def change_to_json(change: IndexChange) -> dict[str, Any]:
    """The JSON object of one log entry or journal line."""
    if isinstance(change, FileRecord):
        return {"filename": change.filename, **change.to_toml_table()}
    if isinstance(change, Tombstone):
        return {"deleted": change.filename, **change.to_table()}
    return {"project_status": change.project, **change.to_table()}


def change_from_json(table: Any) -> IndexChange:
    """The change of one log entry or journal line; raises ValueError/TypeError/KeyError/InvalidName."""
    if not isinstance(table, dict):
        raise ValueError("an index entry must be an object")
    if isinstance(table.get("filename"), str):
        return FileRecord.from_toml_table(table.pop("filename"), table)
    if isinstance(table.get("deleted"), str):
        return Tombstone.from_table(table.pop("deleted"), table)
    if isinstance(table.get("project_status"), str):
        return ProjectStatus.from_table(table.pop("project_status"), table)
    raise ValueError("an index entry must name a filename, a deleted file or a project status")
