"""The connection limits of ``pywharf server`` (enforced by ``pywharf_core.http.transport``).

Kept apart from the protocol so the command line can show the defaults without importing
uvicorn.
"""

from __future__ import annotations

from dataclasses import dataclass

# Request line plus headers. 64 KiB is what h11 allows by default and 8x nginx's default
# large_client_header_buffers (4 x 8k); real clients (pip, uv, twine, browsers with our two
# cookies) send under 2 KiB.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# Seconds from connecting (or from the end of the previous response) to a complete request
# head. Real clients send it in one packet; 10 s covers a slow mobile link and frees a
# trickling client's connection (apache's mod_reqtimeout default is 20-40 s, nginx's 60 s).
DEFAULT_HEADER_TIMEOUT = 10.0
# Seconds an upload body or a download may make no progress at all. Generous, because a client
# behind a congested link can pause for a while; a stalled client is cut off after it.
DEFAULT_STALL_TIMEOUT = 60.0
# Open connections. The common soft limit on file descriptors is 1024: 800 connections leave
# room for files being served or staged, log files and storage clients.
DEFAULT_MAX_CONNECTIONS = 800


@dataclass(frozen=True)
class TransportLimits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "header_timeout", "stall_timeout", "max_connections"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive")

    @property
    def tick(self) -> float:
        """How often a connection's watchdog looks at it: timeouts fire at most 25 % late."""
        return max(0.05, min(1.0, self.header_timeout / 4, self.stall_timeout / 4))
