"""The stand-in's in-memory GitHub: users, tokens, repositories (with a tiny git object store), releases, assets.

Everything lives behind one re-entrant lock (`World.lock`) because the HTTP server thread and the test thread
(inspection helpers such as ``gh.releases()``) touch it concurrently. Identifiers come from separate counters with
different magnitudes (users 1000+, repos 100000+, releases 10^6+, assets 10^7+) so that a backend mixing up a
release id with an asset id gets a 404 here instead of silently hitting the wrong object.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone

# GitHub's repository roles, weakest first; a role includes every weaker one.
PERMISSION_LEVELS: dict[str, int] = {"pull": 1, "triage": 2, "push": 3, "maintain": 4, "admin": 5}
PERMISSION_ALIASES: dict[str, str] = {"read": "pull", "write": "push"}
# Organisation roles. Owners ("admin") have admin on every repository of the organisation; members get the
# organisation's base permission, GitHub's default for which is "read" (= pull), and may create repositories.
ORG_ROLES = ("admin", "member")
ORG_BASE_PERMISSION = "pull"

# GitHub's contents API inlines a file's base64 only up to 1 MB; larger files come back with
# `encoding: "none"` and `content: ""` and must be read through the git blobs API.
CONTENTS_INLINE_LIMIT = 1024 * 1024
BLOB_API_LIMIT = 100 * 1024 * 1024


def iso(ts: float) -> str:
    """GitHub's timestamp format: ISO 8601, second precision, UTC with a literal ``Z``."""
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob, which is what GitHub reports as a file's ``sha``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def base64_wrapped(data: bytes) -> str:
    """Base64 the way GitHub's contents/blobs API sends it (Ruby ``Base64.encode64``: 60-char lines, each + ``\\n``)."""
    flat = base64.b64encode(data).decode("ascii")
    return "".join(flat[i : i + 60] + "\n" for i in range(0, len(flat), 60))


def node_id(prefix: str, number: int) -> str:
    """An opaque GraphQL-style node id; only its stability per object matters to clients."""
    return prefix + "_" + base64.b64encode(b"\x93\x00\xce" + number.to_bytes(8, "big")).decode().rstrip("=")


_ASSET_NAME_ALLOWED = re.compile(r"[^A-Za-z0-9._+\-]+")
_ASSET_NAME_ALLOWED_NO_PLUS = re.compile(r"[^A-Za-z0-9._\-]+")


