"""CLI commands of the github backend: ``pywharf github.init_pkg_repo`` and ``github.gen_gh_pages``.

``init_pkg_repo`` follows pywharf 0.2.3's flow: make (or reuse) the repository, commit an
empty index and a workflow that runs ``pywharf update_index`` whenever the package files
change, then print the config to use. ``gen_gh_pages`` renders a static PEP 503 / PEP 691
index of the releases, for public package repositories served from GitHub Pages (a CDN).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from github import GithubException, UnknownObjectException

from pywharf_backends.github.client import ClientPolicy, GitHubClient, GitHubUnavailable, describe
from pywharf_backends.github.config import DEFAULT_API_BASE_URL, GitHubConfig
from pywharf_backends.github.contents import get_file, put_file
from pywharf_backends.github.storage import COMPANIONS, METADATA_SUFFIX, GitHubBackend
from pywharf_core.model.errors import PywharfError
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config
from pywharf_core.storage.services import core_services

WORKFLOW_PATH = ".github/workflows/pywharf-update-index.yml"
TOKEN_ENV = "PYWHARF_GITHUB_TOKEN"  # noqa: S105 - the name of a variable, not a secret
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
_GITHUB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_WORKFLOW_FILE = re.compile(r"[^/@]+\.ya?ml")  # the file name Warehouse takes from job_workflow_ref


def _str(value: Any) -> str | None:
    """fire turns ``--flag=`` into True and numbers into ints: normalise to str / None."""
    if value is None or value is True or value == "":
        return None
    return str(value)


def _token(token: Any, token_env: Any, *, required: bool) -> str | None:
    env_name = _str(token_env)
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise PywharfError(f"environment variable {env_name!r} is not set")
        return value
    value = _str(token)
    if value is None and required:
        raise PywharfError("a GitHub token is required: --token TOKEN or --token_env VARIABLE")
    return value


def _pywharf_version() -> str:
    try:
        return version("pywharf")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.3.0"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_workflow(config: GitHubConfig, pywharf_version: str, enable_gh_pages: bool) -> str:
    """The GitHub Actions workflow that keeps the remote index (and optionally Pages) current.

    Servers add each upload to the index log themselves; a run compacts the log into the index
    (servers starting later read fewer entries) and picks up releases made by hand. Triggers:
    ``release`` published / edited / deleted. pywharf creates a release, uploads its asset, then
    edits the release body (its metadata), so the ``edited`` event comes after the file exists;
    yanks edit the body too. A schedule and manual dispatch catch anything missed. One run at a
    time: each rebuilds the whole index from the releases.
    """
    args = (
        f'pywharf update_index github {_shell(config.name)}'
        f' --owner {_shell(config.owner)} --repo {_shell(config.repo)}'
        f' --branch {_shell(config.branch)} --index_filename {_shell(config.index_filename)}'
        ' --api_base_url "${{ github.api_url }}"'
        f' --secret_env {TOKEN_ENV}'
    )
    install = f'python -m pip install "pywharf=={pywharf_version}"'
    text = f"""\
# Written by `pywharf github.init_pkg_repo`. Rebuilds the package index ({config.index_filename} on
# branch {config.branch}) from this repository's releases: one release per package file.
name: pywharf update_index

on:
  release:
    types: [published, edited, deleted]
  schedule:
    - cron: "23 */6 * * *"
  workflow_dispatch:

permissions:
  contents: write

concurrency:
  group: pywharf-update-index
  cancel-in-progress: false

jobs:
  update-index:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      - name: Install pywharf
        run: {install}
      - name: Rebuild the remote index
        env:
          {TOKEN_ENV}: ${{{{ secrets.GITHUB_TOKEN }}}}
        run: {args}
"""
    if enable_gh_pages:
        pages = (
            f"pywharf github.gen_gh_pages --owner {_shell(config.owner)} --repo {_shell(config.repo)}"
            f" --branch {_shell(config.branch)} --index_filename {_shell(config.index_filename)}"
            f' --output _site --api_base_url "${{{{ github.api_url }}}}" --token_env {TOKEN_ENV}'
        )
        text += f"""
  pages:
    needs: update-index
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pages: write
      id-token: write
    environment:
      name: github-pages
      url: ${{{{ steps.deployment.outputs.page_url }}}}
    steps:
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      - name: Install pywharf
        run: {install}
      - name: Render the static index
        env:
          {TOKEN_ENV}: ${{{{ secrets.GITHUB_TOKEN }}}}
        run: {pages}
      - uses: actions/upload-pages-artifact@v4
        with:
          path: _site
      - id: deployment
        uses: actions/deploy-pages@v5
