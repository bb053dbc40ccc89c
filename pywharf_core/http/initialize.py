"""``POST /initialize/``: configure a server started without ``--config`` (or reconfigure it
with ``--initialize_token``)."""

from __future__ import annotations

import hmac

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pywharf_core.model.errors import ConfigError
from pywharf_core.service.server_state import ServerState, build_repos, load_setup

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
