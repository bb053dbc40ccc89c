"""The ``github`` backend: packages stored as GitHub releases, the index as a file on a branch.

Registered as ``github = "pywharf_backends.github:BACKEND"`` in the ``pywharf.backends``
entry-point group. A storage adapter: the core's ``PackageStore`` owns every policy. Modules:
:mod:`.config` (the ``[repo]`` table), :mod:`.client` (PyGithub construction, retry and
rate-limit policy), :mod:`.storage` (the :class:`~.storage.GitHubBackend`: releases hold the
files, their bodies the sidecars), :mod:`.contents` (the other documents, files on a branch
through the contents API) and :mod:`.commands` (``github.init_pkg_repo``, ``github.gen_gh_pages``).
"""

from __future__ import annotations

from pywharf_backends.github.commands import gen_gh_pages, init_pkg_repo
from pywharf_backends.github.config import GitHubConfig
from pywharf_backends.github.storage import GitHubBackend
from pywharf_core.storage.registry import BackendSpec

BACKEND = BackendSpec(
    type="github",
    config_class=GitHubConfig,
    backend_class=GitHubBackend,
    commands={"init_pkg_repo": init_pkg_repo, "gen_gh_pages": gen_gh_pages},
    admin_secret_required=True,  # the server stores, locates and syncs with this token
)

__all__ = ["BACKEND", "GitHubBackend", "GitHubConfig"]
