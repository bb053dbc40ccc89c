"""CSRF protection for the browser UI's POST forms (signed double-submit token).

A form carries ``csrf_token`` = HMAC(csrf key, nonce), where the nonce lives in the
``pywharf_csrf`` cookie (HttpOnly, SameSite=Strict). Another site can make a browser *send* our
cookies but can neither read the nonce nor compute the HMAC, so it cannot fill in the field.
Stateless on purpose: any server holding the same session key accepts the form, which is what
several servers behind one load balancer need. Browsers' own cross-site markers
(``Sec-Fetch-Site``, ``Origin``) are checked for every unsafe request, forms included, by
``pywharf_core.http.cross_site``; this token is the second lock on the UI's forms.

The UI's POST forms are ``/login/``, ``/logout/`` (a GET logout could be triggered by any
site) and the tokens page's create and revoke (``token_pages.py``). For the package API the
session cookie grants read access only (``app.authorize`` never lets it upload or yank); the
tokens forms are the only writes a session makes, and they check this token first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import HTTPConnection
from starlette.responses import Response

CSRF_COOKIE = "pywharf_csrf"
CSRF_FIELD = "csrf_token"


class CsrfGuard:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _token(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode("ascii", "replace"), hashlib.sha256).hexdigest()

    def issue(self, conn: HTTPConnection) -> tuple[str, str | None]:
        """``(token for the form, nonce cookie to set or None)``: reuses the browser's nonce so
        several open tabs keep valid forms."""
        nonce = conn.cookies.get(CSRF_COOKIE, "")
        if len(nonce) >= 32:
            return self._token(nonce), None
        nonce = secrets.token_urlsafe(32)
        return self._token(nonce), nonce

    def verify(self, conn: HTTPConnection, submitted: object) -> bool:
        nonce = conn.cookies.get(CSRF_COOKIE, "")
        if len(nonce) < 32 or not isinstance(submitted, str) or not submitted:
            return False
        return hmac.compare_digest(submitted.encode("ascii", "replace"), self._token(nonce).encode("ascii"))


def set_csrf_cookie(response: Response, nonce: str, secure: bool) -> None:
    response.set_cookie(CSRF_COOKIE, nonce, path="/", httponly=True, samesite="strict", secure=secure)
