"""Running the app: uvicorn (default, ASGI-native) or waitress (through an ASGI->WSGI bridge).

benchmarks/README.md records why uvicorn is the default: on the same cached page it served
several times the requests per second of waitress + a2wsgi on this 2-core machine. waitress
stays available (``--server waitress`` plus any ``waitress.serve`` keyword options) for users
of pywharf 0.2.3 who tuned it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

from pywharf_core.http.limits import TransportLimits
from pywharf_core.service.server_state import ServerState

SERVERS = ("uvicorn", "waitress")
log = logging.getLogger("pywharf")


def configure_logging(root: Path, debug: bool, workers: int = 1) -> None:
    """Log to stderr and to ``ROOT/log/pywharf.log`` (rotated). Secrets are never logged.

    With several worker processes each line names its process."""
    (root / "log").mkdir(parents=True, exist_ok=True)
    pid = " [%(process)d]" if workers > 1 else ""
    fmt = logging.Formatter(f"%(asctime)s{pid} %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.handlers.RotatingFileHandler(root / "log" / "pywharf.log", maxBytes=10 << 20, backupCount=3),
    ]
    top = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(fmt)
        top.addHandler(handler)
    top.setLevel(logging.DEBUG if debug else logging.INFO)


def run(
    app: ASGIApp,
    state: ServerState,
    *,
    host: str,
    port: int,
    server: str = "uvicorn",
    debug: bool = False,
    waitress_options: dict[str, Any] | None = None,
    limits: TransportLimits | None = None,
    tls: tuple[str, str] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop index sync and return (exit code 0).

    ``limits`` bound headers, slow clients and connections (``pywharf_core.http.transport``);
    with waitress, the header size and timeouts become its own options unless given explicitly
    (waitress caps connections itself: ``--connection_limit``, default 100). ``tls``: a
    certificate chain and key file (PEM) to serve https (uvicorn only). ``sock``: a socket
    already listening (a worker process of ``--workers``, with either server; ``host`` and
    ``port`` are then unused).
    """
    limits = limits or TransportLimits()

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # uvicorn captures SIGTERM while serving, then restores the previous handler and raises the
    # signal again: with the default handler that kills the process (exit -15) before index
    # sync is stopped. Our handler turns it into a clean SystemExit(0) that runs `finally`.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if server == "uvicorn":
            import uvicorn
            from starlette.applications import Starlette

            from pywharf_core.http.fast_lane import FastLane
            from pywharf_core.http.reason_phrase import install_for_uvicorn
            from pywharf_core.http.transport import protocol_class

            install_for_uvicorn()
            # Cached pages answered in the protocol (off with the access log: it wraps the app,
            # and every request must reach it), PYWHARF_FAST_LANE=0 turns it off (A/B runs).
            lane = FastLane(app.state) if isinstance(app, Starlette) and os.environ.get(
                "PYWHARF_FAST_LANE", "1") != "0" else None
            config = uvicorn.Config(
                app,
                http=protocol_class(limits, lane),  # httptools plus limits (and the fast lane)
                host=host,
                port=port,
                lifespan="off",
                access_log=False,  # pywharf_core.http.access_log logs requests (--access_log)
                log_config=None,
                log_level="debug" if debug else "info",
                server_header=False,
                timeout_graceful_shutdown=10,
                ssl_certfile=tls[0] if tls else None,
                ssl_keyfile=tls[1] if tls else None,
            )
            uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
        elif server == "waitress":
            import waitress
            from a2wsgi import ASGIMiddleware

            options = {
                "max_request_header_size": limits.max_header_bytes,
                # waitress has one inactivity timeout for heads, bodies and responses alike.
                "channel_timeout": max(limits.header_timeout, limits.stall_timeout),
                **(waitress_options or {}),
            }
            where = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
            try:
                waitress.serve(ASGIMiddleware(app), **where, **options)
            except (KeyboardInterrupt, SystemExit):
                log.info("shutting down")
        else:
            raise ValueError(f"unknown --server {server!r} (choose from {', '.join(SERVERS)})")
    finally:
        state.shutdown()
