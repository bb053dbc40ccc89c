"""The Starlette application: PEP 503 pages, downloads, the legacy upload, yank, PEP 792 status,
deletion, JSON API.

Every endpoint except the probes (``pywharf_core.http.health``) and ``/initialize/``
authenticates (``pywharf_core.http.auth``); errors are one line of plain text
(``pywharf_core.http.errors``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from pywharf_core.http.answering import answering, mirror_records, project_records
from pywharf_core.http.audit import read_audit
from pywharf_core.http.audit_trail import audit_event, record
from pywharf_core.http.auth import authorize, authorize_grant
from pywharf_core.http.cross_site import CrossSiteWriteGuard
from pywharf_core.http.errors import EXCEPTION_HANDLERS
from pywharf_core.http.health import healthz, readyz
from pywharf_core.http.initialize import initialize
from pywharf_core.http.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from pywharf_core.http.negotiation import HTML_V1, JSON_V1, choose_content_type
from pywharf_core.http.oidc import audience, burn_token, mint_token
from pywharf_core.http.page_cache import pages_of
from pywharf_core.http.page_response import page_response
from pywharf_core.http.pages import render_root
from pywharf_core.http.project_json import JsonApiUrls, render_project_json_api
from pywharf_core.http.public_url import index_base_url, repo_prefix, site_base_url
from pywharf_core.http.security_headers import SecurityHeadersMiddleware
from pywharf_core.http.tokens import create_token, list_tokens, revoke_token
from pywharf_core.http.upload_form import receive_upload
from pywharf_core.http.web import web_routes
from pywharf_core.model.errors import BackendUnavailable, FileConflict, InvalidName, UploadRejected
from pywharf_core.model.lifecycle import MAX_REASON_CHARS, STATUSES
from pywharf_core.model.names import normalize_project, parse_dist_filename
from pywharf_core.model.records import FileRecord
from pywharf_core.service.grants import Grant
from pywharf_core.service.proxy_mirror import ProxyMirror
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.retention import RetentionPolicy, apply_retention
from pywharf_core.service.server_state import ServerState
from pywharf_core.service.upload import accept_upload
from pywharf_core.storage.backend import (
    DownloadTarget,
    LocalFile,
    Permission,
    Redirect,
    StoreOutcome,
    StreamedFile,
)

log = logging.getLogger(__name__)

# Files are immutable: a filename never changes content once stored.
FILE_CACHE_CONTROL = "private, max-age=31536000, immutable"


def _negotiate(request: Request) -> str:
    format_param = request.query_params.get("format") if request.scope.get("query_string") else None
    content_type = choose_content_type(request.headers.get("accept"), format_param)
    if content_type is None:
        raise HTTPException(406, f"Not Acceptable: this index serves {JSON_V1}, {HTML_V1} and text/html.")
    return content_type


async def simple_root(request: Request) -> Response:
    repo = await authorize(request, Permission.READ)
    content_type = _negotiate(request)
    if repo.group is not None:  # the union of the members' projects
        names = await anyio.to_thread.run_sync(repo.group.project_names)
        return page_response(request, render_root(names, content_type), content_type)
    if repo.mirror is not None:  # a proxy lists what it has fetched, not the whole upstream
        names = await anyio.to_thread.run_sync(repo.mirror.known_projects)
        return page_response(request, render_root(names, content_type), content_type)
    return page_response(request, pages_of(repo).root_page(repo.snapshot, content_type), content_type)


async def simple_project(request: Request) -> Response:
    repo = await authorize(request, Permission.READ)
    project = request.path_params["project"]
    try:
        normalized = normalize_project(project)
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    if normalized != project:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{repo_prefix(request)}/simple/{quote(normalized)}/{query}", status_code=301)
    content_type = _negotiate(request)
    repo = await answering(repo, normalized)
    if repo.mirror is not None:  # a proxy: the upstream's page (cached), never a redirect
        records = await mirror_records(repo.mirror, normalized)
        if records is None:
            raise HTTPException(404, f"Project {normalized!r} is not offered by this proxy.")
        return page_response(request, pages_of(repo).records_page(normalized, records, content_type), content_type)
    page = pages_of(repo).project_page(repo.snapshot, normalized, content_type)
    if page is not None:
        return page_response(request, page, content_type)
    if repo.snapshot.holds(normalized):  # every file deleted: still this repository's name
        raise HTTPException(404, f"Project {normalized!r} has no files left in this repository.")
    if not repo.index_loaded:
        # No index yet (no sync, no copy under ROOT): the name may be a private project of this
        # repository, and redirecting it to the public index would install whoever registered
        # that name there (dependency confusion). A 404 would be as wrong: the client retries
        # (a first sync usually takes seconds).
        raise HTTPException(503, "Index not loaded yet: this repository has not synced its index; retry shortly.",
                            headers={"Retry-After": "5"})
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
    repo = await answering(repo, normalized)
    if repo.mirror is not None:
        return await _proxied_download(request, repo.mirror, normalized, filename, want_metadata)
    snapshot = repo.snapshot
    if not snapshot.offers_files(normalized) or filename in snapshot.deleted:
        raise HTTPException(404, "Not Found")  # PEP 792 quarantine, or deleted (bytes may be going)
    record = snapshot.files.get(filename)
    if want_metadata and record is not None and not record.metadata_sha256:
        raise HTTPException(404, "Not Found")  # none, or not reliable (PEP 643 dynamic fields)
    locate = repo.backend.locate_metadata if want_metadata else repo.backend.locate
    target = await anyio.to_thread.run_sync(locate, filename)
    return _file_response(request, target, record, want_metadata)


async def _proxied_download(request: Request, mirror: ProxyMirror, project: str, filename: str,
                            want_metadata: bool) -> Response:
    """A proxy's file: from the cache, or fetched once from the upstream while streamed (and
    verified before its last byte). A HEAD never starts a download."""
    record = await anyio.to_thread.run_sync(mirror.record, project, filename)
    if record is None or (want_metadata and not record.metadata_sha256):
        raise HTTPException(404, "Not Found")
    digest = record.metadata_sha256 if want_metadata else record.sha256
    headers = {"Cache-Control": FILE_CACHE_CONTROL, "ETag": f'"{digest}"'}
    if f'"{digest}"' in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        if record.size and not want_metadata:
            headers["Content-Length"] = str(record.size)
        media_type = "text/plain; charset=utf-8" if want_metadata else "application/octet-stream"
        return Response(status_code=200, media_type=media_type, headers=headers)
    try:
        target = await anyio.to_thread.run_sync(mirror.open, project, filename, want_metadata)
    except FileNotFoundError:
        raise HTTPException(404, "Not Found") from None
    return _file_response(request, target, record, want_metadata)


def _file_response(request: Request, target: DownloadTarget | None, record: FileRecord | None,
                   want_metadata: bool) -> Response:
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
    action = "yank" if yanked else "unyank"
    repo, grant = await authorize_grant(request, Permission.WRITE, action=action)
    try:
        project = normalize_project(request.path_params["project"])
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    target = request.path_params["target"]

    async def refuse(status: int, message: str) -> HTTPException:
        await record(repo, audit_event(request, repo, action, status, grant=grant, project=project, filename=target,
                                       detail=message))
        return HTTPException(status, message)

    if not grant.may_yank(project):
        raise await refuse(403, grant.yank_refusal(project))
    if repo.group is not None:
        raise HTTPException(405, f"Yank through the URL of the repository that holds {project!r}, not group "
                                 f"{repo.name!r}.")
    async with request.form(max_files=0, max_fields=5) as form:
        reason = str(form.get("reason") or "")
    changed = await anyio.to_thread.run_sync(repo.set_yanked, project, target, yanked, reason)
    if not changed:
        raise await refuse(404, f"No file or version {target!r} of project {project!r}.")
    for filename in changed:
        await record(repo, audit_event(request, repo, action, 200, grant=grant, project=project, filename=filename,
                                       detail=reason))
    return PlainTextResponse("\n".join(changed) + "\n")


async def _lifecycle_target(request: Request, action: str, audit_action: str) -> tuple[PkgRepo, Grant, str]:
    """The repository, grant and normalised project of a status change or a deletion: the write
    secret or an API token that may upload to the project (a trusted publisher's token may
    not, as for yank), through the repository that holds the project (405 on a group).
    Refusals are recorded in the audit log as ``audit_action``."""
    repo, grant = await authorize_grant(request, Permission.WRITE, action=audit_action)
    try:
        project = normalize_project(request.path_params["project"])
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    if not grant.may_yank(project):
        raise await _refused(request, repo, grant, audit_action, project, 403, grant.yank_refusal(project, action))
    if repo.group is not None:
        raise HTTPException(405, f"{action.capitalize()} through the URL of the repository that holds {project!r}, "
                                 f"not group {repo.name!r}.")
    return repo, grant, project


async def _refused(request: Request, repo: PkgRepo, grant: Grant, action: str, project: str, status: int,
                   message: str, filename: str = "") -> HTTPException:
    """The error for a refused write, recorded in the audit log first."""
    await record(repo, audit_event(request, repo, action, status, grant=grant, project=project, filename=filename,
                                   detail=message))
    return HTTPException(status, message)


async def set_status(request: Request) -> Response:
    """PEP 792: ``POST /status/<project>`` (form ``status``, optional ``reason``)."""
    repo, grant, project = await _lifecycle_target(request, "change the status", "project-status")
    async with request.form(max_files=0, max_fields=5) as form:
        status, reason = str(form.get("status") or ""), str(form.get("reason") or "")
    if status not in STATUSES:
        raise await _refused(request, repo, grant, "project-status", project, 400,
                             f"Unknown status {status[:40]!r}: one of {', '.join(STATUSES)}.")
    if len(reason) > MAX_REASON_CHARS:
        raise await _refused(request, repo, grant, "project-status", project, 400,
                             f"The reason is at most {MAX_REASON_CHARS} characters.")
    changed = await anyio.to_thread.run_sync(repo.set_status, project, status, reason)
    if changed is None:
        raise await _refused(request, repo, grant, "project-status", project, 404,
                             f"Project {project!r} is not in repository {repo.name!r}.")
    log.info("repo %r: project %s is %s (reason %r), by %s", repo.name, project, status, reason, grant.actor)
    await record(repo, audit_event(request, repo, "project-status", 200, grant=grant, project=project,
                                   detail=f"{status}: {reason}" if reason else status))
    return PlainTextResponse(f"{project}: {status}\n")


async def delete(request: Request) -> Response:
    """``POST /delete/<project>`` (every file) or ``/delete/<project>/<filename or version>``."""
    repo, grant, project = await _lifecycle_target(request, "delete", "delete")
    target = request.path_params.get("target")
    deleted = await anyio.to_thread.run_sync(repo.delete, project, target)
    if not deleted:
        what = f"file or version {target!r} of project" if target is not None else "file of project"
        raise await _refused(request, repo, grant, "delete", project, 404,
                             f"No {what} {project!r} in repository {repo.name!r}.", filename=target or "")
    log.info("repo %r: deleted %s by %s", repo.name, ", ".join(deleted), grant.actor)
    for filename in deleted:
        await record(repo, audit_event(request, repo, "delete", 200, grant=grant, project=project, filename=filename))
    return PlainTextResponse("\n".join(deleted) + "\n")


async def retention(request: Request) -> Response:
    """``POST /retention`` (form ``dry_run``): run the repository's retention rules, or (dry run)
    say what they would delete; one ``<filename>\t<why>`` line per file. The write secret only:
    it may delete any project's files."""
    repo, grant = await authorize_grant(request, Permission.WRITE, action="delete")
    if grant.token is not None:
        raise await _refused(request, repo, grant, "delete", "", 403,
                             "Retention spans every project: use the write secret, not a token.")
    if repo.group is not None or repo.mirror is not None:
        raise HTTPException(405, f"Repository {repo.name!r} holds no files of its own: run retention on a hosted one.")
    if RetentionPolicy.of(repo.config) is None:
        raise HTTPException(400, f"Repository {repo.name!r} has no retention rules (retention_* keys of its config).")
    async with request.form(max_files=0, max_fields=5) as form:
        dry_run = str(form.get("dry_run") or "").lower() in ("1", "true", "yes")
    doomed = await anyio.to_thread.run_sync(apply_retention, repo, dry_run)
    if not dry_run:
        log.info("repo %r: retention deleted %d files, by %s", repo.name, len(doomed), grant.actor)
        for item in doomed:
            await record(repo, audit_event(request, repo, "delete", 200, grant=grant, project=item.record.distrib,
                                           filename=item.record.filename, detail=f"retention: {item.why}"))
    return PlainTextResponse("".join(f"{d.record.filename}\t{d.why}\n" for d in doomed))


