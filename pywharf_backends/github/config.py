"""Config of a ``github`` package repository (a ``[name]`` table with ``type = "github"``).

The keys of pywharf 0.2.3 keep their meaning and defaults (``owner``, ``repo``, ``branch``,
``index_filename``, ``max_file_bytes``, ``sync_index_interval``), so an old config works as is.
New keys only point the backend elsewhere or bound its waiting; every one has a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pywharf_core.storage.config import PkgRepoConfig

DEFAULT_API_BASE_URL = "https://api.github.com"
# GitHub refuses release assets of 2 GiB or more ("each file must be under 2 GB").
GITHUB_ASSET_LIMIT = 2147483647
DOWNLOAD_MODES = ("redirect", "stream")

# GitHub owner (user/org) and repository names: letters, digits, '-', '_' and '.'.
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# A git branch name good enough to reject typos and path tricks (git check-ref-format subset).
_BRANCH = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*@\{)[^\s~^:?*\[\\\x00-\x1f\x7f]{1,200}(?<![/.])$")


@dataclass(frozen=True, kw_only=True)
class GitHubConfig(PkgRepoConfig):
    """One package repository stored as releases of ``owner/repo`` (see the package docstring)."""

    # The server sends its admin token (and clients' tokens) there: a config sent over HTTP may
    # only name endpoints the admin allows.
    endpoint_keys: ClassVar[tuple[str, ...]] = ("api_base_url",)

    owner: str  # the GitHub user or organisation owning the package repository
    repo: str  # the GitHub repository: one release per package file
    branch: str = "master"  # branch holding the remote index (0.2.3's default, kept)
    index_filename: str = "index.toml"  # path of the remote index on that branch
    max_file_bytes: int = GITHUB_ASSET_LIMIT  # largest accepted upload; GitHub's assets must be under 2 GiB
    api_base_url: str = DEFAULT_API_BASE_URL  # GitHub's API root; GitHub Enterprise: https://HOST/api/v3
    # "redirect": 302 to GitHub's short-lived signed URL (bytes never pass through pywharf);
    # "stream": pywharf relays the bytes, for clients that cannot reach GitHub's storage host.
    download: str = "redirect"
    timeout: int = 60  # seconds per HTTP request to GitHub
    # longest rate-limit wait (Retry-After, X-RateLimit-Reset) before failing with a clear 503
    max_rate_limit_wait: int = 30
    # seconds a token GitHub refused is remembered as refused (no API call for it meanwhile)
    auth_failure_ttl: int = 60
    # token checks (GET /repos/...) in flight at once; more wait up to `timeout`, then 503
    max_concurrent_auth_checks: int = 4

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in ("owner", "repo"):
            value = getattr(self, key)
            if not _GITHUB_NAME.fullmatch(value) or value in (".", ".."):
                problems.append((key, "must be a GitHub name (letters, digits, '-', '_', '.')"))
        if not _BRANCH.fullmatch(self.branch) or self.branch.endswith(".lock"):
            problems.append(("branch", "must be a valid git branch name"))
        parts = self.index_filename.split("/")
        if not self.index_filename or self.index_filename.startswith("/") or any(p in ("", ".", "..") for p in parts):
            problems.append(("index_filename", "must be a relative path inside the repository"))
        if self.max_file_bytes > GITHUB_ASSET_LIMIT:
            problems.append(
                ("max_file_bytes", f"GitHub release assets must be under 2 GiB (at most {GITHUB_ASSET_LIMIT})")
            )
        if not re.match(r"^https?://[^/\s]+", self.api_base_url):
            problems.append(("api_base_url", "must be an http(s) URL, e.g. https://api.github.com"))
        if self.download not in DOWNLOAD_MODES:
            problems.append(("download", f"must be one of {', '.join(DOWNLOAD_MODES)}"))
        if self.timeout <= 0:
            problems.append(("timeout", "must be a positive integer"))
        if self.max_rate_limit_wait < 0:
            problems.append(("max_rate_limit_wait", "must be zero or a positive integer"))
        if self.auth_failure_ttl < 0:
            problems.append(("auth_failure_ttl", "must be zero or a positive integer"))
        if self.max_concurrent_auth_checks < 1:
            problems.append(("max_concurrent_auth_checks", "must be a positive integer"))
        return problems
