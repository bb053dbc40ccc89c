"""Zero-copy file downloads: the ASGI ``http.response.pathsend`` extension, served with sendfile(2).

Starlette's ``FileResponse`` reads a file in chunks on a worker thread and hands each chunk to
the server, which copies it into the socket: two copies and a thread hop per chunk, which held
downloads at about half of nginx's rate (benchmarks/README.md). When the server advertises
``http.response.pathsend`` in the request scope, ``FileResponse`` instead sends one message
naming the file, and the kernel copies the bytes from the page cache to the socket
(``os.sendfile``), as nginx does.

Served on the event loop, without a thread per download: the socket is non-blocking, each
``sendfile`` call moves what the socket buffer takes, and when it is full the download waits for
the socket to be writable again (a watcher on a duplicate of its descriptor, since the loop
already watches the original one for the connection). A client that stops reading for
``stall_timeout`` seconds is disconnected, like every other stalled download.

Only for plain TCP: over TLS the bytes must go through the encryption layer, so the extension is
not advertised there (nor under waitress, which speaks WSGI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import anyio.to_thread
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

log = logging.getLogger("pywharf.transport")

PATHSEND = "http.response.pathsend"
YIELD_EVERY_BYTES = 8 << 20  # let other connections run between long bursts to a fast reader
FALLBACK_CHUNK = 1 << 20  # when sendfile cannot be used for this response (see _send_path)


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request/response cycle that also accepts ``http.response.pathsend``.

    The protocol swaps a new cycle's class to this one (no per-request allocation); every other
    message goes to uvicorn's own ``send``.
    """

    stall_timeout: float = 60.0

    async def send(self, message: Any) -> None:
        if message["type"] != PATHSEND:
            return await RequestResponseCycle.send(self, message)
        await self._send_path(str(message["path"]))

    async def _send_path(self, path: str) -> None:
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {PATHSEND!r} outside a response body.")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            count = self.expected_content_length
            if (self.chunked_encoding or count != size or self.scope["method"] == "HEAD"
                    or not await self._buffer_flushed()):
                await self._send_chunks(handle)
                return
            if await self._sendfile(handle.fileno(), count):
                self.expected_content_length = 0
                await RequestResponseCycle.send(self, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _buffer_flushed(self) -> bool:
        """Whether the transport's own buffer (the response head) has reached the socket; the
        bytes sendfile writes must not overtake it."""
        for _ in range(50):
            if not self.transport.get_write_buffer_size():
                return True
            await asyncio.sleep(0.002)
        return False

    async def _sendfile(self, file_fd: int, count: int) -> bool:
        """Send ``count`` bytes of ``file_fd`` to the socket; False when the connection was closed."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            self._abort()
            return False
        sock_fd = sock.fileno()
        loop = asyncio.get_running_loop()
        offset = since_yield = 0
        watch_fd = -1
        try:
            while offset < count:
                try:
                    sent = os.sendfile(sock_fd, file_fd, offset, count - offset)
                except (BlockingIOError, InterruptedError):
                    sent = -1
                except OSError:  # the client went away (EPIPE, ECONNRESET)
                    self._abort()
                    return False
                if sent == 0:  # the file shrank under us: the length promised cannot be kept
                    log.error("%s shrank while being sent: connection closed", self.scope.get("path"))
                    self._abort()
                    return False
                if sent > 0:
                    offset += sent
                    since_yield += sent
                    if since_yield >= YIELD_EVERY_BYTES:
                        since_yield = 0
                        await asyncio.sleep(0)
                    continue
                if watch_fd < 0:
                    watch_fd = os.dup(sock_fd)
                if not await _writable(loop, watch_fd, self.stall_timeout):
                    client = self.scope.get("client")
                    log.warning("%s: response stalled (client not reading) for %gs: closing",
                                client[0] if client else "-", self.stall_timeout)
                    self._abort()
                    return False
                if self.transport.is_closing():
                    self.disconnected = True
                    return False
        finally:
            if watch_fd >= 0:
                os.close(watch_fd)
        return True

    def _abort(self) -> None:
        """Close the connection mid-response; marked disconnected so uvicorn does not report an
        incomplete response as an application error (the reason was logged, or is the client's)."""
        self.transport.close()
        self.disconnected = True

    async def _send_chunks(self, handle: Any) -> None:
        """The copying path, for a response sendfile cannot serve as announced."""
        while True:
            chunk = await anyio.to_thread.run_sync(handle.read, FALLBACK_CHUNK)
            more = len(chunk) == FALLBACK_CHUNK
            await RequestResponseCycle.send(self, {"type": "http.response.body", "body": chunk, "more_body": more})
            if not more or self.disconnected:
                return


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bool:
    """Wait until ``fd`` can take more bytes; False after ``timeout`` seconds."""
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        with contextlib.suppress(Exception):
            loop.remove_writer(fd)
