"""What an authenticated client may do, and who it is (for logs and, later, the audit log).

A shared secret or a backend credential (a GitHub token) grants a :class:`Permission` on the
whole repository; an API token grants its scope, possibly for some projects only, and is named
by its id, never its text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pywharf_core.model.api_tokens import TokenRecord
from pywharf_core.storage.backend import Permission


@dataclass(frozen=True, slots=True)
class Grant:
    permission: Permission
    token: TokenRecord | None = None  # None: a secret from the config, or the backend's own

    @property
    def is_token(self) -> bool:
        return self.token is not None

    @property
    def manages_tokens(self) -> bool:
        """Creating and revoking tokens takes the write secret itself: a token cannot make a
        longer-lived or wider one."""
        return self.token is None and self.permission is Permission.WRITE

    def may_upload(self, project: str) -> bool:
        if self.permission < Permission.WRITE:
            return False
        return self.token is None or self.token.may_upload(project)

    def may_yank(self, project: str) -> bool:
        """Yank and unyank, and likewise set a project's status or delete its files: what may
        upload, except a token minted for a trusted publisher (as on pypi.org, a CI identity
        proves it may publish, nothing more)."""
        return self.may_upload(project) and (self.token is None or self.token.kind == "api")

    def yank_refusal(self, project: str, action: str = "yank") -> str:
        if self.may_upload(project):
            return f"A trusted publisher's token may upload, not {action}: use the write secret or an API token."
        return self.upload_refusal(project)

    def upload_refusal(self, project: str) -> str:
        """Why :meth:`may_upload` is false, for the 403 body."""
        if self.permission < Permission.WRITE:
            return "This secret may read but not upload: use the write secret or an upload token."
        assert self.token is not None
        allowed = ", ".join(self.token.projects)
        return f"This token may upload only to: {allowed} (not {project!r})."

    @property
    def actor(self) -> str:
        if self.token is None:
            return "write secret" if self.permission is Permission.WRITE else "read secret"
        described = f" ({self.token.description})" if self.token.description else ""
        return f"{self.token.kind} token {self.token.token_id}{described}"


NO_GRANT = Grant(Permission.NONE)
