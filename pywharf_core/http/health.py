"""Liveness and readiness probes: no storage I/O, and nothing for anonymous callers to learn.

``/readyz`` answers anyone with ``{"ready": bool}`` and 200/503, all a load balancer needs. Why
a server is not ready, or ready with warnings, names repositories and their state: that goes
only to an administrator (before issue 13 it went to anyone, and told anyone that an open
``POST /initialize/`` was waiting). An administrator is a caller presenting

- ``Authorization: Bearer <--initialize_token>``: the details of every repository; or
- HTTP basic auth with a repository's name and its admin secret (``--admin_secret``): the
  details of that repository.

Both are compared in constant time. Wrong credentials are answered like anonymous ones (the
probe stays usable by a load balancer sending none), without saying they were wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pywharf_core.http.auth import basic_credentials
from pywharf_core.http.web.ratelimit import FailureLimiter
from pywharf_core.http.web.secret_check import auth_limiter, client_address, initialize_limiter, limiter_key
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import ServerState
from pywharf_core.storage.shared_secrets import secret_matches


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. No auth, no I/O."""
    return PlainTextResponse("ok")


def _administered(request: Request, state: ServerState) -> list[str] | None:
    """Names of the repositories the caller administers (every one for the initialize token),
    or None for a caller who is no administrator.

    A wrong token or admin secret counts against the same failure budget as at ``/initialize/``
    (the token) or basic auth (a repository's secrets): else this probe would be an unlimited
    oracle for guessing them. A caller out of budget is answered as anonymous, unchecked."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return list(state.repos) if _checked(initialize_limiter(request), client_address(request),
                                              token.strip(), state.settings.initialize_token) else None
    credentials = basic_credentials(request)
    if credentials is None:
        return None
    name, secret = credentials
    repo = state.repos.get(name)
    admin_secret = repo.backend.context.admin_secret if repo is not None else None
    if not _checked(auth_limiter(request), limiter_key(request, name), secret, admin_secret):
        return None
    return [name]


def _checked(limiter: FailureLimiter, key: str, given: str, expected: str | None) -> bool:
    """``given`` matches ``expected``, within ``limiter``'s budget for ``key`` (a miss uses it)."""
    if limiter.retry_after(key) > 0:
        return False
    if secret_matches(given, expected):
        return True
    limiter.record_failure(key)
    return False


def _warnings(repos: Iterable[tuple[str, PkgRepo]]) -> list[str]:
    """What an administrator is told about ``repos``: never the error itself (it is logged)."""
    waiting, warnings = [], []
    for name, repo in repos:
        if not repo.index_loaded:
            waiting.append(name)  # nothing to serve yet
        if repo.last_sync_error:
            warnings.append(f"{name}: serving the last good index; sync failing (see the server log)")
        elif repo.last_sync is None and repo.has_local_copy:
            warnings.append(f"{name}: serving the last good index from ROOT; not synced since start")
    return [f"index not synced yet: {', '.join(waiting)}", *warnings] if waiting else warnings


async def readyz(request: Request) -> Response:
    """Readiness: configured, and every repository serves an index (synced, or its last good copy).

    A repository whose sync fails, or that has not synced since start but serves the copy under
    ROOT, is ready: a load balancer must not drop a server that answers correctly from its last
    good index. Administrators also get ``"warnings"`` (see the module docstring).
    """
    state: ServerState = request.app.state.pywharf
    repos = state.repos
    ready = state.configured and all(repo.index_loaded for repo in repos.values())
    body: dict[str, object] = {"ready": ready}
    administered = _administered(request, state)
    if administered is not None:
        if not state.configured:
            body["warnings"] = ["not configured: waiting for POST /initialize/"]
        else:
            body["warnings"] = _warnings((name, repos[name]) for name in administered if name in repos)
    return JSONResponse(body, status_code=200 if ready else 503)
