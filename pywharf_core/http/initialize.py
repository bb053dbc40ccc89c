"""``POST /initialize/``: configure a server started without ``--config`` (or reconfigure it
with ``--initialize_token``).

Who may is decided twice: cheaply before the body is read (so a refused caller costs nothing),
and again under the install lock once it is read, because a request that started while the
server was still open may finish after the rightful first initialisation: it must then be
refused, not replace that configuration. So the open first initialisation succeeds exactly
once; after it, only a request that presented the token changes anything.

Wrong tokens count against the client (``FailureLimiter``): after
``--initialize_max_failures`` within a minute it gets 429 without its guess being checked.
A config sent here is limited (``ServerSettings.http_config_limits``): it cannot read any
environment variable, send credentials to any host or serve files from any folder.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pywharf_core.http.text_form import read_body, text_fields
from pywharf_core.http.web.secret_check import client_address, initialize_limiter
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.server_state import ServerState, build_repos, load_setup
from pywharf_core.storage.shared_secrets import secret_matches

log = logging.getLogger(__name__)

# A config or admin secret is a few KB; the cap keeps an open /initialize/ from buffering more.
MAX_INITIALIZE_BYTES = 1 << 20
_ALREADY_CONFIGURED = ("The server is already configured: re-initialisation needs "
                       "'Authorization: Bearer <initialize token>'.")


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secret_matches(given.strip(), token)


def _check_token(request: Request, state: ServerState) -> bool:
    """True when a valid bearer token was presented; raises 403/429 when the caller may not
    initialise (a wrong token, or none once the server is configured)."""
    header = request.headers.get("authorization")
    token = state.settings.initialize_token
    if not state.configured:
        # The open first initialisation (decided again under the lock); a token is only
        # remembered, so that this request may still succeed if another one configures first.
        return bool(token and header and _bearer_matches(header, token))
    if not token:
        raise HTTPException(403, "Re-initialisation is disabled: start the server with --initialize_token.")
    client = client_address(request)
    limiter = initialize_limiter(request)
    wait = limiter.retry_after(client)
    if wait > 0:
        raise HTTPException(429, "Too many wrong initialize tokens: try again later.",
                            headers={"Retry-After": str(int(wait) + 1)})
    if not _bearer_matches(header or "", token):
        limiter.record_failure(client)
        raise HTTPException(403, "A valid 'Authorization: Bearer <initialize token>' header is required.")
    return True


async def initialize(request: Request) -> Response:
    """(Re)configure the server from ``config`` / ``admin_secret`` form fields or files.

    The first call to a server started without --config is open (CI service containers);
    any later call needs ``Authorization: Bearer <--initialize_token>``. Every refusal is a
    4xx and one log line (never a secret: messages name keys and variables, not values).
    """
    try:
        return await _initialize(request)
    except HTTPException as exc:
        client = client_address(request)
        log.warning("POST /initialize/ from %s refused (%d): %.300s", client, exc.status_code, exc.detail)
        raise


async def _initialize(request: Request) -> Response:
    state: ServerState = request.app.state.pywharf
    has_token = _check_token(request, state)
    too_big = f"Request Entity Too Large: config and admin_secret must be under {MAX_INITIALIZE_BYTES} bytes."
    body = await read_body(request, 2 * MAX_INITIALIZE_BYTES, too_big)
    texts = await text_fields(request, body, ("config", "admin_secret"), MAX_INITIALIZE_BYTES, too_big)
    config = texts["config"]
    if config is None:
        raise HTTPException(400, "The 'config' field is required.")
    limits = state.settings.http_config_limits()

    def apply() -> int:
        with state.install_lock:
            if state.configured and not has_token:
                # Started while the server was open, finished after it was configured.
                raise HTTPException(403, _ALREADY_CONFIGURED)
            setup = load_setup(config, texts["admin_secret"], is_text=True, limits=limits)
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
