"""Connection-level limits for uvicorn: header size, header and stall timeouts, connection cap.

uvicorn bounds none of these itself: a client could send megabytes of headers (held in memory
by the parser), trickle half a request forever, stall an upload body or stop reading a
download, and open connections until the process runs out of file descriptors. The protocol
here is uvicorn's httptools protocol (what ``uvicorn[standard]`` picks, the one measured in
``benchmarks/``) plus:

- a byte count of the request head while it is incomplete: past ``max_header_bytes`` the
  request gets 431 and the connection is closed (httptools itself has no limit);
- one watchdog timer per connection (re-armed every ``tick``; nothing is scheduled per
  request): the head must be complete within ``header_timeout`` (408), and an upload body or
  a download may not stall for ``stall_timeout`` (the connection is closed);
- ``max_connections``: a new connection past the cap first evicts the connection that has been
  waiting longest for a request head (idle keep-alive or a trickling client); when every
  connection is busy with a request, the newcomer gets 503. So slow clients cannot starve
  ``/healthz`` or real clients.

The per-request cost is a few attribute writes and clock reads (about 1-2 us of a cached page's
~75 us, within the noise of wrk on the shared benchmark machine).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pywharf_core.http.limits import TransportLimits
from pywharf_core.http.security_headers import SECURITY_HEADERS

log = logging.getLogger("pywharf.transport")

def _raw_response(status: bytes, message: str) -> bytes:
    body = message.encode("ascii")
    head = [b"HTTP/1.1 " + status, b"content-type: text/plain; charset=utf-8",
            b"content-length: " + str(len(body)).encode("ascii"), b"connection: close"]
    head += [name + b": " + value for name, value in SECURITY_HEADERS]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_HEADERS_TOO_LARGE = _raw_response(b"431 Request Header Fields Too Large", "Request header fields too large.")
_REQUEST_TIMEOUT = _raw_response(b"408 Request Timeout", "Request headers not received in time.")
_BAD_REQUEST = _raw_response(b"400 Bad Request", "Invalid HTTP request.")
_BUSY = _raw_response(b"503 Service Unavailable", "Too many connections: try again.")


class _HeadTooLarge(Exception):
    """Raised inside the parser's callback to stop parsing a request head over the limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`TransportLimits`."""

    limits: ClassVar[TransportLimits] = TransportLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (or receiving) a request head
        self._head_bytes = 0  # bytes received while in the head, this request
        self._since = 0.0  # loop time the head wait began / the body or download last moved
        self._write_paused_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # -- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        self._since = self.loop.time()
        if over and not self._evict_idle():
            log.warning("connection limit (%d) reached: refusing a connection", self.limits.max_connections)
            transport.write(_BUSY)
            transport.close()
            return
        self._watchdog = self.loop.call_later(self.limits.tick, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def _evict_idle(self) -> bool:
        """Close the connection waiting longest for a request head; False if there is none."""
        oldest: LimitedHttpToolsProtocol | None = None
        for conn in self.connections:
            if (isinstance(conn, LimitedHttpToolsProtocol) and conn is not self and conn._in_head
                    and not conn.transport.is_closing() and (oldest is None or conn._since < oldest._since)):
                oldest = conn
        if oldest is None:
            return False
        log.warning("connection limit (%d) reached: closing the longest-idle connection", self.limits.max_connections)
        oldest.transport.close()
        return True

    # -- parsing -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus the head byte count (exact check in :meth:`on_headers_complete`)."""
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(_HEADERS_TOO_LARGE, "request headers over %d bytes", self.limits.max_header_bytes)
            else:
                self._refuse(_BAD_REQUEST, "invalid HTTP request")
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(_HEADERS_TOO_LARGE, "request headers over %d bytes", self.limits.max_header_bytes)

    def on_message_begin(self) -> None:
        if not self._in_head:  # a pipelined request: its head wait starts now
            self._in_head = True
            self._since = self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        # The count includes whatever followed the head in the last packet: only then measure.
        if self._head_bytes > self.limits.max_header_bytes:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_header_bytes:
                raise _HeadTooLarge
        self._in_head = False
        self._head_bytes = 0
        self._since = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._since = self.loop.time()
        super().on_body(body)

    def on_response_complete(self) -> None:
        if not self.pipeline and not self._in_head:  # idle until the next request head
            self._in_head = True
            self._head_bytes = 0
            self._since = self.loop.time()
        super().on_response_complete()

    # -- writing -------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused_since = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_paused_since = None
        super().resume_writing()

    # -- the watchdog ----------------------------------------------------------------------------

    def _check(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.limits
        if self._in_head:
            if now - self._since > limits.header_timeout:
                if self._head_bytes:  # a request began
                    self._refuse(_REQUEST_TIMEOUT, "request headers not complete within %gs", limits.header_timeout)
                else:
                    self.transport.close()  # an idle connection: nothing to answer
                return
        elif self._write_paused_since is not None:
            if now - self._write_paused_since > limits.stall_timeout:
                log.warning("%s: response stalled (client not reading) for %gs: closing", self._peer(),
                            limits.stall_timeout)
                self.transport.close()
                return
        elif self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
            if self.flow.read_paused:  # the app is behind, not the client
                self._since = now
            elif now - self._since > limits.stall_timeout:
                log.warning("%s: request body stalled for %gs: closing", self._peer(), limits.stall_timeout)
                self.transport.close()
                return
        self._watchdog = self.loop.call_later(limits.tick, self._check)

    def _refuse(self, response: bytes, reason: str, *args: object) -> None:
        log.warning("%s: " + reason + ": closing", self._peer(), *args)
        self.transport.write(response)
        self.transport.close()

    def _peer(self) -> str:
        return self.client[0] if self.client else "-"


def protocol_class(limits: TransportLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection (``uvicorn.Config(http=...)``)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
