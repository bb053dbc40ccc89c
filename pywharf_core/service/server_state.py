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
from pywharf_core.service.package_store import PackageStore
from pywharf_core.service.proxy_mirror import open_mirror
from pywharf_core.service.repo_group import RepoGroup
from pywharf_core.service.repository import AuthExpiry, PkgRepo
from pywharf_core.service.sync import IndexSyncService, SyncLeadership
from pywharf_core.service.worker_peers import WorkerPeers
from pywharf_core.storage.api import Storage
from pywharf_core.storage.backend import BackendContext, LentStore
from pywharf_core.storage.config import (
    PkgRepoConfig,
    load_admin_secrets,
    load_repo_configs,
    read_toml_source,
)
from pywharf_core.storage.config_limits import (
    DEFAULT_HTTP_ENV_PREFIX,
    FULL_POWER,
    ConfigLimits,
    parse_endpoint,
)
from pywharf_core.storage.group_config import GroupConfig
from pywharf_core.storage.proxy_config import ProxyCacheStorage, ProxyConfig
from pywharf_core.storage.repository_types import repository_types

log = logging.getLogger(__name__)

# A bearer token is the only thing between the network and the server's whole configuration:
# 16 characters of a random token are far beyond guessing at the rate /initialize/ allows.
MIN_INITIALIZE_TOKEN_LENGTH = 16
# Wrong /initialize/ tokens one client may send per window before it gets 429: enough for a
# typo or two, too few for guessing (the same as the browser login's limit).
DEFAULT_INITIALIZE_MAX_FAILURES = 5
INITIALIZE_FAILURE_WINDOW_SECONDS = 60.0
# Wrong secrets per client address and repository name per window (basic auth and /login/):
# a client mistyping a secret a few times is never stopped; a guesser gets 10 tries a minute.
DEFAULT_AUTH_FAILURE_LIMIT = 10
DEFAULT_AUTH_FAILURE_WINDOW = 60
# The audience CI identity tokens must carry (Trusted Publishing). Not pypi.org's "pypi": a
# token a CI job made for pypi.org must not be accepted here.
DEFAULT_OIDC_AUDIENCE = "pywharf"


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
    # within auth_failure_window seconds before 429 (pywharf_core.http.web.secret_check).
    auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT
    auth_failure_window: int = DEFAULT_AUTH_FAILURE_WINDOW
    # Failed /initialize/ bearer tokens per client per minute before 429.
    initialize_max_failures: int = DEFAULT_INITIALIZE_MAX_FAILURES
    # Environment variables a config sent to /initialize/ may read ("env = ..."): this prefix.
    initialize_env_prefix: str = DEFAULT_HTTP_ENV_PREFIX
    # Backend endpoints a config sent to /initialize/ may use besides the backends' defaults.
    allowed_endpoints: tuple[str, ...] = ()
    # Folders besides ROOT a config sent to /initialize/ may store files under.
    allowed_storage_paths: tuple[Path, ...] = ()
    # The `aud` Trusted Publishing identity tokens must have (GET /_/oidc/audience).
    oidc_audience: str = DEFAULT_OIDC_AUDIENCE
    # Seconds between runs of each repository's retention rules (0: never; pywharf retention).
    retention_interval: int = 0
    # GET /metrics (pywharf_core.http.metrics): served only when asked for; with a token, only
    # to its bearer.
    metrics: bool = False
    metrics_token: str | None = field(default=None, repr=False)

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics or self.metrics_token is not None

    def __post_init__(self) -> None:
        token = self.initialize_token
        if token is not None and len(token) < MIN_INITIALIZE_TOKEN_LENGTH:
            raise ConfigError(f"--initialize_token must be at least {MIN_INITIALIZE_TOKEN_LENGTH} characters")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_INITIALIZE_TOKEN_LENGTH:
            raise ConfigError(f"--metrics_token must be at least {MIN_INITIALIZE_TOKEN_LENGTH} characters")
        if self.auth_failure_limit < 1 or self.auth_failure_window < 1:
            raise ConfigError("--auth_failure_limit and --auth_failure_window must be positive integers")
        if self.initialize_max_failures < 1:
            raise ConfigError("--initialize_max_failures must be a positive integer")
        if self.retention_interval < 0:
            raise ConfigError("--retention_interval must be 0 (off) or a number of seconds")
        if not self.oidc_audience.strip() or self.oidc_audience.strip().lower() == "pypi":
            raise ConfigError("--oidc_audience must be non-empty and not 'pypi' (pypi.org's audience)")
        if not self.initialize_env_prefix:
            raise ConfigError("--initialize_env_prefix must not be empty (it would expose every variable)")
        for url in self.allowed_endpoints:
            if parse_endpoint(url) is None:
                raise ConfigError(f"--allowed_endpoints: {url!r} is not an http(s)://host[:port][/path] URL")
        for path in self.allowed_storage_paths:
            if not path.is_absolute():
                raise ConfigError(f"--allow_storage_path: {str(path)!r} must be an absolute path")

    def http_config_limits(self) -> ConfigLimits:
        """What a config sent to /initialize/ may do (see ``pywharf_core.storage.config_limits``)."""
        return ConfigLimits(
            env_prefix=self.initialize_env_prefix,
            endpoints=self.allowed_endpoints,
            storage_roots=(self.root, *self.allowed_storage_paths),
            root=self.root,
        )


