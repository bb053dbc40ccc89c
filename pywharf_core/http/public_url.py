"""The server's public base URL, for the absolute URLs it writes (JSON API, install lines).

Without ``--public_url`` it comes from the request (its Host header and scheme), which a client
controls: a forged Host would then appear in the URLs the server hands out (and in any cache
between it and other clients). With ``--public_url`` the configured URL is used for every
absolute URL instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.types import Scope


def normalize_public_url(value: str) -> str:
    """``value`` checked (http or https, a host, no query or fragment), ending with ``/``."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"--public_url must be an http(s) URL such as https://pypi.example.com/, not {value!r}")
    return parts.geturl().rstrip("/") + "/"


def public_base_url(request: Request) -> str:
    """The base URL (ending with ``/``): ``--public_url`` when set, else the request's own."""
    configured: str | None = getattr(request.app.state, "public_url", None)
    return configured or str(request.base_url)


def repo_prefix(request: Request) -> str:
    """The path prefix of the repository URL a request came through: ``/repos/<repo>`` for
    per-repository URLs, ``""`` for the shared ``/simple/`` (0.2.3's, named by the username)."""
    repo = request.path_params.get("repo")
    return f"/repos/{quote(repo, safe='')}" if repo else ""


def repo_index_url(request: Request, repo: str) -> str:
    """The simple index URL of ``repo`` to hand out (install lines, quickstart): its own URL,
    which clients keep credentials for separately from every other repository's."""
    return f"{public_base_url(request)}repos/{quote(repo, safe='')}/simple/"


def site_base_url(request: Request) -> str:
    """The base URL of the repository the request came through, ending with ``/``:
    ``<public>/repos/<repo>/`` for per-repository URLs, ``<public>/`` for the shared ones (the
    browser pages under it, ``project/<name>/``, then answer for that same repository)."""
    prefix = repo_prefix(request)
    return public_base_url(request) + (f"{prefix[1:]}/" if prefix else "")


def index_base_url(request: Request) -> str:
    """The simple index URL the request came through (shared or per repository)."""
    prefix = repo_prefix(request)
    return public_base_url(request) + (f"{prefix[1:]}/" if prefix else "") + "simple/"


def relative_redirect(scope: Scope, headers: Sequence[tuple[bytes, bytes]]) -> Sequence[tuple[bytes, bytes]]:
    """Headers of a 307 with a ``Location`` on the request's own Host made relative.

    Starlette's trailing-slash redirect (``/login`` -> ``/login/``) builds an absolute URL from
    the Host header; a relative one means the same to every client and reflects nothing.
    """
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    changed = []
    for name, value in headers:
        if name == b"location" and host is not None:
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc.encode("latin-1") == host and parts.path.startswith("/"):
                value = (parts.path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")
        changed.append((name, value))
    return changed
