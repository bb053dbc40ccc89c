"""A GitHub REST API stand-in for tests, faithful to GitHub's documented behaviour and OpenAPI schemas.

    from github_standin import GitHubStandIn
    with GitHubStandIn.start(validate=True) as gh:
        gh.add_token("t0k", "alice"); gh.create_repo("alice", "pkgs")
        Github(auth=Auth.Token("t0k"), base_url=gh.api_url, seconds_between_requests=0, seconds_between_writes=0)
        ...
        assert not gh.schema_violations

See ``server.GitHubStandIn`` for the test-facing API, ``app`` for the endpoint semantics, ``validation`` for the
OpenAPI checks, and ``data/PROVENANCE.md`` for where GitHub's description comes from.
"""

from .faults import Exchange, Fault, RecordedRequest
from .server import GitHubStandIn
from .state import git_blob_sha, sanitize_asset_name

__all__ = ["Exchange", "Fault", "GitHubStandIn", "RecordedRequest", "git_blob_sha", "sanitize_asset_name"]
