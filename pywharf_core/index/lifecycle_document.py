"""The lifecycle documents in storage: project statuses in ``.pywharf/lifecycle.json``, and one
tombstone document per deleted file (``.pywharf/deleted/<filename>.json``), so that an upload
checks a filename and ``update_index`` rebuilds statuses and tombstones from storage alone.

Why statuses share one document and tombstones do not: statuses are bounded by the number of
projects and change only on an administrative act, so one compare-and-swapped document
(servers sharing the store never lose each other's changes) costs little, and an upload reads
it through its version token (one cheap ``document_version`` per upload; parsed again only when
it changed). Tombstones grow without bound (retention deletes dev builds nightly): in one
document every deletion would re-read and rewrite, and every upload after one re-parse, all of
them. One document per deleted file keeps a deletion and an upload's check O(1). A storage
adapter lists only distribution files (``Storage.list_blobs``), not documents, so a rebuild
cannot enumerate tombstone documents: it carries tombstones forward from the previous base
document and the index log, where every deletion is announced
(``PackageStore.rebuild_index``)::

    .pywharf/lifecycle.json
    {"format": 1,
     "status": {"demo": {"status": "archived", "reason": "..."}}}

    .pywharf/deleted/demo-0.9.tar.gz.json   (a log entry's JSON: pywharf_core.model.lifecycle)
    {"deleted": "demo-0.9.tar.gz", "distrib": "demo", "version": "0.9", "sha256": "...",
     "deleted_time": "..."}

pywharf before one-document-per-tombstone kept tombstones in lifecycle.json too (a
``"deleted"`` object of the same tables): it is still read, and counts like tombstone
documents, but never added to; an entry leaves it when its file is uploaded back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.lifecycle import ProjectStatus, Tombstone, change_from_json, change_to_json

LIFECYCLE_KEY = ".pywharf/lifecycle.json"
LIFECYCLE_FORMAT = 1


class LifecycleFormatError(ValueError):
    """A lifecycle document is not one pywharf wrote."""


@dataclass
class Lifecycle:
    """The parsed document (mutable: the writer changes it, then dumps it back).

    ``deleted`` is the legacy map (see the module docstring): kept as read, never added to."""

    statuses: dict[str, ProjectStatus] = field(default_factory=dict)
    deleted: dict[str, Tombstone] = field(default_factory=dict)

    def dump(self) -> bytes:
        document: dict[str, object] = {
            "format": LIFECYCLE_FORMAT,
            "status": {name: s.to_table() for name, s in sorted(self.statuses.items())},
        }
        if self.deleted:
            document["deleted"] = {name: t.to_table() for name, t in sorted(self.deleted.items())}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> Lifecycle:
        """Raises LifecycleFormatError: a damaged document must not be read as "nothing deleted"."""
        try:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise TypeError("not an object")
            statuses, deleted = document.get("status", {}), document.get("deleted", {})
            if not isinstance(statuses, dict) or not isinstance(deleted, dict):
                raise TypeError("'status' and 'deleted' must be objects")
            return cls(
                {name: ProjectStatus.from_table(name, table) for name, table in statuses.items()},
                {name: Tombstone.from_table(name, table) for name, table in deleted.items()},
            )
        except (ValueError, TypeError, KeyError, InvalidName, UnicodeDecodeError) as exc:
            raise LifecycleFormatError(f"{LIFECYCLE_KEY} is unreadable: {exc}") from exc


def dump_tombstone(tombstone: Tombstone) -> bytes:
    """A tombstone document: the same JSON object as the deletion's index log entry."""
    return json.dumps(change_to_json(tombstone), separators=(",", ":"), sort_keys=True).encode()


def parse_tombstone(filename: str, data: bytes) -> Tombstone:
    """The tombstone document of ``filename``; raises LifecycleFormatError when it is damaged or
    names another file (a damaged tombstone must not be read as "not deleted")."""
    try:
        change = change_from_json(json.loads(data))
    except (ValueError, TypeError, KeyError, InvalidName, UnicodeDecodeError) as exc:
        raise LifecycleFormatError(f"the tombstone of {filename!r} is unreadable: {exc}") from exc
    if not isinstance(change, Tombstone) or change.filename != filename:
        raise LifecycleFormatError(f"the tombstone document of {filename!r} holds another entry")
    return change
