"""GitHub releases as package storage.

Layout (the one pywharf 0.2.3 wrote, so its repositories keep working):

- one **release per file**: tag = release name = the distribution filename;
- the release **body** is the file's metadata as TOML (the upload's core-metadata fields plus
  ``sha256``, ``size``, ``upload_time``...; 0.2.3 bodies have the same flat shape);
- the file is the release's **asset**. GitHub renames some characters in asset names (``+`` of
  local versions, ``~``, spaces...): the tag keeps the real filename, and ``asset`` in the body
  records GitHub's name for it, so the filename round-trips whatever GitHub did;
- new: the PEP 658 metadata file is a second asset ``<filename>.metadata`` of the same release;
  ``yanked`` / ``yanked_reason`` in the body hold the PEP 592 state;
- drafts and releases without an uploaded asset are not files (skipped).

Uploads are create-only with the core's rule: the same bytes again -> IDENTICAL, different
bytes under an existing name -> FileConflict (409). A failed upload leaves nothing behind:
half-created ("starter") assets are deleted, and so is a release this attempt created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import tomli_w
from github import BadCredentialsException, GithubException, RateLimitExceededExceedsMaxWait, UnknownObjectException
from github.GithubObject import GithubObject

from pywharf_backends.github import remote_index
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
from pywharf_core.model.errors import FileConflict, InvalidName, UploadRejected
from pywharf_core.model.metadata import description_of
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord, freeze_meta, is_sha256_hex, utc_timestamp
from pywharf_core.model.sidecar import sidecar_fields
from pywharf_core.storage.backend import (
    Backend,
    BackendContext,
    DownloadTarget,
    LocalFile,
    Permission,
    Redirect,
    RemoteIndex,
    StagedFile,
    StoreOutcome,
    StreamedFile,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

METADATA_SUFFIX = ".metadata"
OCTET_STREAM = "application/octet-stream"
# GitHub refuses release bodies over 125,000 characters; keep a margin.
BODY_LIMIT = 120_000
BODY_HEADER = "# pywharf: this release holds one package file (its asset); this body is its metadata (TOML).\n"
# Body keys that are about the stored file, not core metadata (never copied into ``meta``).
RECORD_KEYS = frozenset(
    {"sha256", "size", "upload_time", "metadata_sha256", "yanked", "yanked_reason", "asset", "distrib", "filename"}
)
# Signed download URLs live a few minutes on GitHub; reuse one only briefly.
SIGNED_URL_TTL = 30.0
# Release lookups (tag -> asset URLs) of immutable files; a deleted release is noticed on 404.
RELEASE_CACHE_TTL = 600.0
UPLOAD_ATTEMPTS = 3
MAX_METADATA_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20


def raw(obj: GithubObject) -> dict[str, Any]:
    """The JSON GitHub sent for ``obj``, read without PyGithub's lazy completion (a GET)."""
    return GithubObject.raw_data.fget(obj)  # type: ignore[attr-defined]


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
    name: str
    body: str
    draft: bool
    prerelease: bool
    url: str
    upload_url: str
    created_at: str
    assets: tuple[AssetInfo, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)  # the parsed body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleaseInfo:
        body = str(data.get("body") or "")
        return cls(
            id=int(data["id"]),
            tag=str(data.get("tag_name") or ""),
            name=str(data.get("name") or ""),
            body=body,
            draft=bool(data.get("draft")),
            prerelease=bool(data.get("prerelease")),
            url=str(data["url"]),
            upload_url=str(data.get("upload_url") or "").split("{", 1)[0],
            created_at=str(data.get("created_at") or ""),
            assets=tuple(AssetInfo.from_json(a) for a in data.get("assets") or ()),
            fields=parse_body(body),
        )

    def with_assets(self, assets: list[AssetInfo]) -> ReleaseInfo:
        return ReleaseInfo(**{**self.__dict__, "assets": tuple(assets)})

    def dist_asset(self) -> AssetInfo | None:
        """The uploaded distribution asset: the one the body names, else the non-metadata one."""
        uploaded = [a for a in self.assets if a.uploaded and not a.is_metadata]
        named = str(self.fields.get("asset") or "")
        for asset in uploaded:
            if asset.name == named:
                return asset
        return uploaded[0] if uploaded else None

    def metadata_asset(self) -> AssetInfo | None:
        uploaded = [a for a in self.assets if a.uploaded and a.is_metadata]
        return uploaded[0] if uploaded else None


