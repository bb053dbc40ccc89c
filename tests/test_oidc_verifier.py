"""Trusted Publishing token verification (pywharf_core.service.trusted_publishing).

Tokens come from the GitHub Actions stand-in (tests/oidc_standin.py), and keys are fetched from it over
loopback HTTP with the production fetcher, so discovery, JWKS parsing and the cache are exercised for real.
Only the cache's clock is faked (the refresh cooldown); token times are real, since PyJWT reads the wall
clock itself. Every refusal is checked for its Warehouse error code and for a description that names what
failed (clients print it) and never contains the token.
"""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from oidc_standin import OidcStandIn

from pywharf_core.service.trusted_publishing import (
    MAX_TOKEN_BYTES,
    IssuerKeys,
    MintRefused,
    PublisherMatch,
    TrustedPublishingVerifier,
    fetch_json,
)
from pywharf_core.storage.trusted_publishers import TrustedPublisher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[OidcStandIn]:
    with OidcStandIn() as standin:
        yield standin


@pytest.fixture
def oidc(server: OidcStandIn) -> Iterator[OidcStandIn]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(clock: FakeClock) -> TrustedPublishingVerifier:
    return TrustedPublishingVerifier(audience="pywharf", keys=IssuerKeys(clock=clock))


def refused(verifier: TrustedPublishingVerifier, token: str, publishers) -> MintRefused:
    with pytest.raises(MintRefused) as info:
        verifier.verify(token, publishers)
    assert token not in info.value.description
    return info.value


# -- success ---------------------------------------------------------------------------------------------------


def test_valid_token_matches_its_publisher(oidc, verifier):
    publisher = oidc.publisher(projects=("Acme_Widgets",))
    token = oidc.mint("pywharf")
    match = verifier.verify(token, {"team": [publisher], "other": []})
    issued = oidc.issued[-1]
    assert isinstance(match, PublisherMatch)
    assert (match.repo, match.publisher, match.issuer) == ("team", publisher, oidc.url)
    assert (match.jti, match.expires) == (issued["jti"], issued["exp"])
    assert match.publisher.projects == ("acme-widgets",)
    assert dict(match.claims) == {
        "repository": "acme/widgets", "repository_owner": "acme", "repository_owner_id": "1234567",
        "job_workflow_ref": "acme/widgets/.github/workflows/release.yml@refs/tags/v1.0.0",
        "ref": "refs/tags/v1.0.0", "sha": issued["sha"], "event_name": "push"}
    assert token not in repr(match)


def test_keys_are_fetched_once_and_reused(oidc, verifier):
    before = (oidc.discovery_requests, oidc.jwks_requests)
    for _ in range(3):
        verifier.verify(oidc.mint(), {"team": [oidc.publisher()]})
    assert (oidc.discovery_requests, oidc.jwks_requests) == (before[0] + 1, before[1] + 1)


def test_repository_and_environment_compare_case_insensitively(oidc, verifier):
    oidc.set_shape(repository="Acme/Widgets", environment="PyPI")
    match = verifier.verify(oidc.mint(), {"team": [oidc.publisher(repository="acme/widgets", environment="pypi")]})
    assert match.claims["environment"] == "PyPI"


def test_environment_specific_publisher_wins_over_any(oidc, verifier):
    oidc.set_shape(environment="pypi")
    general, specific = oidc.publisher(environment=""), oidc.publisher(environment="pypi", projects=("a",))
    assert verifier.verify(oidc.mint(), {"team": [general, specific]}).publisher is specific
    oidc.set_shape(environment="staging")  # only the any-environment publisher fits
    assert verifier.verify(oidc.mint(), {"team": [general, specific]}).publisher is general


def test_any_environment_publisher_accepts_tokens_without_environment(oidc, verifier):
    assert "environment" not in oidc.claims()
    assert verifier.verify(oidc.mint(), {"team": [oidc.publisher(environment="")]}).repo == "team"


def test_job_workflow_ref_at_sha_and_at_sign_in_filename(oidc, verifier):
    """GitHub uses the sha when a run has no ref (deployments); '@' may be part of a workflow file name."""
    sha = oidc.shape.sha
    oidc.set_shape(job_workflow_ref=f"acme/widgets/.github/workflows/release.yml@{sha}")
    assert verifier.verify(oidc.mint(), {"team": [oidc.publisher()]}).repo == "team"
    oidc.set_shape(workflow="re@lease.yaml", job_workflow_ref=None)
    assert verifier.verify(oidc.mint(), {"team": [oidc.publisher(workflow="re@lease.yaml")]}).repo == "team"


