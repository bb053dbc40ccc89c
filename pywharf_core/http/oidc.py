"""Trusted Publishing over PyPI's wire protocol: ``/_/oidc/audience`` and ``/_/oidc/mint-token``.

A CI job (``uv publish --trusted-publishing``, ``pypa/gh-action-pypi-publish``) asks for the
audience, gets an identity token (a JWT) for it from its CI provider, and POSTs it here; a token
that a repository's ``trusted_publishers`` entry accepts is exchanged for a 15-minute upload
token of that repository, which the client then uploads with as ``__token__``.

The answers are Warehouse's: ``{"audience": ...}``; ``{"success": true, "token", "expires"}``;
every refusal 422 ``{"message": "Token request failed", "errors": [{"code", "description"}]}``
(gh-action-pypi-publish prints each ``code: description``; uv prints the raw body). The body is
read whatever its Content-Type (uv before 0.10.10 sent none). ``/_/oidc/github/mint-token``
is the path gh-action-pypi-publish used before 2024.

Replay: the minted token's id is derived from the identity token's issuer and ``jti`` and its
record is created create-only in the repository's store, so an identity token mints once, on
every server sharing the store. Every mint and refusal is logged with the claims that decided
it, never a token, and recorded in the repository's audit log (mints, replays, burns).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pywharf_core.http.app_singletons import app_singleton
from pywharf_core.http.audit_trail import audit_event, record, token_detail
from pywharf_core.http.text_form import read_body
from pywharf_core.http.web.secret_check import auth_limiter, client_address, limiter_key
from pywharf_core.model.api_tokens import parse_token
from pywharf_core.service.grants import Grant
from pywharf_core.service.server_state import ServerState
from pywharf_core.service.tokens import TokenError, TokenIdTaken, minted_token_id
from pywharf_core.service.trusted_publishing import (
    MintRefused,
    PublisherMatch,
    TrustedPublishingVerifier,
    claims_for_log,
)
from pywharf_core.storage.backend import Permission
from pywharf_core.storage.trusted_publishers import TrustedPublisher

log = logging.getLogger(__name__)

MINTED_TOKEN_SECONDS = 900  # as pypi.org: 15 minutes
MAX_BODY_BYTES = 64 * 1024
REPLAY_MARGIN_SECONDS = 35  # past the JWT's exp: its leeway (30 s) and some clock skew
NO_STORE = {"Cache-Control": "no-store"}


def _verifier(request: Request) -> TrustedPublishingVerifier:
    return app_singleton(request, "pywharf_oidc_verifier",
                         lambda settings: TrustedPublishingVerifier(audience=settings.oidc_audience))


def _publishers(state: ServerState) -> Mapping[str, Sequence[TrustedPublisher]]:
    return {name: repo.config.trusted_publishers for name, repo in state.repos.items()
            if repo.config.trusted_publishers}


def _refused(code: str, description: str) -> Response:
    body = {"message": "Token request failed", "errors": [{"code": code, "description": description}]}
    return JSONResponse(body, status_code=422, headers=NO_STORE)


async def audience(request: Request) -> Response:
    state: ServerState = request.app.state.pywharf
    if not _publishers(state):
        # What pypi.org answers when the feature is off; gh-action-pypi-publish says so.
        return JSONResponse({"message": "Trusted publishing is not configured on this server: no repository "
                                        "has trusted_publishers."}, status_code=403, headers=NO_STORE)
    return JSONResponse({"audience": state.settings.oidc_audience}, headers=NO_STORE)


async def _token_field(request: Request) -> str | Response:
    """``token`` of a JSON body ``{"token": "..."}``, or the 422 to answer."""
    try:
        body = await read_body(request, MAX_BODY_BYTES, f"the request body is over {MAX_BODY_BYTES} bytes")
    except HTTPException as exc:  # too big, or a malformed Content-Length
        return _refused("invalid-payload", exc.detail)
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str):
        log.info("oidc: %s refused from %s: invalid-payload (no token string)", request.url.path,
                 client_address(request))
        return _refused("invalid-payload", 'the body must be a JSON object {"token": "<token>"}')
    return token


async def mint_token(request: Request) -> Response:
    state: ServerState = request.app.state.pywharf
    address = client_address(request)
    token = await _token_field(request)
    if isinstance(token, Response):
        return token
    publishers = _publishers(state)
    try:
        match: PublisherMatch = await anyio.to_thread.run_sync(_verifier(request).verify, token, publishers)
    except MintRefused as exc:
        unverified = ", ".join(f"{k}={v!r}" for k, v in sorted(claims_for_log(token).items()))
        log.info("oidc: mint refused from %s: %s: %s (unverified claims: %s)", address, exc.code, exc.description,
                 unverified or "none")
        return _refused(exc.code, exc.description)
    repo = state.repos.get(match.repo)
    if repo is None or repo.tokens is None:
        log.error("oidc: repository %r matched but cannot keep tokens", match.repo)
        return _refused("invalid-publisher", f"repository {match.repo!r} cannot keep tokens (its backend has no "
                                             "documents)")
    decided = ", ".join(f"{k}={v!r}" for k, v in sorted(match.claims.items()))
    publisher = f"trusted publisher {match.publisher.repository}"
    try:
        new = await anyio.to_thread.run_sync(lambda: repo.tokens.create(  # type: ignore[union-attr]
            "upload", projects=tuple(match.publisher.projects), expires_in=MINTED_TOKEN_SECONDS, kind="oidc",
            description=f"trusted publisher {match.publisher.repository}"[:200],
            token_id=minted_token_id(match.issuer, match.jti), claims=dict(match.claims),
            keep_until=int(match.expires) + REPLAY_MARGIN_SECONDS))
    except TokenIdTaken:
        log.warning("oidc: mint refused from %s for repo %r: invalid-reuse-token (%s)", address, match.repo, decided)
        await record(repo, audit_event(request, repo, "token-mint", 422, actor=publisher,
                                       detail=f"invalid-reuse-token: identity token already used; {decided}"))
        return _refused("invalid-reuse-token", "invalid token: already used")
    except TokenError as exc:
        log.error("oidc: mint failed for repo %r: %s", match.repo, exc)
        return JSONResponse({"message": str(exc)}, status_code=exc.status, headers=NO_STORE)
    log.info("oidc: minted token %s for repo %r (projects %s, expires %d) from %s: %s", new.record.token_id,
             match.repo, ",".join(new.record.projects) or "all", new.record.expires, address, decided)
    await record(repo, audit_event(request, repo, "token-mint", 200, actor=publisher,
                                   detail=f"{token_detail(new.record)}; {decided}"))
    return JSONResponse({"success": True, "token": new.token, "expires": new.record.expires}, headers=NO_STORE)


async def burn_token(request: Request) -> Response:
    """``POST /_/oidc/burn-token`` ``{"token": "<a pywharf token>"}``: end it now (uv does this
    once its upload is done, so a minted token does not live its 15 minutes). Holding the token
    is the authority: whoever may use it may end it."""
    state: ServerState = request.app.state.pywharf
    # Guessing costs a store read (on GitHub an API call on the server's own token): wrong
    # tokens count against the client's basic-auth failure budget.
    limiter, key = auth_limiter(request), limiter_key(request, "_/oidc/burn-token")
    wait = limiter.retry_after(key)
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        return JSONResponse({"message": f"Too many failed requests: retry in {retry} seconds."}, status_code=429,
                            headers={**NO_STORE, "Retry-After": retry})
    token = await _token_field(request)
    if isinstance(token, Response):
        limiter.record_failure(key)
        return token
    parsed = parse_token(token)
    repo = state.repos.get(parsed.repo) if parsed is not None else None
    burned = None
    if repo is not None and repo.tokens is not None:
        try:
            burned = await anyio.to_thread.run_sync(repo.burn_token, token)
        except TokenError as exc:
            return JSONResponse({"message": str(exc)}, status_code=exc.status, headers=NO_STORE)
    if repo is None or burned is None:
        limiter.record_failure(key)
        return _refused("invalid-token", "not a live token of this server")
    log.info("oidc: token %s of repo %r burned by its holder from %s", burned.token_id, repo.name,
             client_address(request))
    holder = Grant(Permission.WRITE if burned.scope == "upload" else Permission.READ, burned)
    await record(repo, audit_event(request, repo, "token-burn", 200, grant=holder, detail=token_detail(burned)))
    return JSONResponse({"success": True}, headers=NO_STORE)
