"""Which repository answers a project, and the records it answers with.

One place for the rule the index routes, the JSON API and the browser's project pages share:
a group is answered by the one member that may (``RepoGroup.member_for``), a proxy by its
upstream's page, a hosted repository by its own snapshot. So a URL the JSON API hands out
(``/project/<name>/``) shows what the JSON described, whatever the repository's kind.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.exceptions import HTTPException

from pywharf_core.model.records import FileRecord
from pywharf_core.service.proxy_mirror import ProxyMirror
from pywharf_core.service.repository import PkgRepo


async def answering(repo: PkgRepo, project: str) -> PkgRepo:
    """The repository that answers ``project``: ``repo`` itself, or for a group the one member
    that may (404 when none does; 503 while a hosted member that might has no index)."""
    if repo.group is None:
        return repo
    cached = repo.group.cached_member(project)  # most requests: no thread hop
    member = cached[0] if cached is not None else await anyio.to_thread.run_sync(repo.group.member_for, project)
    if member is None:
        raise HTTPException(404, f"Project {project!r} is in no repository of group {repo.name!r}.")
    return member


async def mirror_records(mirror: ProxyMirror, project: str) -> tuple[FileRecord, ...] | None:
    """A proxy's records of ``project``: from memory on the event loop when its page is fresh,
    else from a worker thread (which may ask the upstream)."""
    cached = mirror.fresh_page(project)
    return cached[0] if cached is not None else await anyio.to_thread.run_sync(mirror.project_records, project)


async def project_records(repo: PkgRepo, project: str) -> tuple[PkgRepo, tuple[FileRecord, ...]]:
    """The repository answering the normalised ``project`` and its records (empty: none)."""
    repo = await answering(repo, project)
    if repo.mirror is not None:
        return repo, await mirror_records(repo.mirror, project) or ()
    if not repo.snapshot.offers_files(project):
        return repo, ()  # quarantined (PEP 792): no file is offered
    return repo, repo.snapshot.projects.get(project, ())
