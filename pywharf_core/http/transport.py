"""Connection-level limits for uvicorn: header size, header and stall timeouts, connection cap.

uvicorn bounds none of these itself: a client could send megabytes of headers (held in memory
by the parser), trickle half a request forever, stall an upload body or stop reading a
download, and open connections until the process runs out of file descriptors. The protocol
here is uvicorn's httptools protocol (what ``uvicorn[standard]`` picks, the one measured in
``benchmarks/``) plus:

- a byte count of the request head while it is incomplete: past ``max_header_bytes`` the
  request gets 431 and the connection is closed (httptools itself has no limit);
- one watchdog timer per connection, re-armed every ``tick``, that counts how many ticks the
  current wait has lasted (nothing is scheduled and no clock is read per request): the head
  must be complete within ``header_timeout`` (408), and an upload body or a download may not
  stall for ``stall_timeout`` (the connection is closed);
- ``max_connections``: a new connection past the cap first evicts the connection that has been
  waiting longest for a request head (idle keep-alive or a trickling client); when every
  connection is busy with a request, the newcomer gets 503. So slow clients cannot starve
  ``/healthz`` or real clients.

The per-request cost is a few attribute writes (about 1.6 us in a synthetic feed loop, against
a cached page's ~75 us through a socket; within the noise of wrk on the benchmark machine).
The canned 400/408/431/503 answers carry the same security headers as the app's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from pywharf_core.http.fast_lane import FastLane
from pywharf_core.http.limits import TransportLimits
from pywharf_core.http.security_headers import SECURITY_HEADERS
from pywharf_core.http.zero_copy import PATHSEND, ZeroCopyCycle

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
    fast_lane: ClassVar[FastLane | None] = None  # cached pages answered here (pywharf_core.http.fast_lane)
    _cycle_class: ClassVar[type[ZeroCopyCycle]] = ZeroCopyCycle

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (or receiving) a request head
        self._head_bytes = 0  # bytes received while in the head, this request
        self._idle_ticks = 0  # watchdog ticks the current wait (head, body, reader) has lasted
        self._moved = False  # body bytes arrived or the client read some response since the last tick
        self._watchdog: asyncio.TimerHandle | None = None
        self._zero_copy = False  # plain TCP: files go out with sendfile (pywharf_core.http.zero_copy)
        self._fast_answered = False  # this request was answered by the fast lane (no ASGI cycle)

    # -- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        extra = transport.get_extra_info
        self._zero_copy = extra("ssl_object") is None and extra("socket") is not None
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
                    and not conn.transport.is_closing()
                    and (oldest is None or conn._idle_ticks > oldest._idle_ticks)):
                oldest = conn
        if oldest is None:
            return False
        log.warning("connection limit (%d) reached: closing the longest-idle connection", self.limits.max_connections)
        oldest.transport.close()
        return True

    # -- parsing (per request: flag and counter writes only, no clock reads, no timers) ----------

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
        self._unset_keepalive_if_required()  # a request pipelined behind a fast-lane answer
        if not self._in_head:  # a pipelined request: its head wait starts now
            self._in_head = True
            self._idle_ticks = 0
        _parent.on_message_begin(self)
        if self._zero_copy:
            self.scope["extensions"] = {PATHSEND: {}}

    def on_headers_complete(self) -> None:
        # The count includes whatever followed the head in the last packet: only then measure.
        if self._head_bytes > self.limits.max_header_bytes:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_header_bytes:
                raise _HeadTooLarge
        self._in_head = False
        self._head_bytes = 0
        self._idle_ticks = 0
        lane = self.fast_lane
        if (lane is not None and not self.pipeline and (self.cycle is None or self.cycle.response_complete)
                and self.parser.get_method() == b"GET" and self.parser.should_keep_alive()
                and not self.parser.should_upgrade()
                and self.parser.get_http_version() == "1.1"):
            response = lane.answer(self.url, self.headers, self.client[0] if self.client else "",
                                   self.server_state.default_headers)
            if response is not None:
                self._fast_answered = True
                self.transport.write(response)
                return
        _parent.on_headers_complete(self)
        if self._zero_copy and self.cycle is not None and type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = self._cycle_class

    def on_body(self, body: bytes) -> None:
        self._moved = True
        _parent.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._fast_answered:  # answered already: idle until the next head
            # uvicorn's on_response_complete would arm (and the next request cancel) a keep-alive
            # timer per request; the watchdog closes an idle connection anyway (header_timeout).
            self._fast_answered = False
            self._in_head = True
            self._head_bytes = 0
            self._idle_ticks = 0
            self.server_state.total_requests += 1
            return
        _parent.on_message_complete(self)
        if self.cycle.response_complete and not self._in_head and not self.pipeline:
            # The rest of an early-answered body has come (uvicorn dropped it): idle from now.
            self._in_head = True
            self._head_bytes = 0
            self._idle_ticks = 0

    def on_response_complete(self) -> None:
        # Idle until the next request head, unless the app answered before the whole body came
        # (a 401 or 413 on an upload): then the rest of the body is not a head.
        if not self.pipeline and not self._in_head and not self.cycle.more_body:
            self._in_head = True
            self._head_bytes = 0
            self._idle_ticks = 0
        _parent.on_response_complete(self)

    def resume_writing(self) -> None:
        self._moved = True
        _parent.resume_writing(self)

    # -- the watchdog ----------------------------------------------------------------------------

    def _check(self) -> None:
        """Every ``tick``: count how long the current wait has lasted, close when over its limit."""
        self._watchdog = None
        if self.transport.is_closing():
            return
        limits = self.limits
        cycle = self.cycle
        if self._in_head:
            self._idle_ticks += 1
            if self._idle_ticks * limits.tick > limits.header_timeout:
                if self._head_bytes:  # a request began
                    self._refuse(_REQUEST_TIMEOUT, "request headers not complete within %gs", limits.header_timeout)
                else:
                    self.transport.close()  # an idle connection: nothing to answer
                return
        elif self.flow.write_paused or (cycle is not None and cycle.more_body):
            writing = self.flow.write_paused
            if self._moved or (not writing and self.flow.read_paused):  # progress, or the app is behind
                self._idle_ticks = 0
            else:
                self._idle_ticks += 1
                if self._idle_ticks * limits.tick > limits.stall_timeout:
                    what = "response stalled (client not reading)" if writing else "request body stalled"
                    log.warning("%s: %s for %gs: closing", self._peer(), what, limits.stall_timeout)
                    self.transport.close()
                    return
        else:
            self._idle_ticks = 0  # the app is working: not the client's time
        self._moved = False
        self._watchdog = self.loop.call_later(limits.tick, self._check)

    def _refuse(self, response: bytes, reason: str, *args: object) -> None:
        log.warning("%s: " + reason + ": closing", self._peer(), *args)
        self.transport.write(response)
        self.transport.close()

    def _peer(self) -> str:
        return self.client[0] if self.client else "-"


_parent = HttpToolsProtocol  # called directly: cheaper than super() on the per-request callbacks


def protocol_class(limits: TransportLimits, fast_lane: FastLane | None = None) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection (``uvicorn.Config(http=...)``)."""
    cycle_class = type("ZeroCopyCycle", (ZeroCopyCycle,), {"stall_timeout": limits.stall_timeout})
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "_cycle_class": cycle_class, "fast_lane": fast_lane})
