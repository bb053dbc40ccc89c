"""GitHub releases as a storage adapter (``pywharf_core.storage.api``), in pywharf 0.2.3's layout.

Where each key the core uses lives (0.2.3 repositories keep working as they are):

- ``<filename>``, a distribution file: the asset of the release tagged ``<filename>`` (tag =
  release name = filename). GitHub renames some characters in asset names (``+`` of local
  versions, ``~``, spaces...): the tag keeps the real filename and ``asset`` in the release body
  records GitHub's name, so the filename round-trips whatever GitHub did.
- ``.pywharf/<filename>.metadata``, its PEP 658 file: a second asset ``<filename>.metadata``.
- ``.pywharf/<filename>.toml``, its sidecar: the release **body**, TOML under a one-line comment
  (0.2.3 bodies are the same flat TOML; ``distrib`` is kept in them for 0.2.3's tools).
- every other document (the remote index ``index.toml``, the index log, identity claims): a
  file on ``branch``, the index at ``index_filename`` and the others in ``.pywharf/`` beside it
  (:mod:`.contents`).

Drafts and releases without an uploaded distribution asset hold no file. Every policy (names,
conflicts, what a sidecar says, the index) is the core's; this module only moves bytes, and is
careful where GitHub is surprising: uploads are streamed from disk and never blindly retried
(after a failure, what GitHub holds decides), half-uploaded ("starter") assets are deleted,
rate-limit waits are bounded by ``max_rate_limit_wait`` and every request by ``timeout``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import posixpath
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
import tomli_w

from pywharf_backends.github.client import (
    ClientPolicy,
    GitHubClient,
    GitHubUnavailable,
    check_response,
    describe,
    redact,
    response_message,
)
from pywharf_backends.github.config import GitHubConfig
from pywharf_backends.github.contents import (
    NOT_MODIFIED,
    FileState,
    check_visible,
    delete_file,
    get_file,
    read_blob,
    write_file,
)
from pywharf_core.model.errors import InvalidName, UploadRejected
from pywharf_core.model.metadata import MAX_METADATA_BYTES
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import is_sha256_hex
from pywharf_core.model.sidecar import parse_sidecar
from pywharf_core.storage.api import BlobInfo, Document, Storage, VersionConflict
from pywharf_core.storage.backend import (
    BackendContext,
    DownloadTarget,
    LocalFile,
    Permission,
    Redirect,
    StreamedFile,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

INDEX_KEY = "index.toml"  # the core's key of the remote index (base document)
COMPANIONS = ".pywharf/"
METADATA_SUFFIX = ".metadata"
SIDECAR_SUFFIX = ".toml"
INDEX_COMMIT_MESSAGE = "pywharf update_index"
OCTET_STREAM = "application/octet-stream"
# GitHub refuses release bodies over 125,000 characters; keep a margin.
BODY_LIMIT = 120_000
BODY_HEADER = "# pywharf: this release holds one package file (its asset); this body is its metadata (TOML).\n"
# Signed download URLs live a few minutes on GitHub; reuse one only briefly.
SIGNED_URL_TTL = 30.0
# Release lookups (tag -> asset URLs) for downloads of immutable files; a deleted release is noticed on 404.
RELEASE_CACHE_TTL = 600.0
UPLOAD_ATTEMPTS = 3
# Refused tokens remembered at once (by SHA-256, never the token): a flood of random tokens
# evicts the oldest entries instead of growing memory (~100 bytes each).
AUTH_FAILURE_CACHE_MAX = 10_000
_CHUNK = 1 << 20


# -- release / asset snapshots -------------------------------------------------------------------


@dataclass(frozen=True)
class AssetInfo:
    id: int
    name: str
    url: str
    size: int
    state: str
    digest: str  # hex sha256 GitHub computed ("" when GitHub gives none, e.g. older GHES)
    browser_download_url: str = ""
    created_at: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AssetInfo:
        digest = str(data.get("digest") or "")
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            url=str(data["url"]),
            size=int(data.get("size") or 0),
            state=str(data.get("state") or ""),
            digest=digest[len("sha256:") :].lower() if digest.startswith("sha256:") else "",
            browser_download_url=str(data.get("browser_download_url") or ""),
            created_at=str(data.get("created_at") or ""),
        )

    @property
    def uploaded(self) -> bool:
        return self.state == "uploaded"

    @property
    def is_metadata(self) -> bool:
        return self.name.endswith(METADATA_SUFFIX)


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    tag: str
    body: str
    draft: bool
    url: str
    upload_url: str
    created_at: str
    assets: tuple[AssetInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleaseInfo:
        return cls(
            id=int(data["id"]),
            tag=str(data.get("tag_name") or ""),
            body=str(data.get("body") or ""),
            draft=bool(data.get("draft")),
            url=str(data["url"]),
            upload_url=str(data.get("upload_url") or "").split("{", 1)[0],
            created_at=str(data.get("created_at") or ""),
            assets=tuple(AssetInfo.from_json(a) for a in data.get("assets") or ()),
        )

    def dist_asset(self) -> AssetInfo | None:
        """The uploaded distribution asset: the one the body names, else the non-metadata one."""
        uploaded = [a for a in self.assets if a.uploaded and not a.is_metadata]
        if len(uploaded) > 1:
            named = str(parse_body(self.body).get("asset") or "")
            for asset in uploaded:
                if asset.name == named:
                    return asset
        return uploaded[0] if uploaded else None

    def metadata_asset(self) -> AssetInfo | None:
        uploaded = [a for a in self.assets if a.uploaded and a.is_metadata]
        return uploaded[0] if uploaded else None

    def sidecar(self) -> Document | None:
        """The body as the file's sidecar; None while it holds none (empty or just the header)."""
        if self.body.replace("\r\n", "\n").strip() in ("", BODY_HEADER.strip()):
            return None
        return Document(self.body.encode("utf-8"), body_version(self.body))


