"""Error responses: one line of plain text a client can print, never a traceback.

The message is also the HTTP reason phrase, which is what twine shows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pywharf_core.http.reason_phrase import set_reason_phrase
from pywharf_core.model.errors import BackendUnavailable, FileConflict, UploadRejected
from pywharf_core.service.proxy_mirror import MirrorUnavailable
from pywharf_core.service.pull_through import UpstreamFileError
from pywharf_core.service.repo_group import MemberNotLoaded

log = logging.getLogger(__name__)


def _error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A one-line plain-text error, its message also used as the reason phrase (for twine)."""
    set_reason_phrase(status, message)
    return PlainTextResponse(message, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(exc.status_code, exc.detail, exc.headers)


async def _upload_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UploadRejected)
    return _error_response(exc.status, exc.reason)


async def _file_conflict(request: Request, exc: Exception) -> Response:
    return _error_response(409, str(exc))


async def _backend_unavailable(request: Request, exc: Exception) -> Response:
    """Storage (GitHub, S3...) failed after its own bounded retries: 503 with its one-line reason."""
    reason = " ".join(str(exc).split())  # error bodies are one line
    log.error("backend unavailable on %s %s: %s", request.method, request.url.path, reason)
    return _error_response(503, f"Storage backend unavailable: {reason}")


async def _mirror_unavailable(request: Request, exc: Exception) -> Response:
    """A proxy's upstream cannot answer and nothing is cached for the request: 503, retry later."""
    reason = " ".join(str(exc).split())
    log.warning("proxy upstream unavailable on %s %s: %s", request.method, request.url.path, reason)
    return _error_response(503, f"Upstream index unavailable: {reason}", {"Retry-After": "30"})


async def _upstream_file_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UpstreamFileError)
    return _error_response(exc.status, f"Upstream file unavailable: {' '.join(str(exc).split())}")


async def _member_not_loaded(request: Request, exc: Exception) -> Response:
    return _error_response(503, f"Index not loaded yet: {exc}", {"Retry-After": "5"})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)


EXCEPTION_HANDLERS = {
    HTTPException: _http_error,
    UploadRejected: _upload_rejected,
    FileConflict: _file_conflict,
    BackendUnavailable: _backend_unavailable,
    MirrorUnavailable: _mirror_unavailable,
    MemberNotLoaded: _member_not_loaded,
    UpstreamFileError: _upstream_file_error,
    Exception: _internal_error,
}