async def project_json(request: Request) -> Response:
    """pypi.org's JSON API for one project (or one version of it)."""
    repo = await authorize(request, Permission.READ)
    try:
        project = normalize_project(request.path_params["project"])
    except InvalidName:
        raise HTTPException(404, "Not Found") from None
    _, records = await project_records(repo, project)
    urls = JsonApiUrls(files=index_base_url(request), pages=site_base_url(request))
    rendered = render_project_json_api(project, records, request.path_params.get("version"), urls)
    if rendered is None:
        raise HTTPException(404, "Not Found")
    body, serial = rendered
    return Response(body, media_type="application/json",
                    headers={"Cache-Control": "private, max-age=60", "X-PyPI-Last-Serial": str(serial)})


async def yank(request: Request) -> Response:
    """PEP 592: ``POST /yank/<project>/<filename or version>`` (write secret; form ``reason``)."""
    return await _yank(request, True)


async def unyank(request: Request) -> Response:
    return await _yank(request, False)


async def upload(request: Request) -> Response:
    """The legacy upload API: stream the form to staging, then the upload use case; every
    outcome (stored, identical, refused, failed) goes to the audit log."""
    repo, grant = await authorize_grant(request, Permission.WRITE, action="upload")
    named = repo.name  # what metrics count it under (for a group, the group)
    if repo.group is not None:  # uploads to a group go to its upload member
        if repo.group.upload_target is None:
            raise HTTPException(405, f"Group {repo.name!r} has no hosted member to upload to.")
        repo = repo.group.upload_target
    try:
        received = await receive_upload(request, repo.backend.staging_dir(), repo.config.max_file_bytes)
    except UploadRejected as exc:  # too large, not a distribution filename, malformed form
        await record(repo, audit_event(request, repo, "upload", exc.status, grant=grant, detail=exc.reason))
        raise
    except OSError as exc:  # the staging folder is full or gone: the store's fault, not the client's
        raise BackendUnavailable(f"storage error while receiving the upload: {exc.strerror or exc}") from exc
    dist = received.dist

    def accept_and_audit() -> tuple[StoreOutcome, FileRecord]:
        """In one worker thread: the upload, then its audit event (one thread hop, not two)."""
        def audit(status: int, detail: str) -> None:
            if repo.audit is not None:
                repo.audit.record(audit_event(request, repo, "upload", status, grant=grant, project=dist.project,
                                              filename=dist.filename, detail=detail))

        try:
            outcome, stored = accept_upload(repo, received, grant)
        except UploadRejected as exc:
            audit(exc.status, exc.reason)
            raise
        except FileConflict as exc:
            audit(409, str(exc))
            raise
        except BackendUnavailable as exc:
            audit(503, str(exc))
            raise
        audit(200, outcome.value)
        return outcome, stored

    try:
        outcome, stored = await anyio.to_thread.run_sync(accept_and_audit)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(received.staged.path)
    log.info("repo %r: %s %s (%d bytes) by %s", repo.name, outcome.value, stored.filename, stored.size, grant.actor)
    metrics: Metrics | None = request.app.state.metrics
    if metrics is not None and outcome is StoreOutcome.CREATED:
        metrics.uploaded(named, stored.size)
    return PlainTextResponse("OK")


