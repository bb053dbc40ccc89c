"""Files on a branch of the repository, through the contents API: the adapter's documents.

The remote index (``index_filename``), the index log entries and the identity claims are files
on ``branch``; a file's version token is its git blob sha, which is also what GitHub's
compare-and-swap takes: ``PUT /contents`` without ``sha`` creates (422 when the file exists),
with ``sha`` replaces exactly that version (409 otherwise). Each write is one commit.

Why the answers after a failed write are looked at, not trusted: GitHub may apply a PUT and
then answer 5xx (the client retries it and meets its own commit: 409 / 422), and two commits to
*different* files of one branch at the same moment can give a 409 too (the branch head moved).
So a 409 / 422 is followed by a read: our bytes there after a PUT the client had retried (it
may have been applied) -> success, no second commit; the file at the version we expected -> the
branch moved under us, the write is tried again; anything else -> :class:`VersionConflict`.
(The same bytes created by someone else are a conflict: an identity claim must know whether
this call made it.)

Reading the index every ``sync_index_interval`` is a conditional GET (the ETag of the last
answer as ``If-None-Match``): GitHub's 304 for an unchanged file is free of the rate limit.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

import requests
from github import GithubException, UnknownObjectException
from github.Repository import Repository

from pywharf_backends.github.client import GitHubClient, GitHubUnavailable, check_response, describe
from pywharf_backends.github.config import GitHubConfig
from pywharf_core.storage.api import VersionConflict

log = logging.getLogger(__name__)

BRANCH_RACE_ATTEMPTS = 4  # writes retried when only the branch head moved (not the file)
PUT_FILE_ATTEMPTS = 6  # put_file (commands): conflicting attempts before giving up


def git_blob_sha(data: bytes) -> str:
    """The git blob id of ``data`` (what the contents API calls ``sha``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class FileState:
    sha: str
    etag: str
    data: bytes | None  # None: over 1 MB, GitHub sent no content (read_blob gets it)


NOT_MODIFIED = FileState("", "", None)  # a 304: the file is still at the version the ETag named


def _contents(config: GitHubConfig, path: str) -> str:
    return f"repos/{config.owner}/{config.repo}/contents/{quote(path)}"


def get_file(client: GitHubClient, config: GitHubConfig, path: str, branch: str, etag: str = "") -> FileState | None:
    """``path`` on ``branch`` (None when absent; :data:`NOT_MODIFIED` when ``etag`` still holds)."""
    headers = {"If-None-Match": etag} if etag else {}
    response = client.request("GET", _contents(config, path), params={"ref": branch}, headers=headers)
    if response.status_code == 304:
        return NOT_MODIFIED
    if response.status_code == 404:
        return None
    check_response(response, f"reading {path} on {config.full_name}@{branch}")
    document = response.json()
    if not isinstance(document, dict) or document.get("type", "file") != "file":
        raise GitHubUnavailable(f"{path} on {config.full_name}@{branch} is not a file")
    content = document.get("content") or ""
    data = None
    if document.get("encoding") == "base64" and (content or not document.get("size")):
        data = base64.b64decode(content)
    return FileState(str(document["sha"]), response.headers.get("ETag", ""), data)


def read_blob(client: GitHubClient, config: GitHubConfig, state: FileState, path: str) -> bytes:
    """The bytes of a file read by :func:`get_file`, checked against its blob sha.

    Over 1 MB the contents API sends no content (``"encoding": "none"``): the blob API does.
    """
    data = state.data
    if data is None:
        response = client.request("GET", f"repos/{config.owner}/{config.repo}/git/blobs/{state.sha}")
        check_response(response, f"reading the blob of {path}")
        blob = response.json()
        if blob.get("encoding") != "base64":
            raise GitHubUnavailable(f"unexpected blob encoding {blob.get('encoding')!r} for {path}")
        data = base64.b64decode(blob.get("content") or "")
    if git_blob_sha(data) != state.sha:
        raise GitHubUnavailable(f"reading {path} on {config.full_name}: the content does not match its blob sha")
    return data


def check_visible(client: GitHubClient, config: GitHubConfig, what: str) -> None:
    """A missing file (or branch) is an empty repository, but a token that lost access to a
    private repository gets 404 too: only trust "absent" while the repository is visible."""
    check_response(client.request("GET", f"repos/{config.owner}/{config.repo}"),
                   f"checking access to {config.full_name} ({what} not found)")


def write_file(client: GitHubClient, config: GitHubConfig, path: str, data: bytes, expected: str | None,
               branch: str, message: str) -> str:
    """Compare-and-swap ``path`` to ``data`` (``expected``: its blob sha, None: only if absent).

    Returns the new blob sha; raises VersionConflict (see the module docstring for how a 409 /
    422 is told apart from our own applied commit and from a moved branch head). No commit is
    made when the file already holds ``data``.
    """
    wanted = git_blob_sha(data)
    if expected == wanted:
        return wanted
    what = f"committing {path} to {config.full_name}@{branch}"
    body = {"message": message, "content": base64.b64encode(data).decode("ascii"), "branch": branch}
    if expected is not None:
        body["sha"] = expected
    maybe_applied = False
    for attempt in range(BRANCH_RACE_ATTEMPTS):
        response = client.request("PUT", _contents(config, path), json=body)
        if response.status_code in (200, 201):
            return str(response.json()["content"]["sha"])
        if response.status_code == 404 and attempt == 0 and ensure_branch(client, config, branch):
            continue  # the branch did not exist yet (a repository init_pkg_repo did not prepare)
        if response.status_code not in (409, 422):
            check_response(response, what)
        maybe_applied = maybe_applied or _was_retried(response)
        current = get_file(client, config, path, branch)
        if current is not None and current.sha == wanted and (maybe_applied or expected is not None):
            return wanted  # ours (applied before the retried PUT), or a replacement by the same bytes
        if (current.sha if current is not None else None) != expected:
            raise VersionConflict(f"{path} on {config.full_name}@{branch} changed (expected {expected})")
        if response.status_code == 422 and expected is None:
            check_response(response, what)  # absent, yet refused: not a race, say what GitHub said
        log.info("%s: the branch moved meanwhile (%d); trying again", what, response.status_code)
        time.sleep(min(2.0, 0.25 * 2**attempt))
    raise GitHubUnavailable(f"{what}: gave up after {BRANCH_RACE_ATTEMPTS} attempts (the branch keeps moving)")


def _was_retried(response: requests.Response) -> bool:
    """Whether the client sent this request more than once (urllib3 keeps the history of its retries)."""
    retries = getattr(response.raw, "retries", None)
    return bool(getattr(retries, "history", ()))


def delete_file(client: GitHubClient, config: GitHubConfig, path: str, branch: str, message: str) -> None:
    """Remove ``path`` (no error when absent; a file someone else replaced meanwhile is left)."""
    for attempt in range(BRANCH_RACE_ATTEMPTS):
        current = get_file(client, config, path, branch)
        if current is None:
            return
        response = client.request("DELETE", _contents(config, path),
                                  json={"message": message, "sha": current.sha, "branch": branch})
        if response.status_code in (200, 404):
            return
        if response.status_code != 409:
            check_response(response, f"deleting {path} on {config.full_name}@{branch}")
        again = get_file(client, config, path, branch)
        if again is None or again.sha != current.sha:
            return  # gone, or replaced by another writer: theirs now
        time.sleep(min(2.0, 0.25 * 2**attempt))


def ensure_branch(client: GitHubClient, config: GitHubConfig, branch: str, repo: Repository | None = None) -> bool:
    """Create ``branch`` from the default branch's head if it is missing; False if the repo is empty."""
    repo = repo or client.repo(config.full_name)
    try:
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
    except GithubException as exc:
        raise GitHubUnavailable(describe(exc, f"creating branch {branch} of {config.full_name}", client.policy),
                                exc.status) from None
    except requests.RequestException as exc:
        raise GitHubUnavailable(describe(exc, f"creating branch {branch} of {config.full_name}", client.policy)) \
            from None
    return True


def put_file(client: GitHubClient, config: GitHubConfig, path: str, data: bytes, branch: str, message: str) -> bool:
    """Make ``path`` on ``branch`` hold ``data`` whatever it holds now (commands: workflow, pages).

    At most one commit; False when it already held ``data``. An empty repository gets its
    first commit (which creates the default branch), then ``branch`` is made from it.
    """
    wanted = git_blob_sha(data)
    for _ in range(PUT_FILE_ATTEMPTS):
        current = get_file(client, config, path, branch)
        if current is not None and current.sha == wanted:
            return False
        if current is None and not ensure_branch(client, config, branch):
            repo = client.repo(config.full_name)
            try:
                repo.create_file(path, message, data)  # an empty repository: this makes the first commit
            except GithubException as exc:
                raise GitHubUnavailable(describe(exc, f"committing {path}", client.policy), exc.status) from None
            ensure_branch(client, config, branch, repo)
            return True
        try:
            write_file(client, config, path, data, current.sha if current is not None else None, branch, message)
            return True
        except VersionConflict:
            continue
    raise GitHubUnavailable(f"committing {path} to {config.full_name}@{branch}: gave up after "
                            f"{PUT_FILE_ATTEMPTS} conflicting attempts")
