"""The lifecycle document, ``.pywharf/lifecycle.json``: a repository's project statuses and
tombstones, kept in storage so that ``update_index`` rebuilds them from storage alone.

Why one document rather than one per project or file: a storage adapter lists only the
distribution files (``Storage.list_blobs``), not documents, so a rebuild could not find
per-item documents. The document changes only on an administrative act (a status change, a
deletion), never on an upload of a new name, and is compare-and-swapped, so servers sharing the
store never lose each other's changes. Uploads read it through its version token (one cheap
``document_version`` per upload; parsed again only when it changed)::

    {"format": 1,
     "status": {"demo": {"status": "archived", "reason": "..."}},
     "deleted": {"demo-0.9.tar.gz": {"distrib": "demo", "version": "0.9", "sha256": "...",
                                     "deleted_time": "..."}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.lifecycle import ProjectStatus, Tombstone

LIFECYCLE_KEY = ".pywharf/lifecycle.json"
LIFECYCLE_FORMAT = 1


class LifecycleFormatError(ValueError):
    """The lifecycle document is not one pywharf wrote."""


@dataclass
class Lifecycle:
    """The parsed document (mutable: the writer changes it, then dumps it back)."""

    statuses: dict[str, ProjectStatus] = field(default_factory=dict)
    deleted: dict[str, Tombstone] = field(default_factory=dict)

    def dump(self) -> bytes:
        document = {
            "format": LIFECYCLE_FORMAT,
            "status": {name: s.to_table() for name, s in sorted(self.statuses.items())},
            "deleted": {name: t.to_table() for name, t in sorted(self.deleted.items())},
        }
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