"""
    return text


def publisher_repository(value: str | None, owner: str, repo: str) -> str:
    """``owner/name`` of the repository whose workflow publishes: ``name`` alone is OWNER's, none is OWNER/REPO."""
    full = value if value and "/" in value else f"{owner}/{value or repo}"
    parts = full.split("/")
    if len(parts) != 2 or not all(_GITHUB_NAME.fullmatch(part) for part in parts):
        raise PywharfError(f"--trusted_publisher_repository must be OWNER/NAME or NAME, not {value!r}")
    return full


def render_trusted_publisher(name: str, repository: str, workflow: str, environment: str | None,
                             api_base_url: str = DEFAULT_API_BASE_URL) -> str:
    """The ``[[NAME.trusted_publishers]]`` entry (TOML) that lets ``repository``'s ``workflow`` publish.

    The entry goes in the server's config.toml after the ``[NAME]`` table; matching follows
    PyPI's GitHub publishers: the OIDC token's ``repository`` claim, the workflow file named in
    ``job_workflow_ref`` and, when given, the ``environment`` claim.
    """
    if not _WORKFLOW_FILE.fullmatch(workflow):
        raise PywharfError(f"--trusted_publisher_workflow must be a workflow file name such as release.yml "
                           f"(the file in .github/workflows/), not {workflow!r}")
    enterprise = ("# GitHub Enterprise Server: set issuer to its own, https://HOST/_services/token\n"
                  if api_base_url != DEFAULT_API_BASE_URL else "")
    environment_line = (f"environment = {_toml_str(environment)}\n" if environment
                        else "# environment = \"pypi\"  # none given: a token from any environment (or none) matches\n")
    return (
        f"[[{_toml_key(name)}.trusted_publishers]]\n"
        f"{enterprise}issuer = {_toml_str(GITHUB_ACTIONS_ISSUER)}\n"
        f"repository = {_toml_str(repository)}\n"
        f"workflow = {_toml_str(workflow)}\n"
        f"{environment_line}"
        "# projects = [\"my-package\"]  # optional: the minted token may upload only these projects\n"
    )


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_str(name)


def _shell(value: str) -> str:
    """Quote for the workflow's bash: config values are validated names, quoting is belt and braces."""
    return "'" + value.replace("'", "'\\''") + "'"