async def index_mtime(request: Request) -> Response:
    """The last successful index sync of the authenticated repo, as a Unix timestamp."""
    repo = await authorize(request, Permission.READ)
    return PlainTextResponse(str(int(repo.last_sync or 0)))


class _PywharfApp(Starlette):
    metrics: Metrics | None = None
    route_classes: Mapping[object, str] = {}

    def build_middleware_stack(self) -> ASGIApp:
        """Security headers outside Starlette's error middleware, so 500s get them too. With
        metrics, their middleware adds them (one wrapper of ``send``, not two) and sees every
        response as sent."""
        inner = super().build_middleware_stack()
        if self.metrics is not None:
            return MetricsMiddleware(inner, self.metrics, self.route_classes)
        return SecurityHeadersMiddleware(inner)


def _route_classes(routes: list[BaseRoute]) -> dict[object, str]:
    """What /metrics labels each endpoint's requests with (``pywharf_core.http.metrics``):
    a handful of classes, so series stay few whatever paths clients send. What is not named
    here is the browser UI (its pages, its static files)."""
    named: dict[object, str] = {
        simple_project: "page", simple_root: "page", download: "file", upload: "upload", yank: "yank",
        unyank: "yank", project_json: "json", index_mtime: "api", create_token: "api", list_tokens: "api",
        revoke_token: "api", audience: "oidc", mint_token: "oidc", burn_token: "oidc", healthz: "health",
        readyz: "health", initialize: "admin", metrics_endpoint: "metrics", set_status: "lifecycle",
        delete: "lifecycle", retention: "lifecycle", read_audit: "api",
    }
    classes: dict[object, str] = {}
    for route in routes:
        endpoint = route.endpoint if isinstance(route, Route) else getattr(route, "app", None)
        classes[endpoint] = named.get(endpoint, "ui")
    return classes