def parse_body(body: str) -> dict[str, Any]:
    """A release body as TOML (pywharf 0.2.3 and later); {} when it is not TOML."""
    if not body.strip():
        return {}
    try:
        return tomllib.loads(body)
    except tomllib.TOMLDecodeError:
        # GitHub's web editor may turn the body's line ends into CRLF: still TOML after that.
        try:
            return tomllib.loads(body.replace("\r\n", "\n"))
        except tomllib.TOMLDecodeError:
            return {}


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


def body_fields(record: FileRecord, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The core's sidecar document, plus ``distrib`` as 0.2.3 wrote it."""
    return {**sidecar_fields(record, metadata), "distrib": record.distrib}


def _iso_to_timestamp(value: str) -> str:
    try:
        return utc_timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return ""


def record_from_release(
    release: ReleaseInfo, hash_asset: Callable[[AssetInfo], str] | None = None
) -> FileRecord | None:
    """The index record of a release, or None when it is not a stored file."""
    if release.draft:
        return None
    filename = release.tag
    try:
        dist = parse_dist_filename(filename)
    except InvalidName:
        return None
    asset = release.dist_asset()
    if asset is None:
        return None
    fields = release.fields
    claimed = str(fields.get("sha256") or fields.get("sha256_digest") or "").lower()
    if not is_sha256_hex(claimed):
        claimed = ""  # a release body anyone with push access can edit: never trusted as markup
    sha256 = asset.digest or claimed
    if asset.digest and claimed and asset.digest != claimed:
        log.warning("release %r: body says sha256 %s but GitHub's asset digest is %s; using the digest",
                    filename, claimed, asset.digest)
    if not sha256 and hash_asset is not None:
        sha256 = hash_asset(asset)
    if not sha256:
        return None
    metadata = release.metadata_asset()
    metadata_sha256 = ""
    if metadata is not None:
        metadata_sha256 = metadata.digest or str(fields.get("metadata_sha256") or "").lower()
        if not is_sha256_hex(metadata_sha256):
            metadata_sha256 = ""
    if not is_sha256_hex(sha256):
        log.warning("release %r: no usable sha256 (%r); skipped", filename, sha256[:80])
        return None
    upload_time = str(fields.get("upload_time") or "") or _iso_to_timestamp(asset.created_at or release.created_at)
    return FileRecord(
        filename=filename,
        distrib=dist.project,
        version=str(fields.get("version") or dist.version),
        sha256=sha256,
        size=asset.size,
        upload_time=upload_time,
        requires_python=str(fields.get("requires_python") or ""),
        meta=freeze_meta({k: v for k, v in fields.items() if k not in RECORD_KEYS and not isinstance(v, dict)}),
        metadata_sha256=metadata_sha256,
        yanked=bool(fields.get("yanked", False)),
        yanked_reason=str(fields.get("yanked_reason") or ""),
    )


def _already_exists(exc: GithubException) -> bool:
    data = exc.data if isinstance(exc.data, Mapping) else {}
    return exc.status == 422 and any(
        isinstance(e, Mapping) and e.get("code") == "already_exists" for e in data.get("errors", []) or []
    )


def _response_already_exists(response: requests.Response) -> bool:
    if response.status_code != 422:
        return False
    try:
        data = response.json()
    except ValueError:
        return False
    return any(isinstance(e, Mapping) and e.get("code") == "already_exists" for e in data.get("errors", []) or [])


# -- the backend ---------------------------------------------------------------------------------


class GitHubBackend(Backend):
    """A package repository kept as releases of one GitHub repository (see the module docstring).

    Server-side GitHub calls (store, locate, yank, index sync) use the **admin secret** (a token
    that can push); clients' own tokens are only checked against the repository's permissions.
    """

    config: GitHubConfig

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
        self._releases: dict[str, tuple[float, ReleaseInfo]] = {}
        self._signed: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._index_etags: dict[str, str] = {}

    def use_token(self, token: str | None) -> None:
        """Work with ``token`` (None: anonymously, enough to read a public repository)."""
        self._admin = GitHubClient(token, self.policy)

    def admin(self) -> GitHubClient:
        if self._admin is None:
            raise GitHubUnavailable(
                f"repo {self.config.name!r}: the github backend needs a GitHub token as its admin secret "
                "(--admin_secret for the server, --secret/--secret_env for update_index)"
            )
        return self._admin

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Permission:
        """One ``GET /repos/{owner}/{repo}`` with the client's token: push -> WRITE, pull -> READ.

        GitHub reports the token owner's role on the repository; a token GitHub refuses (401),
        or that cannot see the repository (404: private repos are invisible), grants nothing.
        """
        client = GitHubClient(secret, self.policy, lazy=False)
        what = f"GET /repos/{self.config.full_name} (auth check)"
        try:
            permissions = raw(client.repo(self.config.full_name)).get("permissions") or {}
        except (BadCredentialsException, UnknownObjectException):
            return Permission.NONE
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy), 429) from None
        except GithubException as exc:
            if exc.status in (401, 403, 404):
                return Permission.NONE
            raise GitHubUnavailable(describe(exc, what, self.policy), exc.status) from None
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy)) from None
        finally:
            client.close()
        if permissions.get("push") or permissions.get("admin") or permissions.get("maintain"):
            return Permission.WRITE
        if permissions.get("pull"):
            return Permission.READ
        return Permission.NONE

    # -- store -------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        path = self.cache_dir / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _lock_for(self, filename: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(filename, threading.Lock())

    def store(
        self,
        record: FileRecord,
        staged: StagedFile,
        metadata: Mapping[str, Any],
        core_metadata: bytes | None,
    ) -> StoreOutcome:
        if staged.size > self.config.max_file_bytes:
            limit = self.config.max_file_bytes
            raise UploadRejected(413, f"File too large: the limit of this repository is {limit} bytes.")
        # Two uploads of one filename on this server take turns; across servers GitHub's
        # unique tag / asset names decide, and the loser compares bytes like anyone else.
        with self._lock_for(record.filename):
            return self._store(record, staged, metadata, core_metadata)

    def _store(
        self, record: FileRecord, staged: StagedFile, metadata: Mapping[str, Any], core_metadata: bytes | None
    ) -> StoreOutcome:
        client = self.admin()
        filename = record.filename
        fields = body_fields(record, metadata)
        body = render_body(fields)
        release, created = self._create_or_get_release(client, filename, body)
        existing = release.dist_asset()
        if existing is not None:
            return self._compare(client, release, existing, staged.sha256)
        uploaded_metadata: AssetInfo | None = None
        dist: AssetInfo | StoreOutcome | None = None
        try:
            if release.body != body:
                # A leftover release of a failed attempt: make its body describe these bytes.
                self._patch_body(client, release, body)
            for asset in release.assets:  # starter (half-uploaded) distribution assets
                if not asset.uploaded and not asset.is_metadata:
                    self._delete_asset(client, asset)
            # The distribution first: only the racer whose bytes GitHub keeps under the name may
            # then touch the metadata asset (a loser replaced the winner's .metadata before).
            dist = self._upload_asset(client, release, filename, staged.path, staged.size, staged.sha256)
            if isinstance(dist, AssetInfo):
                for asset in self._list_assets(client, release):
                    if asset.is_metadata and (core_metadata is None or not asset.uploaded
                                              or asset.digest != hashlib.sha256(core_metadata).hexdigest()):
                        self._delete_asset(client, asset)  # a failed earlier attempt's, not this file's
                if core_metadata is not None:
                    uploaded_metadata = self._upload_asset(
                        client, release, f"{filename}{METADATA_SUFFIX}", core_metadata, len(core_metadata),
                        hashlib.sha256(core_metadata).hexdigest(), is_metadata=True,
                    )
        except FileConflict:
            self._cleanup(client, release, None, delete_release=False)
            raise
        except BaseException:
            if isinstance(dist, AssetInfo):  # ours, but without its metadata: a failed upload leaves nothing
                with contextlib.suppress(GitHubUnavailable):
                    self._delete_asset(client, dist)
            self._cleanup(client, release, uploaded_metadata, delete_release=created)
            raise
        if isinstance(dist, StoreOutcome):  # lost a race to an identical upload elsewhere
            return dist
        # Record GitHub's name for the asset (the filename mapping). This edit also fires the
        # `release: edited` event the update_index workflow listens to, now that the asset exists.
        final = render_body({**fields, "asset": dist.name})
        try:
            self._patch_body(client, release, final)
            body = final
        except GitHubUnavailable as exc:
            log.warning("repo %r: stored %s but could not record its asset name: %s", self.config.name, filename, exc)
        assets = [dist, *([uploaded_metadata] if uploaded_metadata else [])]
        stored = ReleaseInfo.from_json({**_release_json(release), "body": body}).with_assets(assets)
        self._releases[filename] = (time.monotonic() + RELEASE_CACHE_TTL, stored)
        return StoreOutcome.CREATED

    def _create_or_get_release(self, client: GitHubClient, filename: str, body: str) -> tuple[ReleaseInfo, bool]:
        """The release for ``filename``: created now (True), or the existing one (False)."""
        repo = client.repo(self.config.full_name)
        try:
            created = repo.create_git_release(tag=filename, name=filename, message=body, make_latest="false")
            return ReleaseInfo.from_json(raw(created)), True
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, "creating a release", self.policy), 429) from None
        except GithubException as exc:
            if not _already_exists(exc):
                what = f"creating release {filename!r}"
                raise GitHubUnavailable(describe(exc, what, self.policy), exc.status) from None
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, "creating a release", self.policy)) from None
        release = self._fetch_release(client, filename)
        if release is None:
            raise GitHubUnavailable(f"GitHub says a release tagged {filename!r} exists but it cannot be read")
        # Our own POST may have been applied before a 5xx made PyGithub retry it: the body
        # (with this attempt's upload_time) tells, and then the release is ours to clean up.
        return release, release.body == body

    def _fetch_release(self, client: GitHubClient, filename: str) -> ReleaseInfo | None:
        """The published release tagged ``filename`` (one GET), or None."""
        try:
            return ReleaseInfo.from_json(raw(client.repo(self.config.full_name).get_release(filename)))
        except UnknownObjectException:
            return None
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, f"reading release {filename!r}", self.policy), 429) from None
        except GithubException as exc:
            raise GitHubUnavailable(describe(exc, f"reading release {filename!r}", self.policy), exc.status) from None
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, f"reading release {filename!r}", self.policy)) from None

    def _list_assets(self, client: GitHubClient, release: ReleaseInfo) -> list[AssetInfo]:
        response = client.request("GET", f"{release.url}/assets", params={"per_page": 100})
        check_response(response, f"listing the assets of {release.tag!r}")
        return [AssetInfo.from_json(a) for a in response.json()]

    def _compare(self, client: GitHubClient, release: ReleaseInfo, asset: AssetInfo, sha256: str) -> StoreOutcome:
        stored = asset.digest or str(release.fields.get("sha256") or "").lower()
        if not stored:
            stored = self._hash_asset(client, asset)
        if stored == sha256:
            return StoreOutcome.IDENTICAL
        raise FileConflict(f"File already exists: {release.tag!r} is stored with different content.")

    def _patch_body(self, client: GitHubClient, release: ReleaseInfo, body: str) -> None:
        response = client.request("PATCH", release.url, json={"body": body})
        check_response(response, f"updating release {release.tag!r}")

    def _delete_asset(self, client: GitHubClient, asset: AssetInfo) -> None:
        response = client.request("DELETE", asset.url)
        check_response(response, f"deleting asset {asset.name!r}", ok=(204, 404))

    def _cleanup(self, client: GitHubClient, release: ReleaseInfo, metadata: AssetInfo | None, *,
                 delete_release: bool) -> None:
        """After a failed upload: remove what this attempt left (best effort, logged)."""
        try:
            assets = self._list_assets(client, release)
            dist_uploaded = any(a.uploaded and not a.is_metadata for a in assets)
            for asset in assets:
                partial = not asset.uploaded
                ours = metadata is not None and asset.id == metadata.id and not dist_uploaded
                if partial or ours:
                    self._delete_asset(client, asset)
            if delete_release and not dist_uploaded:
                response = client.request("DELETE", release.url)
                check_response(response, f"deleting release {release.tag!r}", ok=(204, 404))
        except GitHubUnavailable as exc:
            log.warning("repo %r: could not clean up after a failed upload of %s: %s",
                        self.config.name, release.tag, exc)

    def _upload_asset(
        self,
        client: GitHubClient,
        release: ReleaseInfo,
        name: str,
        content: Path | bytes,
        size: int,
        sha256: str,
        *,
        is_metadata: bool = False,
    ) -> AssetInfo | StoreOutcome:
        """Upload one asset, streamed from ``content`` (a path) or from memory (small metadata).

        No blind retries: after any failure we look at what GitHub holds under the name. Our
        bytes there -> done; a half-uploaded ("starter") asset -> deleted, then retried;
        other bytes -> FileConflict (a different file won a race for the name).
        """
        last_error = ""
        read_timeout = self.policy.timeout + size // (1 << 20)  # one more second per MiB sent
        for attempt in range(UPLOAD_ATTEMPTS):
            if attempt:
                time.sleep(min(4.0, 0.5 * 2**attempt))
            response: requests.Response | None = None
            try:
                with contextlib.ExitStack() as stack:
                    data = content if isinstance(content, bytes) else stack.enter_context(open(content, "rb"))
                    response = client.request(
                        "POST",
                        release.upload_url,
                        retry=False,
                        params={"name": name},
                        data=data,
                        headers={"Content-Type": OCTET_STREAM},
                        timeout=(min(10, self.policy.timeout), read_timeout),
                    )
            except GitHubUnavailable as exc:
                last_error = str(exc)
            if response is not None:
                if response.status_code == 201:
                    asset = AssetInfo.from_json(response.json())
                    if asset.uploaded and asset.size == size and asset.digest in ("", sha256):
                        return asset
                    last_error = f"GitHub kept {asset.size} bytes in state {asset.state!r}"
                    self._delete_asset(client, asset)  # not our bytes: drop it and try again
                    continue
                elif _response_already_exists(response):
                    last_error = "asset name already exists"
                else:
                    status = response.status_code
                    last_error = f"GitHub answered {status}: {response_message(response) or response.reason}"
                    wait = self._retry_wait(response)
                    if wait is None and status < 500 and status not in (408, 429):
                        raise GitHubUnavailable(f"uploading {name!r} to GitHub failed: {last_error}", status)
                    if wait:
                        time.sleep(wait)
            # What does GitHub hold under this name now?
            for asset in self._list_assets(client, release):
                if asset.is_metadata != is_metadata:
                    continue
                if asset.uploaded:
                    same = (asset.digest or self._hash_asset(client, asset)) == sha256 and asset.size == size
                    if same:
                        return asset
                    if is_metadata:  # other metadata bytes: ours replace them
                        self._delete_asset(client, asset)
                        continue
                    raise FileConflict(f"File already exists: {release.tag!r} is stored with different content.")
                self._delete_asset(client, asset)  # a starter asset left by a failed upload
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

    # -- downloads ---------------------------------------------------------------------------

    def _release(self, filename: str, *, fresh: bool = False) -> ReleaseInfo | None:
        """The release of ``filename``, from the lookup cache when still valid."""
        now = time.monotonic()
        cached = self._releases.get(filename)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        release = self._fetch_release(self.admin(), filename)
        if release is None or release.dist_asset() is None:
            self._releases.pop(filename, None)
            return None
        self._releases[filename] = (now + RELEASE_CACHE_TTL, release)
        return release

    def locate(self, filename: str) -> DownloadTarget | None:
        """A 302 to GitHub's signed URL for the asset (``download = "redirect"``), or the bytes relayed.

        Relayed (a :class:`StreamedFile`, chunk by chunk, never whole in memory or on disk) with
        ``download = "stream"``, and as a fallback when GitHub serves the bytes itself instead of
        redirecting to its storage (seen on some GitHub Enterprise set-ups).
        """
        try:
            parse_dist_filename(filename)
        except InvalidName:
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

    def _stream(self, asset: AssetInfo) -> StreamedFile | None:
        response = self.admin().request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        return self._relay(response, asset)

    def _relay(self, response: requests.Response, asset: AssetInfo) -> StreamedFile | None:
        """The bytes of an open asset download as a StreamedFile (None when GitHub says 404)."""
        if response.status_code == 404:
            response.close()
            return None
        try:
            check_response(response, f"downloading asset {asset.name!r}")
        finally:
            if response.status_code != 200:
                response.close()
        length = response.headers.get("Content-Length", "")
        return StreamedFile(_chunks(response, asset, self.policy), int(length) if length.isdigit() else asset.size)

    def download_to(self, asset: AssetInfo, local: Path, sha256: str) -> LocalFile:
        """Keep a copy of an asset at ``local`` (once; checked against ``sha256`` when given)."""
        if local.is_file():
            return LocalFile(local)
        client = self.admin()
        response = client.request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        with contextlib.closing(response):
            check_response(response, f"downloading asset {asset.name!r}")
            return self._save(response, local, sha256.lower())

    def _save(self, response: requests.Response, local: Path, sha256: str, limit: int | None = None) -> LocalFile:
        """Stream ``response`` into ``local`` atomically, checking the sha256 when known."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=local.parent, prefix=".download-", suffix=".part")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise GitHubUnavailable(f"asset {local.name!r} is larger than {limit} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            if sha256 and digest.hexdigest() != sha256:
                raise GitHubUnavailable(f"asset {local.name!r} does not match its sha256 (download corrupted?)")
            os.replace(temp, local)
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, f"downloading {redact(response.url)}", self.policy)) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return LocalFile(local)

    def _hash_asset(self, client: GitHubClient, asset: AssetInfo) -> str:
        """sha256 of an asset's bytes, downloaded (only when neither GitHub nor the body says)."""
        response = client.request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        with contextlib.closing(response):
            check_response(response, f"downloading asset {asset.name!r}")
            digest = hashlib.sha256()
            for chunk in response.iter_content(_CHUNK):
                digest.update(chunk)
            return digest.hexdigest()

    def locate_metadata(self, filename: str) -> DownloadTarget | None:
        """The PEP 658 file, fetched once from the ``.metadata`` asset and kept under ROOT.

        It is small and immutable, and pip asks for it before every download: serving a local
        copy saves two GitHub calls (asset lookup + signed URL) per request.
        """
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        local = self.cache_dir / "metadata" / f"{filename}{METADATA_SUFFIX}"
        if local.is_file():
            return LocalFile(local)
        release = self._release(filename)
        asset = release.metadata_asset() if release is not None else None
        if release is None or asset is None:
            return None
        expected = asset.digest or str(release.fields.get("metadata_sha256") or "")
        client = self.admin()
        response = client.request("GET", asset.url, headers={"Accept": OCTET_STREAM}, stream=True)
        with contextlib.closing(response):
            if response.status_code == 404:
                return None
            check_response(response, f"downloading asset {asset.name!r}")
            return self._save(response, local, expected.lower(), limit=MAX_METADATA_BYTES)

    def stored_record(self, filename: str) -> FileRecord | None:
        """The record the release holds (an identical re-upload through another server answers
        with it, original upload time included)."""
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        release = self._release(filename, fresh=True)
        return record_from_release(release) if release is not None else None

    def read_description(self, filename: str) -> tuple[str, str] | None:
        """The long description kept in the release body (None if it was too long to keep there)."""
        try:
            parse_dist_filename(filename)
        except InvalidName:
            return None
        release = self._release(filename)
        return description_of(release.fields) if release is not None else None

    # -- yank ----------------------------------------------------------------------------------

    def set_yanked(self, filename: str, yanked: bool, reason: str) -> None:
        """Persist the yank state in the release body (``update_index`` reads it back)."""
        client = self.admin()
        release = self._fetch_release(client, filename)
        if release is None:
            raise FileNotFoundError(filename)
        fields = dict(release.fields)
        fields.update(yanked=yanked, yanked_reason=reason if yanked else "")
        body = render_body(fields)
        self._patch_body(client, release, body)
        self._releases.pop(filename, None)

    # -- index ---------------------------------------------------------------------------------

    def fetch_remote_index(self, known_token: str | None) -> RemoteIndex | None:
        self.admin()  # a clear error when there is no admin secret
        assert self._poller is not None
        return remote_index.fetch(self._poller, self.config, known_token, self._index_etags)

    def iter_releases(self) -> Iterator[ReleaseInfo]:
        """Every release of the repository (paginated, 100 a page), drafts included."""
        client = self.admin()
        what = f"listing the releases of {self.config.full_name}"
        try:
            for release in client.repo(self.config.full_name).get_releases():
                yield ReleaseInfo.from_json(raw(release))
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy), 429) from None
        except GithubException as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy), exc.status) from None
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy)) from None

    def list_files(self) -> Iterator[FileRecord]:
        client = self.admin()
        seen: set[str] = set()
        for release in self.iter_releases():
            record = record_from_release(release, lambda asset: self._hash_asset(client, asset))
            if record is None:
                if not release.draft:
                    log.info("release %r is not a stored package file (no uploaded asset or not a dist name): skipped",
                             release.tag)
                continue
            if record.filename in seen:  # two releases for one tag (e.g. a stray draft made public)
                continue
            seen.add(record.filename)
            yield record

    def publish_remote_index(self, data: bytes) -> None:
        remote_index.publish(self.admin(), self.config, data)


