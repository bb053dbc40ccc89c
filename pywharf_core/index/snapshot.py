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

import immutables

from pywharf_core.model.records import FileRecord


class IndexSnapshot:
    """An immutable view of a repository's files, indexed for O(1) lookups.

    ``projects[name]`` is a tuple sorted by filename; unchanged projects keep the *same* tuple
    object across snapshots, which lets page caches detect staleness by identity.
    """

    __slots__ = ("_names", "files", "projects")

    def __init__(
        self,
        files: Mapping[str, FileRecord],
        projects: Mapping[str, tuple[FileRecord, ...]],
    ) -> None:
        self.files: immutables.Map[str, FileRecord] = (
            files if isinstance(files, immutables.Map) else immutables.Map(files))
        self.projects: immutables.Map[str, tuple[FileRecord, ...]] = (
            projects if isinstance(projects, immutables.Map) else immutables.Map(projects))
        self._names: tuple[str, ...] | None = None

    @property
    def project_names(self) -> tuple[str, ...]:
        """Every project, sorted; computed on first use (only ``/simple/`` needs it)."""
        if self._names is None:
            self._names = tuple(sorted(self.projects))
        return self._names

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

        Costs O(log N) per record; only the touched projects get new tuples.
        """
        latest = {r.filename: r for r in records}  # the last record of a file in the batch wins
        new = [r for r in latest.values() if self.files.get(r.filename) != r]
        if not new:
            return self
        files = self.files.mutate()
        projects = self.projects.mutate()
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
        return IndexSnapshot(files.finish(), projects.finish())

    def __len__(self) -> int:
        return len(self.files)
