"""Liveness and readiness probes: no credentials, no storage I/O."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pywharf_core.service.server_state import ServerState


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. No auth, no I/O."""
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """Readiness: configured, and every repository serves an index (synced, or its last good copy).

    JSON ``{"ready": bool, "warnings": [...]}``. A repository whose sync fails, or that has not
    synced since start but serves the copy under ROOT, is ready with a warning: a load balancer
    must not drop a server that answers correctly from its last good index. The endpoint needs
    no credentials, so warnings name the repository and the state, never the error (paths,
    buckets, hosts): that is in the server's log.
    """
    state: ServerState = request.app.state.pywharf
    if not state.configured:
        return JSONResponse({"ready": False, "warnings": ["not configured: waiting for POST /initialize/"]},
                            status_code=503)
    waiting, warnings = [], []
    for name, repo in state.repos.items():
        if repo.last_sync is None and not repo.has_local_copy:
            waiting.append(name)  # nothing to serve yet
        if repo.last_sync_error:
            warnings.append(f"{name}: serving the last good index; sync failing (see the server log)")
        elif repo.last_sync is None and repo.has_local_copy:
            warnings.append(f"{name}: serving the last good index from ROOT; not synced since start")
    if waiting:
        return JSONResponse({"ready": False, "warnings": [f"index not synced yet: {', '.join(waiting)}", *warnings]},
                            status_code=503)
    return JSONResponse({"ready": True, "warnings": warnings})
