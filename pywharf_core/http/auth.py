"""Who a request is: HTTP basic auth (repository name + secret) or the browser UI's session.

Read endpoints also accept the session cookie (``pywharf_core.http.web``) when no basic auth is
sent; write endpoints take basic auth only, so no write can ride on a cookie.
"""

from __future__ import annotations

import base64
import binascii

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request

from pywharf_core.http.web import session_credentials
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import ServerState
from pywharf_core.storage.backend import Permission


class Unauthorized(HTTPException):
    def __init__(self, detail: str = "Authentication required: use the repo name and its secret.") -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Basic realm="pywharf"'})


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


async def authorize(request: Request, needed: Permission) -> PkgRepo:
    """The repository the request's credentials grant ``needed`` on, or 401/403."""
    credentials = basic_credentials(request)
    if credentials is None and needed is Permission.READ:
        # A browser session reads only: no upload or yank can ride on a cookie (no CSRF there).
        credentials = session_credentials(request)
    if credentials is None:
        raise Unauthorized()
    name, secret = credentials
    state: ServerState = request.app.state.pywharf
    repo = state.repos.get(name)
    if repo is None or not secret:
        raise Unauthorized("Invalid repository name or secret.")
    permission = repo.cached_permission(secret)
    if permission is None:
        permission = await anyio.to_thread.run_sync(repo.authenticate, secret)
    if permission is Permission.NONE:
        raise Unauthorized("Invalid repository name or secret.")
    if permission < needed:
        raise HTTPException(403, "This secret may read but not upload: use the write secret.")
    return repo
