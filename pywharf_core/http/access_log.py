"""``--access_log``: one line per request, the same with uvicorn and waitress.

uvicorn's own access log cannot say which representation a request got (PEP 691 JSON or
HTML) or how many bytes it carried; operators need both to see what clients really fetch
(e.g. that pip takes ``.metadata`` files instead of whole wheels). The query string is left
out (it may carry tokens) and so are headers: nothing secret is ever logged.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pywharf.access")


class AccessLogMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        content_type = "-"
        sent = 0
        length = 0

        async def send_and_count(message: Message) -> None:
            nonlocal status, content_type, sent, length
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1").split(";")[0]
                    elif name.lower() == b"content-length" and value.isdigit():
                        length = int(value)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":  # a whole file by sendfile (http.zero_copy)
                sent += length
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %d %s %dB %.1fms',
                client[0],
                scope["method"],
                scope.get("raw_path", b"").decode("latin-1") or scope["path"],
                status,
                content_type,
                sent,
                (time.perf_counter() - started) * 1000,
            )
