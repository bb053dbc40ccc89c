"""`OidcStandIn`: a GitHub Actions OIDC stand-in on ``http://127.0.0.1:PORT`` for Trusted Publishing tests.

One loopback server plays both GitHub parts a publishing job talks to:

- the **issuer** (``https://token.actions.githubusercontent.com`` in real life): OpenID Connect discovery at
  ``/.well-known/openid-configuration`` (``issuer``, ``jwks_uri``, ``claims_supported``...) and the signing keys
  at ``/.well-known/jwks`` (RSA public keys with ``kid``, ``use`` "sig", ``alg`` "RS256");
- the **Actions ID-token service** a runner reaches through ``ACTIONS_ID_TOKEN_REQUEST_URL``:
  ``GET /idtoken?api-version=2.0&audience=X`` with ``Authorization: Bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>``
  (401 without it) answers ``{"value": "<jwt>"}`` with ``aud`` = X (GitHub's default audience, the owner's URL,
  when X is absent).

Tokens are RS256 JWTs shaped like GitHub's, every claim a string except the times: ``sub``, ``repository``,
``repository_owner``, ``repository_owner_id``, ``job_workflow_ref``, ``ref``, ``sha``, ``event_name``,
``environment`` (only when set), a fresh UUID ``jti``, ``iat``, ``nbf`` = iat - 300 and ``exp`` = iat + 300, and
``iss`` = this server's own URL. Followed: GitHub's "OpenID Connect reference" (docs.github.com/en/actions/
reference/security/oidc: discovery, claims, the ``audience`` query), actions/toolkit's oidc-utils (the
``&audience=`` request), and docs/design/issue14-trusted-publishing-research.md sections 1 and 4 (what uv and
ambient-id send; a real token's claims, decoded).

Use it in-process (:meth:`OidcStandIn.mint`) or from a real client (:meth:`OidcStandIn.client_env` gives
``uv publish --trusted-publishing always`` the variables of a GitHub runner). :attr:`shape` sets the claims of
the next tokens; :meth:`rotate_key`, :attr:`down` and the request counters cover the key cache.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from pywharf_core.storage.trusted_publishers import TrustedPublisher

# GitHub's discovery document lists these (docs.github.com, "OpenID Connect reference").
CLAIMS_SUPPORTED = (
    "sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha", "repository", "repository_id",
    "repository_owner", "repository_owner_id", "enterprise", "enterprise_id", "run_id", "run_number",
    "run_attempt", "actor", "actor_id", "workflow", "workflow_ref", "workflow_sha", "head_ref", "base_ref",
    "event_name", "ref_type", "ref_protected", "environment", "environment_node_id", "job_workflow_ref",
    "job_workflow_sha", "repository_visibility", "runner_environment", "check_run_id",
)
DEFAULT_REQUEST_TOKEN = "standin-actions-request-token"  # a test value


@dataclass
class TokenShape:
    """What the next tokens claim and how they are signed. Defaults: a tag push of acme/widgets'
    release.yml, no environment, valid for 300 s from now."""

    repository: str = "acme/widgets"
    repository_owner_id: str = "1234567"
    workflow: str = "release.yml"  # file name under .github/workflows/
    ref: str = "refs/tags/v1.0.0"
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    environment: str | None = None  # None: no `environment` claim (a job outside any environment)
    event_name: str = "push"
    job_workflow_ref: str | None = None  # None: "<repository>/.github/workflows/<workflow>@<ref>"
    iat_offset: int = 0  # seconds added to now for `iat` (negative: issued in the past)
    lifetime: int = 300  # exp - iat
    nbf_offset: int = -300  # nbf - iat (GitHub: -300); beyond +30 s from now the token is "not yet valid"
    issuer: str | None = None  # None: the stand-in's own URL
    audience: str | list[str] | None = None  # None: the one asked for (or GitHub's default)
    signing: str = "current"  # "current" | "unknown-kid" (unpublished key) | "wrong-key" (published kid, other key)
    algorithm: str = "RS256"
    omit_kid: bool = False
    drop: tuple[str, ...] = ()  # claims to leave out (e.g. "jti", "repository_owner_id")
    extra: Mapping[str, Any] = field(default_factory=dict)  # claims added or replaced last


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls) -> _Key:
        return cls(kid=str(uuid.uuid4()), private=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        data = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        assert isinstance(data, dict)
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}


class OidcStandIn:
    """The stand-in server; ``with OidcStandIn() as oidc:`` (or :meth:`start` / :meth:`stop`) in a fixture.

    Attributes tests read or set between requests: :attr:`shape` (the next tokens), :attr:`down` (discovery and
    JWKS answer 503), :attr:`redirects` (path -> 302 Location), :attr:`request_token`, the counters
    :attr:`discovery_requests`, :attr:`jwks_requests`, :attr:`idtoken_requests`, and :attr:`issued` (the claims
    of every token minted, newest last).
    """

    def __init__(self, *, request_token: str = DEFAULT_REQUEST_TOKEN, host: str = "127.0.0.1") -> None:
        self.request_token = request_token
        self.shape = TokenShape()
        self.down = False
        self.discovery_requests = 0
        self.jwks_requests = 0
        self.idtoken_requests = 0
        self.issued: list[dict[str, Any]] = []
        self.redirects: dict[str, str] = {}  # path -> Location: answered with a 302
        self._signing_key = _Key.new()
        self._published: list[_Key] = [self._signing_key]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> OidcStandIn:
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OidcStandIn:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses and client settings -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The issuer URL (``iss``): ``http://127.0.0.1:PORT``, no trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def idtoken_url(self) -> str:
        """``ACTIONS_ID_TOKEN_REQUEST_URL``: like GitHub's, it already has a query string."""
        return f"{self.url}/idtoken?api-version=2.0"

    def client_env(self) -> dict[str, str]:
        """Variables of a GitHub runner with ``id-token: write`` (merge into a client's environment; also
        remove GOOGLE_SERVICE_ACCOUNT_NAME, GITLAB_CI, BUILDKITE, CIRCLECI so ambient-id picks GitHub)."""
        return {"GITHUB_ACTIONS": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": self.idtoken_url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token}

    def publisher(self, **changes: Any) -> TrustedPublisher:
        """A publisher matching the current :attr:`shape` (issuer = this server), with ``changes``."""
        fields: dict[str, Any] = {"issuer": self.url, "repository": self.shape.repository,
                                  "workflow": self.shape.workflow, "environment": self.shape.environment or ""}
        return TrustedPublisher(**{**fields, **changes})

    # -- knobs -----------------------------------------------------------------------------------------------

    def set_shape(self, **changes: Any) -> TokenShape:
        """Change some fields of :attr:`shape` for the next tokens; returns the new shape."""
        self.shape = dataclasses.replace(self.shape, **changes)
        return self.shape

    def reset(self) -> None:
        """Default token shape, issuer up (keys and counters stay)."""
        self.shape = TokenShape()
        self.down = False

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """Sign with a new key from now on and publish it (with the old ones unless ``keep_old=False``);
        returns the new ``kid``."""
        with self._lock:
            self._signing_key = _Key.new()
            self._published = [*self._published, self._signing_key] if keep_old else [self._signing_key]
            return self._signing_key.kid

    @property
    def kid(self) -> str:
        """The ``kid`` tokens are signed with."""
        return self._signing_key.kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.jwk() for key in self._published]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/.well-known/jwks",
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": list(CLAIMS_SUPPORTED),
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        }

    # -- tokens ----------------------------------------------------------------------------------------------

    def claims(self, audience: str | None = None, shape: TokenShape | None = None) -> dict[str, Any]:
        """The claims a token for ``audience`` would carry now (see the module docstring)."""
        s = shape or self.shape
        owner = s.repository.partition("/")[0]
        iat = int(time.time()) + s.iat_offset
        job_workflow_ref = s.job_workflow_ref or f"{s.repository}/.github/workflows/{s.workflow}@{s.ref}"
        sub = (f"repo:{s.repository}:environment:{s.environment}" if s.environment
               else f"repo:{s.repository}:ref:{s.ref}")
        aud = s.audience if s.audience is not None else audience or f"https://github.com/{owner}"
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()), "sub": sub, "aud": aud,
            "ref": s.ref, "sha": s.sha, "repository": s.repository, "repository_id": "632596897",
            "repository_owner": owner, "repository_owner_id": s.repository_owner_id,
            "repository_visibility": "private", "run_id": "8201547653", "run_number": "17", "run_attempt": "1",
            "actor": "octocat", "actor_id": "583231", "workflow": "Release", "workflow_ref": job_workflow_ref,
            "workflow_sha": s.sha, "head_ref": "", "base_ref": "", "event_name": s.event_name,
            "ref_type": "tag" if s.ref.startswith("refs/tags/") else "branch", "ref_protected": "false",
            "job_workflow_ref": job_workflow_ref, "job_workflow_sha": s.sha,
            "runner_environment": "github-hosted", "check_run_id": "22866212341",
            "iss": s.issuer or self.url, "nbf": iat + s.nbf_offset, "exp": iat + s.lifetime, "iat": iat,
        }
        if s.environment is not None:
            claims["environment"] = s.environment
        for name in s.drop:
            claims.pop(name, None)
        claims.update(s.extra)
        return claims

    def mint(self, audience: str | None = "pywharf", **changes: Any) -> str:
        """A signed token for ``audience`` with the current :attr:`shape` plus ``changes`` (one-off)."""
        shape = dataclasses.replace(self.shape, **changes) if changes else self.shape
        claims = self.claims(audience, shape)
        with self._lock:
            if shape.signing == "current":
                kid, key = self._signing_key.kid, self._signing_key.private
            elif shape.signing == "unknown-kid":
                kid, key = f"unpublished-{uuid.uuid4()}", _Key.new().private
            elif shape.signing == "wrong-key":
                kid, key = self._signing_key.kid, _Key.new().private
            else:
                raise ValueError(f"unknown signing mode {shape.signing!r}")
            self.issued.append(claims)
        headers: dict[str, Any] = {} if shape.omit_kid else {"kid": kid}
        if shape.algorithm == "RS256":
            return jwt.encode(claims, key, algorithm="RS256", headers=headers)
        # e.g. "HS256" keyed with the public key, or "none": algorithm confusion attempts.
        secret = "standin-hmac-secret-of-32-bytes-or-more" if shape.algorithm.startswith("HS") else None
        return jwt.encode(claims, secret, algorithm=shape.algorithm, headers=headers)  # type: ignore[arg-type]


def _handler_for(standin: OidcStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path in standin.redirects:
                self.send_response(302)
                self.send_header("Location", standin.redirects[parts.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path == "/.well-known/openid-configuration":
                standin.discovery_requests += 1
                self._issuer_answer(standin.discovery())
            elif parts.path == "/.well-known/jwks":
                standin.jwks_requests += 1
                self._issuer_answer(standin.jwks())
            elif parts.path == "/idtoken":
                standin.idtoken_requests += 1
                self._idtoken(parse_qs(parts.query))
            else:
                self._send(404, {"message": "Not Found"})

        def _issuer_answer(self, document: dict[str, Any]) -> None:
            if standin.down:
                self._send(503, {"message": "Service Unavailable"})
            else:
                self._send(200, document)

        def _idtoken(self, query: Mapping[str, list[str]]) -> None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                     standin.request_token.encode()):
                self._send(401, {"message": "Bad credentials"})
                return
            audience = query.get("audience", [None])[-1]
            self._send(200, {"count": 1, "value": standin.mint(audience)})

        def _send(self, status: int, document: dict[str, Any]) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
