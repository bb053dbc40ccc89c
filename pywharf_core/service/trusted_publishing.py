"""Trusted Publishing: verify a CI's OIDC identity token and find the publisher it proves.

What PyPI's Warehouse does (docs/design/issue14-trusted-publishing-research.md, section 3), for
GitHub Actions publishers configured per repository (:class:`TrustedPublisher`):

1. Cheap checks first: a bounded size, then an *unverified* decode, only to read ``iss``. An
   issuer no configured publisher names is refused before anything is fetched, so a token can
   never make the server fetch from a host of the sender's choosing.
2. The issuer's signing keys (:class:`IssuerKeys`): OIDC discovery, then the JWKS, cached by
   ``kid``. Refreshed only when a token names an unknown ``kid``, at most once a minute per
   issuer (random ``kid`` values must not turn us into a request amplifier), keeping the old keys
   when the issuer is down. PyJWT's PyJWKClient is not used: it has no cooldown and clears its
   cache when a fetch fails.
3. Signature and registered claims with PyJWT: RS256 only, our exact audience (``strict_aud``:
   a token minted for PyPI or for several audiences is refused), 30 s leeway.
4. The GitHub claims against the publishers (:func:`match_publisher`).

The ``jti`` replay check is not here: the caller claims the ``jti`` atomically in storage when it
mints the upload token. Everything blocks (HTTP fetches); call it from a worker thread.
Refusals are :class:`MintRefused` with Warehouse's error codes; their descriptions go to the
client verbatim (uv prints the body), so they say what failed and never contain the token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import jwt
import requests

from pywharf_core.storage.trusted_publishers import TrustedPublisher, issuer_url_problem

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "pywharf"  # never "pypi": a token minted for PyPI must not work here
MAX_TOKEN_BYTES = 8192  # GitHub's tokens are about 1.5 KiB; anything much bigger is not one
LEEWAY_SECONDS = 30  # Warehouse's _JWT_LEEWAY: clock skew between the CI and us
KEY_REFRESH_COOLDOWN = 60.0  # seconds between key fetches per issuer (Warehouse's)
FETCH_TIMEOUT = 5.0  # seconds per discovery / JWKS request (Warehouse's)
MAX_FETCH_BYTES = 1 << 20  # a discovery document or JWKS is a few KiB
MAX_KEYS_PER_ISSUER = 64  # GitHub publishes a handful; each RSA key costs parsing time

# Warehouse's error codes (the gh-action renders `code: description`; uv prints the body).
INVALID_PAYLOAD = "invalid-payload"
INVALID_TOKEN = "invalid-token"  # noqa: S105 - an error code, not a secret
INVALID_PUBLISHER = "invalid-publisher"
INVALID_REUSE_TOKEN = "invalid-reuse-token"  # noqa: S105 - raised by the minting code (jti replay)

# The workflow file name in `job_workflow_ref` ("owner/repo/.github/workflows/<file>@<ref>"),
# Warehouse's expression: the lookahead copes with '@' inside the file name and with refs that
# look like file names.
_WORKFLOW_FILENAME = re.compile(r"([^/]+\.(yml|yaml))(?=@)")
# Claims a GitHub token must carry, all strings (Warehouse's required verifiable and
# unverifiable claims; `event_name` too, for the pull_request_target refusal).
REQUIRED_CLAIMS = ("sub", "repository", "repository_owner", "repository_owner_id", "job_workflow_ref",
                   "ref", "sha", "event_name")
# What a match records (logs, the minted token's record): enough to audit which run published.
RECORDED_CLAIMS = ("repository", "repository_owner", "repository_owner_id", "job_workflow_ref", "ref", "sha",
                   "environment", "event_name", "project_path", "ci_config_ref_uri", "ref_path")
# GitLab CI's (Warehouse's GitLab publisher): the project, its CI config file at a ref.
GITLAB_REQUIRED_CLAIMS = ("sub", "project_path", "ci_config_ref_uri", "ref_path", "sha")


class MintRefused(Exception):
    """A token was refused; ``code`` is Warehouse's, ``description`` is safe to show the client."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


