"""``X-Content-Type-Options: nosniff`` and frame protection on every response.

Downloads, error messages and simple pages are served with the content types we choose, and
no page of ours is meant to be framed: ``nosniff`` stops a browser from reinterpreting an
uploaded file (or an error that echoes a name) as HTML or script, and ``X-Frame-Options: DENY``
plus CSP ``frame-ancestors 'none'`` stop clickjacking of the login form and the UI.

The same middleware makes Starlette's trailing-slash redirects relative (see
``pywharf_core.http.public_url``): it already looks at every response's start, for free.

Raw ASGI: the headers are appended to the ``http.response.start`` message, skipping any a
response already sets (the web UI sends its own, stricter CSP). Responses that already carry
all three cost one scan of their header list; cached simple pages, which end with
:data:`SECURITY_HEADERS` (built in once per page), one identity test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pywharf_core.http.public_url import relative_redirect

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)
_LAST = SECURITY_HEADERS[-1]


def with_security_headers(headers: Sequence[tuple[bytes, bytes]]) -> Sequence[tuple[bytes, bytes]]:
    """``headers`` plus those of :data:`SECURITY_HEADERS` it lacks (a new list when any is)."""
    if headers and headers[-1] is _LAST:  # they were appended when the headers were built
        return headers
    present = 0
    for name, _ in headers:
        if name in _NAMES:
            present += 1
    if present >= len(SECURITY_HEADERS):
        return headers
    have = {name.lower() for name, _ in headers}
    return [*headers, *(header for header in SECURITY_HEADERS if header[0] not in have)]


def secure_response_start(scope: Scope, message: Message) -> None:
    """What this module does to an ``http.response.start`` message, in place. Also called by
    the /metrics middleware, which replaces this one when it runs (``pywharf_core.http.metrics``:
    one wrapper of ``send`` per request instead of two)."""
    headers = message.get("headers") or ()
    if message["status"] == 307:  # only Starlette's trailing-slash redirect
        headers = relative_redirect(scope, headers)
    message["headers"] = with_security_headers(headers)


class SecurityHeadersMiddleware:
    """Plain functions that return the wrapped coroutines: no extra coroutine frame per request
    or per message (a quarter of the middleware's cost on a cached page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)

        def send_secured(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                secure_response_start(scope, message)
            return send(message)

        return self.app(scope, receive, send_secured)
