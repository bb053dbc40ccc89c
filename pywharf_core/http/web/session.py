"""Browser sessions: the signed, encrypted ``pywharf_session`` cookie and the key behind it.

Browsers cannot send ``name:secret@host`` credentials, so after ``POST /login/`` the browser
carries a cookie instead. pywharf 0.2.3 put the raw secret in that cookie in clear text, signed
with a key derived from the MAC address: anyone could read the secret by base64-decoding the
cookie, and anyone who knew the MAC could forge one. Here:

- **One master key** per server (or per fleet): ``--session_secret`` /
  ``PYWHARF_SESSION_SECRET``, else a random key kept in ``ROOT/session.key`` (mode 0600) so a
  restart does not log everyone out and servers sharing a ROOT accept each other's cookies.
- **Separate derived keys** (HKDF-SHA256) for signing, encryption and CSRF, so no key is used
  for two purposes.
- **The secret is encrypted** (Fernet: AES-128-CBC + HMAC-SHA256) rather than kept
  server-side: servers must stay rebuildable and several may run, and a backend such as
  ``github`` needs the token itself to re-check permission later. Only ciphertext leaves.
- **The envelope is signed and timestamped** with ``itsdangerous``; its age is checked
  against ``--auth_read_expires`` (or ``--auth_write_expires`` when the secret could write at
  login), and every request re-checks the secret through the repo's cached permission path,
  so a revoked secret stops working exactly as it does for basic auth.
- **Each cookie has a random session id**, so ``POST /logout/`` can revoke that one session
  server-side (``revocation.py``): a copy of the cookie stops working at logout. A cookie
  without an id (made before ids existed) is refused: its owner logs in again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import HTTPConnection

from pywharf_core.http.app_singletons import app_singleton
from pywharf_core.http.web.revocation import RevokedSessions
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.repository import AuthExpiry
from pywharf_core.storage.backend import Permission

log = logging.getLogger(__name__)

SESSION_COOKIE = "pywharf_session"
KEY_FILENAME = "session.key"
# A --session_secret shorter than this is refused: it would be guessable offline from a cookie.
MIN_SESSION_SECRET_CHARS = 16
# Cookies dated this far in the future (clock skew between servers) are still accepted.
CLOCK_SKEW_SECONDS = 60
_SIGNING_SALT = "pywharf-session-v1"


def _derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so signing, encryption and CSRF never share a key."""
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=f"pywharf {purpose} v1".encode())
    return hkdf.derive(master)


@dataclass(frozen=True)
class SessionKeys:
    """The keys derived from one master key."""

    signing: bytes
    encryption: bytes
    csrf: bytes

    @classmethod
    def from_master(cls, master: bytes) -> SessionKeys:
        return cls(_derive(master, "session signing"), _derive(master, "session encryption"), _derive(master, "csrf"))


@dataclass(frozen=True)
class Session:
    """What a valid cookie says: who logged in, with which secret, and when."""

    repo: str
    secret: str = ""
    permission: Permission = Permission.READ  # at login; every request re-checks it
    issued_at: float = 0.0
    id: str = ""  # random, names this session for revocation at logout

    def __repr__(self) -> str:  # never print the secret
        return f"Session(repo={self.repo!r}, permission={self.permission.name}, issued_at={self.issued_at})"


