"""API tokens: their text form and the record a store keeps for each (never the token itself).

A token is ``pywharf-<repo>-<id>-<secret>``:

- ``pywharf-`` says what it is (and is not pypi.org's ``pypi-``, so GitHub's secret scanning
  does not report a leaked pywharf token to PyPI);
- ``<repo>`` names the repository it belongs to. Clients send it as the password of the
  username ``__token__`` (twine's and uv's convention for pypi.org), so the token itself must
  say where it is checked;
- ``<id>`` is 16 hex digits: the key of its record and what ``list`` / ``revoke`` show;
- ``<secret>`` is 43 URL-safe characters (32 random bytes).

The id and secret have fixed lengths, so the repository name (which may contain ``-``) is what
remains between the prefix and them: parsing is unambiguous. No character needs quoting in a
URL's userinfo or a netrc file.

The token is opaque: every check (revoked? expired? which scope and projects?) reads the
stored record, so a signature (itsdangerous) or caveats (macaroons, as pypi.org uses) would add
a key to leak and nothing to check. The record keeps only the token's sha256: a 256-bit random
secret needs no slow hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from pywharf_core.model.errors import InvalidName
from pywharf_core.model.names import normalize_project, validate_repo_name

PREFIX = "pywharf-"
ID_HEX_CHARS = 16
SECRET_CHARS = 43  # secrets.token_urlsafe(32)
TOKEN_USERNAME = "__token__"  # noqa: S105 - a username, not a secret
# Longest text that can be a token (a 64-character repository name): anything longer is not
# looked at.
MAX_TOKEN_CHARS = len(PREFIX) + 64 + 1 + ID_HEX_CHARS + 1 + SECRET_CHARS

SCOPES = ("read", "upload")  # upload implies read
KINDS = ("api", "oidc")  # created over the API / minted for a trusted publisher
MAX_DESCRIPTION_CHARS = 200
MAX_PROJECTS = 100

_ID = re.compile(r"^[0-9a-f]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    repo: str
    token_id: str
    text: str  # the whole token, to hash


def is_token_id(text: str) -> bool:
    """Whether ``text`` has the form of a token id (16 lowercase hex digits)."""
    return _ID.fullmatch(text) is not None


def new_token_id() -> str:
    return secrets.token_hex(ID_HEX_CHARS // 2)


def format_token(repo: str, token_id: str) -> str:
    """A new token for ``repo`` with id ``token_id`` (a fresh random secret)."""
    return f"{PREFIX}{validate_repo_name(repo)}-{token_id}-{secrets.token_urlsafe(32)}"


def parse_token(text: str) -> ParsedToken | None:
    """The repository and id ``text`` names, or None when it is not a pywharf token."""
    if not text.startswith(PREFIX) or len(text) > MAX_TOKEN_CHARS:
        return None
    tail = ID_HEX_CHARS + SECRET_CHARS + 2  # "-<id>-<secret>"
    body = text[len(PREFIX):]
    if len(body) <= tail:
        return None
    repo, rest = body[:-tail], body[-tail:]
    token_id, secret = rest[1:1 + ID_HEX_CHARS], rest[2 + ID_HEX_CHARS:]
    if rest[0] != "-" or rest[1 + ID_HEX_CHARS] != "-" or not is_token_id(token_id) or not _SECRET.fullmatch(secret):
        return None
    try:
        validate_repo_name(repo)
    except InvalidName:
        return None
    return ParsedToken(repo, token_id, text)


def token_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a store keeps for one token (JSON). ``projects`` empty: every project."""

    token_id: str
    sha256: str
    scope: str
    expires: int  # Unix time
    created: int
    kind: str = "api"
    description: str = ""
    projects: tuple[str, ...] = ()
    # For a minted token: the claims that decided (repository, workflow ref...), never the JWT.
    claims: dict[str, str] = field(default_factory=dict)
    # How long the record must outlive ``expires`` (a minted token's id guards its JWT's
    # ``jti`` against replay until the JWT expires).
    keep_until: int = 0

    def __post_init__(self) -> None:
        if not is_token_id(self.token_id):
            raise ValueError(f"invalid token id {self.token_id!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if self.kind not in KINDS:
            raise ValueError(f"invalid token kind {self.kind!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError("invalid token digest")

    def matches(self, text: str) -> bool:
        """Whether ``text`` is this record's token (constant time)."""
        return hmac.compare_digest(token_digest(text), self.sha256)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def may_upload(self, project: str) -> bool:
        return self.scope == "upload" and (not self.projects or project in self.projects)

    def public(self) -> dict[str, Any]:
        """What listing shows (no digest)."""
        return {
            "id": self.token_id, "scope": self.scope, "projects": list(self.projects), "expires": self.expires,
            "created": self.created, "description": self.description, "kind": self.kind,
        }

    def to_json(self) -> bytes:
        data = {**self.public(), "sha256": self.sha256, "claims": self.claims, "keep_until": self.keep_until}
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TokenRecord:
        """Raises ValueError for anything that is not a well-formed record."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            projects = raw.get("projects") or []
            claims = raw.get("claims") or {}
            if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
                raise ValueError("projects must be a list of names")
            if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
                raise ValueError("claims must map names to strings")
            return cls(
                token_id=str(raw["id"]), sha256=str(raw["sha256"]), scope=str(raw["scope"]),
                expires=_int(raw["expires"]), created=_int(raw["created"]), kind=str(raw.get("kind", "api")),
                description=str(raw.get("description", "")), projects=tuple(projects),
                claims={str(k): v for k, v in claims.items()}, keep_until=_int(raw.get("keep_until", 0)),
            )
        except KeyError as exc:
            raise ValueError(f"missing {exc.args[0]!r}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def parse_projects(text: object) -> tuple[str, ...]:
    """Normalised, de-duplicated project names from ``a,b`` or a list; InvalidName for a bad one."""
    if text is None:
        return ()
    if not isinstance(text, (str, list, tuple)):
        raise InvalidName("projects must be comma-separated names or a list of names")
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidName(f"project names are text, not {item!r}")
        item = item.strip()
        if not item:
            continue
        name = normalize_project(item)
        if name not in names:
            names.append(name)
    if len(names) > MAX_PROJECTS:
        raise InvalidName(f"at most {MAX_PROJECTS} projects per token")
    return tuple(names)