def test_clock_skew_within_leeway_is_accepted(oidc, verifier):
    # Expired 10 s ago and issued 20 s "in the future": both within the 30 s leeway.
    assert verifier.verify(oidc.mint(iat_offset=-310), {"team": [oidc.publisher()]}).repo == "team"
    assert verifier.verify(oidc.mint(iat_offset=20, nbf_offset=0), {"team": [oidc.publisher()]}).repo == "team"


def test_id_token_service_requires_the_request_token(oidc):
    import requests

    missing = requests.get(oidc.idtoken_url + "&audience=pywharf", timeout=5)
    wrong = requests.get(oidc.idtoken_url + "&audience=pywharf", headers={"Authorization": "Bearer nope"}, timeout=5)
    good = requests.get(oidc.idtoken_url + "&audience=pywharf",
                        headers={"Authorization": f"bearer {oidc.request_token}"}, timeout=5)
    assert (missing.status_code, wrong.status_code, good.status_code) == (401, 401, 200)
    claims = jwt.decode(good.json()["value"], options={"verify_signature": False})
    assert claims["aud"] == "pywharf" and claims["iss"] == oidc.url
    assert all(isinstance(claims[name], str) for name in ("repository_owner_id", "run_id", "jti"))
    default = requests.get(oidc.idtoken_url, headers={"Authorization": f"Bearer {oidc.request_token}"}, timeout=5)
    assert jwt.decode(default.json()["value"], options={"verify_signature": False})["aud"] == "https://github.com/acme"


# -- payload and token refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "not a jwt at all", "eyJhbGciOiJSUzI1NiJ9.e30"])
def test_malformed_token_is_invalid_payload(oidc, verifier, token):
    with pytest.raises(MintRefused) as info:
        verifier.verify(token, {"team": [oidc.publisher()]})
    error = info.value
    assert (error.code, error.description) == ("invalid-payload", "malformed JWT")


def test_oversize_token_is_refused_before_decoding(oidc, verifier):
    token = oidc.mint(extra={"padding": "x" * MAX_TOKEN_BYTES})
    error = refused(verifier, token, {"team": [oidc.publisher()]})
    assert error.code == "invalid-payload" and str(MAX_TOKEN_BYTES) in error.description


def test_unknown_issuer_is_refused_without_fetching_it(oidc, verifier):
    """The unverified `iss` never makes us fetch anything: only configured issuers are."""
    before = oidc.discovery_requests
    other = oidc.publisher(issuer="https://token.actions.githubusercontent.com")
    error = refused(verifier, oidc.mint(), {"team": [other]})
    assert (error.code, error.description) == ("invalid-payload", "unknown trusted publishing issuer")
    assert oidc.discovery_requests == before


def test_issuer_is_matched_exactly(oidc, verifier):
    error = refused(verifier, oidc.mint(issuer=oidc.url + "/"), {"team": [oidc.publisher()]})
    assert error.code == "invalid-payload" and "unknown" in error.description


