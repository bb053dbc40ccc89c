"""A group repository's members and which one answers a project (``type = "group"``).

The rule that keeps private names private (dependency confusion): a project is answered by
exactly one member, and every *hosted* member is asked before any proxy, whatever the order of
``members``. So a name a hosted member holds is never looked up upstream, even when the
upstream has a higher version; and while a hosted member has not loaded an index yet (it might
hold the name), the group answers 503 instead of falling through to a proxy. Among hosted
members, and among proxies, ``members`` gives the priority.

"Holds" is what the member's index lists, and more: a project whose files were all deleted
(its tombstones stay in the index) or that has a PEP 792 status is still the member's, so
deleting a private project never lets a proxy answer its name (``IndexSnapshot.holds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pywharf_core.model.errors import PywharfError
from pywharf_core.service.repository import PkgRepo


class MemberNotLoaded(PywharfError):
    """A hosted member has no index yet: it may hold the name, so nobody else may answer."""


@dataclass(frozen=True)
class RepoGroup:
    hosted: tuple[PkgRepo, ...]  # in priority order
    proxies: tuple[PkgRepo, ...]  # in priority order
    upload_target: PkgRepo | None

    @classmethod
    def of(cls, members: Sequence[PkgRepo], upload_to: str) -> RepoGroup:
        hosted = tuple(m for m in members if m.mirror is None)
        target = next((m for m in hosted if m.name == upload_to), None) if upload_to else None
        return cls(hosted, tuple(m for m in members if m.mirror is not None),
                   target if upload_to else (hosted[0] if hosted else None))

    def member_for(self, project: str) -> PkgRepo | None:
        """The member that answers the normalised ``project``, or None (404). Blocking (a proxy
        may fetch the upstream page); raises :class:`MemberNotLoaded` and whatever the proxy
        raises when its upstream cannot answer."""
        cached = self.cached_member(project)
        if cached is not None:
            return cached[0]
        for member in self.proxies:  # a proxy without a fresh page: ask (in priority order)
            assert member.mirror is not None
            if member.mirror.project_records(project):
                return member
        return None

    def cached_member(self, project: str) -> tuple[PkgRepo | None] | None:
        """Non-blocking :meth:`member_for`: ``(member,)`` when it can be decided from memory
        (indexes, the proxies' fresh pages), else None (ask :meth:`member_for` in a worker
        thread). Same order, same refusals."""
        for member in self.hosted:
            if member.snapshot.holds(project):
                return (member,)
            if not member.index_loaded:
                raise MemberNotLoaded(f"repository {member.name!r} has not loaded its index yet: retry shortly")
        for member in self.proxies:
            assert member.mirror is not None
            fresh = member.mirror.fresh_page(project)
            if fresh is None:
                return None
            if fresh[0]:
                return (member,)
        return (None,)

    def project_names(self) -> list[str]:
        """Every project the group can answer (the union); proxies list what they fetched."""
        names: set[str] = set()
        for member in self.hosted:
            names.update(member.snapshot.project_names)
        for member in self.proxies:
            assert member.mirror is not None
            names.update(member.mirror.known_projects())
        return sorted(names)
