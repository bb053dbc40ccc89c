"""What a running server holds: its settings and the current set of package repositories.

The repository set is replaced as a whole (start-up, ``/initialize/``): requests that already
picked up the old set finish with it, new ones see the new set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pywharf_core.index.local import LocalIndexStore
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.backends import open_backend
from pywharf_core.service.repository import AuthExpiry, PkgRepo
from pywharf_core.service.sync import IndexSyncService
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import (
    PkgRepoConfig,
    load_admin_secrets,
    load_repo_configs,
    read_toml_source,
)
from pywharf_core.storage.registry import installed_backends

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    root: Path
    extra_index_url: str = "https://pypi.org/simple/"
    auth_expiry: AuthExpiry = field(default_factory=AuthExpiry)
    # Cache-Control max-age of simple pages: short, since uploads change them.
    page_max_age: int = 10
    # Bearer token for POST /initialize/ once the server is configured (None: re-init disabled).
    initialize_token: str | None = field(default=None, repr=False)
    # Master key of browser session cookies (None: a random key kept in ROOT/session.key).
    session_secret: str | None = field(default=None, repr=False)
    # Failed authentications (basic auth and /login/) per client address and repository name
    # within auth_failure_window seconds before 429 (pywharf_core.http.secret_check).
    auth_failure_limit: int = 10
    auth_failure_window: int = 60


@dataclass(frozen=True)
class RepoSetup:
    """A validated config + admin secrets, ready to be turned into repositories."""

    configs: Mapping[str, PkgRepoConfig]
    admin_secrets: Mapping[str, str]


def load_setup(config: str | None, admin_secret: str | None, *, is_text: bool) -> RepoSetup:
    """Read and validate both documents; raises ConfigError naming file, table and key."""
    backends = installed_backends()
    if config is None:
        if admin_secret is not None:
            raise ConfigError("--admin_secret was given without --config")
        return RepoSetup({}, {})
    document, source = read_toml_source(config, is_text=is_text, what="config")
    configs = load_repo_configs(document, source, backends)
    secrets: dict[str, str] = {}
    if admin_secret is not None:
        secret_doc, secret_source = read_toml_source(admin_secret, is_text=is_text, what="admin secret")
        secrets = load_admin_secrets(secret_doc, secret_source, configs)
    for name, repo_config in configs.items():
        if backends[repo_config.type].admin_secret_required and name not in secrets:
            where = admin_secret if (admin_secret and not is_text) else "<admin secret>"
            raise ConfigError(f"{where}: [{name}] missing: backend {repo_config.type!r} needs an admin secret")
    return RepoSetup(configs, secrets)


def build_repos(setup: RepoSetup, settings: ServerSettings) -> dict[str, PkgRepo]:
    """Instantiate backends and load each local index from ROOT (no network, no sync yet)."""
    backends = installed_backends()
    repos: dict[str, PkgRepo] = {}
    for name, repo_config in setup.configs.items():
        spec = backends[repo_config.type]
        context = BackendContext(root=settings.root, admin_secret=setup.admin_secrets.get(name))
        backend = open_backend(spec, repo_config, context)
        repo = PkgRepo(repo_config, backend, LocalIndexStore(settings.root, name), settings.auth_expiry)
        repo.load_local_index()
        repos[name] = repo
    return repos


class ServerState:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.repos: Mapping[str, PkgRepo] = {}
        # False until a config is installed: the first POST /initialize/ is then open to anyone
        # (the CI service-container flow); afterwards it needs the initialize token.
        self.configured = False
        self.install_lock = threading.Lock()
        self._sync = IndexSyncService()

    def install(self, repos: Mapping[str, PkgRepo], *, configured: bool = True) -> None:
        """Swap in a new repository set and restart index sync for it.

        In-flight requests keep the repo object they already resolved and finish with it.
        """
        self._sync.stop()
        self.repos = dict(repos)
        self.configured = self.configured or configured
        self._sync.start(self.repos.values())
        log.info("serving %d package repositories: %s", len(self.repos), ", ".join(self.repos) or "-")

    def shutdown(self) -> None:
        self._sync.stop()