def init_pkg_repo(
    name: str,
    owner: str,
    repo: str,
    token: str | None = None,
    token_env: str | None = None,
    branch: str = "master",
    index_filename: str = "index.toml",
    pywharf_version: str | None = None,
    enable_gh_pages: bool = False,
    api_base_url: str = DEFAULT_API_BASE_URL,
    public: bool = False,
    trusted_publisher_workflow: str | None = None,
    trusted_publisher_environment: str | None = None,
    trusted_publisher_repository: str | None = None,
) -> None:
    """Create (or reuse) a GitHub repository as a package repository: index, workflow, config.

    Args:
        name: Package repository name (the [name] of the server config).
        owner: GitHub user or organisation that owns the repository.
        repo: Repository name; created (private unless --public) if it does not exist.
        token: A personal access token that may create the repository and push to it.
        token_env: Name of an environment variable holding the token, instead of --token.
        branch: Branch of the remote index (created from the default branch if missing).
        index_filename: Path of the remote index in the repository.
        pywharf_version: pywharf version the workflow installs (default: this one).
        enable_gh_pages: Also publish a static index with GitHub Pages (see gen_gh_pages).
        api_base_url: GitHub API root, e.g. https://HOST/api/v3 for GitHub Enterprise.
        public: Create a public repository (default private).
        trusted_publisher_workflow: Also print a [[NAME.trusted_publishers]] entry (trusted
            publishing, no stored secret) for this workflow file name, e.g. release.yml.
        trusted_publisher_environment: The GitHub environment the publishing job runs in (e.g.
            pypi); default: any.
        trusted_publisher_repository: OWNER/NAME (or NAME, under OWNER) of the repository whose
            workflow publishes: the package's source repository; default: OWNER/REPO.
    """
    secret = _token(token, token_env, required=True)
    table = {"type": "github", "owner": str(owner), "repo": str(repo), "branch": str(branch),
             "index_filename": str(index_filename), "api_base_url": str(api_base_url)}
    config = build_config(GitHubConfig, str(name), table, ConfigSource("<command line>"))
    assert isinstance(config, GitHubConfig)
    publisher_workflow = _str(trusted_publisher_workflow)
    publisher = None
    if publisher_workflow is not None:
        repository = publisher_repository(_str(trusted_publisher_repository), config.owner, config.repo)
        publisher = render_trusted_publisher(config.name, repository, publisher_workflow,
                                             _str(trusted_publisher_environment), config.api_base_url)
    elif _str(trusted_publisher_environment) or _str(trusted_publisher_repository):
        raise PywharfError("--trusted_publisher_environment / --trusted_publisher_repository need "
                           "--trusted_publisher_workflow")
    client = GitHubClient(secret, ClientPolicy(config.api_base_url, config.timeout, config.max_rate_limit_wait),
                          lazy=False)
    created = _get_or_create_repo(client, config, private=not bool(public))
    default_branch = client.github().get_repo(config.full_name).default_branch or "main"
    workflow = render_workflow(config, _str(pywharf_version) or _pywharf_version(), bool(enable_gh_pages))
    wrote_workflow = put_file(client, config, WORKFLOW_PATH, workflow.encode(), default_branch,
                              "pywharf: index update workflow")
    if get_file(client, config, config.index_filename, config.branch) is None:
        put_file(client, config, config.index_filename, core_services().empty_index(), config.branch,
                 "pywharf: empty index")
        index_state = "created"
    else:
        index_state = "kept (already there)"
    print(f"pywharf github.init_pkg_repo: {config.full_name}: repository {'created' if created else 'reused'}, "
          f"workflow {'written' if wrote_workflow else 'unchanged'} ({WORKFLOW_PATH} on {default_branch}), "
          f"index {config.index_filename} on {config.branch} {index_state}.")
    extra = f"api_base_url = {_toml_str(config.api_base_url)}\n" if config.api_base_url != DEFAULT_API_BASE_URL else ""
    branch_line = f"branch = {_toml_str(config.branch)}\n" if config.branch != "master" else ""
    index_line = (f"index_filename = {_toml_str(config.index_filename)}\n"
                  if config.index_filename != "index.toml" else "")
    trusted = (f"\n# Trusted publishing: {GITHUB_ACTIONS_ISSUER} tokens of this workflow may upload with no\n"
               "# stored secret (the job needs `permissions: id-token: write` and pypa/gh-action-pypi-publish\n"
               "# with repository-url: https://<this server>/simple/; see examples/github-actions/).\n"
               f"{publisher}") if publisher else ""
    table_name = _toml_key(config.name)
    print(
        "\n# config.toml (--config)\n"
        f'[{table_name}]\ntype = "github"\nowner = {_toml_str(config.owner)}\nrepo = {_toml_str(config.repo)}\n'
        f"{branch_line}{index_line}{extra}{trusted}"
        "\n# admin_secret.toml (--admin_secret): a token that can push to the repository,\n"
        f"# read from ${TOKEN_ENV} (or write raw = \"<token>\" instead of env)\n"
        f'[{table_name}]\ntype = "github"\nenv = "{TOKEN_ENV}"\n'
        "\n# Clients use a GitHub token as their secret: pull access reads, push access uploads.\n"
    )
    if enable_gh_pages:
        print("# GitHub Pages: in the repository settings choose Pages -> Source: GitHub Actions.")


def _get_or_create_repo(client: GitHubClient, config: GitHubConfig, *, private: bool) -> bool:
    gh = client.github()
    what = f"creating {config.full_name}"
    try:
        gh.get_repo(config.full_name)
        return False
    except UnknownObjectException:
        pass
    except GithubException as exc:
        raise GitHubUnavailable(describe(exc, f"reading {config.full_name}", client.policy), exc.status) from None
    try:
        user = gh.get_user()
        description = "Python packages served by pywharf (one release per package file)"
        if user.login.lower() == config.owner.lower():
            user.create_repo(config.repo, private=private, auto_init=True, description=description)
        else:
            gh.get_organization(config.owner).create_repo(
                config.repo, private=private, auto_init=True, description=description
            )
    except GithubException as exc:
        raise GitHubUnavailable(describe(exc, what, client.policy), exc.status) from None
    except requests.RequestException as exc:
        raise GitHubUnavailable(describe(exc, what, client.policy)) from None
    return True


# -- gen_gh_pages ------------------------------------------------------------------------------