def _chunks(response: requests.Response, asset: AssetInfo, policy: ClientPolicy) -> Iterator[bytes]:
    """The body of an asset download; its ``close()`` (called by the server when the bytes are not
    wanted) closes the connection. A download that does not match GitHub's digest is cut short,
    so the client sees a broken transfer rather than wrong bytes."""
    digest = hashlib.sha256()
    try:
        for chunk in response.iter_content(_CHUNK):
            digest.update(chunk)
            yield chunk
        if asset.digest and digest.hexdigest() != asset.digest:
            raise GitHubUnavailable(f"asset {asset.name!r} does not match its sha256 (download corrupted?)")
    except requests.RequestException as exc:
        raise GitHubUnavailable(describe(exc, f"downloading {redact(response.url)}", policy)) from None
    finally:
        response.close()


def _release_json(release: ReleaseInfo) -> dict[str, Any]:
    """Enough of a release's JSON to rebuild its :class:`ReleaseInfo` (for the lookup cache)."""
    return {
        "id": release.id,
        "tag_name": release.tag,
        "name": release.name,
        "body": release.body,
        "draft": release.draft,
        "prerelease": release.prerelease,
        "url": release.url,
        "upload_url": release.upload_url,
        "created_at": release.created_at,
        "assets": [],
    }
