"""The browser UI: login/logout with a session cookie, package pages, the tokens and audit pages.

Mounted by :func:`pywharf_core.http.app.create_app` through two hooks only: :func:`web_routes` adds
the pages, and :func:`session_credentials` lets the app's auth function accept the session
cookie (for reads) when a request has no basic-auth header. See ``session.py`` for the cookie's
format and key handling. ``secret_check.py`` (with ``ratelimit.py``) is the one secret check
that basic auth and the login form share (one failure budget, equal work for unknown names).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from pywharf_core.http.web.routes import Authorize, WebUI
from pywharf_core.http.web.session import session_credentials

__all__ = ["session_credentials", "web_routes"]


def web_routes(authorize: Authorize) -> list[BaseRoute]:
    """The UI's routes; ``authorize`` is the app's auth function (so pages check access exactly
    as the API does)."""
    return WebUI(authorize).routes()
