"""The Starlette application: PEP 503 pages, downloads, legacy upload, health.

Every endpoint except ``/healthz`` authenticates with HTTP basic auth (username = package
repository name, password = its secret), whatever the User-Agent; read endpoints also accept
the browser UI's session cookie (``pywharf_core.http.web``) when no basic auth is sent. Error bodies are one line of
plain text a client can print: never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import os
from collections.abc import Mapping
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from pywharf_core.http.negotiation import HTML_V1, JSON_V1, TEXT_HTML, choose_content_type
from pywharf_core.http.page_cache import pages_of
from pywharf_core.http.pages import GZIP_MIN_BYTES, RenderedPage
from pywharf_core.http.project_json import render_project_json_api
from pywharf_core.http.reason_phrase import set_reason_phrase
from pywharf_core.http.upload_form import receive_upload
from pywharf_core.http.web import session_credentials, web_routes
from pywharf_core.model.errors import BackendUnavailable, ConfigError, FileConflict, InvalidName, UploadRejected
from pywharf_core.model.names import normalize_project, parse_dist_filename
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import ServerState, build_repos, load_setup
from pywharf_core.service.upload import accept_upload
from pywharf_core.storage.backend import LocalFile, Permission, Redirect, StreamedFile

log = logging.getLogger(__name__)

# Files are immutable: a filename never changes content once stored.
FILE_CACHE_CONTROL = "private, max-age=31536000, immutable"


class Unauthorized(HTTPException):
    def __init__(self, detail: str = "Authentication required: use the repo name and its secret.") -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Basic realm="pywharf"'})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


async def authorize(request: Request, needed: Permission) -> PkgRepo:
    """The repository the request's credentials grant ``needed`` on, or 401/403."""
    credentials = _basic_credentials(request)
    if credentials is None and needed is Permission.READ:
        # A browser session reads only: no upload or yank can ride on a cookie (no CSRF there).
        credentials = session_credentials(request)
    if credentials is None:
        raise Unauthorized()
    name, secret = credentials
    state: ServerState = request.app.state.pywharf
    repo = state.repos.get(name)
    if repo is None or not secret:
        raise Unauthorized("Invalid repository name or secret.")
    permission = repo.cached_permission(secret)
    if permission is None:
        permission = await anyio.to_thread.run_sync(repo.authenticate, secret)
    if permission is Permission.NONE:
        raise Unauthorized("Invalid repository name or secret.")
    if permission < needed:
        raise HTTPException(403, "This secret may read but not upload: use the write secret.")
    return repo


def _negotiate(request: Request) -> str:
    format_param = request.query_params.get("format") if request.scope.get("query_string") else None
    content_type = choose_content_type(request.headers.get("accept"), format_param)
    if content_type is None:
        raise HTTPException(406, f"Not Acceptable: this index serves {JSON_V1}, {HTML_V1} and text/html.")
    return content_type


class _CachedPageResponse(Response):
    """A cached page sent with raw headers built once per page variant.

    Building headers (Starlette's ``init_headers``) was a fifth of a cached page's cost."""

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def _page_response(request: Request, page: RenderedPage, content_type: str) -> Response:
    """A cached page with a strong ETag (304 on match), gzip when accepted and worth it."""
    headers = request.headers
    use_gzip = len(page.body) >= GZIP_MIN_BYTES and "gzip" in headers.get("accept-encoding", "")
    etag = page.gzip_etag if use_gzip else page.etag
    if_none_match = headers.get("if-none-match", "")
    max_age = request.app.state.pywharf.settings.page_max_age
    if if_none_match and (etag in if_none_match or if_none_match.strip() == "*"):
        return Response(status_code=304, headers=_page_headers(etag, max_age))
    key = (content_type, use_gzip, max_age)
    variant = page.variants.get(key)
    if variant is None:
        body = page.gzipped() if use_gzip else page.body
        response = Response(
            body,
            media_type="text/html; charset=utf-8" if content_type == TEXT_HTML else content_type,
            headers={**_page_headers(etag, max_age), **({"Content-Encoding": "gzip"} if use_gzip else {})},
        )
        variant = page.variants[key] = (body, response.raw_headers)
    return _CachedPageResponse(*variant)


def _page_headers(etag: str, max_age: int) -> dict[str, str]:
    return {"ETag": etag, "Vary": "Accept, Accept-Encoding", "Cache-Control": f"private, max-age={max_age}"}


async def simple_root(request: Request) -> Response:
    repo = await authorize(request, Permission.READ)
    content_type = _negotiate(request)
    return _page_response(request, pages_of(repo).root_page(repo.snapshot, content_type), content_type)