def _hot_routes(prefix: str) -> list[Route]:
    """Pages and files: most requests. Starlette tries routes in order, so these come first for
    both URL forms (a shared ``/simple/`` page used to be tried against ten ``/repos/`` routes)."""
    return [
        Route(f"{prefix}/simple/{{project}}/", simple_project, methods=["GET", "HEAD"]),
        Route(f"{prefix}/simple/{{project}}/{{filename}}", download, methods=["GET", "HEAD"]),
    ]


def _index_routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/simple/", simple_root, methods=["GET", "HEAD"]),
        # Uploads are never redirected (twine aborts on a redirect): accept every spelling.
        Route(f"{prefix}/simple/", upload, methods=["POST"]),
        Route(f"{prefix}/simple", upload, methods=["POST"]),
        Route(f"{prefix}/yank/{{project}}/{{target}}", yank, methods=["POST"]),
        Route(f"{prefix}/unyank/{{project}}/{{target}}", unyank, methods=["POST"]),
        Route(f"{prefix}/status/{{project}}", set_status, methods=["POST"]),
        Route(f"{prefix}/delete/{{project}}", delete, methods=["POST"]),
        Route(f"{prefix}/delete/{{project}}/{{target}}", delete, methods=["POST"]),
        Route(f"{prefix}/retention", retention, methods=["POST"]),
        Route(f"{prefix}/pypi/{{project}}/json", project_json, methods=["GET", "HEAD"]),
        Route(f"{prefix}/pypi/{{project}}/{{version}}/json", project_json, methods=["GET", "HEAD"]),
        Route(f"{prefix}/index_mtime/", index_mtime, methods=["GET"]),
    ]


