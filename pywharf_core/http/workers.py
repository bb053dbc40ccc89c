"""``pywharf server --workers N``: N worker processes on one listening socket, supervised.

One Python process serves one core. The supervisor binds the socket, loads every repository's
index once (so the forked workers share those pages copy-on-write instead of each loading its
own), then forks the workers; each runs its own event loop on the shared socket (the kernel
hands each new connection to one of them). The supervisor itself runs no threads and serves
nothing, so forking a replacement from it is safe:

- a worker that dies while the server is not stopping is replaced (a replacement catches up from
  ROOT before it serves); more than ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW`` seconds
  stop the server rather than fork forever;
- SIGTERM or SIGINT is passed to every worker, which stops accepting, finishes its requests
  (uvicorn's graceful shutdown) and exits; workers still alive after ``DRAIN_SECONDS`` are
  killed.

Coherence between workers (read-your-writes, one sync per server) is the service layer's:
``pywharf_core.service.worker_peers`` and ``SyncLeadership`` in ``pywharf_core.service.sync``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp

from pywharf_core.http.metric_tally import TallyClaim
from pywharf_core.http.serve import run
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import ServerState
from pywharf_core.service.worker_peers import WorkerPeers

log = logging.getLogger("pywharf")

MAX_RESTARTS = 5
RESTART_WINDOW = 30.0
DRAIN_SECONDS = 15.0
POLL_SECONDS = 0.2


def run_workers(count: int, app: ASGIApp, state: ServerState, repos: Mapping[str, PkgRepo], *, host: str,
                port: int, **options: Any) -> int:
    """Serve ``app`` from ``count`` supervised worker processes; returns the exit code."""
    peers = WorkerPeers(count)
    sock = listening_socket(host, port)
    tallies = TallyClaim(state.settings.root, peers.server)  # /metrics sums this run's workers' files only
    # Whatever the supervisor loaded (the indexes) is shared with the workers until written: keep
    # the collector from walking it in each of them (which writes to every object it visits).
    gc.collect()
    gc.freeze()

    def serve(slot: int) -> None:
        state.join_workers(peers, slot)
        state.install(repos)
        run(app, state, host=host, port=port, sock=sock, **options)

    try:
        return supervise(count, serve)
    finally:
        sock.close()
        tallies.release()


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket every worker accepts on (bound before forking)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def supervise(count: int, serve: Callable[[int], None]) -> int:
    """Fork ``count`` workers running ``serve(slot)``; returns the server's exit code."""
    children: dict[int, int] = {}  # pid -> slot
    stopping: list[float] = []  # when the stop began (empty: running)
    deaths: list[float] = []

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's loop
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                serve(slot)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = slot

    def stop(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            log.info("stopping %d workers", len(children))
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in range(count):
            spawn(slot)
        log.info("serving with %d worker processes: %s", count, ", ".join(map(str, children)))
        code = 0
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if stopping and time.monotonic() - stopping[0] > DRAIN_SECONDS:
                    for straggler in list(children):
                        log.warning("worker pid %d did not stop within %gs: killed", straggler, DRAIN_SECONDS)
                        _signal(straggler, signal.SIGKILL)
                    stopping[0] = float("inf")
                time.sleep(POLL_SECONDS)
                continue
            slot = children.pop(pid, None)
            if slot is None or stopping:
                continue
            now = time.monotonic()
            deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            log.error("worker %d (pid %d) %s", slot, pid, _describe(status))
            if len(deaths) > MAX_RESTARTS:
                log.error("%d workers died within %gs: stopping the server", len(deaths), RESTART_WINDOW)
                code = 1
                stop(signal.SIGTERM, None)
                continue
            spawn(slot)
            log.info("worker %d replaced (pid %d)", slot, next(p for p, s in children.items() if s == slot))
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