def parse_body(body: str) -> dict[str, Any]:
    """A release body (the core's sidecar, as pywharf 0.2.3 wrote it too); {} when it is not TOML."""
    return parse_sidecar(body.encode("utf-8")) or {}


def render_body(fields: Mapping[str, Any]) -> str:
    """The release body for ``fields``; drops ``description`` (kept in the .metadata asset) if too long."""
    clean = {k: v for k, v in fields.items() if v is not None}
    text = BODY_HEADER + tomli_w.dumps(clean)
    if len(text) > BODY_LIMIT and "description" in clean:
        clean.pop("description")
        text = BODY_HEADER + tomli_w.dumps(clean)
    if len(text) > BODY_LIMIT:
        raise UploadRejected(400, "The upload's metadata is too large for a GitHub release body (125,000 characters).")
    return text


def body_version(body: str) -> str:
    """A sidecar's version token: the body's hash (GitHub keeps no version of a release body)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _iso_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _response_already_exists(response: requests.Response) -> bool:
    if response.status_code != 422:
        return False
    try:
        data = response.json()
    except ValueError:
        return False
    return any(isinstance(e, Mapping) and e.get("code") == "already_exists" for e in data.get("errors", []) or [])


# -- the adapter ---------------------------------------------------------------------------------


class GitHubBackend(Storage):
    """A package repository kept as releases of one GitHub repository (see the module docstring).

    The server's own GitHub calls (store, locate, yank, index sync) use the **admin secret** (a
    token that can push); clients' tokens are only checked against the repository's permissions.
    """

    config: GitHubConfig
    cheap_documents = False  # every document write is a commit on the index branch

    def __init__(self, config: GitHubConfig, context: BackendContext) -> None:  # type: ignore[override]
        super().__init__(config, context)
        self.policy = ClientPolicy(config.api_base_url, config.timeout, config.max_rate_limit_wait)
        self._admin = GitHubClient(context.admin_secret, self.policy) if context.admin_secret else None
        # Index polls retry once only: the next poll, sync_index_interval later, is the retry, and a
        # long backoff inside one poll would only delay the error line (the last good index stays).
        self._poller = (
            GitHubClient(context.admin_secret, dataclasses.replace(self.policy, retries=1))
            if context.admin_secret else None
        )
        self.cache_dir = Path(context.root) / "cache" / config.name / "github"
        self._documents_dir = posixpath.dirname(config.index_filename)
        self._releases: dict[str, tuple[float, ReleaseInfo]] = {}
        self._signed: dict[str, tuple[float, str]] = {}
        self._index: FileState | None = None  # the index as last read: its ETag makes unchanged polls 304s
        self._upload_locks: dict[str, threading.Lock] = {}
        self._upload_locks_guard = threading.Lock()
        # Anonymous clients choose the tokens: a wrong one must not cost an API call each time,
        # nor may a flood of them occupy every worker thread with GitHub calls.
        self._refused: dict[bytes, float] = {}  # SHA-256 of a refused token -> when to forget it
        self._refused_lock = threading.Lock()
        self._auth_slots = threading.BoundedSemaphore(config.max_concurrent_auth_checks)

    def use_token(self, token: str | None) -> None:
        """Work with ``token`` (None: anonymously, enough to read a public repository)."""
        self._admin = self._poller = GitHubClient(token, self.policy)

    def admin(self) -> GitHubClient:
        if self._admin is None:
            raise GitHubUnavailable(
                f"repo {self.config.name!r}: the github backend needs a GitHub token as its admin secret "
                "(--admin_secret for the server, --secret/--secret_env for update_index)"
            )
        return self._admin

    def _split(self, key: str) -> tuple[str, str]:
        """``(kind, name)``: ``dist`` / ``metadata`` / ``sidecar`` with the filename, or ``file``
        with the path on the branch."""
        if key == INDEX_KEY:
            return "file", self.config.index_filename
        if key.startswith(COMPANIONS) and ".." not in key.split("/"):
            rest = key[len(COMPANIONS):]
            if "/" not in rest and rest.endswith(METADATA_SUFFIX):
                return "metadata", rest[: -len(METADATA_SUFFIX)]
            if "/" not in rest and rest.endswith(SIDECAR_SUFFIX):
                return "sidecar", rest[: -len(SIDECAR_SUFFIX)]
            return "file", posixpath.join(self._documents_dir, key)
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise InvalidName(f"invalid storage key {key!r}")
        return "dist", key

    def describe(self, key: str) -> str:
        kind, name = self._split(key)
        if kind == "file":
            return f"{name} on {self.config.full_name}@{self.config.branch}"
        what = {"dist": "the asset", "metadata": "the .metadata asset", "sidecar": "the body"}[kind]
        return f"{what} of release {name!r} of {self.config.full_name}"

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Permission:
        """One ``GET /repos/{owner}/{repo}`` with the client's token: push -> WRITE, pull -> READ.

        GitHub reports the token owner's role on the repository; a token GitHub refuses (401),
        or that cannot see the repository (404: private repos are invisible), grants nothing.
        Such a refusal is remembered for ``auth_failure_ttl`` seconds (the core caches only
        positive verdicts), and at most ``max_concurrent_auth_checks`` checks run at once.
        """
        key = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        if self._recently_refused(key):
            return Permission.NONE
        if not self._auth_slots.acquire(timeout=self.config.timeout):
            raise GitHubUnavailable(
                f"too many token checks against GitHub in flight (max_concurrent_auth_checks = "
                f"{self.config.max_concurrent_auth_checks}); try again"
            )
        try:
            if self._recently_refused(key):  # decided while this one waited for a slot
                return Permission.NONE
            client = GitHubClient(secret, self.policy)
            what = f"GET /repos/{self.config.full_name} (auth check)"
            try:
                response = client.request("GET", self._repo_path(), what=what)
            finally:
                client.close()
        finally:
            self._auth_slots.release()
        if response.status_code in (401, 404):  # not 403: it may be a rate limit, not the token
            self._remember_refused(key)
        if response.status_code in (401, 403, 404):
            return Permission.NONE
        permissions = check_response(response, what).json().get("permissions") or {}
        if permissions.get("push") or permissions.get("admin") or permissions.get("maintain"):
            return Permission.WRITE
        if permissions.get("pull"):
            return Permission.READ
        return Permission.NONE

    def _recently_refused(self, key: bytes) -> bool:
        with self._refused_lock:
            until = self._refused.get(key)
            if until is None:
                return False
            if until > time.monotonic():
                return True
            del self._refused[key]
            return False

    def _remember_refused(self, key: bytes) -> None:
        if self.config.auth_failure_ttl <= 0:
            return
        now = time.monotonic()
        with self._refused_lock:
            if key not in self._refused and len(self._refused) >= AUTH_FAILURE_CACHE_MAX:
                self._refused = {k: v for k, v in self._refused.items() if v > now}
                while len(self._refused) >= AUTH_FAILURE_CACHE_MAX:
                    del self._refused[next(iter(self._refused))]  # the oldest entry
            self._refused[key] = now + self.config.auth_failure_ttl

    # -- releases ------------------------------------------------------------------------------

    def _repo_path(self, tail: str = "") -> str:
        return f"repos/{self.config.owner}/{self.config.repo}{tail}"

    def _fetch_release(self, filename: str) -> ReleaseInfo | None:
        """The published release tagged ``filename`` (one GET), or None; refreshes the lookup cache."""
        what = f"reading release {filename!r}"
        response = self.admin().request("GET", self._repo_path(f"/releases/tags/{quote(filename, safe='')}"),
                                        what=what)
        release = None if response.status_code == 404 else ReleaseInfo.from_json(check_response(response, what).json())
        if release is None or release.dist_asset() is None:
            self._releases.pop(filename, None)
        else:
            self._releases[filename] = (time.monotonic() + RELEASE_CACHE_TTL, release)
        return release

    def _release(self, filename: str, *, fresh: bool = False) -> ReleaseInfo | None:
        """The release of a stored file for downloads, from the lookup cache when still valid."""
        cached = self._releases.get(filename)
        if cached is not None and cached[0] > time.monotonic() and not fresh:
            return cached[1]
        release = self._fetch_release(filename)
        return release if release is not None and release.dist_asset() is not None else None

    def iter_releases(self) -> Iterator[ReleaseInfo]:
        """Every release of the repository (paginated, 100 a page), drafts included."""
        what = f"listing the releases of {self.config.full_name}"
        for release in self.admin().paginate(self._repo_path("/releases"), what):
            yield ReleaseInfo.from_json(release)

    def _list_assets(self, release: ReleaseInfo) -> list[AssetInfo]:
        response = self.admin().request("GET", f"{release.url}/assets", params={"per_page": 100})
        check_response(response, f"listing the assets of {release.tag!r}")
        return [AssetInfo.from_json(a) for a in response.json()]

    def _delete_asset(self, asset: AssetInfo) -> None:
        response = self.admin().request("DELETE", asset.url)
        check_response(response, f"deleting asset {asset.name!r}", ok=(204, 404))

    def _patch_body(self, release: ReleaseInfo, body: str) -> str:
        response = self.admin().request("PATCH", release.url, json={"body": body})
        check_response(response, f"updating release {release.tag!r}")
        return str(response.json().get("body") or "")

    # -- blobs ---------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        path = self.cache_dir / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        """Uploads of one release on this server take turns (so neither takes the other's upload in
        progress for a leftover); across servers GitHub's unique tags and asset names decide."""
        kind, filename = self._split(key)
        with self._upload_locks_guard:
            lock = self._upload_locks.setdefault(filename, threading.Lock())
        with lock:
            return self._put_blob(kind, key, filename, source, size, sha256)

    def _put_blob(self, kind: str, key: str, filename: str, source: Path, size: int, sha256: str) -> bool:
        if kind == "dist":
            return self._put_dist(filename, source, size, sha256)
        if kind == "metadata":
            # Stored after its distribution (whose asset a lagging read might not list yet: only the
            # release is required; a metadata asset without its file is a leftover _put_dist removes).
            release = self._fetch_release(filename)
            if release is None:
                raise GitHubUnavailable(f"no release holds {filename!r}: its metadata file has nowhere to go")
            if any(a.is_metadata and a.uploaded for a in release.assets):
                return False
            stored = self._upload_asset(release, f"{filename}{METADATA_SUFFIX}", source, size, sha256,
                                        is_metadata=True)
            self._releases.pop(filename, None)
            return stored
        raise InvalidName(f"{key!r} is not a blob key")

    def _put_dist(self, filename: str, source: Path, size: int, sha256: str) -> bool:
        """Create (or reuse an asset-less) release ``filename`` and upload the file as its asset.

        A release whose creation this call cannot prove (it met an existing one: a leftover of a
        failed attempt, a release made by hand, or another server racing for the name) is reused
        and never deleted by this call; one it created is deleted again when the upload fails.
        """
        release, created = self._create_or_get_release(filename)
        if release.dist_asset() is not None:
            return False
        try:
            # No file yet, so every asset is a leftover: half-uploaded ("starter") ones, and the
            # .metadata of an attempt that failed later (a metadata file is only ever uploaded
            # once its distribution is; the snapshot is older than any racer's upload).
            for asset in release.assets:
                self._delete_asset(asset)
            stored = self._upload_asset(release, filename, source, size, sha256, is_metadata=False)
        except BaseException:
            self._cleanup(release, delete_release=created)
            raise
        self._releases.pop(filename, None)
        return stored

    def _create_or_get_release(self, filename: str) -> tuple[ReleaseInfo, bool]:
        """The release for ``filename``: created now with a header-only body (True), or the existing one."""
        what = f"creating release {filename!r}"
        # Retried by the client on 5xx: a POST GitHub applied before failing then meets its own release.
        response = self.admin().request("POST", self._repo_path("/releases"), what=what, json={
            "tag_name": filename, "name": filename, "body": BODY_HEADER, "make_latest": "false"})
        if response.status_code == 201:
            return ReleaseInfo.from_json(response.json()), True
        if not _response_already_exists(response):
            check_response(response, what)
        release = self._fetch_release(filename)
        if release is None:
            raise GitHubUnavailable(f"GitHub says a release tagged {filename!r} exists but it cannot be read")
        return release, False

    def _cleanup(self, release: ReleaseInfo, *, delete_release: bool) -> None:
        """After a failed upload: remove what it left (best effort, logged)."""
        try:
            assets = self._list_assets(release)
            for asset in assets:
                if not asset.uploaded:
                    self._delete_asset(asset)
            if delete_release and not any(a.uploaded for a in assets):
                response = self.admin().request("DELETE", release.url)
                check_response(response, f"deleting release {release.tag!r}", ok=(204, 404))
        except GitHubUnavailable as exc:
            log.warning("repo %r: could not clean up after a failed upload of %s: %s",
                        self.config.name, release.tag, exc)

    def _upload_asset(self, release: ReleaseInfo, name: str, source: Path, size: int, sha256: str, *,
                      is_metadata: bool) -> bool:
        """Upload one asset streamed from ``source``, create-only: False when GitHub holds one already.

        No blind retries: after any failure we look at what GitHub holds under the name. Our
        bytes there, after an attempt GitHub may have applied without telling us -> True; an
        uploaded asset otherwise -> False (another upload's: the core compares); a half-uploaded
        ("starter") asset -> deleted, then another attempt.
        """
        client = self.admin()
        last_error = ""
        maybe_applied = False  # an attempt failed without a definite answer: GitHub may hold it
        read_timeout = self.policy.timeout + size // (1 << 20)  # one more second per MiB sent
        for attempt in range(UPLOAD_ATTEMPTS):
            if attempt:
                time.sleep(min(4.0, 0.5 * 2**attempt))
            response: requests.Response | None = None
            try:
                with open(source, "rb") as data:
                    response = client.request(
                        "POST", release.upload_url, retry=False, params={"name": name}, data=data,
                        headers={"Content-Type": OCTET_STREAM}, timeout=(min(10, self.policy.timeout), read_timeout),
                    )
            except GitHubUnavailable as exc:
                last_error, maybe_applied = str(exc), True
            if response is not None:
                if response.status_code == 201:
                    asset = AssetInfo.from_json(response.json())
                    if asset.uploaded and asset.size == size and asset.digest in ("", sha256):
                        return True
                    last_error = f"GitHub kept {asset.size} bytes in state {asset.state!r}"
                    self._delete_asset(asset)  # not our bytes: drop it and try again
                    continue
                if _response_already_exists(response):
                    last_error = "asset name already exists"
                else:
                    status = response.status_code
                    last_error = f"GitHub answered {status}: {response_message(response) or response.reason}"
                    wait = self._retry_wait(response)
                    if wait is None and status < 500 and status not in (408, 429):
                        raise GitHubUnavailable(f"uploading {name!r} to GitHub failed: {last_error}", status)
                    maybe_applied = maybe_applied or status >= 500 or status == 408
                    if wait:
                        time.sleep(wait)
            for asset in self._list_assets(release):  # what does GitHub hold under this name now?
                if asset.is_metadata != is_metadata:
                    continue
                if asset.uploaded:
                    return maybe_applied and asset.size == size and (asset.digest or self._hash_asset(asset)) == sha256
                self._delete_asset(asset)  # a starter asset left by a failed upload
        raise GitHubUnavailable(f"uploading {name!r} to GitHub failed after {UPLOAD_ATTEMPTS} attempts: {last_error}")

    def _retry_wait(self, response: requests.Response) -> float | None:
        """Seconds to wait before retrying a rate-limited response; None when not rate limited.

        Raises when the wait is longer than ``max_rate_limit_wait``.
        """
        headers = response.headers
        wait: float | None = None
        if "Retry-After" in headers and headers["Retry-After"].strip().isdigit():
            wait = float(headers["Retry-After"])
        elif response.status_code in (403, 429) and headers.get("X-RateLimit-Remaining") == "0":
            reset = headers.get("X-RateLimit-Reset", "")
            wait = max(0.0, int(reset) - time.time()) + 1 if reset.isdigit() else 60.0
        if wait is not None and wait > self.policy.max_rate_limit_wait:
            cap = self.policy.max_rate_limit_wait
            raise GitHubUnavailable(f"GitHub rate limit: retry in {wait:.0f}s (max_rate_limit_wait is {cap:g}s)", 429)
        return wait

    def _asset(self, key: str) -> tuple[ReleaseInfo, AssetInfo] | None:
        """The release and uploaded asset of a blob key (a fresh lookup)."""
        kind, filename = self._split(key)
        if kind not in ("dist", "metadata"):
            return None
        release = self._fetch_release(filename)
        asset = None if release is None else release.dist_asset() if kind == "dist" else release.metadata_asset()
        return (release, asset) if release is not None and asset is not None else None

    def has_blob(self, key: str) -> bool:
        return self._asset(key) is not None

    def blob_sha256(self, key: str) -> str | None:
        """GitHub's digest of the asset, else the sha256 the body records, else the downloaded bytes' hash."""
        found = self._asset(key)
        if found is None:
            return None
        release, asset = found
        if asset.digest:
            return asset.digest
        fields = parse_body(release.body)
        claimed = str(fields.get("metadata_sha256" if asset.is_metadata else "sha256") or "").lower()
        if is_sha256_hex(claimed) and (asset.is_metadata or fields.get("size") in (None, asset.size)):
            return claimed
        return self._hash_asset(asset)

    def _hash_asset(self, asset: AssetInfo) -> str:
        """sha256 of an asset's bytes, downloaded (only when neither GitHub nor the body says)."""
        response = self.admin().request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        with contextlib.closing(response):
            check_response(response, f"downloading asset {asset.name!r}")
            digest = hashlib.sha256()
            for chunk in response.iter_content(_CHUNK):
                digest.update(chunk)
            return digest.hexdigest()

    def open_blob(self, key: str) -> BinaryIO | None:
        found = self._asset(key)
        if found is None:
            return None
        asset = found[1]
        response = self.admin().request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        target = self._relay(response, asset)
        return io.BufferedReader(_ChunkReader(target.chunks), _CHUNK) if target is not None else None

    def locate(self, key: str) -> DownloadTarget | None:
        """A 302 to GitHub's signed URL for the asset (``download = "redirect"``), or the bytes relayed.

        Relayed (a :class:`StreamedFile`, chunk by chunk, never whole in memory or on disk) with
        ``download = "stream"``, and as a fallback when GitHub serves the bytes itself instead of
        redirecting to its storage (seen on some GitHub Enterprise set-ups). The PEP 658 file is
        fetched once and kept under ROOT (see :meth:`_locate_metadata`).
        """
        kind, filename = self._split(key)
        if kind == "metadata":
            return self._locate_metadata(filename)
        if kind != "dist":
            return None
        for fresh in (False, True):
            release = self._release(filename, fresh=fresh)
            if release is None:
                return None
            asset = release.dist_asset()
            assert asset is not None
            target = self._signed_url(asset) if self.config.download == "redirect" else self._stream(asset)
            if target is not None:
                return target
            # 404: the asset is gone (release deleted or re-made): look the release up again.
            self._releases.pop(filename, None)
        return None

    def _signed_url(self, asset: AssetInfo) -> DownloadTarget | None:
        now = time.monotonic()
        cached = self._signed.get(asset.url)
        if cached is not None and cached[0] > now:
            return Redirect(cached[1])
        response = self.admin().request(
            "GET", asset.url, headers={"Accept": OCTET_STREAM}, allow_redirects=False, stream=True
        )
        if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("Location"):
            response.close()
            url = response.headers["Location"]
            if len(self._signed) > 10_000:
                self._signed = {k: v for k, v in self._signed.items() if v[0] > now}
            self._signed[asset.url] = (now + SIGNED_URL_TTL, url)
            return Redirect(url)
        return self._relay(response, asset)  # GitHub sent the bytes itself: pass them on

    def _stream(self, asset: AssetInfo, sha256: str = "") -> StreamedFile | None:
        response = self.admin().request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        return self._relay(response, asset, sha256)

    def _relay(self, response: requests.Response, asset: AssetInfo, sha256: str = "") -> StreamedFile | None:
        """The bytes of an open asset download as a StreamedFile (None when GitHub says 404),
        checked against GitHub's digest (else ``sha256``) at their end."""
        if response.status_code == 404:
            response.close()
            return None
        try:
            check_response(response, f"downloading asset {asset.name!r}")
        finally:
            if response.status_code != 200:
                response.close()
        length = response.headers.get("Content-Length", "")
        chunks = _chunks(response, asset.name, asset.digest or sha256.lower(), self.policy)
        return StreamedFile(chunks, int(length) if length.isdigit() else asset.size)

    def _locate_metadata(self, filename: str) -> DownloadTarget | None:
        """The PEP 658 file, fetched once from the ``.metadata`` asset and kept under ROOT.

        It is small and immutable, and pip asks for it before every download: serving a local
        copy saves two GitHub calls (asset lookup + signed URL) per request.
        """
        local = self._metadata_cache(filename)
        if local.is_file():
            return LocalFile(local)
        release = self._release(filename)
        if release is not None and release.metadata_asset() is None:
            release = self._release(filename, fresh=True)  # update_index may have added it since
        asset = release.metadata_asset() if release is not None else None
        if release is None or asset is None:
            return None
        target = self._stream(asset, str(parse_body(release.body).get("metadata_sha256") or ""))
        if target is None:
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=local.parent, prefix=".download-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle, contextlib.closing(target.chunks):  # type: ignore[type-var]
                for chunk in target.chunks:
                    if handle.tell() + len(chunk) > MAX_METADATA_BYTES:
                        raise GitHubUnavailable(f"asset {asset.name!r} is larger than {MAX_METADATA_BYTES} bytes")
                    handle.write(chunk)
            os.replace(temp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return LocalFile(local)

    def _metadata_cache(self, filename: str) -> Path:
        return self.cache_dir / "metadata" / f"{filename}{METADATA_SUFFIX}"

    def list_blobs(self) -> Iterator[BlobInfo]:
        """Releases with an uploaded distribution asset (drafts skipped), upload time = the asset's creation."""
        seen: set[str] = set()
        for release in self.iter_releases():
            asset = release.dist_asset()
            if release.draft or asset is None or release.tag in seen:  # two releases for one tag: a stray draft
                continue
            seen.add(release.tag)
            yield BlobInfo(release.tag, asset.size, _iso_time(asset.created_at or release.created_at))

    def delete(self, key: str) -> None:
        """A distribution: its release (assets included); a metadata file: its asset; a sidecar:
        the body back to the header; a document on the branch: one commit removing it."""
        kind, name = self._split(key)
        if kind == "file":
            delete_file(self.admin(), self.config, name, self.config.branch, f"pywharf: remove {key}")
            return
        release = self._fetch_release(name)
        self._releases.pop(name, None)
        if kind == "metadata":
            with contextlib.suppress(FileNotFoundError):
                self._metadata_cache(name).unlink()
        if release is None:
            return
        if kind == "dist":
            response = self.admin().request("DELETE", release.url)
            check_response(response, f"deleting release {release.tag!r}", ok=(204, 404))
        elif kind == "metadata":
            for asset in release.assets:
                if asset.is_metadata:
                    self._delete_asset(asset)
        elif release.sidecar() is not None:
            self._patch_body(release, BODY_HEADER)

    # -- documents -----------------------------------------------------------------------------

    def read_document(self, key: str) -> Document | None:
        """A sidecar from its release body; a file from the branch. A log entry not written yet is
        a 404: one API call per sync (GitHub has no cheaper way to tell)."""
        kind, name = self._split(key)
        if kind == "sidecar":
            release = self._fetch_release(name)
            return release.sidecar() if release is not None else None
        if kind != "file":
            raise InvalidName(f"{key!r} is not a document key")
        if key == INDEX_KEY:
            return self._read_index()
        client = self.admin()
        state = get_file(client, self.config, name, self.config.branch)
        return Document(read_blob(client, self.config, state, name), state.sha) if state is not None else None

    def document_version(self, key: str) -> str | None:
        kind, name = self._split(key)
        if key == INDEX_KEY:
            state = self._index_state()
            return state.sha if state is not None else None
        if kind == "file":
            state = get_file(self.admin(), self.config, name, self.config.branch)
            return state.sha if state is not None else None
        document = self.read_document(key)
        return document.version if document is not None else None

    def _index_state(self) -> FileState | None:
        """The index file's state by a conditional GET (GitHub's 304 for an unchanged file is
        free of the rate limit). The token-holding client retries once: the next poll is the retry."""
        self.admin()  # a clear error when there is no admin secret
        client = self._poller or self.admin()
        path, known = self.config.index_filename, self._index
        state = get_file(client, self.config, path, self.config.branch, known.etag if known is not None else "")
        if state is NOT_MODIFIED:
            return known
        if state is None:
            check_visible(client, self.config, path)
            self._index = None
            return None
        self._index = state
        return state

    def _read_index(self) -> Document | None:
        state = self._index_state()
        if state is None:
            return None
        data = read_blob(self._poller or self.admin(), self.config, state, self.config.index_filename)
        self._index = dataclasses.replace(state, data=None)  # its ETag is what later polls need
        return Document(data, state.sha)

    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        kind, name = self._split(key)
        if kind == "sidecar":
            return self._write_sidecar(name, data, expected)
        if kind != "file":
            raise InvalidName(f"{key!r} is not a document key")
        message = INDEX_COMMIT_MESSAGE if key == INDEX_KEY else f"pywharf: {key}"
        return write_file(self.admin(), self.config, name, data, expected, self.config.branch, message)

    def _write_sidecar(self, filename: str, data: bytes, expected: str | None) -> str:
        """The release body, with compare-and-swap emulated: GitHub has no conditional PATCH.

        The release is read again right before the PATCH and its body compared with ``expected``.
        A writer that PATCHes between that read and ours is overwritten: a window of one request,
        between writers that all write a complete sidecar of the same file (an upload, which owns
        its file, ``update_index`` and yanks). This PATCH is also what fires the ``release:
        edited`` event the repository's update_index workflow listens to, after the upload.
        """
        release = self._fetch_release(filename)
        if release is None:
            if expected is not None:
                raise VersionConflict(f"release {filename!r} is gone")
            raise GitHubUnavailable(f"no release tagged {filename!r} in {self.config.full_name} to describe")
        current = release.sidecar()
        if (current.version if current is not None else None) != expected:
            raise VersionConflict(f"the body of release {filename!r} changed")
        fields = tomllib.loads(data.decode("utf-8"))
        fields["distrib"] = str(parse_dist_filename(filename).project)  # as pywharf 0.2.3 wrote it
        asset = release.dist_asset()
        if asset is not None:
            fields["asset"] = asset.name  # GitHub's name for the file (see the module docstring)
        body = self._patch_body(release, render_body(fields))
        self._releases.pop(filename, None)
        return body_version(body)


class _ChunkReader(io.RawIOBase):
    """A chunk iterator (a streamed download) as a readable raw stream; closing it closes the download."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def _chunks(response: requests.Response, name: str, sha256: str, policy: ClientPolicy) -> Iterator[bytes]:
    """The body of an asset download; its ``close()`` (called by the server when the bytes are not
    wanted) closes the connection. A download that does not match ``sha256`` (when known) is cut
    short, so the client sees a broken transfer rather than wrong bytes."""
    digest = hashlib.sha256()
    try:
        for chunk in response.iter_content(_CHUNK):
            digest.update(chunk)
            yield chunk
        if sha256 and digest.hexdigest() != sha256:
            raise GitHubUnavailable(f"asset {name!r} does not match its sha256 (download corrupted?)")
    except requests.RequestException as exc:
        raise GitHubUnavailable(describe(exc, f"downloading {redact(response.url)}", policy)) from None
    finally:
        response.close()
