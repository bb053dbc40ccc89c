"""Recording what write requests did, or were refused, in the repository's audit log
(``pywharf_core.service.audit``); ``GET /_/audit/<repo>`` (``audit.py``) reads it.

A route builds the event with :func:`audit_event`: the actor from its
:class:`~pywharf_core.service.grants.Grant` (a secret's kind, or a token's id and description:
never a secret), the client address as ``client_address`` gives it (the peer, or what uvicorn's
``--forwarded-allow-ips`` trusted from ``X-Forwarded-For``), and hands it to :func:`record`
(from the event loop) or to ``repo.audit.record`` (from a worker thread).

Credentials refused on a write route are recorded by :func:`record_refused_credentials`, with no
secret in them: a wrong secret reads ``invalid credentials``, a token that is no live token of
the repository ``invalid credentials (token <id>)``. Requests without credentials are not
recorded (every client's first try), and wrong ones only until the failure limiter answers 429,
so a client cannot fill the log.

Where another change is added (project status, deletion), its route records it the same way::

    await record(repo, audit_event(request, repo, "project-status", 200, grant=grant,
                                   project=project, detail="archived"))
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import HTTPConnection

from pywharf_core.http.client_address import client_address
from pywharf_core.model.api_tokens import TokenRecord, parse_token
from pywharf_core.model.audit import AuditEvent, iso_time
from pywharf_core.service.grants import Grant
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.server_state import ServerState
from pywharf_core.storage.backend import Permission

# Who manages tokens: the write secret itself (or the backend's own write credential, which
# Grant.actor names the same way).
WRITE_SECRET = Grant(Permission.WRITE)


def audit_event(conn: HTTPConnection, repo: PkgRepo, action: str, status: int, *, grant: Grant | None = None,
                actor: str = "", project: str = "", filename: str = "", detail: str = "") -> AuditEvent:
    """An event of ``repo`` for this request (``actor`` when there is no grant to name it)."""
    return AuditEvent.make(action, repo=repo.name, actor=grant.actor if grant is not None else actor,
                           client=client_address(conn), status=status, project=project, filename=filename,
                           detail=detail)


async def record(repo: PkgRepo, event: AuditEvent) -> None:
    """Append ``event`` to ``repo``'s audit log, if it keeps one (never raises for the store)."""
    if repo.audit is not None:
        await anyio.to_thread.run_sync(repo.audit.record, event)


def refused_actor(secret: str) -> str:
    """Who sent credentials that were refused, without the secret: a token by its id."""
    parsed = parse_token(secret)
    return f"invalid credentials (token {parsed.token_id})" if parsed is not None else "invalid credentials"


async def record_refused_credentials(conn: HTTPConnection, repo_name: str, secret: str, action: str, status: int,
                                     detail: str, project: str = "", filename: str = "") -> None:
    """A write refused at authentication, recorded in the log of ``repo_name`` (the repository
    the URL or the credentials name; nothing when there is none)."""
    state: ServerState = conn.app.state.pywharf
    repo = state.repos.get(repo_name)
    if repo is not None and secret:
        await record(repo, audit_event(conn, repo, action, status, actor=refused_actor(secret), project=project,
                                       filename=filename, detail=detail))


def token_detail(token: TokenRecord) -> str:
    """A token as an event's detail: its id, kind, scope, projects, expiry and description."""
    projects = ",".join(token.projects) or "all projects"
    described = f": {token.description}" if token.description else ""
    return (f"token {token.token_id} ({token.kind}, scope {token.scope}, {projects}, expires "
            f"{iso_time(token.expires)[:16]}Z){described}")
