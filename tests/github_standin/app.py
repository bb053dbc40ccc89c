"""The stand-in's ASGI application: GitHub's REST behaviour for the endpoints a releases backend and PyGithub use.

One pipeline handles every request so that the cross-cutting GitHub behaviours are uniform: injected faults,
authentication (401 "Bad credentials"), the primary rate limit and its ``x-ratelimit-*`` headers, ETags with
``If-None-Match`` -> 304 (not counted against the limit), the request log and (optionally) OpenAPI validation of
what was sent. Handlers only implement endpoint semantics and raise `ApiError` for GitHub's error answers.

Request bodies are streamed: uploads are read chunk by chunk (asset bytes are then kept in memory) and
downloads are sent in 64 KiB chunks, so tens of MB pass without a single large read.

Injected delays (``add_fault(..., delay=...)``) are ``asyncio`` sleeps on the server's event loop: a slow answer
to one client never holds up the others, which is what a client timeout test needs (a blocking sleep would turn
"GitHub is slow for this call" into "GitHub is down").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.requests import ClientDisconnect, Request

from . import shapes
from .faults import AFTER, BEFORE, DOCS, STARTER, Exchange, Fault, FaultTable, RateLimiter, RecordedRequest
from .state import (
    BLOB_API_LIMIT,
    PERMISSION_LEVELS,
    Asset,
    Release,
    Repo,
    User,
    World,
    sanitize_asset_name,
)

CHUNK = 64 * 1024
CLIENT_CLOSED = 499  # nginx's "client closed request": recorded when the client hung up mid-request
STORAGE_URL_LIFETIME = 300.0  # GitHub's signed asset URLs live about five minutes
JSON_TYPE = "application/json; charset=utf-8"
RAW_MEDIA_TYPES = ("application/vnd.github.raw", "application/vnd.github.v3.raw")


class ApiError(Exception):
    """A GitHub error answer: ``{"message", "documentation_url", "status"}`` plus ``errors`` for 422s."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        doc: str = DOCS,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.doc = doc

    def reply(self) -> Reply:
        body: dict[str, Any] = {"message": self.message, "documentation_url": self.doc, "status": str(self.status)}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_reply(self.status, body, self.headers)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def validation_failed(resource: str, code: str, field_name: str, **extra: str) -> ApiError:
    return ApiError(422, "Validation Failed", [{"resource": resource, "code": code, "field": field_name, **extra}])


@dataclass
class Reply:
    """What a handler answers; ``body`` is bytes or an async iterator of chunks (then ``length`` is set)."""

    status: int
    body: bytes | AsyncIterator[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None


@dataclass
class Trace:
    """What happened to one request on its way through the pipeline, for the request log."""

    delay: float = 0.0  # seconds injected delays held it back


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"content-type": JSON_TYPE, **(headers or {})})