def test_expired_token(oidc, verifier):
    error = refused(verifier, oidc.mint(iat_offset=-400), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "expired" in error.description


def test_not_yet_valid_token(oidc, verifier):
    error = refused(verifier, oidc.mint(iat_offset=0, nbf_offset=120), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "not yet valid" in error.description and "nbf" in error.description
    error = refused(verifier, oidc.mint(iat_offset=120, nbf_offset=-300), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "not yet valid" in error.description and "iat" in error.description


@pytest.mark.parametrize("audience", ["pypi", ["pywharf", "pypi"], ["pywharf"], "https://github.com/acme"])
def test_wrong_audience(oidc, verifier, audience):
    """Exactly our audience: a PyPI token, or one for several audiences, must not work here."""
    error = refused(verifier, oidc.mint(audience=audience), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "audience" in error.description and "'pywharf'" in error.description


def test_bad_signature(oidc, verifier):
    error = refused(verifier, oidc.mint(signing="wrong-key"), {"team": [oidc.publisher()]})
    assert (error.code, error.description) == ("invalid-token", "invalid token: bad signature")


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_other_algorithms_are_refused(oidc, verifier, algorithm):
    verifier.verify(oidc.mint(), {"team": [oidc.publisher()]})  # keys cached
    error = refused(verifier, oidc.mint(algorithm=algorithm), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "RS256" in error.description


def test_token_without_kid(oidc, verifier):
    error = refused(verifier, oidc.mint(omit_kid=True), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "'kid'" in error.description


@pytest.mark.parametrize("claim", ["exp", "iat", "aud"])
def test_missing_registered_claim(oidc, verifier, claim):
    error = refused(verifier, oidc.mint(drop=(claim,)), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and f"'{claim}'" in error.description


def test_missing_jti(oidc, verifier):
    error = refused(verifier, oidc.mint(drop=("jti",)), {"team": [oidc.publisher()]})
    assert (error.code, error.description) == ("invalid-token", "invalid token: missing claim 'jti'")


# -- publisher refusals ------------------------------------------------------------------------------------------


def test_wrong_repository(oidc, verifier):
    error = refused(verifier, oidc.mint(repository="acme/gadgets"), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher"
    assert "repository 'acme/gadgets'" in error.description and "workflow 'release.yml'" in error.description
    assert "no configured trusted publisher matches" in error.description


def test_wrong_workflow(oidc, verifier):
    error = refused(verifier, oidc.mint(workflow="ci.yml"), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "workflow 'ci.yml'" in error.description


def test_workflow_filename_is_case_sensitive(oidc, verifier):
    error = refused(verifier, oidc.mint(workflow="Release.yml"), {"team": [oidc.publisher(workflow="release.yml")]})
    assert error.code == "invalid-publisher"


@pytest.mark.parametrize("environment", [None, "staging"])
def test_wrong_or_missing_environment(oidc, verifier, environment):
    error = refused(verifier, oidc.mint(environment=environment), {"team": [oidc.publisher(environment="pypi")]})
    assert error.code == "invalid-publisher"
    assert (f"environment {environment!r}" if environment else "environment none") in error.description
    assert "another environment" in error.description


def test_pinned_owner_id_must_match(oidc, verifier):
    publisher = oidc.publisher(repository_owner_id="999")
    error = refused(verifier, oidc.mint(), {"team": [publisher]})
    assert error.code == "invalid-publisher" and "repository_owner_id" in error.description
    assert verifier.verify(oidc.mint(repository_owner_id="999"), {"team": [publisher]}).repo == "team"


def test_pull_request_target_is_refused(oidc, verifier):
    error = refused(verifier, oidc.mint(event_name="pull_request_target"), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "pull_request_target" in error.description


@pytest.mark.parametrize("claim", ["repository", "repository_owner_id", "job_workflow_ref", "sha", "event_name"])
def test_missing_publisher_claim(oidc, verifier, claim):
    error = refused(verifier, oidc.mint(drop=(claim,)), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and f"Missing claim '{claim}'" in error.description


def test_non_string_claim(oidc, verifier):
    error = refused(verifier, oidc.mint(extra={"repository_owner_id": 1234567}), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "'repository_owner_id' must be a string" in error.description


def test_reusable_workflow_of_another_repository_is_refused(oidc, verifier):
    """`job_workflow_ref` names the callee: a release.yml in someone else's repository is not ours."""
    oidc.set_shape(job_workflow_ref="evil/tools/.github/workflows/release.yml@refs/heads/main")
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "job_workflow_ref" in error.description


def test_job_workflow_ref_at_another_ref_is_refused(oidc, verifier):
    oidc.set_shape(job_workflow_ref="acme/widgets/.github/workflows/release.yml@refs/heads/other")
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "job_workflow_ref" in error.description


def test_job_workflow_ref_without_filename(oidc, verifier):
    oidc.set_shape(job_workflow_ref="acme/widgets/.github/workflows/release@refs/heads/main")
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "workflow file name" in error.description


def test_sub_and_owner_must_restate_the_repository(oidc, verifier):
    error = refused(verifier, oidc.mint(extra={"sub": "repo:evil/widgets:ref:refs/tags/v1"}),
                    {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "'sub'" in error.description
    error = refused(verifier, oidc.mint(extra={"repository_owner": "evil"}), {"team": [oidc.publisher()]})
    assert error.code == "invalid-publisher" and "'repository_owner'" in error.description


def test_several_repositories_matching_is_ambiguous(oidc, verifier):
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()], "staging": [oidc.publisher()],
                                            "third": [oidc.publisher(workflow="other.yml")]})
    assert error.code == "invalid-publisher"
    assert "several repositories (staging, team)" in error.description


# -- the key cache -----------------------------------------------------------------------------------------------


def test_unknown_kid_refreshes_once_then_cools_down(oidc, verifier, clock):
    publishers = {"team": [oidc.publisher()]}
    verifier.verify(oidc.mint(), publishers)
    fetched = oidc.jwks_requests
    refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    assert oidc.jwks_requests == fetched  # the first fetch started the cooldown too (as Warehouse's)
    clock.now += 61
    error = refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    assert error.code == "invalid-token" and "unpublished-" in error.description
    assert oidc.jwks_requests == fetched + 1  # one refresh for the unknown kid
    for _ in range(5):
        refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    clock.now += 59
    refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    assert oidc.jwks_requests == fetched + 1  # cooldown: random kids cost no fetches
    clock.now += 2
    refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    assert oidc.jwks_requests == fetched + 2


def test_rotated_key_is_picked_up(oidc, verifier, clock):
    publishers = {"team": [oidc.publisher()]}
    verifier.verify(oidc.mint(), publishers)
    old_token = oidc.mint()
    clock.now += 61
    new_kid = oidc.rotate_key(keep_old=False)
    match = verifier.verify(oidc.mint(), publishers)  # unknown kid: refreshed, found
    assert jwt.get_unverified_header(oidc.mint())["kid"] == new_kid and match.repo == "team"
    # The refresh replaced the set: a key the issuer withdrew no longer verifies.
    error = refused(verifier, old_token, publishers)
    assert error.code == "invalid-token"


def test_old_keys_are_kept_while_the_issuer_is_down(oidc, verifier, clock):
    publishers = {"team": [oidc.publisher()]}
    verifier.verify(oidc.mint(), publishers)
    oidc.down = True
    clock.now += 61
    before = oidc.discovery_requests
    refused(verifier, oidc.mint(signing="unknown-kid"), publishers)
    assert oidc.discovery_requests == before + 1  # it tried, and failed with a 503
    assert verifier.verify(oidc.mint(), publishers).repo == "team"  # the cached key still works


def test_issuer_down_from_the_start(oidc, verifier):
    oidc.down = True
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token" and "signing key" in error.description


def test_jwks_uri_must_be_https_or_loopback(oidc, clock):
    fetched = []

    def fetch(url):
        fetched.append(url)
        return {"issuer": oidc.url, "jwks_uri": "http://keys.example.com/jwks"}

    verifier = TrustedPublishingVerifier(keys=IssuerKeys(fetch=fetch, clock=clock))
    error = refused(verifier, oidc.mint(), {"team": [oidc.publisher()]})
    assert error.code == "invalid-token"
    assert fetched == [f"{oidc.url}/.well-known/openid-configuration"]  # the plain-http JWKS was never fetched


def test_discovery_must_name_the_same_issuer(oidc, clock):
    fetched = []

    def fetch(url):
        fetched.append(url)
        return {**oidc.discovery(), "issuer": "https://elsewhere.example"} if "openid" in url else oidc.jwks()

    verifier = TrustedPublishingVerifier(keys=IssuerKeys(fetch=fetch, clock=clock))
    assert refused(verifier, oidc.mint(), {"team": [oidc.publisher()]}).code == "invalid-token"
    assert len(fetched) == 1


def test_injected_fetch_serves_keys(oidc, clock):
    """Tests without a server: documents served by a function."""
    docs = {f"{oidc.url}/.well-known/openid-configuration": oidc.discovery(),
            f"{oidc.url}/.well-known/jwks": oidc.jwks()}
    verifier = TrustedPublishingVerifier(keys=IssuerKeys(fetch=docs.__getitem__, clock=clock))
    assert verifier.verify(oidc.mint(), {"team": [oidc.publisher()]}).repo == "team"


def test_fetch_json_caps_the_response_size(oidc):
    assert fetch_json(f"{oidc.url}/.well-known/jwks")["keys"][0]["kid"] == oidc.kid
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        fetch_json(f"{oidc.url}/.well-known/jwks", max_bytes=100)
    with pytest.raises(ValueError, match="HTTP 404"):
        fetch_json(f"{oidc.url}/nothing")


def test_fetch_json_follows_redirects_only_to_allowed_urls(oidc):
    oidc.redirects = {"/keys": "/.well-known/jwks", "/away": "http://keys.example.com/jwks", "/loop": "/loop"}
    try:
        assert fetch_json(f"{oidc.url}/keys")["keys"][0]["kid"] == oidc.kid
        with pytest.raises(ValueError, match=r"keys\.example\.com.*https://"):
            fetch_json(f"{oidc.url}/away")
        with pytest.raises(ValueError, match="more than 3 redirects"):
            fetch_json(f"{oidc.url}/loop")
    finally:
        oidc.redirects = {}


def test_publisher_made_in_code_with_a_bad_issuer_is_never_fetched(clock):
    fetched = []
    keys = IssuerKeys(fetch=fetched.append, clock=clock)
    assert keys.key_for("http://keys.example.com", "k1") is None
    assert fetched == []


def test_publisher_for_unconfigured_issuer_is_not_consulted(oidc, verifier):
    """A repository whose publishers name another issuer does not match a token of this one."""
    github = TrustedPublisher(repository="acme/widgets", workflow="release.yml")
    match = verifier.verify(oidc.mint(), {"gh": [github], "team": [oidc.publisher()]})
    assert match.repo == "team"
