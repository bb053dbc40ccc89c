"""Checking a repository name and a secret: the one path shared by basic auth and ``/login/``.

Why one path:

- **One failure budget.** Both are oracles for guessing a secret, so failures count against
  one limiter keyed by client address *and* repository name: guessing through either path
  uses the same budget, and a client guessing at one repository does not lock out others, nor
  other clients of that repository. A limited client gets 429 without its guess being checked
  (even a right one), so the 429 itself reveals nothing.
- **No timing oracle for repository names.** An unknown name does the same work as a known
  name with a wrong secret: the same hash and cache lookup, the same hop to a worker thread and
  the same constant-time comparison (against a random dummy pair), and callers answer the same
  401 text.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from pywharf_core.http.app_singletons import app_singleton
from pywharf_core.http.client_address import client_address
from pywharf_core.http.web.ratelimit import FailureLimiter
from pywharf_core.http.web.session import current_session
from pywharf_core.model.api_tokens import TOKEN_USERNAME, parse_token
from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import validate_repo_name
from pywharf_core.service.grants import NO_GRANT, Grant
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import INITIALIZE_FAILURE_WINDOW_SECONDS, ServerState
from pywharf_core.storage.backend import Permission
from pywharf_core.storage.shared_secrets import shared_secret_permission

log = logging.getLogger(__name__)

__all__ = ["check_secret", "client_address", "loggable_name", "repo_name_for"]

# Stand-ins compared against when the repository name is unknown (never equal to a real secret).
_DUMMY_READ = secrets.token_urlsafe(24)
_DUMMY_WRITE = secrets.token_urlsafe(24)
# The limiter key's repository part is capped: the name comes from the client.
_MAX_NAME_CHARS = 100
_NO_VERDICTS: dict[bytes, object] = {}  # the verdict cache of a repository that does not exist


class TooManyFailures(HTTPException):
    """429: this client used up its failure budget for this repository name."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            f"Too many failed authentications for repository {loggable_name(name)} from your "
            f"address: retry in {self.retry_after} seconds.",
            headers={"Retry-After": str(self.retry_after)},
        )


AUTH_LIMITER = "pywharf_auth_limiter"  # the app.state attribute holding it
MIN_WORKER_SHARE = 3  # failures each worker process allows at least (see worker_share)


def auth_limiter(conn: HTTPConnection) -> FailureLimiter:
    """The app's failure limiter, built on first use from the server settings.

    Each worker process of ``--workers N`` counts its own failures, so each allows its share of
    ``--auth_failure_limit`` (:func:`worker_share`): a guesser spread over every worker gets about
    the limit per window (at most 3 per worker), not N times it."""
    return app_singleton(conn, AUTH_LIMITER, lambda settings: FailureLimiter(
        limit=_worker_share(conn, settings.auth_failure_limit), window=float(settings.auth_failure_window)))


def initialize_limiter(conn: HTTPConnection) -> FailureLimiter:
    """The app's limiter of wrong ``--initialize_token`` guesses (``/initialize/``, ``/readyz``),
    keyed by client address; a worker's share of the limit, like :func:`auth_limiter`."""
    return app_singleton(conn, "initialize_limiter", lambda settings: FailureLimiter(
        limit=_worker_share(conn, settings.initialize_max_failures), window=INITIALIZE_FAILURE_WINDOW_SECONDS))


def _worker_share(conn: HTTPConnection, limit: int) -> int:
    peers = conn.app.state.pywharf.peers
    return worker_share(limit, peers.count if peers is not None else 1)


def worker_share(limit: int, workers: int) -> int:
    """What one of ``workers`` processes allows of a failure ``limit``: its share rounded up, but
    at least :data:`MIN_WORKER_SHARE` (or the whole limit when smaller). With a worker per CPU
    the share alone would be 1 on a big machine: one mistyped secret would lock a client (or
    everyone behind one proxy address) out of that worker. A guesser then gets at most
    ``workers * MIN_WORKER_SHARE`` tries per window: nothing against a 12+ character secret."""
    return max(math.ceil(limit / workers), min(limit, MIN_WORKER_SHARE))