def gen_gh_pages(
    owner: str,
    repo: str,
    output: str = "gh-pages",
    token: str | None = None,
    token_env: str | None = None,
    api_base_url: str = DEFAULT_API_BASE_URL,
    with_files: bool = False,
    push_branch: str | None = None,
    branch: str = "master",
    index_filename: str = "index.toml",
) -> None:
    """Render a static PEP 503 (+ PEP 691 JSON) index of a package repository into a folder.

    Args:
        owner: GitHub user or organisation.
        repo: Repository whose releases hold the package files.
        output: Folder to write (replaced): OUTPUT/simple/<project>/index.html and index.json.
        token: A token that can read the repository (optional for public repositories).
        token_env: Name of an environment variable holding the token, instead of --token.
        api_base_url: GitHub API root, e.g. https://HOST/api/v3 for GitHub Enterprise.
        with_files: Copy the package files into the tree and link them relatively (a
            self-contained tree, e.g. for file:// or an internal web server). Default: link to
            the release assets' public download URLs.
        push_branch: Also commit the rendered pages to this branch (e.g. gh-pages), one commit
            per changed page. The workflow of init_pkg_repo --enable_gh_pages deploys with
            GitHub Actions instead, which needs no branch.
        branch: Branch of the remote index (the files listed are the index's, as servers serve them).
        index_filename: Path of the remote index in the repository.
    """
    secret = _token(token, token_env, required=False)
    table = {"type": "github", "owner": str(owner), "repo": str(repo), "api_base_url": str(api_base_url),
             "branch": str(branch), "index_filename": str(index_filename)}
    config = build_config(GitHubConfig, "gh-pages", table, ConfigSource("<command line>"))
    assert isinstance(config, GitHubConfig)
    out = Path(str(output)).resolve()
    with tempfile.TemporaryDirectory(prefix="pywharf-gh-pages-") as scratch:
        backend = GitHubBackend(config, BackendContext(root=Path(scratch), admin_secret=secret))
        backend.use_token(secret)  # anonymous access is fine for public repositories
        _render_pages(backend, config, out, bool(with_files), _str(push_branch))


def _render_pages(backend: GitHubBackend, config: GitHubConfig, out: Path, with_files: bool,
                  branch: str | None) -> None:
    services = core_services()
    records = services.read_index(backend)
    # Without the files, links go to the assets' public download URLs: one listing, not a call per file.
    releases = {} if with_files else {r.tag: r for r in backend.iter_releases() if not r.draft}

    def link(record: FileRecord, folder: Path) -> tuple[str, bool] | None:
        if with_files:
            if not _copy(backend, record.filename, folder / record.filename, record.sha256):
                return None
            metadata = f"{record.filename}{METADATA_SUFFIX}"
            return quote(record.filename), bool(record.metadata_sha256) and _copy(
                backend, f"{COMPANIONS}{metadata}", folder / metadata, record.metadata_sha256)
        release = releases.get(record.filename)
        asset = release.dist_asset() if release is not None else None
        if release is None or asset is None:
            return None
        # PEP 658 wants the metadata at the file's URL + ".metadata": true unless GitHub renamed one of them.
        metadata = release.metadata_asset()
        url = asset.browser_download_url
        return url, metadata is not None and metadata.browser_download_url == f"{url}.metadata"

    written = services.write_static_index(records, out, link, f"{config.full_name}: Python packages")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve files as they are
    written.append(out / ".nojekyll")
    projects = len({r.distrib for r in records})
    print(f"pywharf github.gen_gh_pages: {len(records)} files of {projects} projects -> {out}")
    if branch:
        client = backend.admin()
        changed = 0
        for path in written:
            relative = path.relative_to(out).as_posix()
            message = f"pywharf gen_gh_pages: {relative}"
            changed += put_file(client, config, relative, path.read_bytes(), branch, message)
        print(f"pywharf github.gen_gh_pages: {changed} pages committed to {config.full_name}@{branch}")


def _copy(backend: GitHubBackend, key: str, target: Path, sha256: str) -> bool:
    """Download a blob to ``target``, checked against ``sha256``; False when storage does not hold it."""
    source = backend.open_blob(key)
    if source is None:
        return False
    digest = hashlib.sha256()
    with contextlib.closing(source), open(target, "wb") as handle:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
            handle.write(chunk)
    if digest.hexdigest() != sha256:
        target.unlink()
        raise GitHubUnavailable(f"{key!r} does not match the sha256 the index gives (download corrupted?)")
    return True