@dataclass(frozen=True)
class RepoSetup:
    """A validated config + admin secrets, ready to be turned into repositories."""

    configs: Mapping[str, PkgRepoConfig]
    admin_secrets: Mapping[str, str]

    def process_local(self) -> list[str]:
        """The repositories whose store lives in this process's memory: worker processes would
        each hold their own copy (so ``--workers`` must stay 1)."""
        backends = repository_types()
        return [name for name, config in self.configs.items() if backends[config.type].process_local]


def load_setup(
    config: str | None, admin_secret: str | None, *, is_text: bool, limits: ConfigLimits = FULL_POWER
) -> RepoSetup:
    """Read and validate both documents; raises ConfigError naming file, table and key.

    ``limits``: what the documents may make the server do (configs from HTTP are limited)."""
    backends = repository_types()
    if config is None:
        if admin_secret is not None:
            raise ConfigError("--admin_secret was given without --config")
        return RepoSetup({}, {})
    document, source = read_toml_source(config, is_text=is_text, what="config")
    configs = load_repo_configs(document, source, backends, limits)
    for name, repo_config in configs.items():
        if isinstance(repo_config, ProxyConfig) and repo_config.storage:
            problem = _lending_problem(repo_config, configs)
            if problem:
                raise source.error(problem, table=name, key="storage")
    secrets: dict[str, str] = {}
    if admin_secret is not None:
        secret_doc, secret_source = read_toml_source(admin_secret, is_text=is_text, what="admin secret")
        secrets = load_admin_secrets(secret_doc, secret_source, configs, limits=limits)
    where = admin_secret if (admin_secret and not is_text) else "<admin secret>"  # for the errors below
    for name, repo_config in configs.items():
        if isinstance(repo_config, ProxyConfig):
            try:
                repo_config.upstream_credentials(secrets.get(name))
            except ConfigError as exc:  # say which document, like every other admin-secret error
                raise ConfigError(f"{where}: {exc}") from None
        if backends[repo_config.type].admin_secret_required and name not in secrets:
            raise ConfigError(f"{where}: [{name}] missing: backend {repo_config.type!r} needs an admin secret")
    return RepoSetup(configs, secrets)


def _lending_problem(proxy: ProxyConfig, configs: Mapping[str, PkgRepoConfig]) -> str | None:
    """Why ``proxy.storage`` cannot keep the proxy's cache, or None when it can."""
    lender = configs.get(proxy.storage)
    if lender is None:
        return f"no repository {proxy.storage!r} in the config"
    if isinstance(lender, (ProxyConfig, GroupConfig)):
        return f"{proxy.storage!r} is a {lender.type}: name a repository with a store of its own"
    spec = repository_types()[lender.type]
    if not issubclass(spec.backend_class, Storage) or lender.relocated(proxy.cache_folder) is None:
        return f"a {lender.type!r} store cannot keep a proxy's cache in a folder of its own: use storage_path"
    return None


def _context(name: str, repo_config: PkgRepoConfig, setup: RepoSetup, settings: ServerSettings) -> BackendContext:
    """What ``build_repos`` gives repository ``name``'s backend (for a proxy keeping its cache in
    another repository's store, that store's relocated settings and credentials)."""
    lent = None
    if isinstance(repo_config, ProxyConfig) and repo_config.storage:
        lender = setup.configs[repo_config.storage]
        relocated = lender.relocated(repo_config.cache_folder)
        assert relocated is not None  # load_setup checked it
        lent = LentStore(relocated, setup.admin_secrets.get(repo_config.storage))
    return BackendContext(root=settings.root, admin_secret=setup.admin_secrets.get(name), lent_store=lent)