def create_app(state: ServerState, *, public_url: str | None = None) -> Starlette:
    """The application; ``public_url`` (``--public_url``) is the base of every absolute URL."""
    # The package index, at /repos/<repo>/ (the URL names the repository: clients keep
    # credentials per URL, so two repositories of one server can be used together) and at the
    # shared /simple/ (0.2.3's: the username names it). Plain routes, not a Mount, which adds a
    # child scope and a second routing pass to every request.
    routes = [
        *_hot_routes("/repos/{repo}"),
        *_hot_routes(""),
        *_index_routes("/repos/{repo}"),
        Route("/repos/{repo}/", upload, methods=["POST"]),
        *_index_routes(""),
        Route("/", upload, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/initialize/", initialize, methods=["POST"]),
        Route("/_/oidc/audience", audience, methods=["GET"]),
        Route("/_/oidc/mint-token", mint_token, methods=["POST"]),
        Route("/_/oidc/github/mint-token", mint_token, methods=["POST"]),  # gh-action-pypi-publish before 2024
        Route("/_/oidc/burn-token", burn_token, methods=["POST"]),
        Route("/_/tokens/{repo}", create_token, methods=["POST"]),
        Route("/_/tokens/{repo}", list_tokens, methods=["GET"]),
        Route("/_/tokens/{repo}/{token_id}", revoke_token, methods=["DELETE"]),
        Route("/_/audit/{repo}", read_audit, methods=["GET"]),
        *web_routes(authorize),  # the browser UI: /, /login/, /logout/, /project/..., /tokens/, /static/
    ]
    metrics = Metrics(state) if state.settings.metrics_enabled else None
    if metrics is not None:  # else no route (404) and no middleware (no cost per request)
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))  # last: never on a hot path
    app = _PywharfApp(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.metrics, app.route_classes = metrics, _route_classes(routes)
    app.state.metrics = metrics
    app.state.pywharf = state
    app.add_middleware(CrossSiteWriteGuard)  # every unsafe method, present and future
    app.state.public_url = public_url
    return app
