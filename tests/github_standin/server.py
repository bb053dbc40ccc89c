"""`GitHubStandIn`: the stand-in server (uvicorn in a daemon thread) and the test-facing Python API.

Everything is served on ONE ``127.0.0.1:PORT`` because PyGithub refuses absolute URLs leaving its base host:port
(and paths outside ``/api/...``): the API under ``/api/v3``, uploads under ``/api/uploads`` (GitHub Enterprise
layout), signed asset downloads under ``/api/_storage/<token>``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from . import shapes
from .app import StandInApp
from .faults import Fault, RecordedRequest
from .state import PERMISSION_ALIASES, PERMISSION_LEVELS, Asset, Release, World, sanitize_asset_name


class GitHubStandIn:
    """A GitHub REST stand-in for tests; start with ``GitHubStandIn.start()`` (or ``with GitHubStandIn.start()``).

    ``validate=True`` keeps every exchange and checks it against GitHub's OpenAPI description on demand
    (`schema_violations`), so end-to-end tests of a backend can assert the stand-in never answered anything
    GitHub would not. ``plus_to_dot=True`` makes asset uploads rename ``+`` to ``.`` (GitHub has been reported
    doing both), ``rate_limit`` sets the per-token primary limit.
    """

    def __init__(
        self, *, validate: bool = False, plus_to_dot: bool = False, rate_limit: int = 5000, host: str = "127.0.0.1"
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this; without it uvicorn's separate header/body writes on a pre-bound
        # socket meet the client's delayed ACK and every keep-alive request takes ~40 ms.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}"
        self.world = World()
        self.app = StandInApp(self.world, self.base_url, plus_to_dot=plus_to_dot)
        self.app.rate.limit = rate_limit
        self.app.capture_exchanges = validate
        self._validated = 0
        self._violations: list[Any] = []
        self._operations: dict[str, int] = {}
        self._validation_lock = threading.Lock()
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30, ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"github-standin-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    @classmethod
    def start(cls, *, validate: bool = False, plus_to_dot: bool = False, rate_limit: int = 5000) -> GitHubStandIn:
        """Bind a free port, start serving in a daemon thread, and return once the server accepts requests."""
        standin = cls(validate=validate, plus_to_dot=plus_to_dot, rate_limit=rate_limit)
        standin._thread.start()
        deadline = time.monotonic() + 10
        while not standin._server.started:
            if not standin._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("GitHub stand-in failed to start")
            time.sleep(0.01)
        return standin

    def stop(self) -> None:
        """Stop the server thread (idempotent); requests held by an injected ``delay`` are answered at once."""
        self.app.stopping = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> GitHubStandIn:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def api_url(self) -> str:
        """What PyGithub's ``base_url`` gets: ``http://127.0.0.1:PORT/api/v3``."""
        return self.app.urls.api

    @property
    def uploads_url(self) -> str:
        return self.app.urls.uploads

    # ------------------------------------------------------------------ setup

    def add_token(self, token: str, login: str) -> None:
        """A personal access token for ``login`` (the user is created if needed; organisations have none)."""
        with self.world.lock:
            user = self.world.user(login)
            if user.is_org:
                raise ValueError(f"{login!r} is an organisation: tokens belong to users")
            self.world.tokens[token] = user

    def add_org(self, org: str, members: dict[str, str] | None = None) -> dict[str, Any]:
        """Create organisation ``org`` (or add members to it): ``members`` maps logins to ``"admin"`` (an
        owner: admin on every repository of the organisation, may create repositories) or ``"member"`` (base
        permission read on its repositories, may create repositories and gets admin on those). Repositories are
        then made with ``create_repo(org, ...)`` or ``POST /orgs/{org}/repos``. Returns the owners' view of
        ``GET /orgs/{org}``."""
        with self.world.lock:
            found = self.world.add_org(org, dict(members or {}))
            return shapes.organization(self.app.urls, found, 0, 0, owner_view=True)

    def revoke_token(self, token: str) -> None:
        """Later requests with ``token`` get 401 "Bad credentials"."""
        with self.world.lock:
            self.world.tokens.pop(token, None)

    def create_repo(
        self,
        owner: str,
        name: str,
        private: bool = True,
        default_branch: str = "master",
        auto_init: bool = True,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Create ``owner/name`` with one initial commit (README.md) on ``default_branch`` unless ``auto_init``
        is False (an empty repository: releases then fail with 422, the first contents PUT creates the branch).
        Returns the repository as the owner sees it (full-repository JSON)."""
        repo = self.world.create_repo(owner, name, private, default_branch, auto_init, description)
        with self.world.lock:
            return shapes.full_repository(self.app.urls, repo, "admin")

    def grant(self, owner: str, repo: str, login: str, permission: str) -> None:
        """Give ``login`` a role on the repo: ``pull`` | ``triage`` | ``push`` | ``maintain`` | ``admin``
        (``read``/``write`` accepted as aliases). The owner always has admin."""
        role = PERMISSION_ALIASES.get(permission, permission)
        if role not in PERMISSION_LEVELS:
            raise ValueError(f"unknown permission {permission!r}")
        with self.world.lock:
            found = self._repo(owner, repo)
            found.collaborators[self.world.user(login).login.lower()] = role

    def ungrant(self, owner: str, repo: str, login: str) -> None:
        """Remove ``login``'s collaborator role."""
        with self.world.lock:
            self._repo(owner, repo).collaborators.pop(login.lower(), None)

    def set_file(self, owner: str, repo: str, path: str, branch: str | None, data: bytes) -> str:
        """Commit ``data`` at ``path`` on ``branch`` (default branch if None; created if missing) directly, as
        test setup; returns the file's blob sha."""
        with self.world.lock:
            found = self._repo(owner, repo)
            commit = found.commit(branch or found.default_branch, {path.strip("/"): data}, f"Set {path}", owner, "")
            return commit.tree[path.strip("/")]

    def add_fault(
        self,
        method: str,
        path_regex: str,
        status: int | None = None,
        times: int = 1,
        apply_first: bool = False,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        *,
        delay: float = 0.0,
        starter: bool = False,
    ) -> Fault:
        """Answer the next ``times`` requests matching ``method`` (``"*"`` for any) and ``path_regex``
        (``re.search`` on the full URL path, e.g. ``r"/releases/\\d+/assets$"``) with ``status``.

        Without ``body`` the answer is GitHub's JSON error shape (403/429 default to the secondary-rate-limit
        message, so add ``headers={"Retry-After": "1"}`` to make PyGithub wait 1 s instead of 60 s).
        ``apply_first=True`` performs the operation and then answers the fault.

        ``delay=SECONDS`` holds the answer back that long (without blocking other requests), to test client
        timeouts: with a ``status`` the late answer is the fault; with ``status=None`` it is the operation's own
        answer, and ``apply_first`` decides whether the operation happens before the wait (GitHub applied it,
        the client gave up waiting) or after it (a request body is then only read, and the operation made, if
        the client is still connected; otherwise the log records 499).

        ``starter=True`` (asset uploads only; status defaults to 502) stores the asset with the first half of
        the uploaded bytes in state ``"open"`` and then answers the fault: the leftover of an upload that died
        half-way, which keeps the name taken. Returns the `Fault` (its ``hits`` counts how often it fired)."""
        re.compile(path_regex)
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if starter and apply_first:
            raise ValueError("starter faults already apply part of the upload; apply_first does not combine")
        if starter and status is None:
            status = 502
        if status is None and not delay:
            raise ValueError("a fault needs a status, a delay, or both")
        fault = Fault(method, path_regex, status, times, apply_first, dict(headers or {}), body, delay=delay,
                      starter=starter)
        return self.app.faults.add(fault)

    def remove_fault(self, fault: Fault) -> None:
        """Retire one fault (others stay): for tests that run several fault scenarios at once."""
        self.app.faults.remove(fault)

    def clear_faults(self) -> None:
        self.app.faults.clear()

    def set_rate_limit(
        self, limit: int | None = None, remaining: int | None = None, reset_in: float | None = None
    ) -> None:
        """Reconfigure the primary rate limit (all identities): e.g. ``set_rate_limit(remaining=0, reset_in=2)``
        makes every API call answer 403 "API rate limit exceeded" for the next 2 seconds."""
        self.app.rate.configure(limit, remaining, reset_in)

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far (in order); clear it with ``gh.requests.clear()``."""
        return self.app.requests

    def request_count(self, method: str | None = None, path_regex: str | None = None) -> int:
        """How many recorded requests match ``method`` and ``path_regex`` (``re.search`` on the path)."""
        return sum(
            1
            for r in list(self.app.requests)
            if (method is None or r.method == method.upper()) and (path_regex is None or re.search(path_regex, r.path))
        )

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of stand-in bugs (answered as 500); tests should expect this to stay empty."""
        return self.app.internal_errors

    def releases(self, owner: str, repo: str) -> list[dict[str, Any]]:
        """All releases including drafts as release JSON, in creation order (the API lists newest first)."""
        with self.world.lock:
            found = self._repo(owner, repo)
            return [shapes.release(self.app.urls, r) for r in found.releases.values()]

    def asset_bytes(self, owner: str, repo: str, tag: str, asset_name: str) -> bytes:
        """The bytes of asset ``asset_name`` (stored name, or the name before GitHub's renaming) of the release
        tagged ``tag`` (a published release is preferred over drafts carrying the same tag). KeyError if absent."""
        with self.world.lock:
            return self._asset(owner, repo, tag, asset_name).data

    def assets(self, owner: str, repo: str, tag: str) -> list[dict[str, Any]]:
        """The release-asset JSON of every asset of the release tagged ``tag``."""
        with self.world.lock:
            release = self._release(owner, repo, tag)
            return [shapes.release_asset(self.app.urls, release.repo, release, a) for a in release.assets]

    def file_content(self, owner: str, repo: str, path: str, branch: str | None = None) -> bytes | None:
        """The file's bytes at the head of ``branch`` (default branch if None); None if absent."""
        with self.world.lock:
            found = self._repo(owner, repo)
            head = found.branch_head(branch or found.default_branch)
            sha = head.tree.get(path.strip("/")) if head is not None else None
            return None if sha is None else found.blobs[sha]

    def branch_sha(self, owner: str, repo: str, branch: str | None = None) -> str | None:
        """The commit sha at the head of ``branch`` (default branch if None)."""
        with self.world.lock:
            found = self._repo(owner, repo)
            head = found.branch_head(branch or found.default_branch)
            return None if head is None else head.sha

    def history(self, owner: str, repo: str, branch: str | None = None) -> list[tuple[str, str]]:
        """``(sha, message)`` of every commit on ``branch`` (default branch if None), newest first, following
        first parents: lets a test count commits (e.g. that a retried PUT made exactly one)."""
        with self.world.lock:
            found = self._repo(owner, repo)
            commit = found.branch_head(branch or found.default_branch)
            out = []
            while commit is not None:
                out.append((commit.sha, commit.message))
                commit = found.commits.get(commit.parents[0]) if commit.parents else None
            return out

    @property
    def schema_violations(self) -> list[Any]:
        """With ``validate=True``: every answer that does not conform to GitHub's OpenAPI description (checked
        lazily here, so serving stays fast). Each item is a `validation.Violation`."""
        self._validate_pending()
        return list(self._violations)

    @property
    def validated_operations(self) -> dict[str, int]:
        """With ``validate=True``: how many exchanges were validated per GitHub operationId, so a test can show
        that what it relies on was actually checked (exchanges outside the subset are not counted)."""
        self._validate_pending()
        return dict(self._operations)

    def _validate_pending(self) -> None:
        from .validation import check_exchange  # imported lazily: openapi-core takes ~1 s to load the spec

        with self._validation_lock:
            pending = self.app.exchanges[self._validated :]
            self._validated += len(pending)
            for exchange in pending:
                result = check_exchange(exchange)
                self._violations.extend(result.violations)
                if result.covered and result.operation:
                    self._operations[result.operation] = self._operations.get(result.operation, 0) + 1

    # ------------------------------------------------------------------ helpers

    def _repo(self, owner: str, name: str) -> Any:
        found = self.world.find_repo(owner, name)
        if found is None:
            raise KeyError(f"no repository {owner}/{name}")
        return found

    def _release(self, owner: str, repo: str, tag: str) -> Release:
        found = self._repo(owner, repo)
        candidates = sorted((r for r in found.releases.values() if r.tag_name == tag), key=lambda r: (r.draft, -r.id))
        if not candidates:
            raise KeyError(f"no release tagged {tag!r} in {owner}/{repo}")
        return candidates[0]

    def _asset(self, owner: str, repo: str, tag: str, asset_name: str) -> Asset:
        release = self._release(owner, repo, tag)
        for wanted in (asset_name, sanitize_asset_name(asset_name, self.app.plus_to_dot)):
            for asset in release.assets:
                if asset.name == wanted:
                    return asset
        raise KeyError(f"no asset {asset_name!r} in release {tag!r} of {owner}/{repo}")