def limiter_key(conn: HTTPConnection, name: str) -> str:
    return failure_key(client_address(conn), name)


def failure_key(address: str, name: str) -> str:
    """What the failure budget is counted per: a client address and a repository name."""
    return f"{address}\x00{name[:_MAX_NAME_CHARS]}"


def _unknown_repo_permission(secret: str) -> Permission:
    """What :meth:`PkgRepo.grant_for` does for a wrong secret, against a dummy secret pair."""
    hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
    return shared_secret_permission(secret, _DUMMY_READ, _DUMMY_WRITE)


def loggable_name(name: str) -> str:
    """A client-sent repository name as a log shows it: a valid name as it is; a token pasted
    into the username field by its id only; anything else by its length (it may be a secret)."""
    parsed = parse_token(name)
    if parsed is not None:
        return f"<token {parsed.repo}-{parsed.token_id}>"
    try:
        return repr(validate_repo_name(name))
    except InvalidName:
        return f"<not a repository name, {len(name)} characters>"


def repo_name_for(name: str, secret: str) -> str:
    """The repository credentials name: the username, or for ``__token__`` the repository the
    token names (tokens say where they belong: pywharf_core.model.api_tokens)."""
    if name == TOKEN_USERNAME:
        parsed = parse_token(secret)
        return parsed.repo if parsed is not None else name
    return name


async def check_secret(
    conn: HTTPConnection, name: str, secret: str, *, limited: bool = True
) -> tuple[PkgRepo | None, Grant]:
    """The repository and what ``secret`` grants on it; ``(None, NO_GRANT)`` for an unknown name.

    ``name`` is a repository name, or ``__token__`` with an API token as ``secret``.

    With ``limited`` (a secret typed or sent by the client, not one from a signed session
    cookie) the failure budget applies: raises :class:`TooManyFailures` when it is used up, and
    a wrong secret uses it. An empty secret is no guess: refused without counting.
    """
    if not secret:
        return None, NO_GRANT
    name = repo_name_for(name, secret)
    limiter = auth_limiter(conn) if limited else None
    key = limiter_key(conn, name)
    if limiter is not None:
        wait = limiter.retry_after(key)
        if wait > 0:
            raise TooManyFailures(name, wait)
    state: ServerState = conn.app.state.pywharf
    repo = state.repos.get(name)
    if repo is None:
        _NO_VERDICTS.get(hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())  # as cached_grant
        grant = Grant(await anyio.to_thread.run_sync(_unknown_repo_permission, secret))
    else:
        cached = repo.cached_grant(secret)
        grant = cached if cached is not None else await anyio.to_thread.run_sync(repo.grant_for, secret)
    if grant.permission is Permission.NONE:
        if limiter is not None:
            limiter.record_failure(key)
        log.info("failed authentication for repository %s from %s", loggable_name(name), client_address(conn))
        return None, NO_GRANT
    return repo, grant


def write_secret_refusal(grant: Grant, needed_for: str) -> str | None:
    """Why a session whose secret is not the write secret may not do ``needed_for`` (e.g.
    "Managing API tokens"), or None when it may: the UI's write-session pages all say it so."""
    if grant.manages_tokens:
        return None
    what = "an API token" if grant.is_token else "the read secret"
    return (f"{needed_for} takes the repository's write secret: you are logged in with {what}. "
            "Log out, then log in with the write secret.")


async def session_grant(request: Request, login_url: str) -> tuple[PkgRepo, Grant] | Response:
    """The browser session's repository and what its secret grants there, or the redirect to
    ``login_url`` (no session, or a secret no longer valid). The cookie is signed and its secret
    was checked at login: no guess to count."""
    session = current_session(request)
    if session is not None:
        repo, grant = await check_secret(request, session.repo, session.secret, limited=False)
        if repo is not None and grant.permission is not Permission.NONE:
            return repo, grant
    return RedirectResponse(login_url, status_code=303, headers={"Cache-Control": "no-store"})