@dataclass
class Ctx:
    """Per-request context handed to handlers."""

    request: Request
    app: StandInApp
    user: User | None
    query: dict[str, str]
    raw_query: list[tuple[str, str]]
    path: str
    injected: Fault | None = None  # a starter fault a handler applied: the pipeline answers it

    @property
    def world(self) -> World:
        return self.app.world

    @property
    def urls(self) -> shapes.Urls:
        return self.app.urls

    def header(self, name: str) -> str:
        return self.request.headers.get(name, "")

    def repo(self, params: dict[str, str], need: str = "pull") -> tuple[Repo, str]:
        """The addressed repo and the caller's role, enforcing GitHub's visibility and permission rules.

        Private repos the caller cannot see are 404 (GitHub never confirms they exist); anonymous writes are
        401 "Requires authentication"; an authenticated caller below the needed role gets 403 "Resource not
        accessible by personal access token" (what GitHub answers for a token whose user can read only).
        """
        with self.world.lock:
            if params.get("repo_id"):
                repo = self.world.repos_by_id.get(int(params["repo_id"]))
            else:
                repo = self.world.find_repo(params["owner"], params["repo"])
            role = repo.role_of(self.user) if repo is not None else None
        if repo is None or role is None:
            raise not_found()
        if PERMISSION_LEVELS[role] < PERMISSION_LEVELS[need]:
            if self.user is None:
                raise ApiError(401, "Requires authentication")
            raise ApiError(403, "Resource not accessible by personal access token")
        return repo, role

    async def json(self) -> dict[str, Any]:
        raw = await self.request.body()
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ApiError(400, "Problems parsing JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "Problems parsing JSON")
        return obj

    def page_args(self) -> tuple[int, int]:
        """GitHub's pagination parameters: ``per_page`` default 30, capped at 100; ``page`` from 1."""
        try:
            per_page = int(self.query.get("per_page", "30"))
        except ValueError:
            per_page = 30
        try:
            page = int(self.query.get("page", "1"))
        except ValueError:
            page = 1
        return max(1, min(100, per_page if per_page > 0 else 30)), max(1, page)

    def paginate(self, items: list[Any], canonical_url: str) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` and its ``Link`` header in GitHub's exact format.

        GitHub builds the links on the ``/repositories/{id}/...`` form of the URL, puts ``page`` first and keeps
        the caller's other query parameters; PyGithub's parser needs ``<url>; rel="next", <url>; rel="last"``
        separated by ``", "``.
        """
        per_page, page = self.page_args()
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        rest = [(k, v) for k, v in self.raw_query if k != "page"]

        def link(number: int) -> str:
            return f"{canonical_url}?{urlencode([('page', str(number)), *rest])}"

        parts = []
        if page > 1:
            parts.append(f'<{link(min(page - 1, last))}>; rel="prev"')
        if page < last:
            parts.append(f'<{link(page + 1)}>; rel="next"')
            parts.append(f'<{link(last)}>; rel="last"')
        if page > 1:
            parts.append(f'<{link(1)}>; rel="first"')
        return chunk, ({"link": ", ".join(parts)} if parts else {})


def body_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    """A typed member of a JSON request body, with GitHub's 422 wording for missing and mistyped members."""
    if name not in body or (body[name] is None and not required):
        if required:
            raise ApiError(422, f'Invalid request.\n\n"{name}" wasn\'t supplied.')
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        type_name = {str: "string", bool: "boolean", int: "integer", dict: "object"}.get(
            kind if isinstance(kind, type) else kind[0], "value"
        )
        raise ApiError(422, f"Invalid request.\n\nFor 'properties/{name}', {json.dumps(value)} is not a {type_name}.")
    return value


Handler = Callable[..., Awaitable[Reply]]
REPO = r"/(?:repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)|repositories/(?P<repo_id>\d+))"


class StandInApp:
    """The ASGI callable; ``base`` is the external URL base every URL in a response is built from."""

    def __init__(self, world: World, base: str, plus_to_dot: bool = False) -> None:
        self.world = world
        self.urls = shapes.Urls(base)
        self.plus_to_dot = plus_to_dot
        self.faults = FaultTable()
        self.rate = RateLimiter()
        self.requests: list[RecordedRequest] = []
        self.exchanges: list[Exchange] = []
        self.capture_exchanges = False
        self.internal_errors: list[str] = []
        self.stopping = False  # set by GitHubStandIn.stop(): injected delays end at once
        self.api_routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for method, pattern, handler in [
            ("GET", r"/?", self.get_root),
            ("GET", r"/user", self.get_user),
            ("POST", r"/user/repos", self.create_user_repo),
            ("GET", r"/rate_limit", self.get_rate_limit),
            ("GET", r"/orgs/(?P<org>[^/]+)", self.get_org),
            ("POST", r"/orgs/(?P<org>[^/]+)/repos", self.create_org_repo),
            ("GET", REPO, self.get_repo),
            ("GET", REPO + r"/collaborators/(?P<username>[^/]+)/permission", self.get_permission),
            ("GET", REPO + r"/releases", self.list_releases),
            ("POST", REPO + r"/releases", self.create_release),
            ("GET", REPO + r"/releases/latest", self.get_latest_release),
            ("GET", REPO + r"/releases/tags/(?P<tag>.+)", self.get_release_by_tag),
            ("GET", REPO + r"/releases/assets/(?P<asset_id>\d+)", self.get_asset),
            ("PATCH", REPO + r"/releases/assets/(?P<asset_id>\d+)", self.update_asset),
            ("DELETE", REPO + r"/releases/assets/(?P<asset_id>\d+)", self.delete_asset),
            ("GET", REPO + r"/releases/(?P<release_id>\d+)", self.get_release),
            ("PATCH", REPO + r"/releases/(?P<release_id>\d+)", self.update_release),
            ("DELETE", REPO + r"/releases/(?P<release_id>\d+)", self.delete_release),
            ("GET", REPO + r"/releases/(?P<release_id>\d+)/assets", self.list_assets),
            ("GET", REPO + r"/contents(?:/(?P<path>.*))?", self.get_contents),
            ("PUT", REPO + r"/contents/(?P<path>.+)", self.put_contents),
            ("DELETE", REPO + r"/contents/(?P<path>.+)", self.delete_contents),
            ("GET", REPO + r"/git/blobs/(?P<sha>[0-9a-fA-F]+)", self.get_blob),
            ("GET", REPO + r"/git/ref/(?P<ref>.+)", self.get_ref),
            ("GET", REPO + r"/git/refs(?:/(?P<ref>.+))?", self.list_refs),
            ("POST", REPO + r"/git/refs", self.create_ref),
            ("PATCH", REPO + r"/git/refs/(?P<ref>.+)", self.update_ref),
            ("DELETE", REPO + r"/git/refs/(?P<ref>.+)", self.delete_ref),
            ("GET", REPO + r"/branches", self.list_branches),
            ("GET", REPO + r"/branches/(?P<branch>.+)", self.get_branch),
        ]:
            self.api_routes.append((method, re.compile(pattern + "$"), handler))
        self.upload_route = re.compile(r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/releases/(?P<release_id>\d+)/assets$")

    # ------------------------------------------------------------------ pipeline

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        raw_path_text = raw_path.decode("latin-1").split("?", 1)[0]
        path = unquote(raw_path_text)
        raw_query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        method = scope["method"].upper()
        request_headers = {k.lower(): v for k, v in request.headers.items()}
        trace = Trace()
        try:
            reply, counted_identity = await self.pipeline(request, method, raw_path_text, path, raw_query, trace)
        except ClientDisconnect:  # nothing can be answered; the log still shows the attempt
            self.requests.append(
                RecordedRequest(method, path, dict(raw_query), CLIENT_CLOSED, request_headers, trace.delay)
            )
            return
        except Exception:
            self.internal_errors.append(traceback.format_exc())
            reply, counted_identity = json_reply(500, {"message": "stand-in internal error", "status": "500"}), None
        await self.drain(request)
        if counted_identity is not None:
            reply.headers.update(self.rate.headers(counted_identity))
        self.requests.append(RecordedRequest(method, path, dict(raw_query), reply.status, request_headers, trace.delay))
        if self.capture_exchanges:
            self.capture(request, method, raw_path_text, scope, reply, request_headers)
        await self.send(send, reply, head=method == "HEAD")

    async def pause(self, seconds: float, trace: Trace) -> None:
        """An injected delay: yields to the event loop (other requests go on) and ends early on stop()."""
        trace.delay += seconds
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    async def pipeline(
        self,
        request: Request,
        method: str,
        raw_path: str,
        path: str,
        raw_query: list[tuple[str, str]],
        trace: Trace,
    ) -> tuple[Reply, str | None]:
        """Area dispatch, faults, auth, rate limit, handler, apply-first faults, ETag/304, rate accounting.

        A fault with ``status=None`` only delays: after its pause the request goes on as if nothing happened.
        """
        if raw_path.startswith("/api/v3"):
            sub, routes = raw_path[len("/api/v3") :], self.api_routes
        elif raw_path.startswith("/api/uploads/"):
            sub, routes = raw_path[len("/api/uploads") :], [("POST", self.upload_route, self.upload_asset)]
        else:  # storage and web pages: no auth, no rate limit (they are not the API)
            fault = self.faults.take(method, path, BEFORE)
            if fault is not None:
                await self.pause(fault.delay, trace)
                if fault.status is not None:
                    return self.fault_reply(fault), None
            if raw_path.startswith("/api/_storage/"):
                return await self.storage(request, method, raw_path[len("/api/_storage/") :]), None
            return await self.web(request, method, raw_path), None

        identity = f"ip:{request.client.host if request.client else 'unknown'}"
        try:
            user = self.authenticate(request)
        except ApiError as error:
            user, failed = None, error
        else:
            failed = None
        if user is not None:
            identity = f"user:{user.id}"
        fault = self.faults.take(method, path, BEFORE)
        if fault is not None:  # injected before GitHub would even look at the request
            await self.pause(fault.delay, trace)
            if fault.status is not None:
                return self.fault_reply(fault), identity
        if failed is not None:
            return failed.reply(), identity
        handler, params = self.route(routes, method, sub)
        counted = handler is not None and handler != self.get_rate_limit
        if counted and self.rate.exhausted(identity):
            who = f"user ID {user.id}" if user else (request.client.host if request.client else "your IP")
            message = f"API rate limit exceeded for {who}."
            if user is None:
                message += " (But here's the good news: Authenticated requests get a higher rate limit.)"
            error = ApiError(403, message, doc="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api")
            return error.reply(), identity
        ctx = Ctx(request, self, user, dict(raw_query), raw_query, path)
        try:
            if handler is None:
                raise not_found()
            reply = await handler(ctx, **params)
        except ApiError as error:
            reply = error.reply()
        after = ctx.injected or self.faults.take(method, path, AFTER)
        if after is not None:
            await self.pause(after.delay, trace)
            if after.status is not None:
                return self.fault_reply(after), identity
        reply.headers.update(self.github_headers(user, method, reply))
        if method in ("GET", "HEAD") and reply.status == 200 and isinstance(reply.body, bytes):
            etag = 'W/"' + hashlib.sha256(reply.body).hexdigest() + '"'
            reply.headers["etag"] = etag
            if etag_matches(request.headers.get("if-none-match", ""), etag):
                keep = {k: v for k, v in reply.headers.items() if k not in ("content-type", "content-length")}
                return Reply(304, b"", keep), identity  # 304s do not count against the rate limit
        if counted:
            self.rate.spend(identity)
        return reply, identity

    def route(self, routes: list[tuple[str, re.Pattern[str], Handler]], method: str, sub: str) -> tuple[Any, Any]:
        for route_method, pattern, handler in routes:
            match = pattern.match(sub)
            if match and (route_method == method or (route_method == "GET" and method == "HEAD")):
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return handler, params
        return None, {}

    def authenticate(self, request: Request) -> User | None:
        """``Authorization: token|Bearer <t>`` or Basic ``login:<t>``; unknown or revoked tokens are 401."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, credential = header.partition(" ")
        token = credential.strip()
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                token = ""
        elif scheme.lower() not in ("token", "bearer"):
            token = ""
        with self.world.lock:
            user = self.world.tokens.get(token) if token else None
        if user is None:
            raise ApiError(401, "Bad credentials")
        return user

    def github_headers(self, user: User | None, method: str, reply: Reply) -> dict[str, str]:
        headers = {
            "x-github-api-version-selected": "2022-11-28",
            "x-github-request-id": secrets.token_hex(8).upper(),
            "x-content-type-options": "nosniff",
            "vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
        }
        if "x-github-media-type" not in reply.headers:
            headers["x-github-media-type"] = "github.v3; format=json"
        if user is not None:
            headers["x-oauth-scopes"] = "repo"
            headers["x-accepted-oauth-scopes"] = "repo"
        if method == "GET" and reply.status == 200:
            headers["cache-control"] = "private, max-age=60, s-maxage=60"
        return headers

    def fault_reply(self, fault: Fault) -> Reply:
        status, headers, body = fault.render()
        return Reply(status, body, headers)

    async def drain(self, request: Request) -> None:
        """Read what is left of the request body so the client always gets to read our answer."""
        try:
            async for _ in request.stream():
                pass
        except (RuntimeError, ClientDisconnect):
            pass

    async def send(self, send: Any, reply: Reply, head: bool) -> None:
        headers = dict(reply.headers)
        if isinstance(reply.body, bytes):
            headers["content-length"] = str(len(reply.body))
        elif reply.length is not None:
            headers["content-length"] = str(reply.length)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        if isinstance(reply.body, bytes):
            await send({"type": "http.response.body", "body": b"" if head else reply.body})
            return
        if not head:
            async for chunk in reply.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def capture(
        self, request: Request, method: str, raw_path: str, scope: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> None:
        body = getattr(request, "_body", None)
        if body is not None and "json" not in headers.get("content-type", ""):
            body = None  # uploads: the validator needs only the parameters
        query = scope.get("query_string", b"").decode("latin-1")
        self.exchanges.append(
            Exchange(
                method=method,
                url=self.urls.base + raw_path + (f"?{query}" if query else ""),
                request_headers=headers,
                request_body=body,
                status=reply.status,
                response_headers={k.lower(): v for k, v in reply.headers.items()},
                response_body=reply.body if isinstance(reply.body, bytes) else None,
            )
        )

    # ------------------------------------------------------------------ storage and web

    async def storage(self, request: Request, method: str, token: str) -> Reply:
        """A signed storage URL: no auth needed (the token is the credential), expires like S3 presigned URLs.

        An ``Authorization`` header is ignored: with real GitHub the redirect leaves the API host and clients
        drop it, but here storage shares the host so requests keeps sending it.
        """
        if method not in ("GET", "HEAD"):
            return s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        with self.world.lock:
            grant = self.world.grants.get(token)
            alive = grant is not None and grant.asset.id in self.world.assets
        if grant is None or not alive:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if grant.expires < time.time():
            return s3_error(403, "AccessDenied", "Request has expired")
        return self.serve_bytes(request, method, grant.asset)

    def serve_bytes(self, request: Request, method: str, asset: Asset) -> Reply:
        data = asset.data
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        headers = {
            "content-type": asset.content_type,
            "content-disposition": f"attachment; filename={quote(asset.name)}",
            "accept-ranges": "bytes",
            "etag": etag,
            "last-modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(asset.updated_at)),
        }
        if etag_matches(request.headers.get("if-none-match", ""), etag):
            return Reply(304, b"", headers)
        start, end, status = 0, len(data), 200
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
        if wanted and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                start = int(wanted.group(1))
                end = min(len(data), int(wanted.group(2)) + 1) if wanted.group(2) else len(data)
            else:
                start = max(0, len(data) - int(wanted.group(2)))
            if start >= len(data) or start >= end:
                return Reply(416, b"", {"content-range": f"bytes */{len(data)}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{len(data)}"
        if method == "GET":
            with self.world.lock:
                asset.download_count += 1
        view = memoryview(data)[start:end]

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, len(view), CHUNK):
                yield bytes(view[offset : offset + CHUNK])

        return Reply(status, chunks(), headers, length=len(view))

    async def web(self, request: Request, method: str, raw_path: str) -> Reply:
        """``browser_download_url`` (public repos only, like GitHub without a browser session) and ``/raw``."""
        match = re.fullmatch(r"/([^/]+)/([^/]+)/releases/download/([^/]+)/([^/]+)", raw_path)
        if match and method in ("GET", "HEAD"):
            owner, name, tag, asset_name = (unquote(g) for g in match.groups())
            with self.world.lock:
                repo = self.world.find_repo(owner, name)
                if repo is not None and not repo.private:
                    for release in repo.releases.values():
                        if not release.draft and release.tag_name == tag:
                            for asset in release.assets:
                                if asset.name == asset_name:
                                    token = self.world.grant(asset, STORAGE_URL_LIFETIME)
                                    return Reply(302, b"", {"location": self.urls.storage(token)})
            return Reply(404, b"Not Found", {"content-type": "text/plain"})
        match = re.fullmatch(r"/raw/([^/]+)/([^/]+)/([^/]+)/(.+)", raw_path)
        if match and method in ("GET", "HEAD"):
            owner, name, ref, path = (unquote(g) for g in match.groups())
            try:
                user = self.authenticate(request)
            except ApiError:
                user = None
            with self.world.lock:
                repo = self.world.find_repo(owner, name)
                commit = repo.resolve(ref) if repo is not None and repo.role_of(user) else None
                sha = commit.tree.get(path) if commit is not None else None
                data = repo.blobs[sha] if repo is not None and sha is not None else None
            if data is not None:
                return Reply(200, data, {"content-type": "text/plain; charset=utf-8"})
        return Reply(404, b"404: Not Found", {"content-type": "text/plain"})

    # ------------------------------------------------------------------ misc endpoints

    async def get_root(self, ctx: Ctx) -> Reply:
        return json_reply(200, shapes.root(ctx.urls))

    async def get_user(self, ctx: Ctx) -> Reply:
        if ctx.user is None:
            raise ApiError(401, "Requires authentication")
        with ctx.world.lock:
            owned = [r for r in ctx.world.repos.values() if r.owner.id == ctx.user.id]
            private = sum(1 for r in owned if r.private)
            body = shapes.private_user(ctx.urls, ctx.user, len(owned) - private, private)
        return json_reply(200, body)

    async def create_user_repo(self, ctx: Ctx) -> Reply:
        if ctx.user is None:
            raise ApiError(401, "Requires authentication")
        return await self.new_repo(ctx, ctx.user)

    async def get_org(self, ctx: Ctx, org: str) -> Reply:
        """``GET /orgs/{org}``: public (anonymous callers too); owners see the full, private view."""
        with ctx.world.lock:
            found = ctx.world.org(org)
            if found is None:
                raise not_found()
            owned = [r for r in ctx.world.repos.values() if r.owner.id == found.id]
            private = sum(1 for r in owned if r.private)
            owner_view = ctx.user is not None and found.members.get(ctx.user.login.lower()) == "admin"
            body = shapes.organization(ctx.urls, found, len(owned) - private, private, owner_view)
        return json_reply(200, body)

    async def create_org_repo(self, ctx: Ctx, org: str) -> Reply:
        """``POST /orgs/{org}/repos``: owners and members may create (GitHub's default member policy); anyone
        else gets GitHub's 403. A member who creates a repository gets admin on it, as on GitHub."""
        if ctx.user is None:
            raise ApiError(401, "Requires authentication")
        with ctx.world.lock:
            found = ctx.world.org(org)
            if found is None:
                raise not_found()
            role = found.members.get(ctx.user.login.lower())
        if role is None:
            raise ApiError(
                403,
                "You need admin access to the organization before adding a repository to it.",
                doc="https://docs.github.com/rest/repos/repos#create-an-organization-repository",
            )
        return await self.new_repo(ctx, found, creator_admin=role != "admin")

    async def new_repo(self, ctx: Ctx, owner: User, creator_admin: bool = False) -> Reply:
        """Create a repository for ``owner`` (user or organisation) from the request body; 201 + Location.
        ``creator_admin`` makes the caller an admin collaborator (an organisation member creating one)."""
        body = await ctx.json()
        name = body_field(body, "name", str, required=True)
        private = bool(body_field(body, "private", bool))
        visibility = body_field(body, "visibility", str)
        if visibility is not None:
            if visibility not in ("public", "private"):
                raise ApiError(422, f"Invalid request.\n\n{json.dumps(visibility)} is not a valid visibility.")
            private = visibility == "private"
        auto_init = bool(body_field(body, "auto_init", bool))
        description = body_field(body, "description", str)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise validation_failed("Repository", "custom", "name", message="name is invalid")
        try:
            repo = ctx.world.create_repo(owner.login, name, private, "main", auto_init, description)
        except ValueError:
            raise ApiError(
                422,
                "Repository creation failed.",
                [
                    {
                        "resource": "Repository",
                        "code": "custom",
                        "field": "name",
                        "message": "name already exists on this account",
                    }
                ],
            ) from None
        with ctx.world.lock:
            if creator_admin and ctx.user is not None:
                repo.collaborators[ctx.user.login.lower()] = "admin"
            reply = json_reply(201, shapes.full_repository(ctx.urls, repo, "admin"))
        reply.headers["location"] = ctx.urls.repo_api(repo)
        return reply

    async def get_rate_limit(self, ctx: Ctx) -> Reply:
        identity = f"user:{ctx.user.id}" if ctx.user else f"ip:{ctx.request.client.host if ctx.request.client else ''}"
        bucket = self.rate.bucket(identity)
        remaining = max(0, bucket.limit - bucket.used)
        return json_reply(200, shapes.rate_limit(bucket.limit, remaining, bucket.reset, bucket.used))

    async def get_repo(self, ctx: Ctx, **params: str) -> Reply:
        repo, role = ctx.repo(params)
        with ctx.world.lock:
            return json_reply(200, shapes.full_repository(ctx.urls, repo, role if ctx.user else None))

    async def get_permission(self, ctx: Ctx, username: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            user = ctx.world.users.get(username.lower())
            if user is None:
                raise ApiError(404, f"{username} is not a user")
            return json_reply(200, shapes.collaborator_permission(ctx.urls, user, repo.role_of(user)))

    # ------------------------------------------------------------------ releases

    def visible_release(self, repo: Repo, role: str, release_id: int) -> Release:
        """A release of ``repo``; drafts exist only for callers with push access (others get 404)."""
        release = self.world.releases.get(release_id)
        if release is None or release.repo is not repo:
            raise not_found()
        if release.draft and PERMISSION_LEVELS[role] < PERMISSION_LEVELS["push"]:
            raise not_found()
        return release

    async def list_releases(self, ctx: Ctx, **params: str) -> Reply:
        repo, role = ctx.repo(params)
        can_push = PERMISSION_LEVELS[role] >= PERMISSION_LEVELS["push"]
        with ctx.world.lock:
            releases = [r for r in repo.releases.values() if can_push or not r.draft]
            releases.sort(key=lambda r: (r.created_at, r.id), reverse=True)  # newest first, like GitHub
            page, headers = ctx.paginate(releases, f"{ctx.urls.api}/repositories/{repo.id}/releases")
            return json_reply(200, [shapes.release(ctx.urls, r) for r in page], headers)

    def published_with_tag(self, repo: Repo, tag: str, other_than: int | None = None) -> Release | None:
        for release in repo.releases.values():
            if not release.draft and release.tag_name == tag and release.id != other_than:
                return release
        return None

    def ensure_tag(self, repo: Repo, tag: str, target: str) -> None:
        """Publishing a release whose tag does not exist creates the tag at ``target_commitish``."""
        if "refs/tags/" + tag in repo.refs:
            return
        commit = repo.resolve(target)
        if commit is None:
            raise validation_failed("Release", "invalid", "target_commitish")
        repo.refs["refs/tags/" + tag] = commit.sha

    async def create_release(self, ctx: Ctx, **params: str) -> Reply:
        repo, _ = ctx.repo(params, need="push")
        body = await ctx.json()
        tag = body_field(body, "tag_name", str, required=True)
        target = body_field(body, "target_commitish", str) or repo.default_branch
        name = body_field(body, "name", str)
        text = body_field(body, "body", str)
        draft = bool(body_field(body, "draft", bool))
        prerelease = bool(body_field(body, "prerelease", bool))
        body_field(body, "generate_release_notes", bool)
        if body.get("make_latest") not in (None, "true", "false", "legacy"):
            raise ApiError(422, f"Invalid request.\n\n{json.dumps(body['make_latest'])} is not a valid make_latest.")
        if not tag.strip():
            raise validation_failed("Release", "missing_field", "tag_name")
        with ctx.world.lock:
            if repo.empty:
                raise ApiError(422, "Repository is empty.")
            if self.published_with_tag(repo, tag) is not None:
                raise validation_failed("Release", "already_exists", "tag_name")
            if "refs/tags/" + tag not in repo.refs and repo.resolve(target) is None:
                raise validation_failed("Release", "invalid", "target_commitish")
            if not draft:
                self.ensure_tag(repo, tag, target)
            release = ctx.world.new_release(
                repo,
                ctx.user,  # type: ignore[arg-type]  # push access implies an authenticated user
                tag_name=tag,
                target_commitish=target,
                name=name,
                body=text,
                draft=draft,
                prerelease=prerelease,
            )
            reply = json_reply(201, shapes.release(ctx.urls, release))
        reply.headers["location"] = f"{ctx.urls.repo_api(repo)}/releases/{release.id}"
        return reply

    async def get_release(self, ctx: Ctx, release_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params)
        with ctx.world.lock:
            return json_reply(200, shapes.release(ctx.urls, self.visible_release(repo, role, int(release_id))))

    async def get_release_by_tag(self, ctx: Ctx, tag: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            release = self.published_with_tag(repo, tag)  # drafts have no tag yet: 404 even with push access
            if release is None:
                raise not_found()
            return json_reply(200, shapes.release(ctx.urls, release))

    async def get_latest_release(self, ctx: Ctx, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            candidates = [r for r in repo.releases.values() if not r.draft and not r.prerelease]
            if not candidates:
                raise not_found()
            latest = max(candidates, key=lambda r: (r.published_at or 0, r.id))
            return json_reply(200, shapes.release(ctx.urls, latest))

    async def update_release(self, ctx: Ctx, release_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params, need="push")
        body = await ctx.json()
        tag = body_field(body, "tag_name", str)
        target = body_field(body, "target_commitish", str)
        name = body_field(body, "name", str)
        text = body_field(body, "body", str)
        draft = body_field(body, "draft", bool)
        prerelease = body_field(body, "prerelease", bool)
        with ctx.world.lock:
            release = self.visible_release(repo, role, int(release_id))
            new_tag = tag if tag is not None else release.tag_name
            new_draft = draft if draft is not None else release.draft
            if not new_draft and self.published_with_tag(repo, new_tag, other_than=release.id) is not None:
                raise validation_failed("Release", "already_exists", "tag_name")
            if target is not None:
                release.target_commitish = target
            if not new_draft:
                self.ensure_tag(repo, new_tag, release.target_commitish)
            if release.draft and not new_draft:
                release.published_at = time.time()
            elif new_draft:
                release.published_at = None
            release.tag_name, release.draft = new_tag, new_draft
            if "name" in body:
                release.name = name
            if "body" in body:
                release.body = text
            if prerelease is not None:
                release.prerelease = prerelease
            release.updated_at = time.time()
            return json_reply(200, shapes.release(ctx.urls, release))

    async def delete_release(self, ctx: Ctx, release_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params, need="push")
        with ctx.world.lock:
            ctx.world.delete_release(self.visible_release(repo, role, int(release_id)))
        return Reply(204)

    # ------------------------------------------------------------------ release assets

    async def list_assets(self, ctx: Ctx, release_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params)
        with ctx.world.lock:
            release = self.visible_release(repo, role, int(release_id))
            url = f"{ctx.urls.api}/repositories/{repo.id}/releases/{release.id}/assets"
            page, headers = ctx.paginate(list(release.assets), url)
            return json_reply(200, [shapes.release_asset(ctx.urls, repo, release, a) for a in page], headers)

    def duplicate_asset(self, release: Release, name: str, other_than: int | None = None) -> bool:
        return any(a.name == name and a.id != other_than for a in release.assets)

    async def upload_asset(self, ctx: Ctx, release_id: str, **params: str) -> Reply:
        """``POST /api/uploads/.../assets?name=&label=`` with the raw file as body (streamed, Content-Length).

        The stored name is GitHub's renamed form of ``name`` (see `sanitize_asset_name`); a second asset with
        the same stored name is 422 ``already_exists`` on ``name``. A body without Content-Length (chunked) is
        refused with 411: the upload endpoint needs the size up front.
        """
        repo, role = ctx.repo(params, need="push")
        doc = "https://docs.github.com/rest/releases/assets#upload-a-release-asset"
        raw_name = ctx.query.get("name")
        if not raw_name:
            raise ApiError(
                422,
                "Validation Failed",
                [{"resource": "ReleaseAsset", "code": "missing_field", "field": "name"}],
                doc=doc,
            )
        name = sanitize_asset_name(raw_name, self.plus_to_dot)
        declared = ctx.header("content-length")
        if not declared.isdigit():
            raise ApiError(411, "Length Required", doc=doc)
        with ctx.world.lock:
            release = self.visible_release(repo, role, int(release_id))
            if self.duplicate_asset(release, name):
                raise validation_failed("ReleaseAsset", "already_exists", "name")
        data = bytearray()
        digest = hashlib.sha256()
        async for chunk in ctx.request.stream():
            data += chunk
            digest.update(chunk)
        if len(data) != int(declared):
            raise ApiError(400, "Bad Content-Length", doc=doc)
        with ctx.world.lock:
            release = self.visible_release(repo, role, int(release_id))
            if self.duplicate_asset(release, name):
                raise validation_failed("ReleaseAsset", "already_exists", "name")
            starter = self.faults.take("POST", ctx.path, STARTER)
            if starter is not None:
                self.leave_starter(ctx, release, name, bytes(data[: len(data) // 2]))
                ctx.injected = starter  # the pipeline answers the fault's status
                return Reply(500)
            asset = ctx.world.new_asset(
                release,
                ctx.user,  # type: ignore[arg-type]
                name=name,
                label=ctx.query.get("label"),
                content_type=ctx.header("content-type") or "application/octet-stream",
                data=bytes(data),
                digest="sha256:" + digest.hexdigest(),
            )
            return json_reply(201, shapes.release_asset(ctx.urls, repo, release, asset))

    def leave_starter(self, ctx: Ctx, release: Release, name: str, partial: bytes) -> Asset:
        """An asset left by an upload that failed half-way: part of the bytes, not uploaded, holding the name.

        GitHub is reported to list such leftovers with ``state: "starter"``, but its OpenAPI description allows
        only ``uploaded`` and ``open`` for ``state``; answers here must validate against that description, so
        the leftover is ``open`` (the not-yet-complete state the description does name). A client must treat
        every state other than ``uploaded`` as incomplete, which covers both. No ``digest`` (GitHub computes it
        when the upload completes).
        """
        return ctx.world.new_asset(
            release,
            ctx.user,  # type: ignore[arg-type]  # uploads need push access: an authenticated user
            name=name,
            label=ctx.query.get("label"),
            content_type=ctx.header("content-type") or "application/octet-stream",
            data=partial,
            digest=None,
            state="open",
        )

    def visible_asset(self, repo: Repo, role: str, asset_id: int) -> tuple[Release, Asset]:
        asset = self.world.assets.get(asset_id)
        if asset is None:
            raise not_found()
        return self.visible_release(repo, role, asset.release_id), asset

    async def get_asset(self, ctx: Ctx, asset_id: str, **params: str) -> Reply:
        """JSON by default; ``Accept: application/octet-stream`` -> 302 to a short-lived signed storage URL."""
        repo, role = ctx.repo(params)
        with ctx.world.lock:
            release, asset = self.visible_asset(repo, role, int(asset_id))
            if "application/octet-stream" in ctx.header("accept"):
                token = ctx.world.grant(asset, STORAGE_URL_LIFETIME)
                return Reply(302, b"", {"location": ctx.urls.storage(token)})
            return json_reply(200, shapes.release_asset(ctx.urls, repo, release, asset))

    async def update_asset(self, ctx: Ctx, asset_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params, need="push")
        body = await ctx.json()
        name = body_field(body, "name", str)
        label = body_field(body, "label", str)
        state = body_field(body, "state", str)
        with ctx.world.lock:
            release, asset = self.visible_asset(repo, role, int(asset_id))
            if name is not None:
                new_name = sanitize_asset_name(name, self.plus_to_dot)
                if self.duplicate_asset(release, new_name, other_than=asset.id):
                    raise validation_failed("ReleaseAsset", "already_exists", "name")
                asset.name = new_name
            if "label" in body:
                asset.label = label
            if state is not None:
                asset.state = state
            asset.updated_at = time.time()
            return json_reply(200, shapes.release_asset(ctx.urls, repo, release, asset))

    async def delete_asset(self, ctx: Ctx, asset_id: str, **params: str) -> Reply:
        repo, role = ctx.repo(params, need="push")
        with ctx.world.lock:
            _, asset = self.visible_asset(repo, role, int(asset_id))
            ctx.world.delete_asset(asset)
        return Reply(204)

    # ------------------------------------------------------------------ contents and git

    def wants_raw(self, ctx: Ctx) -> bool:
        accept = ctx.header("accept")
        return any(media in accept for media in RAW_MEDIA_TYPES)

    async def get_contents(self, ctx: Ctx, path: str = "", **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        path = path.strip("/")
        with ctx.world.lock:
            if repo.empty:
                raise ApiError(404, "This repository is empty.")
            ref = ctx.query.get("ref") or repo.default_branch
            commit = repo.resolve(ref)
            if commit is None:
                raise ApiError(404, f"No commit found for the ref {ref}")
            sha = commit.tree.get(path)
            if sha is not None:
                data = repo.blobs[sha]
                if self.wants_raw(ctx):
                    return Reply(
                        200,
                        data,
                        {"content-type": "application/octet-stream", "x-github-media-type": "github.v3; param=raw"},
                    )
                return json_reply(200, shapes.content_file(ctx.urls, repo, path, ref, sha, data))
            prefix = path + "/" if path else ""
            entries: dict[str, dict[str, Any]] = {}
            for file_path, blob_sha in sorted(commit.tree.items()):
                if not file_path.startswith(prefix):
                    continue
                head, sep, _ = file_path[len(prefix) :].partition("/")
                child = prefix + head
                if sep:
                    if child not in entries:
                        dir_sha = hashlib.sha1(
                            f"dir {commit.tree_sha} {child}".encode(), usedforsecurity=False
                        ).hexdigest()
                        entries[child] = shapes.content_entry(ctx.urls, repo, child, ref, dir_sha, 0, "dir")
                else:
                    size = len(repo.blobs[blob_sha])
                    entries[child] = shapes.content_entry(ctx.urls, repo, child, ref, blob_sha, size, "file")
            if not entries:
                raise not_found()
            return json_reply(200, list(entries.values()))

    def commit_author(self, ctx: Ctx, body: dict[str, Any]) -> tuple[str, str]:
        person = body_field(body, "committer", dict) or body_field(body, "author", dict) or {}
        login = ctx.user.login if ctx.user else "ghost"
        return str(person.get("name") or login), str(person.get("email") or f"{login}@users.noreply.github.com")

    async def put_contents(self, ctx: Ctx, path: str, **params: str) -> Reply:
        """Create (no ``sha``) or update (current blob ``sha``) a file with one commit on ``branch``.

        Updating without ``sha`` is 422 '"sha" wasn't supplied.'; a ``sha`` that is not the file's current blob
        is 409 "<path> does not match <sha>". A missing branch is 404 unless the repository is still empty.
        """
        repo, _ = ctx.repo(params, need="push")
        body = await ctx.json()
        message = body_field(body, "message", str, required=True)
        encoded = body_field(body, "content", str, required=True)
        sha = body_field(body, "sha", str)
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "content is not valid Base64") from None
        path = path.strip("/")
        author = self.commit_author(ctx, body)
        with ctx.world.lock:
            branch = body_field(body, "branch", str) or repo.default_branch
            head = repo.branch_head(branch)
            if head is None and not repo.empty:
                raise ApiError(404, f"Branch {branch} not found")
            current = head.tree.get(path) if head is not None else None
            if current is not None and sha is None:
                raise ApiError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if current is not None and sha != current:
                raise ApiError(409, f"{path} does not match {sha}")
            commit = repo.commit(branch, {path: data}, message, *author)
            status = 201 if current is None else 200
            return json_reply(status, shapes.file_commit(ctx.urls, repo, commit, path, branch, deleted=False))

    async def delete_contents(self, ctx: Ctx, path: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params, need="push")
        body = await ctx.json()
        message = body_field(body, "message", str, required=True)
        sha = body_field(body, "sha", str, required=True)
        path = path.strip("/")
        author = self.commit_author(ctx, body)
        with ctx.world.lock:
            branch = body_field(body, "branch", str) or repo.default_branch
            head = repo.branch_head(branch)
            if head is None:
                raise ApiError(404, f"Branch {branch} not found")
            current = head.tree.get(path)
            if current is None:
                raise not_found()
            if sha != current:
                raise ApiError(409, f"{path} does not match {sha}")
            commit = repo.commit(branch, {path: None}, message, *author)
            return json_reply(200, shapes.file_commit(ctx.urls, repo, commit, path, branch, deleted=True))

    async def get_blob(self, ctx: Ctx, sha: str, **params: str) -> Reply:
        """``GET /git/blobs/{sha}``: base64 content for files of any size up to 100 MB (raw media type too)."""
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            data = repo.blobs.get(sha.lower())
        if data is None:
            raise not_found()
        if len(data) > BLOB_API_LIMIT:
            raise ApiError(
                403,
                "This API returns blobs up to 100 MB in size. The requested blob is too large to fetch via the API.",
                [{"resource": "Blob", "field": "data", "code": "too_large"}],
            )
        if self.wants_raw(ctx):
            return Reply(
                200, data, {"content-type": "application/octet-stream", "x-github-media-type": "github.v3; param=raw"}
            )
        return json_reply(200, shapes.blob(ctx.urls, repo, sha.lower(), data))

    async def get_ref(self, ctx: Ctx, ref: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            if repo.empty:
                raise ApiError(409, "Git Repository is empty.")
            full = "refs/" + ref.strip("/")
            if full not in repo.refs:
                raise not_found()
            return json_reply(200, shapes.git_ref(ctx.urls, repo, full, repo.refs[full]))

    async def list_refs(self, ctx: Ctx, ref: str = "", **params: str) -> Reply:
        """``GET /git/refs[/prefix]``: an exact match answers the single ref (GitHub's legacy form), else a list."""
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            if repo.empty:
                raise ApiError(409, "Git Repository is empty.")
            wanted = "refs/" + ref.strip("/") if ref else "refs/"
            if ref and wanted in repo.refs:
                return json_reply(200, shapes.git_ref(ctx.urls, repo, wanted, repo.refs[wanted]))
            matching = sorted(r for r in repo.refs if r.startswith(wanted if not ref else wanted.rstrip("/")))
            if ref and not matching:
                raise not_found()
            page, headers = ctx.paginate(
                matching, f"{ctx.urls.api}/repositories/{repo.id}/git/refs" + (f"/{quote(ref)}" if ref else "")
            )
            return json_reply(200, [shapes.git_ref(ctx.urls, repo, r, repo.refs[r]) for r in page], headers)

    async def create_ref(self, ctx: Ctx, **params: str) -> Reply:
        repo, _ = ctx.repo(params, need="push")
        body = await ctx.json()
        ref = body_field(body, "ref", str, required=True)
        sha = body_field(body, "sha", str, required=True)
        with ctx.world.lock:
            if repo.empty:
                raise ApiError(409, "Git Repository is empty.")
            if not ref.startswith("refs/") or ref.count("/") < 2:
                raise ApiError(422, "Reference name must start with 'refs/' and have at least two slashes.")
            if sha not in repo.commits:
                raise ApiError(422, "Object does not exist")
            if ref in repo.refs:
                raise ApiError(422, "Reference already exists")
            repo.refs[ref] = sha
            reply = json_reply(201, shapes.git_ref(ctx.urls, repo, ref, sha))
        reply.headers["location"] = f"{ctx.urls.repo_api(repo)}/git/{quote(ref)}"
        return reply

    async def update_ref(self, ctx: Ctx, ref: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params, need="push")
        body = await ctx.json()
        sha = body_field(body, "sha", str, required=True)
        force = bool(body_field(body, "force", bool))
        full = "refs/" + ref.strip("/")
        with ctx.world.lock:
            if full not in repo.refs:
                raise ApiError(422, "Reference does not exist")
            if sha not in repo.commits:
                raise ApiError(422, "Object does not exist")
            if not force and not repo.is_ancestor(repo.refs[full], sha):
                raise ApiError(422, "Update is not a fast forward")
            repo.refs[full] = sha
            return json_reply(200, shapes.git_ref(ctx.urls, repo, full, sha))

    async def delete_ref(self, ctx: Ctx, ref: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params, need="push")
        full = "refs/" + ref.strip("/")
        with ctx.world.lock:
            if full not in repo.refs:
                raise ApiError(422, "Reference does not exist")
            del repo.refs[full]
        return Reply(204)

    async def list_branches(self, ctx: Ctx, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            names = sorted(r[len("refs/heads/") :] for r in repo.refs if r.startswith("refs/heads/"))
            page, headers = ctx.paginate(names, f"{ctx.urls.api}/repositories/{repo.id}/branches")
            body = [shapes.short_branch(ctx.urls, repo, n, repo.refs["refs/heads/" + n]) for n in page]
            return json_reply(200, body, headers)

    async def get_branch(self, ctx: Ctx, branch: str, **params: str) -> Reply:
        repo, _ = ctx.repo(params)
        with ctx.world.lock:
            head = repo.branch_head(branch)
            if head is None:
                raise ApiError(404, "Branch not found")
            author = ctx.world.users.get(head.author_name.lower())
            return json_reply(200, shapes.branch_with_protection(ctx.urls, repo, branch, head, author))


def etag_matches(if_none_match: str, etag: str) -> bool:
    """``If-None-Match`` comparison is weak: ``W/`` prefixes are ignored, ``*`` matches anything."""
    if not if_none_match:
        return False
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in wanted or etag.removeprefix("W/") in wanted


def s3_error(status: int, code: str, message: str) -> Reply:
    """Storage errors look like S3's (XML), since GitHub's signed asset URLs point at S3-style storage."""
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Reply(status, body.encode(), {"content-type": "application/xml"})
