"""``/_/tokens/<repo>``: create, list and revoke a repository's API tokens over HTTP.

Only the write secret itself (or the backend's own write credential) manages tokens: a token
cannot mint a wider or longer-lived one. Fields come as a form (``curl -d``, what
``pywharf token`` sends) or a JSON object. The new token is in the 201 answer and nowhere else:
the store keeps only its sha256.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pywharf_core.http.audit_trail import (
    WRITE_SECRET,
    audit_event,
    record,
    record_refused_credentials,
    token_detail,
)
from pywharf_core.http.auth import INVALID_CREDENTIALS, Unauthorized, basic_credentials
from pywharf_core.http.text_form import read_body, text_fields
from pywharf_core.http.web.secret_check import check_secret, client_address
from pywharf_core.model.api_tokens import parse_projects
from pywharf_core.model.errors import InvalidName
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.tokens import TokenError, TokenStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
FIELDS = ("scope", "projects", "expires_in", "description")
NO_STORE = {"Cache-Control": "no-store"}


async def _manager(request: Request, action: str | None = None) -> tuple[PkgRepo, TokenStore]:
    """The repository in the path, if the request carries its write secret; else 401/403
    (recorded in its audit log for ``action``, a change)."""
    credentials = basic_credentials(request)
    if credentials is None:
        raise Unauthorized("Authentication required: the repository name and its write secret.")
    name = request.path_params["repo"]
    repo, grant = await check_secret(request, name, credentials[1])
    if repo is None or repo.name != name:
        if action is not None:
            await record_refused_credentials(request, name, credentials[1], action, 401, INVALID_CREDENTIALS)
        raise Unauthorized(INVALID_CREDENTIALS)
    if not grant.manages_tokens:
        refusal = "Managing tokens takes the repository's write secret (not a token, not the read secret)."
        if action is not None:
            await record(repo, audit_event(request, repo, action, 403, grant=grant, detail=refusal))
        raise HTTPException(403, refusal)
    if repo.tokens is None:
        raise HTTPException(501, f"The backend of {name!r} keeps no documents: it cannot store API tokens.")
    return repo, repo.tokens


async def _fields(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY_BYTES, "Token requests are small: at most 16 KiB.")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPException(400, f"The body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "The body must be a JSON object.")
        return {key: data.get(key) for key in FIELDS}
    if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        raise HTTPException(415, "Send scope, projects, expires_in and description as form fields or JSON.")
    if not body:
        return dict.fromkeys(FIELDS)
    return dict(await text_fields(request, body, FIELDS, MAX_BODY_BYTES, "Token requests are small: at most 16 KiB."))


def _expires_in(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise HTTPException(400, "expires_in must be a number of seconds.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HTTPException(400, "expires_in must be a number of seconds.") from None


async def create_token(request: Request) -> Response:
    repo, store = await _manager(request, "token-create")
    try:
        return await _create(request, repo, store)
    except HTTPException as exc:  # a refused request (bad fields, too many tokens): recorded too
        await record(repo, audit_event(request, repo, "token-create", exc.status_code, grant=WRITE_SECRET,
                                       detail=exc.detail))
        raise


async def _create(request: Request, repo: PkgRepo, store: TokenStore) -> Response:
    fields = await _fields(request)
    scope = str(fields.get("scope") or "upload")
    try:
        projects = parse_projects(fields.get("projects"))
    except InvalidName as exc:
        raise HTTPException(400, f"projects: {exc}") from None
    description = str(fields.get("description") or "")
    try:
        new = await anyio.to_thread.run_sync(lambda: store.create(
            scope, projects=projects, expires_in=_expires_in(fields.get("expires_in")), description=description))
    except TokenError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    created = new.record
    log.info("repo %r: token %s created (scope %s, projects %s, expires %d) from %s", repo.name, created.token_id,
             created.scope, ",".join(created.projects) or "all", created.expires, client_address(request))
    await record(repo, audit_event(request, repo, "token-create", 201, grant=WRITE_SECRET,
                                   detail=token_detail(created)))
    body = {"id": created.token_id, "token": new.token, "scope": created.scope, "projects": list(created.projects),
            "expires": created.expires, "description": created.description}
    return JSONResponse(body, status_code=201, headers=NO_STORE)


async def list_tokens(request: Request) -> Response:
    _, store = await _manager(request)
    try:
        records = await anyio.to_thread.run_sync(store.list)
    except TokenError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return JSONResponse({"tokens": [r.public() for r in records]}, headers=NO_STORE)


async def revoke_token(request: Request) -> Response:
    repo, _ = await _manager(request, "token-revoke")
    token_id = request.path_params["token_id"]
    try:
        found = await anyio.to_thread.run_sync(repo.revoke_token, token_id)
    except TokenError as exc:
        await record(repo, audit_event(request, repo, "token-revoke", exc.status, grant=WRITE_SECRET,
                                       detail=f"token {token_id[:32]}: {exc}"))
        raise HTTPException(exc.status, str(exc)) from None
    if found is None:
        await record(repo, audit_event(request, repo, "token-revoke", 404, grant=WRITE_SECRET,
                                       detail=f"no token {token_id[:32]!r}"))
        raise HTTPException(404, f"No token {token_id[:32]!r} in repository {repo.name!r}.")
    log.info("repo %r: token %s revoked from %s", repo.name, token_id, client_address(request))
    await record(repo, audit_event(request, repo, "token-revoke", 200, grant=WRITE_SECRET, detail=token_detail(found)))
    return JSONResponse({"revoked": token_id}, headers=NO_STORE)
