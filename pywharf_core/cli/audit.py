"""``pywharf audit``: a repository's audit log, through a running server (``GET /_/audit/<repo>``)."""

from __future__ import annotations

import json as json_text
from typing import Any
from urllib.parse import quote

from pywharf_core.cli.server_calls import call, secret_from
from pywharf_core.model.audit import AuditEvent
from pywharf_core.model.errors import PywharfError

PAGE_SIZE = 1000  # the server's largest page
MAX_EVENTS = 100_000  # what one command fetches at most (--limit lowers it)


def audit(
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
    since: str = "1d",
    limit: int | str = MAX_EVENTS,
    json: bool = False,
) -> None:
    """Show a repository's audit log: uploads, yanks, token changes and refused writes, with
    time, actor and client address (needs the write secret).

    Oldest first, one event a line: time, HTTP status (4xx: refused), action, project/file,
    actor (a secret's kind or a token's id, never a secret), client address, detail.

    Args:
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
        since: From when: a date (2026-12-01), a UTC time (2026-12-01T08:00:00Z) or a duration
            back from now (90m, 12h, 7d, 2w).
        limit: Show at most this many events (the oldest ones since --since).
        json: Print {"repo", "since", "events": [...]} as JSON instead of text.
    """
    try:
        wanted = int(limit)
    except ValueError:
        raise PywharfError(f"--limit must be a number, not {limit!r}") from None
    if not 1 <= wanted <= MAX_EVENTS:
        raise PywharfError(f"--limit must be between 1 and {MAX_EVENTS}")
    auth = (str(repo), secret_from(secret, secret_env))
    endpoint = f"{str(url).rstrip('/')}/_/audit/{quote(str(repo), safe='')}"
    events: list[dict[str, Any]] = []
    params: dict[str, str] = {"since": str(since), "format": "json"}
    first_since = ""
    while len(events) < wanted:
        params["limit"] = str(min(PAGE_SIZE, wanted - len(events)))
        page = call("audit", "GET", endpoint, params=params, auth=auth).json()
        first_since = first_since or str(page.get("since", ""))
        events.extend(page["events"])
        if not page.get("next"):
            break
        params["cursor"] = str(page["next"])
    if json:
        print(json_text.dumps({"repo": str(repo), "since": first_since, "events": events}))
        return
    for event in events:
        print(AuditEvent.from_dict(event).line())