@dataclass(frozen=True)
class PublisherMatch:
    """A verified token and the one publisher it proves (the caller still claims ``jti``)."""

    repo: str  # the package repository whose publisher matched
    publisher: TrustedPublisher
    issuer: str
    jti: str  # the token's id: claim it once (until ``expires`` + leeway) before minting
    expires: int  # the token's ``exp`` (Unix seconds)
    claims: Mapping[str, str] = field(default_factory=dict)  # RECORDED_CLAIMS present in the token


Fetch = Callable[[str], Any]  # URL -> parsed JSON; raises on any failure


MAX_REDIRECTS = 3


def fetch_json(url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_FETCH_BYTES) -> Any:
    """GET ``url`` and parse its JSON body, read in chunks and refused past ``max_bytes``.

    Redirects are followed by hand (at most 3), each target held to the same rule as the URL
    itself (https, or http on loopback): requests would follow an https page to plain http.
    ``timeout`` bounds connecting and each read, and the whole body too (a server trickling
    bytes would otherwise hold a worker thread far longer)."""
    deadline = time.monotonic() + 2 * timeout
    for _ in range(MAX_REDIRECTS + 1):
        with requests.get(url, timeout=timeout, stream=True, allow_redirects=False,
                          headers={"Accept": "application/json"}) as response:
            if response.is_redirect:
                target = urljoin(url, response.headers.get("Location", ""))
                problem = issuer_url_problem(target)
                if problem:
                    raise ValueError(f"redirected to {target!r}, which {problem}")
                url = target
                continue
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise ValueError(f"response larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"response took longer than {2 * timeout:g} s")
        return json.loads(bytes(body))
    raise ValueError(f"more than {MAX_REDIRECTS} redirects")


class IssuerKeys:
    """Signing keys per issuer, by ``kid`` (Warehouse's cache; thread-safe).

    ``fetch`` and ``clock`` are injectable for tests. Only issuers passed to :meth:`key_for`
    are ever fetched, and the verifier passes only configured ones.
    """

    def __init__(self, fetch: Fetch = fetch_json, clock: Callable[[], float] = time.monotonic,
                 cooldown: float = KEY_REFRESH_COOLDOWN) -> None:
        self._fetch = fetch
        self._clock = clock
        self._cooldown = cooldown
        self._keys: dict[str, dict[str, jwt.PyJWK]] = {}
        self._last_refresh: dict[str, float] = {}
        self._lock = threading.Lock()  # guards the dicts above
        self._refresh_locks: dict[str, threading.Lock] = {}  # one fetch per issuer at a time

    def key_for(self, issuer: str, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of ``issuer``, refreshing the issuer's keys if it is unknown and the
        cooldown allows; None when it is still unknown."""
        with self._lock:
            key = self._keys.get(issuer, {}).get(kid)
            if key is not None:
                return key
            refresh_lock = self._refresh_locks.setdefault(issuer, threading.Lock())
        with refresh_lock:
            with self._lock:  # another thread may have refreshed while we waited
                key = self._keys.get(issuer, {}).get(kid)
                last = self._last_refresh.get(issuer)
                if key is not None or (last is not None and self._clock() - last < self._cooldown):
                    return key
                self._last_refresh[issuer] = self._clock()
            keys = self._fetch_keys(issuer)
            with self._lock:
                if keys:  # an empty or failed fetch keeps the old keys
                    self._keys[issuer] = keys
                return self._keys.get(issuer, {}).get(kid)

    def _fetch_keys(self, issuer: str) -> dict[str, jwt.PyJWK]:
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            problem = issuer_url_problem(issuer)  # the config checked it; publishers made in code were not
            if problem:
                raise ValueError(f"issuer {problem}")
            discovery = self._fetch(discovery_url)
            if not isinstance(discovery, dict):
                raise ValueError("discovery document is not a JSON object")
            # OpenID Connect Discovery 1.0 section 4.3: the document must name the same issuer.
            if discovery.get("issuer") != issuer:
                raise ValueError(f"discovery document names issuer {discovery.get('issuer')!r}")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("discovery document has no jwks_uri")
            problem = issuer_url_problem(jwks_uri)
            if problem:
                raise ValueError(f"jwks_uri {jwks_uri!r} {problem}")
            jwks = self._fetch(jwks_uri)
            entries = jwks.get("keys") if isinstance(jwks, dict) else None
            if not isinstance(entries, list):
                raise ValueError("JWKS has no 'keys' array")
        except Exception as exc:  # any failure: keep the keys we have (Warehouse does the same)
            log.warning("trusted publishing: cannot refresh the signing keys of %s: %s", issuer, exc)
            return {}
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if len(keys) >= MAX_KEYS_PER_ISSUER:
                log.warning("trusted publishing: %s publishes over %d keys; using the first ones",
                            issuer, MAX_KEYS_PER_ISSUER)
                break
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig" or entry.get("kty") != "RSA":
                continue  # only RS256 tokens are accepted
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
            except jwt.PyJWTError as exc:
                log.warning("trusted publishing: %s key %r unusable: %s", issuer, entry["kid"][:64], exc)
        if not keys:
            log.warning("trusted publishing: %s published no usable signing key", issuer)
        return keys


def claims_for_log(token: str) -> dict[str, str]:
    """The claims of a refused token that say whose it was (``iss`` and :data:`RECORDED_CLAIMS`),
    read *without* verifying it: for the log line of a refusal only, never to decide anything.
    Empty for something that is not a JWT."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return {name: claims[name][:200] for name in ("iss", *RECORDED_CLAIMS) if isinstance(claims.get(name), str)}


class TrustedPublishingVerifier:
    """Verifies identity tokens for one server (one audience); keeps the issuers' keys."""

    def __init__(self, audience: str = DEFAULT_AUDIENCE, keys: IssuerKeys | None = None) -> None:
        self.audience = audience
        self.keys = keys if keys is not None else IssuerKeys()

    def verify(self, token: str, publishers: Mapping[str, Sequence[TrustedPublisher]]) -> PublisherMatch:
        """The publisher ``token`` proves, among ``publishers`` (repo name -> its publishers).

        Raises MintRefused. Blocking: it may fetch the issuer's keys."""
        if not isinstance(token, str) or not token:
            raise MintRefused(INVALID_PAYLOAD, "malformed JWT")
        if len(token) > MAX_TOKEN_BYTES:
            raise MintRefused(INVALID_PAYLOAD, f"malformed JWT: longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise MintRefused(INVALID_PAYLOAD, "malformed JWT") from None
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise MintRefused(INVALID_PAYLOAD, "malformed JWT: no 'iss' claim")
        if not any(p.issuer == issuer for repo_publishers in publishers.values() for p in repo_publishers):
            raise MintRefused(INVALID_PAYLOAD, "unknown trusted publishing issuer")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise MintRefused(INVALID_TOKEN, "invalid token: its header names no signing key ('kid')")
        key = self.keys.key_for(issuer, kid)
        if key is None:
            raise MintRefused(INVALID_TOKEN, f"invalid token: signing key {kid[:64]!r} is not one of the issuer's "
                                             "(unknown or rotated out; keys are refreshed at most once a minute)")
        claims = self._decode(token, key, issuer)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise MintRefused(INVALID_TOKEN, "invalid token: missing claim 'jti'")
        repo, publisher = match_publisher(claims, issuer, publishers)
        return PublisherMatch(
            repo=repo, publisher=publisher, issuer=issuer, jti=jti, expires=int(claims["exp"]),
            claims={name: claims[name] for name in RECORDED_CLAIMS if isinstance(claims.get(name), str)},
        )

    def _decode(self, token: str, key: jwt.PyJWK, issuer: str) -> dict[str, Any]:
        options: Any = {"require": ["iss", "iat", "exp", "aud"], "strict_aud": True, "verify_signature": True,
                        "verify_iss": True, "verify_iat": True, "verify_exp": True, "verify_aud": True,
                        "verify_nbf": True}
        try:
            # The wall clock is PyJWT's own (time.time); tests mint tokens relative to it.
            return jwt.decode(token, key=key, algorithms=["RS256"], issuer=issuer, audience=self.audience,
                              leeway=LEEWAY_SECONDS, options=options)
        except jwt.ExpiredSignatureError:
            why = "expired (claim 'exp' is in the past)"
        except jwt.ImmatureSignatureError as exc:
            why = f"not yet valid ({exc})"
        except jwt.InvalidAudienceError:
            why = f"wrong audience: expected exactly {self.audience!r} (claim 'aud')"
        except jwt.InvalidIssuerError:
            why = "wrong issuer (claim 'iss')"
        except jwt.InvalidSignatureError:
            why = "bad signature"
        except jwt.MissingRequiredClaimError as exc:
            why = f"missing claim {exc.claim!r}"
        except jwt.InvalidAlgorithmError:
            why = "algorithm not allowed (only RS256)"
        except jwt.InvalidIssuedAtError:
            why = "bad claim 'iat'"
        except jwt.PyJWTError as exc:
            why = f"malformed or invalid token ({type(exc).__name__})"
        raise MintRefused(INVALID_TOKEN, f"invalid token: {why}")


def match_publisher(claims: Mapping[str, Any], issuer: str,
                    publishers: Mapping[str, Sequence[TrustedPublisher]]) -> tuple[str, TrustedPublisher]:
    """(repo, publisher) that verified ``claims`` prove: GitLab CI's rules when the issuer's
    publishers are GitLab ones (:func:`_match_gitlab`), else Warehouse's GitHub rules:
    case-insensitive repository, exact workflow file name, ``job_workflow_ref`` naming that file
    in that repository at ``ref`` or ``sha``, environment ("" = any, else equal ignoring case;
    an environment-specific publisher wins over an any-environment one), owner id if pinned.
    Several repositories matching is refused as ambiguous (one token, one repository)."""
    if {p.kind for found in publishers.values() for p in found if p.issuer == issuer} == {"gitlab"}:
        return _match_gitlab(claims, issuer, publishers)
    _require(claims, REQUIRED_CLAIMS)
    environment = _environment(claims)
    if claims["event_name"] == "pull_request_target":
        raise MintRefused(INVALID_PUBLISHER, "valid token, but publishing from a pull_request_target workflow is "
                                             "refused (it runs with the base repository's rights on untrusted code)")
    repository: str = claims["repository"]
    job_workflow_ref: str = claims["job_workflow_ref"]
    workflow_match = _WORKFLOW_FILENAME.search(job_workflow_ref)
    if workflow_match is None:
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher (could not extract the "
                                             "workflow file name from claim 'job_workflow_ref')")
    workflow = workflow_match.group(1)
    _check_claims_agree(claims, repository, workflow)
    return _pick(publishers, issuer, "github", repository, workflow, environment,
                 lambda p: not p.repository_owner_id or p.repository_owner_id == claims["repository_owner_id"])


def _match_gitlab(claims: Mapping[str, Any], issuer: str,
                  publishers: Mapping[str, Sequence[TrustedPublisher]]) -> tuple[str, TrustedPublisher]:
    """GitLab CI (Warehouse's GitLab publisher): ``project_path`` is the project (compared
    ignoring case), ``ci_config_ref_uri`` is ``<host>/<project_path>//<config file>@<ref>``
    naming the publisher's CI config file at the run's ``ref_path`` or ``sha``, ``sub`` restates
    the project, ``environment`` as for GitHub."""
    _require(claims, GITLAB_REQUIRED_CLAIMS)
    environment = _environment(claims)
    project: str = claims["project_path"]
    if not claims["sub"].lower().startswith(f"project_path:{project.lower()}:"):
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher "
                                             "(claim 'sub' does not match claim 'project_path')")
    host = urlsplit(issuer).netloc
    prefix = f"{host}/{project}//"
    uri: str = claims["ci_config_ref_uri"]
    if not uri.lower().startswith(prefix.lower()) or "@" not in uri[len(prefix):]:
        raise MintRefused(INVALID_PUBLISHER, f"valid token, but no corresponding publisher (claim "
                                             f"'ci_config_ref_uri' is not {prefix}<config file>@<ref>)")
    workflow, _, ref = uri[len(prefix):].partition("@")
    if not ref or ref not in (claims["ref_path"], claims["sha"]):
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher (claim "
                                             "'ci_config_ref_uri' names neither the run's ref_path nor its sha)")
    return _pick(publishers, issuer, "gitlab", project, workflow, environment, lambda p: True)


def _require(claims: Mapping[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if name not in claims:
            raise MintRefused(INVALID_PUBLISHER,
                              f"valid token, but no corresponding publisher (Missing claim {name!r})")
        if not isinstance(claims[name], str):
            raise MintRefused(INVALID_PUBLISHER, f"valid token, but no corresponding publisher "
                                                 f"(claim {name!r} must be a string)")


def _environment(claims: Mapping[str, Any]) -> str | None:
    environment = claims.get("environment")
    if environment is not None and not isinstance(environment, str):
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher "
                                             "(claim 'environment' must be a string)")
    return environment


def _pick(publishers: Mapping[str, Sequence[TrustedPublisher]], issuer: str, kind: str, repository: str,
          workflow: str, environment: str | None,
          pinned_ok: Callable[[TrustedPublisher], bool]) -> tuple[str, TrustedPublisher]:
    """The one repository whose publisher names this repository and workflow (the most specific
    environment); refusals name the claims that decided."""
    def same(p: TrustedPublisher) -> bool:
        return (p.kind == kind and p.issuer == issuer and p.repository.lower() == repository.lower()
                and p.workflow == workflow)

    candidates: dict[str, list[TrustedPublisher]] = {}
    for repo, repo_publishers in publishers.items():
        found = [p for p in repo_publishers if same(p) and pinned_ok(p)]
        if found:
            candidates[repo] = found
    matches: dict[str, TrustedPublisher] = {}
    for repo, found in candidates.items():
        chosen = _most_specific(found, environment)
        if chosen is not None:
            matches[repo] = chosen
    if len(matches) > 1:
        raise MintRefused(INVALID_PUBLISHER, f"valid token, but it matches the trusted publishers of several "
                                             f"repositories ({', '.join(sorted(matches))}): configure it in one")
    if matches:
        return next(iter(matches.items()))
    env_text = repr(environment) if environment else "none"
    decided = f"repository {repository!r}, workflow {workflow!r}, environment {env_text}"
    if candidates:
        why = "a publisher for this repository and workflow is configured, but for another environment"
    elif any(same(p) for repo_publishers in publishers.values() for p in repo_publishers):
        why = "the publisher for this repository and workflow pins another repository_owner_id"
    else:
        why = "no configured trusted publisher matches"
    raise MintRefused(INVALID_PUBLISHER, f"valid token, but no corresponding publisher ({decided}): {why}")


def _check_claims_agree(claims: Mapping[str, Any], repository: str, workflow: str) -> None:
    """The claims that restate the repository must agree with it (Warehouse checks each against
    the publisher; the publisher matched ``repository``, so checking against it is the same)."""
    owner, slash, _ = repository.partition("/")
    if not slash or claims["repository_owner"].lower() != owner.lower():
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher "
                                             "(claim 'repository_owner' does not match claim 'repository')")
    if not claims["sub"].lower().startswith(f"repo:{repository.lower()}:"):
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher "
                                             "(claim 'sub' does not match claim 'repository')")
    ref, sha = claims["ref"], claims["sha"]
    if not (ref or sha):
        raise MintRefused(INVALID_PUBLISHER, "valid token, but no corresponding publisher "
                                             "(the ref and sha claims are empty)")
    base = f"{repository}/.github/workflows/{workflow}"
    expected = {f"{base}@{value}" for value in (ref, sha) if value}
    if claims["job_workflow_ref"] not in expected:
        # A reusable workflow of another repository, or a ref that is neither the run's ref nor sha.
        raise MintRefused(INVALID_PUBLISHER, f"valid token, but no corresponding publisher (claim "
                                             f"'job_workflow_ref' is not {' or '.join(map(repr, sorted(expected)))})")


def _most_specific(found: Sequence[TrustedPublisher], environment: str | None) -> TrustedPublisher | None:
    if environment:
        for publisher in found:
            if publisher.environment and publisher.environment.lower() == environment.lower():
                return publisher
    for publisher in found:
        if not publisher.environment:
            return publisher
    return None