class SessionCodec:
    """Turns a session into a cookie value and back; any tampering decodes to None."""

    def __init__(self, keys: SessionKeys, expiry: AuthExpiry) -> None:
        self.keys = keys
        self.expiry = expiry
        self._serializer = URLSafeTimedSerializer(
            keys.signing, salt=_SIGNING_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(keys.encryption))

    def max_age(self, permission: Permission) -> int:
        """A session lives as long as a cached auth verdict for the same secret would."""
        return self.expiry.write if permission is Permission.WRITE else self.expiry.read

    def encode(self, repo: str, secret: str, permission: Permission) -> str:
        token = self._fernet.encrypt(secret.encode("utf-8", "surrogatepass")).decode("ascii")
        return self._serializer.dumps({"r": repo, "p": int(permission), "s": token, "i": secrets.token_urlsafe(18)})

    def decode(self, value: str, now: float | None = None) -> Session | None:
        """The session in ``value``, or None if it was tampered with, expired or made by another key."""
        try:
            payload, signed_at = self._serializer.loads(value, return_timestamp=True)
        except (BadData, ValueError, TypeError, binascii.Error):
            return None
        session = self._payload(payload)
        if session is None:
            return None
        issued_at = signed_at.timestamp()
        age = (time.time() if now is None else now) - issued_at
        if age > self.max_age(session.permission) or age < -CLOCK_SKEW_SECONDS:
            return None
        try:
            secret = self._fernet.decrypt(session.secret.encode("ascii")).decode("utf-8", "surrogatepass")
        except (InvalidToken, UnicodeError):
            return None
        return Session(session.repo, secret, session.permission, issued_at, session.id)

    @staticmethod
    def _payload(payload: Any) -> Session | None:
        """Shape-check the signed payload (a valid signature does not make it well-formed)."""
        if not isinstance(payload, dict):
            return None
        repo, level, token, session_id = payload.get("r"), payload.get("p"), payload.get("s"), payload.get("i")
        if not isinstance(repo, str) or not isinstance(token, str) or not repo or not token:
            return None
        if not isinstance(session_id, str) or not session_id:
            return None
        if level not in (int(Permission.READ), int(Permission.WRITE)) or isinstance(level, bool):
            return None
        return Session(repo, token, Permission(level), id=session_id)


# -- the master key ------------------------------------------------------------------------------


def load_or_create_key_file(root: Path) -> bytes:
    """The random master key kept in ``ROOT/session.key``, created (0600) on first use.

    Created by hard-linking a fully written temp file into place, so servers sharing a ROOT that
    race here agree on one key and nobody reads a half-written file.
    """
    path = root / KEY_FILENAME
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path)
    root.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=root, prefix=".session-key-", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
            log.info("created a new session key in %s", path)
        except FileExistsError:
            pass  # another server sharing ROOT won the race: use its key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this file system: rename (last writer wins, still whole files).
            os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s was readable by others (mode %o): tightening it to 0600", path, mode & 0o777)
        os.chmod(path, 0o600)
    key = path.read_text("ascii").strip()
    if len(key) < 32:
        raise ConfigError(f"{path}: the session key is too short; delete the file to generate a new one")
    return key.encode("ascii")


def master_key(root: Path, session_secret: str | None) -> bytes:
    if session_secret:
        if len(session_secret) < MIN_SESSION_SECRET_CHARS:
            raise ConfigError(f"--session_secret must be at least {MIN_SESSION_SECRET_CHARS} characters")
        return session_secret.encode("utf-8")
    return load_or_create_key_file(root)


def session_codec(conn: HTTPConnection) -> SessionCodec:
    """The app's codec, built on first use (the key file is only created when a browser comes)."""
    return app_singleton(conn, "pywharf_session_codec", lambda settings: SessionCodec(
        SessionKeys.from_master(master_key(settings.root, getattr(settings, "session_secret", None))),
        settings.auth_expiry))


def revoked_sessions(conn: HTTPConnection) -> RevokedSessions:
    """The app's set of sessions ended by logout, loaded from ROOT on first use."""
    return app_singleton(conn, "pywharf_revoked_sessions", lambda settings: RevokedSessions(settings.root))


def current_session(conn: HTTPConnection) -> Session | None:
    """The request's valid session, if it carries one (signature, age, encryption and
    revocation checked)."""
    value = conn.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    session = session_codec(conn).decode(value)
    if session is None or revoked_sessions(conn).is_revoked(session.id):
        return None
    return session


def end_session(conn: HTTPConnection) -> bool:
    """Revoke the request's session (logout), so a copy of its cookie no longer works.

    True when there was a valid session to revoke."""
    session = current_session(conn)
    if session is None:
        return False
    expires_at = session.issued_at + session_codec(conn).max_age(session.permission)
    revoked_sessions(conn).revoke(session.id, expires_at)
    return True


def session_credentials(conn: HTTPConnection) -> tuple[str, str] | None:
    """``(repo name, secret)`` from the session cookie, for the app's auth function.

    Only a well-formed, signed, unexpired cookie yields credentials; the caller then checks the
    secret exactly as it checks basic auth (cached permission, else the backend).
    """
    session = current_session(conn)
    return (session.repo, session.secret) if session is not None else None