def sanitize_asset_name(name: str, plus_to_dot: bool = False) -> str:
    """The name GitHub stores for an uploaded asset called ``name``.

    GitHub documents only that it "renames asset filenames that have special characters, non-alphanumeric
    characters, and leading or trailing periods". Observed behaviour (travis-ci/dpl#821, softprops/action-gh-release
    #159/#741, actions/upload-release-asset#57, electron/forge#1761): every run of characters outside
    ``[A-Za-z0-9._-]`` becomes one ``.`` (space, ``~``, ``:``, ``()``, ``@``, ``!``...), runs of dots collapse
    (``"fake.   file.txt"`` -> ``"fake.file.txt"``), accented letters lose their accents, and a leading dot
    gets a ``default`` prefix (``.config`` -> ``default.config``). ``+`` is reported both ways; GitHub staff
    explained (github/rest-api-description#2968) that a literal ``+`` in the query string is decoded as a space
    (-> ``.``) while ``%2B`` survives. The query string is therefore decoded form-style by the caller, and
    ``plus_to_dot=True`` models the reports where even ``%2B`` became ``.`` - a backend must cope with both by
    using the name the API returns.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    pattern = _ASSET_NAME_ALLOWED_NO_PLUS if plus_to_dot else _ASSET_NAME_ALLOWED
    text = pattern.sub(".", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = text.rstrip(".")
    if text.startswith("."):
        text = "default" + text
    return text or "default"


@dataclass
class User:
    """A GitHub account: a user, or an organisation (``type == "Organization"``, with ``members``).

    Users and organisations share one namespace of logins and ids on GitHub, so they share one table here.
    """

    id: int
    login: str
    created_at: float
    type: str = "User"
    members: dict[str, str] = field(default_factory=dict)  # organisations: lower-case login -> "admin"|"member"

    @property
    def is_org(self) -> bool:
        return self.type == "Organization"

    @property
    def node_id(self) -> str:
        return node_id("O" if self.is_org else "U", self.id)


@dataclass
class Commit:
    """A commit with a flat tree (path -> blob sha); enough for the contents, branches and refs APIs."""

    sha: str
    tree: dict[str, str]
    parents: list[str]
    message: str
    author_name: str
    author_email: str
    date: float

    @property
    def tree_sha(self) -> str:
        listing = "".join(f"{path}\0{sha}\n" for path, sha in sorted(self.tree.items()))
        return hashlib.sha1(b"tree " + listing.encode(), usedforsecurity=False).hexdigest()


@dataclass
class Asset:
    """A release asset; the bytes live in memory (tests use at most tens of MB)."""

    id: int
    release_id: int
    name: str
    label: str | None
    content_type: str
    data: bytes
    digest: str | None  # "sha256:<hex>"; None while an upload is incomplete
    uploader: User
    created_at: float
    updated_at: float
    state: str = "uploaded"
    download_count: int = 0

    @property
    def node_id(self) -> str:
        return node_id("RA", self.id)


@dataclass
class Release:
    """A release; ``assets`` keeps upload order, which is the order GitHub lists them in."""

    id: int
    repo: Repo
    tag_name: str
    target_commitish: str
    name: str | None
    body: str | None
    draft: bool
    prerelease: bool
    author: User
    created_at: float
    published_at: float | None
    updated_at: float
    assets: list[Asset] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return node_id("RE", self.id)


@dataclass
class Repo:
    """A repository: permissions, a git object store and its releases (dict keeps creation order)."""

    id: int
    owner: User
    name: str
    private: bool
    default_branch: str
    created_at: float
    updated_at: float
    pushed_at: float
    description: str | None = None
    collaborators: dict[str, str] = field(default_factory=dict)  # lower-case login -> role
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/master" -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    releases: dict[int, Release] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    @property
    def node_id(self) -> str:
        return node_id("R", self.id)

    @property
    def empty(self) -> bool:
        return not self.commits

    def role_of(self, user: User | None) -> str | None:
        """The user's role on this repo, the strongest of: owner -> admin; organisation owner -> admin,
        organisation member -> the base permission (pull); collaborator -> granted role; public repo -> pull."""
        roles = [] if self.private else ["pull"]
        if user is not None:
            login = user.login.lower()
            if login == self.owner.login.lower():
                return "admin"
            org_role = self.owner.members.get(login) if self.owner.is_org else None
            if org_role is not None:
                roles.append("admin" if org_role == "admin" else ORG_BASE_PERMISSION)
            granted = self.collaborators.get(login)
            if granted is not None:
                roles.append(granted)
        return max(roles, key=PERMISSION_LEVELS.__getitem__) if roles else None

    def branch_head(self, branch: str) -> Commit | None:
        sha = self.refs.get("refs/heads/" + branch)
        return None if sha is None else self.commits[sha]

    def resolve(self, ref: str) -> Commit | None:
        """A branch, tag, fully qualified ref or (abbreviated, >= 7 hex digits) commit sha -> commit."""
        for candidate in (ref, "refs/heads/" + ref, "refs/tags/" + ref):
            sha = self.refs.get(candidate) if candidate.startswith("refs/") else None
            if sha is not None:
                return self.commits.get(sha)
        if re.fullmatch(r"[0-9a-f]{7,40}", ref):
            matches = [c for sha, c in self.commits.items() if sha.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
        return None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (for fast-forward checks on ref updates)."""
        todo, seen = [descendant], set()
        while todo:
            sha = todo.pop()
            if sha == ancestor:
                return True
            if sha in seen or sha not in self.commits:
                continue
            seen.add(sha)
            todo.extend(self.commits[sha].parents)
        return False

    def commit(
        self,
        branch: str,
        changes: dict[str, bytes | None],
        message: str,
        author_name: str,
        author_email: str,
    ) -> Commit:
        """Commit ``changes`` (path -> bytes, or None to delete) on ``branch``, creating the branch if needed.

        A missing branch starts from the default branch's head (or as a root commit in an empty repository),
        which is what GitHub does when the contents API creates the first file of an empty repository.
        """
        head = self.branch_head(branch) or self.branch_head(self.default_branch)
        tree = dict(head.tree) if head is not None else {}
        for path, data in changes.items():
            if data is None:
                tree.pop(path, None)
            else:
                sha = git_blob_sha(data)
                self.blobs[sha] = data
                tree[path] = sha
        now = time.time()
        parents = [head.sha] if head is not None else []
        seed = f"{sorted(tree.items())}{parents}{message}{now}{secrets.token_hex(8)}".encode()
        new = Commit(
            sha=hashlib.sha1(seed, usedforsecurity=False).hexdigest(),
            tree=tree,
            parents=parents,
            message=message,
            author_name=author_name,
            author_email=author_email,
            date=now,
        )
        self.commits[new.sha] = new
        self.refs["refs/heads/" + branch] = new.sha
        self.pushed_at = self.updated_at = now
        return new


@dataclass
class StorageGrant:
    """A short-lived signed download URL (GitHub redirects asset downloads to such S3-style URLs)."""

    asset: Asset
    expires: float


