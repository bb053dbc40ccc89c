"""The config of a group repository (``type = "group"``): one URL over several repositories.

A group serves, at ``/repos/<group>/``, the repositories it names in ``members``: each project
from the first *hosted* member that holds it, else from the first proxy that offers it (see
``pywharf_core.service.repo_group`` for why hosted members always come first). Clients use the
group's own secrets (and its own API tokens, kept in the group's folder like a file_system
repository's); uploads POSTed to the group go to ``upload_to`` (default: its first hosted member).

Like the proxy, a group is a core kind of repository (``repository_types``): its store is a
:class:`~pywharf_core.storage.folder_storage.FolderStorage`, which holds only the group's tokens;
its shared secrets authenticate the usual way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import validate_repo_name
from pywharf_core.storage.config import SharedSecretConfig
from pywharf_core.storage.folder_storage import FolderStorage
from pywharf_core.storage.registry import BackendSpec

GROUP_TYPE = "group"
MAX_MEMBERS = 20


@dataclass(frozen=True, kw_only=True)
class GroupConfig(SharedSecretConfig):
    """Repositories served together at one URL, private names never answered from a proxy."""

    path_keys: ClassVar[tuple[str, ...]] = ("storage_path",)

    members: tuple[str, ...] = ()  # repository names, in priority order (hosted ones are asked first)
    upload_to: str = ""  # the hosted member uploads POSTed to the group go to; "" = the first hosted one
    max_file_bytes: int = 5 * (1 << 30)  # unused by the group itself (uploads obey the member's limit)
    storage_path: str | None = None  # the group's own folder (its API tokens); None: ROOT/cache/<group>/storage

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if not self.members:
            problems.append(("members", "must name at least one repository"))
        if len(self.members) > MAX_MEMBERS:
            problems.append(("members", f"at most {MAX_MEMBERS} repositories"))
        if len(set(self.members)) != len(self.members):
            problems.append(("members", "names a repository twice"))
        for index, member in enumerate(self.members):
            try:
                validate_repo_name(member)
            except InvalidName as exc:
                problems.append((f"members[{index}]", str(exc)))
            if member == self.name:
                problems.append((f"members[{index}]", "a group cannot be its own member"))
        if self.upload_to and self.upload_to not in self.members:
            problems.append(("upload_to", f"{self.upload_to!r} is not one of the members"))
        if self.trusted_publishers:
            problems.append(("trusted_publishers", "list them on the member uploads go to"))
        return problems


GROUP_SPEC = BackendSpec(type=GROUP_TYPE, config_class=GroupConfig, backend_class=FolderStorage)
