"""Rendered simple pages, kept per repository and re-rendered only when their records change.

A snapshot keeps the *same* records tuple (and status object) for a project that did not change,
so a cached page is fresh exactly when the tuple and the PEP 792 status it was rendered from are
still the snapshot's (identity tests, no hashing). The cache lives here, not on the repository,
because rendering is HTTP's business.
"""

from __future__ import annotations

import weakref

from pywharf_core.http.negotiation import JSON_V1
from pywharf_core.http.pages import RenderedPage, render_project, render_root
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.lifecycle import ProjectStatus
from pywharf_core.model.records import FileRecord
from pywharf_core.service.repository import PkgRepo


class PageCache:
    """The rendered pages of one repository (one entry per page and serialisation)."""

    def __init__(self) -> None:
        self._root: dict[bool, tuple[IndexSnapshot, RenderedPage]] = {}
        self._projects: dict[tuple[str, bool],
                             tuple[tuple[FileRecord, ...], ProjectStatus | None, RenderedPage]] = {}

    def root_page(self, snapshot: IndexSnapshot, content_type: str) -> RenderedPage:
        """``/simple/`` for ``snapshot``, rendered once per snapshot and serialisation."""
        kind = content_type == JSON_V1
        cached = self._root.get(kind)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        page = render_root(snapshot.project_names, content_type)
        self._root[kind] = (snapshot, page)
        return page

    def project_page(self, snapshot: IndexSnapshot, project: str, content_type: str) -> RenderedPage | None:
        """A project's page, re-rendered only when its records tuple or status changed (identity).

        A project with a status but no file left still has a page (its marker); one whose files
        were all deleted and that has no status has none (the caller answers 404)."""
        status = snapshot.statuses.get(project)
        records = snapshot.projects.get(project)
        if records is None:
            if status is None:
                return None
            records = ()
        return self.records_page(project, records, content_type, status)

    def records_page(self, project: str, records: tuple[FileRecord, ...], content_type: str,
                     status: ProjectStatus | None = None) -> RenderedPage:
        """The page of ``records`` (a snapshot's, or a proxy's upstream page, which also keeps
        the same tuple while it does not change)."""
        key = (project, content_type == JSON_V1)
        cached = self._projects.get(key)
        if cached is not None and cached[0] is records and cached[1] is status:
            return cached[2]
        page = render_project(project, records, content_type, status)
        self._projects[key] = (records, status, page)
        return page


_CACHES: weakref.WeakKeyDictionary[PkgRepo, PageCache] = weakref.WeakKeyDictionary()


def pages_of(repo: PkgRepo) -> PageCache:
    """The page cache of ``repo`` (dropped with the repository when the config is replaced)."""
    cache = _CACHES.get(repo)
    if cache is None:
        cache = _CACHES.setdefault(repo, PageCache())
    return cache
