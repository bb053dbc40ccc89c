"""`[[name.trusted_publishers]]` in a repository config (pywharf_core/storage/config.py, trusted_publishers.py).

A publisher decides who may upload without a secret, so a typo must stop the server with one line naming
the file, the table and the entry's key, and nothing that would let tokens be checked with keys fetched over
plain http from another machine may load.
"""

from __future__ import annotations

import pytest

from pywharf_backends.file_system import FileSystemConfig
from pywharf_backends.github.config import GitHubConfig
from pywharf_core.model.errors import ConfigError
from pywharf_core.storage.config import ConfigSource, build_config, load_repo_configs, parse_toml
from pywharf_core.storage.config_limits import ConfigLimits
from pywharf_core.storage.registry import installed_backends
from pywharf_core.storage.trusted_publishers import (
    GITHUB_ACTIONS_ISSUER,
    MAX_TRUSTED_PUBLISHERS,
    TrustedPublisher,
    issuer_url_problem,
)

SOURCE = ConfigSource("/etc/pywharf/config.toml")
FS_TABLE = {"type": "file_system", "read_secret": "read-secret-00", "write_secret": "write-secret"}
PUBLISHER = {"repository": "acme/widgets", "workflow": "release.yml"}

DOCUMENT = '''
[team]
type = "file_system"
read_secret = "read-secret-00"
write_secret = "write-secret"

[[team.trusted_publishers]]
repository = "acme/widgets"
workflow = "release.yml"
environment = "pypi"
projects = ["Acme_Widgets", "acme.widgets.extra"]

[[team.trusted_publishers]]
issuer = "http://127.0.0.1:8123"
repository = "acme/tools"
workflow = "publish.yaml"
repository_owner_id = "1234567"
'''


def build(*publishers: object, limits: ConfigLimits | None = None):
    table = {**FS_TABLE, "trusted_publishers": list(publishers)}
    if limits is None:
        return build_config(FileSystemConfig, "team", table, SOURCE)
    return build_config(FileSystemConfig, "team", table, SOURCE, limits)


def error_of(*publishers: object, limits: ConfigLimits | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build(*publishers, limits=limits)
    return str(info.value)


def test_toml_array_of_tables_loads_as_publishers():
    configs = load_repo_configs(parse_toml(DOCUMENT, SOURCE), SOURCE, installed_backends())
    first, second = configs["team"].trusted_publishers
    assert first == TrustedPublisher(repository="acme/widgets", workflow="release.yml", environment="pypi",
                                     projects=("acme-widgets", "acme-widgets-extra"))
    assert first.issuer == GITHUB_ACTIONS_ISSUER  # the default
    assert (second.issuer, second.workflow, second.environment, second.projects, second.repository_owner_id) == (
        "http://127.0.0.1:8123", "publish.yaml", "", (), "1234567")
    assert isinstance(configs["team"].trusted_publishers, tuple)


def test_no_publishers_by_default_for_every_backend():
    assert build_config(FileSystemConfig, "team", FS_TABLE, SOURCE).trusted_publishers == ()
    github = build_config(GitHubConfig, "gh", {"type": "github", "owner": "acme", "repo": "pkgs",
                                               "trusted_publishers": [PUBLISHER]}, SOURCE)
    assert github.trusted_publishers == (TrustedPublisher(**PUBLISHER),)


def test_projects_are_normalised_and_deduplicated():
    (publisher,) = build({**PUBLISHER, "projects": ["Foo.Bar", "foo_bar", "baz"]}).trusted_publishers
    assert publisher.projects == ("foo-bar", "baz")


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:9000",
                                    "http://localhost:1234", "https://token.actions.githubusercontent.com",
                                    "https://ghe.example.com/_services/token"])
def test_accepted_issuers(issuer):
    assert build({**PUBLISHER, "issuer": issuer}).trusted_publishers[0].issuer == issuer


