"""The browser UI's pages: ``/login/``, ``/logout/``, the repo home ``/``, ``/project/<name>/``
(also under a repository's own URL, ``/repos/<repo>/project/<name>/``) and, for a
write-secret session, ``/tokens/`` (``token_pages.py``) and ``/audit/`` (``audit_page.py``).

Logout is a CSRF-protected ``POST`` (a GET could be triggered by any other site) that revokes
the session server-side; ``GET /logout/`` only shows the button. Every page carries the CSRF
token its logout button needs.

Server-rendered (Jinja2 through Starlette), no build step, one small script for niceties that
all work without it (filter as you type, copy buttons). Pages need read access, granted by the
app's own ``authorize`` (basic auth or the session cookie); without it they redirect to the
login form, while the API endpoints keep answering 401 as package tools expect.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pywharf_core.http.answering import project_records
from pywharf_core.http.public_url import repo_index_url, repo_prefix
from pywharf_core.http.web.audit_page import AuditPage
from pywharf_core.http.web.csrf import CSRF_FIELD, CsrfGuard, set_csrf_cookie
from pywharf_core.http.web.readme import find_description, render_description
from pywharf_core.http.web.secret_check import TooManyFailures, check_secret
from pywharf_core.http.web.session import SESSION_COOKIE, current_session, end_session, session_codec
from pywharf_core.http.web.token_pages import TokenPages
from pywharf_core.http.web.views import ProjectSummary, ReleaseView, project_summaries, release_view
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import normalize_project
from pywharf_core.service.repository import PkgRepo
from pywharf_core.storage.backend import Permission

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

Authorize = Callable[[Request, Permission], Awaitable[PkgRepo]]

# Pages hold private data and a login form: never cached, never framed, scripts only from us.
# Images may come from https (README badges); everything else from this origin only.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_DESCRIPTION_CACHE_SIZE = 128
_MAX_QUERY_CHARS = 200


def safe_next(target: object) -> str:
    """Where to go after login: a path on this site only (no ``//host``, no scheme)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if target.startswith(("/login", "/logout")) or any(ord(c) < 0x20 for c in target):
        return "/"
    return target


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


class WebUI:
    """Per-app state of the UI: templates, the login rate limit and render caches."""

    def __init__(self, authorize: Authorize) -> None:
        self.authorize = authorize
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        env.globals["static"] = self.static_url
        self.templates = Jinja2Templates(env=env)
        # Versioned static URLs: a new release's CSS is never hidden behind a cached old one.
        self._static_versions = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in STATIC_DIR.iterdir() if p.is_file()
        }
        self._summaries: dict[str, tuple[IndexSnapshot, list[ProjectSummary]]] = {}
        self._descriptions: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.home, methods=["GET", "HEAD"]),
            Route("/login/", self.login_form, methods=["GET", "HEAD"]),
            Route("/login/", self.login_submit, methods=["POST"]),
            Route("/logout/", self.logout_form, methods=["GET", "HEAD"]),
            Route("/logout/", self.logout, methods=["POST"]),
            Route("/project/{project}/", self.project, methods=["GET", "HEAD"]),
            Route("/project/{project}/{version}/", self.project, methods=["GET", "HEAD"]),
            # Under a repository's own URL (where the JSON API asked through it links to): the
            # URL names the repository, as for its index (an API token works, a session opens
            # only its own repository's).
            Route("/repos/{repo}/project/{project}/", self.project, methods=["GET", "HEAD"]),
            Route("/repos/{repo}/project/{project}/{version}/", self.project, methods=["GET", "HEAD"]),
            *TokenPages(self).routes(),
            *AuditPage(self).routes(),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
            Route("/favicon.ico", self.favicon, methods=["GET", "HEAD"]),
        ]

    async def favicon(self, request: Request) -> Response:
        """Browsers ask for it on every API page they show: answer "nothing" instead of a 404."""
        return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})

    def static_url(self, name: str) -> str:
        return f"/static/{quote(name)}?v={self._static_versions.get(name, '0')}"

    # -- helpers -------------------------------------------------------------------------------

    def _page(self, request: Request, template: str, context: Mapping[str, Any], status: int = 200,
              headers: Mapping[str, str] | None = None) -> Response:
        """A page with the CSRF token its forms need (logout on every page, login), and whether
        to link the tokens page."""
        token, new_nonce = CsrfGuard(session_codec(request).keys.csrf).issue(request)
        full = {"repo_name": "", "title": "", "csrf_field": CSRF_FIELD, "csrf_token": token, **context}
        full["manages_tokens"] = self._session_manages_tokens(request, full["repo_name"])
        response = self.templates.TemplateResponse(
            request, template, full, status_code=status, headers={**PAGE_HEADERS, **(headers or {})}
        )
        if new_nonce is not None:
            set_csrf_cookie(response, new_nonce, secure=_is_https(request))
        return response

    def error_page(self, request: Request, repo_name: str, status: int, title: str, message: str) -> Response:
        """The error page of the UI's write-session pages (tokens, audit): a title and a message."""
        return self._page(request, "error.html", {"repo_name": repo_name, "title": title, "message": message},
                          status=status)

    @staticmethod
    def _session_manages_tokens(request: Request, repo_name: str) -> bool:
        """Whether the request's session holds the write secret of ``repo_name``, as its cached
        verdict says (the page's own access check has just made it; no backend call here)."""
        session = current_session(request) if repo_name else None
        if session is None or session.repo != repo_name:
            return False
        repo = request.app.state.pywharf.repos.get(repo_name)
        grant = repo.cached_grant(session.secret) if repo is not None else None
        return grant is not None and grant.manages_tokens

    async def _viewer(self, request: Request) -> PkgRepo | None:
        """The repo the request may read (basic auth or session cookie), or None."""
        try:
            return await self.authorize(request, Permission.READ)
        except HTTPException as exc:
            if exc.status_code == 401:
                return None
            raise

    @staticmethod
    def _to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login/?" + urlencode({"next": target}), status_code=303)

    def _not_found(self, request: Request, repo: PkgRepo, message: str) -> Response:
        return self._page(request, "not_found.html", {"repo_name": repo.name, "title": "Not found",
                                                      "message": message}, status=404)

    def _login_page(self, request: Request, *, status: int = 200, error: str = "", notice: str = "",
                    repo_value: str = "", next_target: str = "/", headers: Mapping[str, str] | None = None) -> Response:
        context = {"title": "Log in", "error": error, "notice": notice, "repo_value": repo_value,
                   "next": safe_next(next_target)}
        return self._page(request, "login.html", context, status=status, headers=headers)

    # -- login / logout ------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        notice = "You are logged out." if request.query_params.get("logged_out") else ""
        return self._login_page(request, notice=notice, next_target=request.query_params.get("next", "/"))

    async def login_submit(self, request: Request) -> Response:
        async with request.form(max_files=0, max_fields=10, max_part_size=64 * 1024) as form:
            name = str(form.get("repo") or "").strip()
            secret = form.get("secret")
            token = form.get(CSRF_FIELD)
            next_target = safe_next(form.get("next"))
        secret = secret if isinstance(secret, str) else ""
        codec = session_codec(request)
        if not CsrfGuard(codec.keys.csrf).verify(request, token):
            return self._login_page(
                request, status=403, repo_value=name, next_target=next_target,
                error="This form has expired or your browser did not send its cookie. "
                      "Please try again (this site needs cookies).",
            )
        try:
            repo, grant = await check_secret(request, name, secret)
        except TooManyFailures as exc:
            return self._login_page(
                request, status=429, repo_value=name, next_target=next_target,
                headers={"Retry-After": str(exc.retry_after)},
                error=f"Too many failed attempts. Please wait {exc.retry_after} seconds before trying again.",
            )
        permission = grant.permission
        if repo is None or permission is Permission.NONE:
            return self._login_page(request, repo_value=name, next_target=next_target,
                                    error="Invalid repository name or secret.")
        response = RedirectResponse(next_target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, codec.encode(repo.name, secret, permission), max_age=codec.max_age(permission),
            path="/", httponly=True, samesite="lax", secure=_is_https(request),
        )
        return response

    async def logout_form(self, request: Request) -> Response:
        """A GET never logs out (any site could trigger it): it shows the logout button."""
        session_repo = current_session(request)
        if session_repo is None:
            return RedirectResponse("/login/", status_code=303)
        return self._page(request, "logout.html", {"repo_name": session_repo.repo, "title": "Log out"})

    async def logout(self, request: Request) -> Response:
        """End the session here and everywhere its cookie was copied (server-side revocation),
        and forget the pages the browser cached with it (simple pages may be cached for
        --page_max_age, files for a year): ``Clear-Site-Data`` works on https and localhost."""
        async with request.form(max_files=0, max_fields=5, max_part_size=4096) as form:
            token = form.get(CSRF_FIELD)
        if not CsrfGuard(session_codec(request).keys.csrf).verify(request, token):
            raise HTTPException(403, "This logout form has expired or your browser did not send its cookie: "
                                     "reload the page and try again.")
        end_session(request)
        response = RedirectResponse("/login/?logged_out=1", status_code=303, headers={"Clear-Site-Data": '"cache"'})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_is_https(request))
        return response

    # -- pages ---------------------------------------------------------------------------------

    def _project_list(self, repo: PkgRepo) -> list[ProjectSummary]:
        """Summaries for the repo's current snapshot, computed once per snapshot."""
        snapshot = repo.snapshot
        cached = self._summaries.get(repo.name)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        summaries = project_summaries(snapshot)
        self._summaries[repo.name] = (snapshot, summaries)
        return summaries

    async def home(self, request: Request) -> Response:
        repo = await self._viewer(request)
        if repo is None:
            return self._to_login(request)
        projects = self._project_list(repo)
        query = request.query_params.get("q", "")[:_MAX_QUERY_CHARS]
        shown = [p for p in projects if p.matches(query)]
        return self._page(request, "home.html", {"repo_name": repo.name, "title": f"Projects in {repo.name}",
                                                 "projects": shown, "total": len(projects), "q": query,
                                                 "index_url": repo_index_url(request, repo.name)})

    async def project(self, request: Request) -> Response:
        repo = await self._viewer(request)
        if repo is None:
            return self._to_login(request)
        raw, version = request.path_params["project"], request.path_params.get("version")
        try:
            name = normalize_project(raw)
        except InvalidName:
            return self._not_found(request, repo, "This is not a valid project name.")
        prefix = repo_prefix(request)
        if name != raw:
            suffix = f"{quote(version, safe='')}/" if version else ""
            return RedirectResponse(f"{prefix}/project/{quote(name)}/{suffix}", status_code=301)
        try:
            source, records = await project_records(repo, name)  # a group's member, a proxy's upstream
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            source, records = repo, ()
        if source.mirror is None and not source.snapshot.offers_files(name):
            status = source.snapshot.statuses[name]
            reason = f": {status.reason}" if status.reason else ""
            return self._not_found(request, repo, f"Project {name!r} is quarantined{reason}.")
        if not records:
            return self._not_found(request, repo, f"There is no project {name!r} in repository {repo.name!r}.")
        view = release_view(name, records, version, prefix)
        if view is None:
            return self._not_found(request, repo, f"Project {name!r} has no version {version!r}.")
        description = await self._description(source, view)
        context = {
            "repo_name": repo.name,
            "title": f"{name} {view.version}",
            "view": view,
            "description": description,
            "install": install_lines(repo.name, repo_index_url(request, repo.name), view),
        }
        return self._page(request, "project.html", context)

    async def _description(self, repo: PkgRepo, view: ReleaseView) -> str:
        """The release's rendered README ("" when it has none), rendered once per release."""
        records = [row.record for row in view.files]
        key = (repo.name, view.project, view.version, tuple(r.sha256 for r in records))
        cached = self._descriptions.get(key)
        if cached is not None:
            self._descriptions.move_to_end(key)
            return cached

        def load() -> str:
            found = find_description(repo.backend, records)
            return render_description(*found) if found is not None else ""

        html = await anyio.to_thread.run_sync(load)
        self._descriptions[key] = html
        while len(self._descriptions) > _DESCRIPTION_CACHE_SIZE:
            self._descriptions.popitem(last=False)
        return html


def install_lines(repo_name: str, index_url: str, view: ReleaseView) -> dict[str, str]:
    """Copyable ``pip`` / ``uv`` commands: the index URL without any credentials in it."""
    requirement = view.project if view.version == view.latest else f"{view.project}=={view.version}"
    index_name = re.sub(r"[^A-Za-z0-9._-]", "-", repo_name).strip("-.") or "pywharf"
    env_name = re.sub(r"[^A-Z0-9]", "_", index_name.upper())
    return {
        "pip": f"pip install --index-url {index_url} {requirement}",
        "uv": f"uv add --index {index_name}={index_url} {requirement}",
        "user": repo_name,
        "uv_env": f"UV_INDEX_{env_name}_USERNAME / UV_INDEX_{env_name}_PASSWORD",
    }