async def simple_project(request: Request) -> Response:
    repo = await authorize(request, Permission.READ)
    project = request.path_params["project"]
    try:
        normalized = normalize_project(project)
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    if normalized != project:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/simple/{quote(normalized)}/{query}", status_code=301)
    content_type = _negotiate(request)
    page = pages_of(repo).project_page(repo.snapshot, normalized, content_type)
    if page is not None:
        return _page_response(request, page, content_type)
    # Only names this repository does not own fall back to the public index.
    extra = request.app.state.pywharf.settings.extra_index_url
    if not extra:
        raise HTTPException(404, f"Project {normalized!r} is not in this repository.")
    return RedirectResponse(f"{extra.rstrip('/')}/{quote(normalized)}/", status_code=302)


async def download(request: Request) -> Response:
    """A distribution file, or its PEP 658 metadata at ``<filename>.metadata``."""
    repo = await authorize(request, Permission.READ)
    project, filename = request.path_params["project"], request.path_params["filename"]
    want_metadata = filename.endswith(".metadata")
    if want_metadata:
        filename = filename[: -len(".metadata")]
    try:
        dist = parse_dist_filename(filename)
        normalized = normalize_project(project)
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    if dist.project != normalized:
        raise HTTPException(404, "Not Found")
    record = repo.snapshot.files.get(filename)
    if want_metadata and record is not None and not record.metadata_sha256:
        raise HTTPException(404, "Not Found")  # none, or not reliable (PEP 643 dynamic fields)
    locate = repo.backend.locate_metadata if want_metadata else repo.backend.locate
    target = await anyio.to_thread.run_sync(locate, filename)
    if target is None:
        raise HTTPException(404, "Not Found")
    if isinstance(target, Redirect):
        return RedirectResponse(target.url, status_code=302)
    assert isinstance(target, (LocalFile, StreamedFile))
    headers = {"Cache-Control": FILE_CACHE_CONTROL}
    digest = (record.metadata_sha256 if want_metadata else record.sha256) if record is not None else ""
    if digest:
        etag = f'"{digest}"'
        headers["ETag"] = etag
        if etag in request.headers.get("if-none-match", ""):
            _close_stream(target)
            return Response(status_code=304, headers=headers)
    media_type = "text/plain; charset=utf-8" if want_metadata else "application/octet-stream"
    if isinstance(target, StreamedFile):
        if target.size is not None:
            headers["Content-Length"] = str(target.size)
        if request.method == "HEAD":
            _close_stream(target)
            return Response(status_code=200, media_type=media_type, headers=headers)
        # A sync iterator: Starlette pulls each chunk in a worker thread, one at a time.
        return StreamingResponse(target.chunks, media_type=media_type, headers=headers)
    return LargeChunkFileResponse(target.path, media_type=media_type, headers=headers)


class LargeChunkFileResponse(FileResponse):
    """Starlette reads files 64 KiB at a time; 1 MiB chunks cut the per-chunk event-loop and
    thread-hop cost that bounded download throughput (benchmarks/bench_protocol.py)."""

    chunk_size = 1 << 20


def _close_stream(target: object) -> None:
    """Release a streamed download's source when its bytes will not be sent."""
    close = getattr(getattr(target, "chunks", None), "close", None)
    if callable(close):
        close()


async def _yank(request: Request, yanked: bool) -> Response:
    repo = await authorize(request, Permission.WRITE)
    try:
        project = normalize_project(request.path_params["project"])
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    target = request.path_params["target"]
    async with request.form(max_files=0, max_fields=5) as form:
        reason = str(form.get("reason") or "")
    changed = await anyio.to_thread.run_sync(repo.set_yanked, project, target, yanked, reason)
    if not changed:
        raise HTTPException(404, f"No file or version {target!r} of project {project!r}.")
    return PlainTextResponse("\n".join(changed) + "\n")


async def project_json(request: Request) -> Response:
    """pypi.org's JSON API for one project (or one version of it)."""
    repo = await authorize(request, Permission.READ)
    try:
        project = normalize_project(request.path_params["project"])
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    records = repo.snapshot.projects.get(project, ())
    base = str(request.base_url) + "simple/"
    body = render_project_json_api(project, records, request.path_params.get("version"), base)
    if body is None:
        raise HTTPException(404, "Not Found")
    return Response(body, media_type="application/json", headers={"Cache-Control": "private, max-age=60"})


async def yank(request: Request) -> Response:
    """PEP 592: ``POST /yank/<project>/<filename or version>`` (write secret; form ``reason``)."""
    return await _yank(request, True)


