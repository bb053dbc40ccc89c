"""Refuse state-changing requests that a browser marks as coming from another site.

Why: browsers remember basic-auth credentials typed into their prompt and send them again on
*any* request to this host, including a form that another site posts here. A page elsewhere
could thus make a logged-in maintainer's browser upload, yank or re-initialise. Browsers say
where a request comes from: ``Sec-Fetch-Site`` (``same-origin``, ``same-site``,
``cross-site`` or ``none`` for a typed URL) and ``Origin`` on every non-GET request. Package
tools (twine, uv, poetry, pdm, hatch, flit, pip) send neither header, so they are untouched.

One ASGI middleware for every unsafe method, so a write endpoint added later is covered by
construction. Only ``same-origin`` and ``none`` pass: ``same-site`` is refused too, since a
sibling subdomain is another party. An ``Origin`` must name this server: the ``Host`` the
request was sent to, or the ``X-Forwarded-Host`` a reverse proxy set (a cross-site page cannot
add that header without a CORS preflight, which this server never grants).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pywharf_core.http.reason_phrase import set_reason_phrase

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSED_MESSAGE = "Cross-site request refused: writes must come from this site or a package tool."


def _authority(host: str, scheme: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``Host``-style value, with the scheme's default port filled in."""
    try:
        parts = urlsplit(f"{scheme}://{host.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def is_same_origin(origin: str, hosts: list[str]) -> bool:
    """Whether ``Origin`` names one of ``hosts`` (``Host`` / ``X-Forwarded-Host`` values).

    The origin's scheme decides its default port; the scheme itself is not compared, since a
    TLS-terminating proxy forwards https requests as http."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False  # "null" (sandboxed frames, opaque origins) and anything unparsable
    wanted = (parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[parts.scheme])
    return any(_authority(host, parts.scheme) == wanted for host in hosts if host)


def cross_site_reason(method: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why an unsafe request is cross-site (a short phrase for the log), or None to let it in.

    ``headers`` are the raw ASGI pairs; every copy of a repeated header must pass."""
    if method in SAFE_METHODS:
        return None
    hosts = [value.decode("latin-1") for key, value in headers if key == b"host"]
    for key, value in headers:
        if key == b"x-forwarded-host":
            hosts += value.decode("latin-1").split(",")
    for key, raw in headers:
        value = raw.decode("latin-1")
        if key == b"sec-fetch-site" and value.strip().lower() not in ALLOWED_FETCH_SITES:
            return f"Sec-Fetch-Site: {value[:40]}"
        if key == b"origin" and not is_same_origin(value, hosts):
            return f"Origin: {value[:100]}"
    return None


class CrossSiteWriteGuard:
    """ASGI middleware: 403 for any unsafe method a browser marks as cross-site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_site_reason(scope["method"], scope["headers"])
            if reason is not None:
                log.warning("refused cross-site %s %s (%s)", scope["method"], scope.get("path", ""), reason)
                set_reason_phrase(403, REFUSED_MESSAGE)
                await PlainTextResponse(REFUSED_MESSAGE, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
