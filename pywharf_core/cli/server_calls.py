"""Commands that act on a running server over HTTP (``yank``, ``token``): the secret flags
and the request, with one error style."""

from __future__ import annotations

import os
from typing import Any

from pywharf_core.model.errors import PywharfError


def secret_from(secret: str | None, secret_env: str | None) -> str:
    """``--secret``, or the variable ``--secret_env`` names (keeps it out of ``ps`` and history)."""
    if secret_env:
        secret = os.environ.get(str(secret_env))
        if not secret:
            raise PywharfError(f"environment variable {secret_env!r} is not set")
    if not secret:
        raise PywharfError("a write secret is needed: pass --secret or --secret_env VAR")
    return str(secret)


def call(command: str, method: str, url: str, **kwargs: Any) -> Any:
    """One request; unreachable servers and non-2xx answers become a one-line error."""
    import requests

    try:
        response = requests.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as exc:
        raise PywharfError(f"{command}: cannot reach {url}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise PywharfError(f"{command}: {response.status_code} {response.reason}: {response.text.strip()[:500]}")
    return response