async def unyank(request: Request) -> Response:
    return await _yank(request, False)


async def upload(request: Request) -> Response:
    """The legacy upload API: stream the form to staging, then the upload use case."""
    repo = await authorize(request, Permission.WRITE)
    try:
        received = await receive_upload(request, repo.backend.staging_dir(), repo.config.max_file_bytes)
    except OSError as exc:  # the staging folder is full or gone: the store's fault, not the client's
        raise BackendUnavailable(f"storage error while receiving the upload: {exc.strerror or exc}") from exc
    try:
        outcome, record = await anyio.to_thread.run_sync(accept_upload, repo, received)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(received.staged.path)
    log.info("repo %r: %s %s (%d bytes)", repo.name, outcome.value, record.filename, record.size)
    return PlainTextResponse("OK")


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


async def index_mtime(request: Request) -> Response:
    """The last successful index sync of the authenticated repo, as a Unix timestamp."""
    repo = await authorize(request, Permission.READ)
    return PlainTextResponse(str(int(repo.last_sync or 0)))


# A config or admin secret is a few KB; the cap keeps an open /initialize/ from buffering more.
MAX_INITIALIZE_BYTES = 1 << 20


async def initialize(request: Request) -> Response:
    """(Re)configure the server from ``config`` / ``admin_secret`` form fields or files.

    The first call to a server started without --config is open (CI service containers);
    any later call needs ``Authorization: Bearer <--initialize_token>``.
    """
    state: ServerState = request.app.state.pywharf
    if state.configured:
        token = state.settings.initialize_token
        if not token:
            raise HTTPException(403, "Re-initialisation is disabled: start the server with --initialize_token.")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(403, "A valid 'Authorization: Bearer <initialize token>' header is required.")
    too_big = f"Request Entity Too Large: config and admin_secret must be under {MAX_INITIALIZE_BYTES} bytes."
    if int(request.headers.get("content-length") or 0) > 2 * MAX_INITIALIZE_BYTES:
        raise HTTPException(413, too_big)
    async with request.form(max_files=2, max_fields=10, max_part_size=MAX_INITIALIZE_BYTES) as form:
        texts = {}
        for key in ("config", "admin_secret"):
            value = form.get(key)
            if isinstance(value, UploadFile):
                if value.size is not None and value.size > MAX_INITIALIZE_BYTES:
                    raise HTTPException(413, too_big)
                value = (await value.read(MAX_INITIALIZE_BYTES + 1)).decode("utf-8", "replace")
                if len(value) > MAX_INITIALIZE_BYTES:
                    raise HTTPException(413, too_big)
            texts[key] = value or None
    if texts["config"] is None:
        raise HTTPException(400, "The 'config' field is required.")

    def apply() -> int:
        with state.install_lock:
            setup = load_setup(texts["config"], texts["admin_secret"], is_text=True)
            if not setup.configs:
                # An empty config would claim an open server while serving nothing.
                raise ConfigError("config: it defines no package repository")
            state.install(build_repos(setup, state.settings))
            return len(setup.configs)

    try:
        count = await anyio.to_thread.run_sync(apply)
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    return PlainTextResponse(f"initialized {count} package repositories")


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


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)


def create_app(state: ServerState) -> Starlette:
    routes = [
        # Starlette tries routes in order: the hot read paths first.
        Route("/simple/{project}/", simple_project, methods=["GET", "HEAD"]),
        Route("/simple/{project}/{filename}", download, methods=["GET", "HEAD"]),
        Route("/simple/", simple_root, methods=["GET", "HEAD"]),
        # Uploads are never redirected (twine aborts on a redirect): accept every spelling.
        Route("/simple/", upload, methods=["POST"]),
        Route("/simple", upload, methods=["POST"]),
        Route("/", upload, methods=["POST"]),
        Route("/yank/{project}/{target}", yank, methods=["POST"]),
        Route("/unyank/{project}/{target}", unyank, methods=["POST"]),
        Route("/pypi/{project}/json", project_json, methods=["GET", "HEAD"]),
        Route("/pypi/{project}/{version}/json", project_json, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/index_mtime/", index_mtime, methods=["GET"]),
        Route("/initialize/", initialize, methods=["POST"]),
        *web_routes(authorize),  # the browser UI: /, /login/, /logout/, /project/..., /static/
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            UploadRejected: _upload_rejected,
            FileConflict: _file_conflict,
            BackendUnavailable: _backend_unavailable,
            Exception: _internal_error,
        },
    )
    app.state.pywharf = state
    return app