class World:
    """All state of one stand-in instance."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}  # lower-case login -> user
        self.tokens: dict[str, User] = {}
        self.repos: dict[tuple[str, str], Repo] = {}  # (owner, name) lower-cased -> repo
        self.repos_by_id: dict[int, Repo] = {}
        self.releases: dict[int, Release] = {}
        self.assets: dict[int, Asset] = {}
        self.grants: dict[str, StorageGrant] = {}
        self._user_ids = itertools.count(1001)
        self._repo_ids = itertools.count(100001)
        self._release_ids = itertools.count(1000001)
        self._asset_ids = itertools.count(10000001)

    def user(self, login: str) -> User:
        """The user called ``login``, created on first use."""
        with self.lock:
            found = self.users.get(login.lower())
            if found is None:
                found = User(id=next(self._user_ids), login=login, created_at=time.time())
                self.users[login.lower()] = found
            return found

    def add_org(self, login: str, members: dict[str, str]) -> User:
        """Create organisation ``login`` (or update its members); member users are created as needed."""
        with self.lock:
            for role in members.values():
                if role not in ORG_ROLES:
                    raise ValueError(f"unknown organisation role {role!r} (use one of {', '.join(ORG_ROLES)})")
            org = self.users.get(login.lower())
            if org is None:
                org = User(id=next(self._user_ids), login=login, created_at=time.time(), type="Organization")
                self.users[login.lower()] = org
            elif not org.is_org:
                raise ValueError(f"{login!r} is already a user account")
            for member, role in members.items():
                user = self.user(member)
                if user.is_org:
                    raise ValueError(f"an organisation ({member!r}) cannot be a member")
                org.members[user.login.lower()] = role
            return org

    def org(self, login: str) -> User | None:
        """The organisation called ``login``, or None (also for user accounts)."""
        with self.lock:
            found = self.users.get(login.lower())
            return found if found is not None and found.is_org else None

    def find_repo(self, owner: str, name: str) -> Repo | None:
        with self.lock:
            return self.repos.get((owner.lower(), name.lower()))

    def create_repo(
        self, owner: str, name: str, private: bool, default_branch: str, auto_init: bool, description: str | None
    ) -> Repo:
        """Create a repository; ``auto_init`` makes the first commit (a README) like GitHub's ``auto_init``."""
        with self.lock:
            key = (owner.lower(), name.lower())
            if key in self.repos:
                raise ValueError(f"repository {owner}/{name} already exists")
            now = time.time()
            repo = Repo(
                id=next(self._repo_ids),
                owner=self.user(owner),
                name=name,
                private=private,
                default_branch=default_branch,
                created_at=now,
                updated_at=now,
                pushed_at=now,
                description=description,
            )
            if auto_init:
                repo.commit(default_branch, {"README.md": f"# {name}\n".encode()}, "Initial commit", owner, "")
            self.repos[key] = repo
            self.repos_by_id[repo.id] = repo
            return repo

    def new_release(self, repo: Repo, author: User, **fields: object) -> Release:
        with self.lock:
            now = time.time()
            release = Release(
                id=next(self._release_ids),
                repo=repo,
                author=author,
                created_at=now,
                updated_at=now,
                published_at=None if fields.get("draft") else now,
                **fields,  # type: ignore[arg-type]
            )
            repo.releases[release.id] = release
            self.releases[release.id] = release
            return release

    def delete_release(self, release: Release) -> None:
        with self.lock:
            for asset in release.assets:
                self.assets.pop(asset.id, None)
            release.repo.releases.pop(release.id, None)
            self.releases.pop(release.id, None)

    def new_asset(self, release: Release, uploader: User, **fields: object) -> Asset:
        with self.lock:
            now = time.time()
            asset = Asset(
                id=next(self._asset_ids),
                release_id=release.id,
                uploader=uploader,
                created_at=now,
                updated_at=now,
                **fields,  # type: ignore[arg-type]
            )
            release.assets.append(asset)
            self.assets[asset.id] = asset
            return asset

    def delete_asset(self, asset: Asset) -> None:
        with self.lock:
            release = self.releases.get(asset.release_id)
            if release is not None:
                release.assets = [a for a in release.assets if a.id != asset.id]
            self.assets.pop(asset.id, None)

    def grant(self, asset: Asset, lifetime: float) -> str:
        """Mint a signed storage token for ``asset``; expired grants are pruned on the way."""
        with self.lock:
            now = time.time()
            for token in [t for t, g in self.grants.items() if g.expires < now]:
                del self.grants[token]
            token = secrets.token_urlsafe(24)
            self.grants[token] = StorageGrant(asset=asset, expires=now + lifetime)
            return token
