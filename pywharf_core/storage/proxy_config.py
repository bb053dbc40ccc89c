"""The config of a proxy repository (``type = "proxy"``) and the store its cache lives in.

A proxy is a core kind of repository, not a backend plugin: it mirrors an upstream simple index
(``pywharf_core.service.proxy_mirror``) and keeps what it fetched in a *cache store*, which is
an ordinary registered storage adapter opened by its type name (``file_system``), so the core
never imports ``pywharf_backends``. :data:`PROXY_SPEC` is what lets the generic machinery
(config loading, ``build_repos``) treat it like any backend:
``pywharf_core.storage.repository_types`` adds it to the backends the entry points register.

The cache store is a :class:`~pywharf_core.storage.folder_storage.FolderStorage` over ``storage_path`` (default
``ROOT/cache/<name>/storage``, like a hosted repository's), or, with ``storage = "<repo>"``, an
instance of another repository's backend with that repository's settings and credentials,
relocated to ``.pywharf/proxy/<name>/`` inside its store (``PkgRepoConfig.relocated``): the
cache sits in the bucket or folder the team already runs, and never in the lender's index
(which lists top-level files only).

Upstream credentials, when the upstream needs them, are the proxy's admin secret
(``[name] type = "proxy"`` and ``raw = "user:password"`` or ``env = ...``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import ClassVar
from urllib.parse import urlsplit

from pywharf_core.model.errors import ConfigError
from pywharf_core.storage.api import Storage
from pywharf_core.storage.backend import BackendContext, Permission
from pywharf_core.storage.config import (
    MIN_SECRET_CHARS,
    PkgRepoConfig,
    secret_problem,
)
from pywharf_core.storage.folder_storage import FolderStorage, open_store
from pywharf_core.storage.registry import BackendSpec
from pywharf_core.storage.shared_secrets import secret_matches

log = logging.getLogger(__name__)

PROXY_TYPE = "proxy"
DEFAULT_UPSTREAM = "https://pypi.org/simple/"
DEFAULT_PAGE_TTL = 600
DEFAULT_MAX_FILE_BYTES = 5 * (1 << 30)  # largest upstream file cached (PyPI's own limit is lower)

_DURATION = re.compile(r"(\d{1,12})([dhms]?)", re.ASCII)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def parse_duration(text: str) -> int | None:
    """``exclude_newer_than``: "7d", "12h", "30m", "90s" or plain seconds ("3600") -> seconds.

    "" is None (no cooldown). Anything else raises ValueError: a cooldown that silently became
    "off" through a typo ("7 days") would offer exactly the fresh releases it is meant to hide.
    """
    value = text.strip().lower()
    if not value:
        return None
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(text)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def normalize_pattern(pattern: str) -> str:
    """A project-name pattern in PEP 503 normal form, so "Foo_*" matches what "foo-*" does."""
    return re.sub(r"[-_.]+", "-", pattern.strip()).lower()


@dataclass(frozen=True, kw_only=True)
class ProxyConfig(PkgRepoConfig):
    """A read-only repository that mirrors an upstream PEP 503/691 index on demand."""

    # The upstream is a server the proxy fetches from: a config sent over HTTP may only name an
    # allowed one (the default, PyPI, is always allowed). The cache folder is confined like a
    # file_system repository's.
    endpoint_keys: ClassVar[tuple[str, ...]] = ("upstream",)
    path_keys: ClassVar[tuple[str, ...]] = ("storage_path",)
    read_only: ClassVar[bool] = True

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # largest upstream file the proxy caches
    upstream: str = DEFAULT_UPSTREAM  # the upstream simple index (http or https; plain http logs a warning)
    read_secret: str = dataclasses.field(repr=False)  # clients with it may read (install); nobody may write
    min_secret_chars: int = MIN_SECRET_CHARS  # shortest read_secret accepted
    page_ttl: int = DEFAULT_PAGE_TTL  # seconds a fetched project page is served before asking upstream again
    exclude_newer_than: str = ""  # cooldown: hide files younger than "7d", "12h", "30m", "90s" or N seconds
    allow: tuple[str, ...] = ()  # fnmatch patterns of project names offered (empty: all)
    deny: tuple[str, ...] = ()  # fnmatch patterns of project names never offered (wins over allow)
    storage_path: str | None = None  # cache folder (relative: to ROOT); None: ROOT/cache/<repo>/storage
    storage: str = ""  # or: a hosted repository whose store keeps the cache, under .pywharf/proxy/<name>/

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(("upstream", "must be an http(s)://host/... simple index URL"))
        if self.min_secret_chars < 1:
            problems.append(("min_secret_chars", "must be a positive integer"))
        problem = secret_problem(self.read_secret, self.min_secret_chars)
        if problem:
            problems.append(("read_secret", problem))
        if self.page_ttl <= 0:
            problems.append(("page_ttl", "must be a positive integer (seconds)"))
        try:
            parse_duration(self.exclude_newer_than)
        except ValueError:
            problems.append(("exclude_newer_than", f"{self.exclude_newer_than!r} is not a duration: use e.g. "
                                                   "'7d', '12h', '30m', '90s', a number of seconds, or '' (off)"))
        for key in ("allow", "deny"):
            for index, pattern in enumerate(getattr(self, key)):
                if not pattern.strip():
                    problems.append((f"{key}[{index}]", "must not be empty"))
        if self.trusted_publishers:
            problems.append(("trusted_publishers", "a proxy takes no uploads"))
        if self.storage and self.storage_path:
            problems.append(("storage", "give either storage (another repository's store) or storage_path "
                                        "(a folder), not both"))
        if self.storage == self.name:
            problems.append(("storage", "must name another repository"))
        return problems

    @property
    def cache_folder(self) -> str:
        """Where the cache sits inside a lending repository's store (``storage = "<repo>"``)."""
        return f".pywharf/proxy/{self.name}"

    @property
    def cooldown_seconds(self) -> int | None:
        return parse_duration(self.exclude_newer_than)

    def upstream_credentials(self, admin_secret: str | None) -> tuple[str, str] | None:
        """The upstream's basic-auth pair from the admin secret ``user:password`` (None:
        anonymous). A token works as PyPI-style ``__token__:<token>``."""
        if not admin_secret:
            return None
        user, colon, password = admin_secret.partition(":")
        if not colon or not user:
            raise ConfigError(f"[{self.name}]: the admin secret of a proxy is the upstream's 'user:password'")
        return user, password

    def offers(self, project: str) -> bool:
        """Whether the normalised ``project`` may be mirrored: deny wins, an empty allow is all."""
        if any(fnmatchcase(project, normalize_pattern(p)) for p in self.deny):
            return False
        return not self.allow or any(fnmatchcase(project, normalize_pattern(p)) for p in self.allow)


class ProxyCacheStorage(FolderStorage):
    """The proxy's store: its cache folder (:class:`FolderStorage`). Authentication is decided
    here: the read secret grants READ and nothing grants WRITE (the core's shared-secret check
    would look for a write secret). The upstream credentials in the context are not passed on
    to the cache store.
    """

    config: ProxyConfig

    def authenticate(self, secret: str) -> Permission | None:
        return Permission.READ if secret_matches(secret, self.config.read_secret) else Permission.NONE

    def open_inner(self, config: ProxyConfig, context: BackendContext) -> Storage:  # type: ignore[override]
        """The cache folder, or the store a lending repository lends (``storage = "<repo>"``)."""
        lent = context.lent_store
        if lent is None:
            return super().open_inner(config, context)
        return open_store(config.name, lent.config, BackendContext(root=context.root, admin_secret=lent.admin_secret))


PROXY_SPEC = BackendSpec(type=PROXY_TYPE, config_class=ProxyConfig, backend_class=ProxyCacheStorage)
