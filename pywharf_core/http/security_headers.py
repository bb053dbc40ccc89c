"""``X-Content-Type-Options: nosniff`` and frame protection on every response.

Downloads, error messages and simple pages are served with the content types we choose, and
no page of ours is meant to be framed: ``nosniff`` stops a browser from reinterpreting an
uploaded file (or an error that echoes a name) as HTML or script, and ``X-Frame-Options: DENY``
plus CSP ``frame-ancestors 'none'`` stop clickjacking of the login form and the UI.

The same middleware makes Starlette's trailing-slash redirects relative (see
``pywharf_core.http.public_url``): it already looks at every response's start, for free.

Raw ASGI: the headers are appended to the ``http.response.start`` message, skipping any a
response already sets (the web UI sends its own, stricter CSP). Responses that already carry
all three (cached simple pages bake them in) cost one scan of their header list.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pywharf_core.http.public_url import relative_redirect

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def with_security_headers(headers: Sequence[tuple[bytes, bytes]]) -> Sequence[tuple[bytes, bytes]]:
    """``headers`` plus those of :data:`SECURITY_HEADERS` it lacks (a new list when any is)."""
    present = 0
    for name, _ in headers:
        if name in _NAMES:
            present += 1
    if present >= len(SECURITY_HEADERS):
        return headers
    have = {name.lower() for name, _ in headers}
    return [*headers, *(header for header in SECURITY_HEADERS if header[0] not in have)]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or ()
                if message["status"] == 307:  # only Starlette's trailing-slash redirect
                    headers = relative_redirect(scope, headers)
                message["headers"] = with_security_headers(headers)
            await send(message)

        await self.app(scope, receive, send_secured)
