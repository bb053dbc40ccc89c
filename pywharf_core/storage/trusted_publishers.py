"""Trusted publishers: which CI workflows may trade an OIDC identity token for an upload token.

Why here: a publisher is part of a package repository's config (``[[name.trusted_publishers]]``),
validated by the generic loader in :mod:`pywharf_core.storage.config` like every other key; the
verifier (pywharf_core.service.trusted_publishing) only reads these values. The fields and their
matching rules are Warehouse's GitHub publisher (docs/design/issue14-trusted-publishing-research.md
section 3), minus pending publishers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import normalize_project

GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
# A repository names a handful of workflows; a long list is a mistake (or a generated config
# that would make every token check walk thousands of entries).
MAX_TRUSTED_PUBLISHERS = 100

# GitHub owners: letters, digits and single inner hyphens (at most 39); repository names:
# letters, digits, '.', '_' and '-' (at most 100), never "." or "..".
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$", re.ASCII)
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$", re.ASCII)
# A bare workflow file name as it appears in `job_workflow_ref` (Warehouse's `[^/]+\.(yml|yaml)`):
# no folder, no whitespace or control character (it ends up in log lines and error texts).
_WORKFLOW = re.compile(r"^[^/\\\s\x00-\x1f\x7f]{1,250}\.(yml|yaml)$")
# GitHub environment names: up to 255 characters; no control characters (they reach logs).
_ENVIRONMENT = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_OWNER_ID = re.compile(r"^[0-9]{1,20}$", re.ASCII)
# GitLab: group, subgroup and project path segments; the CI config file's path in the project.
_GITLAB_PATH_PART = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}$", re.ASCII)
_GITLAB_CONFIG = re.compile(r"^[^\\\s\x00-\x1f\x7f@]{1,500}\.(yml|yaml)$")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def issuer_url_problem(url: str) -> str | None:
    """Why ``url`` may not be an OIDC issuer or JWKS URL (None: it may).

    Keys fetched over plain http could be swapped by anyone on the path, and then any token
    would verify; http is allowed only on a loopback host, for test issuers on the same machine.
    URLs with credentials, a query or a fragment are refused: the issuer is compared
    byte-for-byte with the token's ``iss`` and a discovery path is appended to it.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be an https:// URL"
    scheme = parts.scheme
    if scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return "must be a plain URL (no credentials, query or fragment)"
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return "must not contain whitespace or control characters"
    if scheme == "http" and not _is_loopback(parts.hostname):
        return "must be https:// (http:// only on a loopback host: 127.0.0.0/8, ::1, localhost)"
    return None


@dataclass(frozen=True, kw_only=True)
class TrustedPublisher:
    """One GitHub Actions workflow allowed to publish to the repository whose config lists it.

    ``projects`` are stored PEP 503-normalised (valid names only; :meth:`check` reports the
    others), so the minting code can compare them with upload names directly.
    """

    repository: str  # claim `repository`: "owner/name" (compared case-insensitively, as GitHub's)
    workflow: str  # the workflow file name in claim `job_workflow_ref` (compared exactly)
    issuer: str = GITHUB_ACTIONS_ISSUER  # claim `iss`, exactly
    environment: str = ""  # claim `environment`, case-insensitively; "" = any (or none)
    # claim `repository_owner_id`, exactly; "" = any. Pins the owner account: a deleted owner's
    # name re-registered by someone else gets a new id (Warehouse's "resurrection" guard).
    repository_owner_id: str = ""
    projects: tuple[str, ...] = ()  # the minted token may upload only these; () = any project
    # "github" (GitHub Actions, GHES) or "gitlab" (GitLab CI); "": gitlab for https://gitlab.com,
    # else github. A self-managed GitLab's issuer needs provider = "gitlab".
    provider: str = ""

    @property
    def kind(self) -> str:
        if self.provider:
            return self.provider
        return "gitlab" if urlsplit(self.issuer).hostname == "gitlab.com" else "github"

    def __post_init__(self) -> None:
        normalised = []
        for name in self.projects:
            try:
                normalised.append(normalize_project(name))
            except InvalidName:
                normalised.append(name)  # kept as given; check() reports it
        object.__setattr__(self, "projects", tuple(dict.fromkeys(normalised)))

    @property
    def owner(self) -> str:
        return self.repository.partition("/")[0]

    def check(self) -> list[tuple[str, str]]:
        """Semantic checks: a list of (key, problem); empty when valid."""
        problems = []
        problem = issuer_url_problem(self.issuer)
        if problem:
            problems.append(("issuer", problem))
        if self.provider not in ("", "github", "gitlab"):
            problems.append(("provider", f"must be 'github' or 'gitlab', got {self.provider!r}"))
        elif self.kind == "gitlab":
            problems += self._gitlab_problems()
        else:
            owner, slash, name = self.repository.partition("/")
            if not slash or not _OWNER.fullmatch(owner) or not _REPO.fullmatch(name) or name in (".", ".."):
                problems.append(("repository", f"must be a GitHub repository as owner/name, got {self.repository!r}"))
            if not _WORKFLOW.fullmatch(self.workflow):
                problems.append(("workflow", "must be a workflow file name ending in .yml or .yaml, without a "
                                             f"folder (e.g. 'release.yml'), got {self.workflow!r}"))
        if self.environment and not _ENVIRONMENT.fullmatch(self.environment):
            problems.append(("environment", "must be at most 255 characters, without control characters"))
        if self.repository_owner_id and not _OWNER_ID.fullmatch(self.repository_owner_id):
            problems.append(("repository_owner_id", "must be the owner's numeric GitHub id, as a string"))
        for name in self.projects:
            try:
                normalize_project(name)
            except InvalidName as exc:
                problems.append(("projects", str(exc)))
        return problems

    def _gitlab_problems(self) -> list[tuple[str, str]]:
        """GitLab: ``repository`` is the project path (groups and subgroups, then the project:
        claim ``project_path``); ``workflow`` is the CI config file's path in it (claim
        ``ci_config_ref_uri``), e.g. ``.gitlab-ci.yml``."""
        problems = []
        parts = self.repository.split("/")
        if len(parts) < 2 or not all(_GITLAB_PATH_PART.fullmatch(part) for part in parts):
            problems.append(("repository", f"must be a GitLab project path as group/project, got {self.repository!r}"))
        steps = self.workflow.split("/")
        if (not _GITLAB_CONFIG.fullmatch(self.workflow) or self.workflow.startswith("/")
                or any(step in ("", ".", "..") for step in steps)):
            problems.append(("workflow", "must be the CI config file's path in the project, ending in .yml or "
                                         f".yaml (e.g. '.gitlab-ci.yml'), got {self.workflow!r}"))
        if self.repository_owner_id:
            problems.append(("repository_owner_id", "is a GitHub claim: not for a GitLab publisher"))
        return problems

    def describe(self) -> str:
        """Short human description for logs and error texts (no secrets in a publisher)."""
        env = f", environment {self.environment!r}" if self.environment else ""
        return f"{self.repository} workflow {self.workflow!r}{env}"