def build_repos(setup: RepoSetup, settings: ServerSettings) -> dict[str, PkgRepo]:
    """Instantiate backends and load each local index from ROOT (no network, no sync yet)."""
    backends = repository_types()
    repos: dict[str, PkgRepo] = {}
    for name, repo_config in setup.configs.items():
        spec = backends[repo_config.type]
        context = _context(name, repo_config, setup, settings)
        try:
            backend = open_backend(spec, repo_config, context)
        except OSError as exc:  # e.g. a storage folder the server may not create
            raise ConfigError(f"[{name}]: cannot open its storage: {exc.strerror or exc}") from exc
        repo = PkgRepo(repo_config, backend, LocalIndexStore(settings.root, name), settings.auth_expiry)
        if isinstance(repo_config, ProxyConfig) and isinstance(backend, PackageStore):
            assert isinstance(backend.storage, ProxyCacheStorage)
            repo.mirror = open_mirror(repo_config, backend.storage, context.admin_secret)
        repo.load_local_index()
        repos[name] = repo
    for repo in repos.values():
        if isinstance(repo.config, GroupConfig):
            repo.group = _group_of(repo.config, repos)
    return repos


def _group_of(config: GroupConfig, repos: Mapping[str, PkgRepo]) -> RepoGroup:
    """Link a group to its members (all built by now); names the first problem."""
    members = []
    for index, member in enumerate(config.members):
        found = repos.get(member)
        if found is None:
            raise ConfigError(f"[{config.name}] key 'members[{index}]': no repository {member!r} in the config")
        if isinstance(found.config, GroupConfig):
            raise ConfigError(f"[{config.name}] key 'members[{index}]': {member!r} is a group (groups do not nest)")
        members.append(found)
    group = RepoGroup.of(members, config.upload_to)
    if config.upload_to and group.upload_target is None:
        raise ConfigError(f"[{config.name}] key 'upload_to': {config.upload_to!r} is a proxy (it takes no uploads)")
    return group


class ServerState:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.repos: Mapping[str, PkgRepo] = {}
        # False until a config is installed: the first POST /initialize/ is then open to anyone
        # (the CI service-container flow); afterwards it needs the initialize token.
        self.configured = False
        self.install_lock = threading.Lock()
        self._sync = IndexSyncService(settings.retention_interval)
        # Set in each worker process of a server run with --workers N (N > 1): see worker_peers.
        self.peers: WorkerPeers | None = None
        self._leadership: SyncLeadership | None = None

    def join_workers(self, peers: WorkerPeers, slot: int) -> None:
        """Make this (freshly forked) process worker ``slot`` of the server's ``peers``: it tells
        the others about its writes, follows theirs, and syncs only while it holds the leadership."""
        peers.as_worker(slot)
        self.peers = peers
        self._leadership = SyncLeadership(self.settings.root / "cache" / ".sync-leader.lock")

    def follow_peers(self) -> None:
        """Catch up with what the other workers wrote (an authenticated request found the shared
        vectors changed). Blocking: file I/O."""
        assert self.peers is not None
        index, tokens = self.peers.take()
        for repo in self.repos.values():
            if index:
                repo.follow_local()
            if tokens:
                repo.forget_token_verdicts()

    def install(self, repos: Mapping[str, PkgRepo], *, configured: bool = True) -> None:
        """Swap in a new repository set and restart index sync for it.

        In-flight requests keep the repo object they already resolved and finish with it.
        """
        self._sync.stop()
        self.repos = dict(repos)
        self.configured = self.configured or configured
        if self.peers is not None:
            for repo in self.repos.values():
                repo.local_index.on_change = self.peers.index_written
                repo.on_tokens_changed = self.peers.tokens_changed
                repo.follow_local()  # a replacement worker: what happened since the supervisor loaded
        self._sync.start(self.repos.values(), self._leadership)
        log.info("serving %d package repositories: %s", len(self.repos), ", ".join(self.repos) or "-")

    def shutdown(self) -> None:
        self._sync.stop()
