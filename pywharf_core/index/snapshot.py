"""Immutable, O(1)-lookup views of a repository's files, swapped in atomically.

Requests never parse anything: an :class:`IndexSnapshot` is built off the request path (at
start, after a sync, after an upload) and a request only does dictionary lookups on the
snapshot it started with.

The mappings are ``immutables.Map`` (a hash array mapped trie, the structure behind
``contextvars``): a new snapshot with one more file costs O(log N) and shares everything else
with the old one, where copying two dicts cost O(N) per upload (1.5 ms at 100,000 files) and
re-sorting every project name cost more (benchmarks/README.md, "Uploads"). Lookups cost ~60 ns
more than a dict's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

import immutables

from pywharf_core.model.lifecycle import IndexChange, ProjectStatus, Tombstone, change_key
from pywharf_core.model.records import FileRecord

_V = TypeVar("_V")


class IndexSnapshot:
    """An immutable view of a repository's files, indexed for O(1) lookups.

    ``projects[name]`` is a tuple sorted by filename; unchanged projects keep the *same* tuple
    object across snapshots, which lets page caches detect staleness by identity (with the
    identity of ``statuses[name]``, replaced when the project's status changes).

    Besides the files: ``statuses`` (PEP 792 markers by project), ``deleted`` (tombstones by
    filename) and ``retired`` (every project a tombstone names: a project this repository held
    once stays its own, so a group never answers it from a proxy).
    """

    __slots__ = ("_names", "deleted", "files", "projects", "retired", "statuses")

    def __init__(
        self,
        files: Mapping[str, FileRecord],
        projects: Mapping[str, tuple[FileRecord, ...]],
        statuses: Mapping[str, ProjectStatus] | None = None,
        deleted: Mapping[str, Tombstone] | None = None,
        retired: Mapping[str, bool] | None = None,
    ) -> None:
        self.files: immutables.Map[str, FileRecord] = _frozen(files)
        self.projects: immutables.Map[str, tuple[FileRecord, ...]] = _frozen(projects)
        self.statuses: immutables.Map[str, ProjectStatus] = _frozen(statuses or {})
        self.deleted: immutables.Map[str, Tombstone] = _frozen(deleted or {})
        self.retired: immutables.Map[str, bool] = _frozen(retired or {})
        self._names: tuple[str, ...] | None = None

    @property
    def project_names(self) -> tuple[str, ...]:
        """Every project, sorted; computed on first use (only ``/simple/`` needs it)."""
        if self._names is None:
            self._names = tuple(sorted(self.projects))
        return self._names

    def holds(self, project: str) -> bool:
        """Whether ``project`` is this repository's: it has files, or had (all deleted), or a status."""
        return project in self.projects or project in self.retired or project in self.statuses

    def status_of(self, project: str) -> ProjectStatus | None:
        return self.statuses.get(project)

    def offers_files(self, project: str) -> bool:
        """Whether ``project``'s files may be offered (PEP 792: not while it is quarantined)."""
        status = self.statuses.get(project)
        return status is None or status.offers_files

    @classmethod
    def build(cls, records: Iterable[IndexChange]) -> IndexSnapshot:
        """A snapshot of a base: records, then statuses and tombstones (a tombstone wins)."""
        files: dict[str, FileRecord] = {}
        lifecycle: list[IndexChange] = []
        for record in records:
            if isinstance(record, FileRecord):
                files[record.filename] = record
            else:
                lifecycle.append(record)
        grouped: dict[str, list[FileRecord]] = {}
        for record in files.values():
            grouped.setdefault(record.distrib, []).append(record)
        projects = {name: tuple(sorted(rs, key=lambda r: r.filename)) for name, rs in grouped.items()}
        snapshot = cls(files, projects)
        return snapshot.with_records(lifecycle) if lifecycle else snapshot

    @classmethod
    def empty(cls) -> IndexSnapshot:
        return cls({}, {})

    def with_records(self, records: Iterable[IndexChange]) -> IndexSnapshot:
        """A new snapshot with ``records`` applied: a record adds or replaces its file (and ends
        its tombstone), a tombstone removes it, a status replaces the project's.

        Costs O(log N) per change; only the touched projects get new tuples.
        """
        latest = {change_key(r): r for r in records}  # the last change of a key in the batch wins
        files = self.files.mutate()
        projects = self.projects.mutate()
        statuses = self.statuses.mutate()
        deleted = self.deleted.mutate()
        retired = self.retired.mutate()
        touched: dict[str, dict[str, FileRecord]] = {}
        changed = False

        def members(name: str) -> dict[str, FileRecord]:
            if name not in touched:
                touched[name] = {r.filename: r for r in projects.get(name, ())}
            return touched[name]

        for change in latest.values():
            if isinstance(change, ProjectStatus):
                if statuses.get(change.project) != change:
                    statuses[change.project] = change
                    changed = True
                continue
            old = files.get(change.filename)
            if isinstance(change, Tombstone):
                if old is None and deleted.get(change.filename) == change:
                    continue
                deleted[change.filename] = change
                retired[change.distrib] = True
                if old is not None:
                    del files[change.filename]
                    members(old.distrib).pop(change.filename, None)
                changed = True
                continue
            if old == change and change.filename not in deleted:
                continue
            deleted.pop(change.filename, None)
            files[change.filename] = change
            if old is not None and old.distrib != change.distrib:
                members(old.distrib).pop(change.filename, None)
            members(change.distrib)[change.filename] = change
            changed = True
        if not changed:
            return self
        for name, kept in touched.items():
            if kept:
                projects[name] = tuple(sorted(kept.values(), key=lambda r: r.filename))
            else:
                projects.pop(name, None)
        return IndexSnapshot(files.finish(), projects.finish(), statuses.finish(), deleted.finish(),
                             retired.finish())

    def __len__(self) -> int:
        return len(self.files)


def _frozen(mapping: Mapping[str, _V]) -> immutables.Map[str, _V]:
    return mapping if isinstance(mapping, immutables.Map) else immutables.Map(mapping)
