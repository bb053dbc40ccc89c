"""``pywharf token create|list|revoke``: a repository's API tokens, through a running server."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from pywharf_core.cli.server_calls import call, secret_from
from pywharf_core.model.errors import PywharfError

ACTIONS = ("create", "list", "revoke")


def token(
    action: str,
    token_id: str | None = None,
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
    scope: str = "upload",
    projects: str = "",
    expires_in: int | None = None,
    description: str = "",
    json_output: bool = False,
) -> None:
    """Create, list or revoke a repository's API tokens (needs the write secret).

    Clients use a token as the password of the username __token__ (or of the repository's
    name). `create` prints the new token alone on the last line of stdout, and only then: the
    server keeps only its hash.

    Args:
        action: create, list or revoke.
        token_id: The id of the token to revoke (revoke only).
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
        scope: read or upload (upload implies read) (create).
        projects: Comma-separated projects an upload token may upload to; default all (create).
        expires_in: Seconds until the token expires; default 90 days (create).
        description: What the token is for, shown by list (create).
        json_output: Print the server's JSON answer instead of text.
    """
    action = str(action)
    if action not in ACTIONS:
        raise PywharfError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    auth = (str(repo), secret_from(secret, secret_env))
    base = f"{str(url).rstrip('/')}/_/tokens/{quote(str(repo), safe='')}"
    if action == "create":
        fields: dict[str, Any] = {"scope": str(scope), "projects": str(projects), "description": str(description)}
        if expires_in is not None:
            fields["expires_in"] = str(int(expires_in))
        data = call("token create", "POST", base, data=fields, auth=auth).json()
        if json_output:
            print(json.dumps(data))
            return
        projects_text = ", ".join(data["projects"]) or "all projects"
        print(f"token {data['id']}: scope {data['scope']} ({projects_text}), expires {_when(data['expires'])}")
        print(data["token"])
    elif action == "list":
        data = call("token list", "GET", base, auth=auth).json()
        if json_output:
            print(json.dumps(data))
            return
        for entry in data["tokens"]:
            projects_text = ",".join(entry["projects"]) or "*"
            print(f"{entry['id']}  {entry['scope']:<6}  {projects_text:<20}  expires {_when(entry['expires'])}  "
                  f"{entry['description']}".rstrip())
    else:
        if not token_id:
            raise PywharfError("revoke needs the token's id: pywharf token revoke ID ...")
        call("token revoke", "DELETE", f"{base}/{quote(str(token_id), safe='')}", auth=auth)
        print(f"revoked {token_id}")


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
