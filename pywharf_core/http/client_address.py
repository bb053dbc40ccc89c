"""The address a request came from, as logs, the failure limiter and the audit log name it.

The ASGI server's ``client``: the peer, or, behind a reverse proxy that uvicorn trusts
(``--forwarded-allow-ips`` / ``FORWARDED_ALLOW_IPS``, default 127.0.0.1), the address it read
from ``X-Forwarded-For``. Nothing else a client sends is believed.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"
