"""The remote index: ``index_filename`` on ``branch`` of the repository, via the contents API.

Reading (every ``sync_index_interval`` seconds, on every server) is a conditional GET: the
ETag of the last answer goes out as ``If-None-Match``, and GitHub's 304 for an unchanged file
is free (it does not count against the rate limit) and costs no parsing. The version token the
core keeps is ``<blob sha> <etag>``, so a restarted server still sends its ETag.

Writing (``update_index``) is one commit through ``PUT /contents`` carrying the blob sha it
replaces. GitHub answers 409 when someone committed in between (or a 5xx'd PUT that had been
applied is retried by PyGithub); we then read the file again and retry, and stop early when
the file already holds exactly our bytes, so no empty commit is ever made.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from urllib.parse import quote

from github import GithubException, RateLimitExceededExceedsMaxWait, UnknownObjectException
from github.Repository import Repository

from pywharf_backends.github.client import GitHubClient, GitHubUnavailable, check_response, describe
from pywharf_backends.github.config import GitHubConfig
from pywharf_core.storage.backend import RemoteIndex

log = logging.getLogger(__name__)

ABSENT = "absent"  # token of "no index file yet" (a new, empty package repository)
PUBLISH_ATTEMPTS = 6
COMMIT_MESSAGE = "pywharf update_index"


def git_blob_sha(data: bytes) -> str:
    """The git blob id of ``data`` (what the contents API calls ``sha``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _contents_path(config: GitHubConfig) -> str:
    return f"repos/{config.owner}/{config.repo}/contents/{quote(config.index_filename)}"


def _split_token(token: str | None) -> tuple[str, str]:
    if not token or token == ABSENT:
        return "", ""
    sha, _, etag = token.partition(" ")
    return sha, etag


def fetch(client: GitHubClient, config: GitHubConfig, known_token: str | None,
          etags: dict[str, str]) -> RemoteIndex | None:
    """The remote index, or None when unchanged since ``known_token``.

    ``etags`` maps a blob sha to the newest ETag seen for it (GitHub may change the ETag of an
    unchanged file, e.g. when its JSON gains a field), so later polls can still get a 304.
    """
    known_sha, known_etag = _split_token(known_token)
    etag = etags.get(known_sha, known_etag)
    headers = {"If-None-Match": etag} if etag else {}
    what = f"reading {config.index_filename} on {config.full_name}@{config.branch}"
    response = client.request("GET", _contents_path(config), params={"ref": config.branch}, headers=headers)
    if response.status_code == 304:
        return None
    if response.status_code == 404:
        # A missing file (or branch) is an empty repository, but a token that lost access to a
        # private repository gets 404 too: only trust "absent" while the repository is visible.
        visible = client.request("GET", f"repos/{config.owner}/{config.repo}")
        check_response(visible, f"checking access to {config.full_name} (index not found)")
        return None if known_token == ABSENT else RemoteIndex(ABSENT, None)
    check_response(response, what)
    document = response.json()
    if not isinstance(document, dict) or document.get("type", "file") != "file":
        raise GitHubUnavailable(f"{config.index_filename} on {config.full_name} is not a file")
    sha = str(document["sha"])
    new_etag = response.headers.get("ETag", "")
    if sha == known_sha:
        if new_etag:
            etags[sha] = new_etag
        return None
    data = _decode(client, config, document)
    if git_blob_sha(data) != sha:
        raise GitHubUnavailable(f"{what}: the content does not match its blob sha {sha}")
    if new_etag:
        etags[sha] = new_etag
    return RemoteIndex(f"{sha} {new_etag}".strip(), data)


def _decode(client: GitHubClient, config: GitHubConfig, document: dict) -> bytes:
    content = document.get("content") or ""
    if document.get("encoding") == "base64" and (content or not document.get("size")):
        return base64.b64decode(content)
    # Over 1 MB the contents API sends no content ("encoding": "none"): read the blob instead.
    response = client.request("GET", f"repos/{config.owner}/{config.repo}/git/blobs/{document['sha']}")
    check_response(response, f"reading the blob of {config.index_filename}")
    blob = response.json()
    if blob.get("encoding") != "base64":
        raise GitHubUnavailable(f"unexpected blob encoding {blob.get('encoding')!r} for {config.index_filename}")
    return base64.b64decode(blob.get("content") or "")


def current_sha(client: GitHubClient, config: GitHubConfig, path: str, branch: str) -> str | None:
    """Blob sha of ``path`` on ``branch``; None when the file (or the branch) does not exist."""
    response = client.request("GET", f"repos/{config.owner}/{config.repo}/contents/{quote(path)}",
                              params={"ref": branch})
    if response.status_code == 404:
        return None
    check_response(response, f"reading {path} on {config.full_name}@{branch}")
    document = response.json()
    return str(document["sha"]) if isinstance(document, dict) else None


def ensure_branch(repo: Repository, branch: str) -> bool:
    """Create ``branch`` from the default branch's head if it is missing; False if the repo is empty."""
    try:
        repo.get_branch(branch)
        return True
    except UnknownObjectException:
        pass
    default = repo.default_branch  # one GET /repos (the lazy repo completes here)
    try:
        head = repo.get_branch(default).commit.sha
    except UnknownObjectException:
        return False  # an empty repository: the first commit creates the branch
    try:
        repo.create_git_ref(f"refs/heads/{branch}", head)
    except GithubException as exc:
        if exc.status != 422:  # 422: created meanwhile by someone else
            raise
    return True


def put_file(client: GitHubClient, config: GitHubConfig, path: str, data: bytes, branch: str, message: str) -> bool:
    """Make ``path`` on ``branch`` hold ``data`` in at most one commit; False if it already did.

    Retries GitHub's 409 (stale sha / concurrent commit) and 422 (file appeared meanwhile) with
    a fresh sha.
    """
    repo = client.repo(config.full_name)
    wanted = git_blob_sha(data)
    what = f"committing {path} to {config.full_name}@{branch}"
    last = ""
    for attempt in range(PUBLISH_ATTEMPTS):
        if attempt:
            time.sleep(min(5.0, 0.25 * 2**attempt))
        sha = current_sha(client, config, path, branch)
        if sha == wanted:
            return attempt > 0  # already there (maybe our own applied-then-failed PUT)
        try:
            if sha is None:
                if not ensure_branch(repo, branch):
                    repo.create_file(path, message, data)  # empty repo: this makes the first commit
                    ensure_branch(repo, branch)
                    continue
                repo.create_file(path, message, data, branch=branch)
            else:
                repo.update_file(path, message, data, sha, branch=branch)
            return True
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, what, client.policy), 429) from None
        except GithubException as exc:
            last = describe(exc, what, client.policy)
            if exc.status in (409, 422):
                log.info("%s: %s; retrying with a fresh sha", what, last)
                continue
            raise GitHubUnavailable(last, exc.status) from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise GitHubUnavailable(describe(exc, what, client.policy)) from None
    raise GitHubUnavailable(f"{what}: gave up after {PUBLISH_ATTEMPTS} conflicting attempts ({last})")


def publish(client: GitHubClient, config: GitHubConfig, data: bytes) -> None:
    changed = put_file(client, config, config.index_filename, data, config.branch, COMMIT_MESSAGE)
    if not changed:
        log.info("%s on %s@%s is already up to date", config.index_filename, config.full_name, config.branch)