@pytest.mark.parametrize(
    ("entry", "key", "fragment"),
    [
        ({"workflow": "release.yml"}, "repository", "missing required key"),
        ({"repository": "acme/widgets"}, "workflow", "missing required key"),
        ({**PUBLISHER, "issuer": "http://token.example.com"}, "issuer", "must be https://"),
        ({**PUBLISHER, "issuer": "http://10.0.0.1"}, "issuer", "loopback"),
        ({**PUBLISHER, "issuer": "ftp://127.0.0.1"}, "issuer", "https://"),
        ({**PUBLISHER, "issuer": "token.actions.githubusercontent.com"}, "issuer", "https://"),
        ({**PUBLISHER, "issuer": "https://u:p@token.example.com"}, "issuer", "no credentials"),
        ({**PUBLISHER, "issuer": "https://token.example.com?x=1"}, "issuer", "query"),
        ({**PUBLISHER, "repository": "widgets"}, "repository", "owner/name"),
        ({**PUBLISHER, "repository": "acme/widgets/extra"}, "repository", "owner/name"),
        ({**PUBLISHER, "repository": "acme/.."}, "repository", "owner/name"),
        ({**PUBLISHER, "repository": "-acme/widgets"}, "repository", "owner/name"),
        ({**PUBLISHER, "workflow": ".github/workflows/release.yml"}, "workflow", "without a folder"),
        ({**PUBLISHER, "workflow": "release.json"}, "workflow", ".yml or .yaml"),
        ({**PUBLISHER, "workflow": "release yml.yml"}, "workflow", ".yml or .yaml"),
        ({**PUBLISHER, "environment": 3}, "environment", "must be a string, got int"),
        ({**PUBLISHER, "environment": "bad\nname"}, "environment", "control characters"),
        ({**PUBLISHER, "repository_owner_id": "acme"}, "repository_owner_id", "numeric"),
        ({**PUBLISHER, "projects": "acme-widgets"}, "projects", "must be an array"),
        ({**PUBLISHER, "projects": [3]}, "projects[0]", "must be a string, got int"),
        ({**PUBLISHER, "projects": ["ok", "../evil"]}, "projects", "Invalid project name '../evil'"),
        ({**PUBLISHER, "owner": "acme"}, "owner", "unknown key (allowed: environment, issuer, projects, "
                                                  "provider, repository, repository_owner_id, workflow)"),
    ],
    ids=["no-repository", "no-workflow", "http-issuer", "http-private-ip", "ftp-issuer", "no-scheme",
         "credentials", "query", "no-owner", "three-parts", "dot-dot", "leading-hyphen", "workflow-path",
         "workflow-suffix", "workflow-space", "environment-int", "environment-control", "owner-id",
         "projects-string", "projects-int", "project-name", "unknown-key"],
)
def test_errors_name_file_table_entry_and_key(entry, key, fragment):
    message = error_of(PUBLISHER, entry)  # the second entry, index 1
    assert message.startswith(f"/etc/pywharf/config.toml: [team] key 'trusted_publishers[1].{key}': "), message
    assert fragment in message


def test_trusted_publishers_must_be_an_array_of_tables():
    with pytest.raises(ConfigError) as info:
        build_config(FileSystemConfig, "team", {**FS_TABLE, "trusted_publishers": PUBLISHER}, SOURCE)
    assert str(info.value) == ("/etc/pywharf/config.toml: [team] key 'trusted_publishers': must be an array of "
                               "tables ([[team.trusted_publishers]]), got dict")
    assert "key 'trusted_publishers[0]': must be a table, got str" in error_of("acme/widgets")


def test_at_most_max_publishers():
    publishers = [{**PUBLISHER, "workflow": f"w{i}.yml"} for i in range(MAX_TRUSTED_PUBLISHERS)]
    assert len(build(*publishers).trusted_publishers) == MAX_TRUSTED_PUBLISHERS
    message = error_of(*publishers, {**PUBLISHER, "workflow": "one-more.yml"})
    assert f"key 'trusted_publishers': at most {MAX_TRUSTED_PUBLISHERS} publishers" in message


def test_duplicate_publishers_are_refused():
    message = error_of(PUBLISHER, {**PUBLISHER, "repository": "ACME/Widgets"})
    assert "key 'trusted_publishers[1]': same issuer, repository, workflow and environment as " \
           "trusted_publishers[0]" in message
    assert len(build(PUBLISHER, {**PUBLISHER, "environment": "pypi"}).trusted_publishers) == 2


def test_config_over_http_may_not_name_other_issuers():
    """An /initialize/ config naming an issuer makes the server fetch from it: an endpoint like any other."""
    limits = ConfigLimits(endpoints=("https://ghe.example.com",))
    assert build(PUBLISHER, limits=limits).trusted_publishers[0].issuer == GITHUB_ACTIONS_ISSUER
    assert build({**PUBLISHER, "issuer": "https://ghe.example.com/_services/token"}, limits=limits)
    message = error_of({**PUBLISHER, "issuer": "https://evil.example.com"}, limits=limits)
    assert "key 'trusted_publishers[0].issuer'" in message and "--allowed_endpoints" in message


@pytest.mark.parametrize(("url", "ok"), [
    ("https://a.example", True), ("http://127.0.0.1", True), ("http://[::1]", True), ("http://LOCALHOST", True),
    ("http://128.0.0.1", False), ("http://[::2]", False), ("http://localhost.example.com", False),
    ("https://a.example#x", False), ("https://a.example:99999", False), ("https:///path", False),
])
def test_issuer_url_rule(url, ok):
    assert (issuer_url_problem(url) is None) == ok
