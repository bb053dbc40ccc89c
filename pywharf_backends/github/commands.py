"""CLI commands of the github backend: ``pywharf github.init_pkg_repo`` and ``github.gen_gh_pages``.

``init_pkg_repo`` follows pywharf 0.2.3's flow: make (or reuse) the repository, commit an
empty index and a workflow that runs ``pywharf update_index`` whenever the package files
change, then print the config to use. ``gen_gh_pages`` renders a static PEP 503 / PEP 691
index of the releases, for public package repositories served from GitHub Pages (a CDN).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from html import escape
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from github import GithubException, UnknownObjectException

from pywharf_backends.github.client import ClientPolicy, GitHubClient, GitHubUnavailable, describe
from pywharf_backends.github.config import DEFAULT_API_BASE_URL, GitHubConfig
from pywharf_backends.github.remote_index import current_sha, put_file
from pywharf_backends.github.storage import GitHubBackend, ReleaseInfo, raw, record_from_release
from pywharf_core.http.pages import API_VERSION, file_json, sorted_versions
from pywharf_core.index.formats import dump_index
from pywharf_core.model.errors import PywharfError
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.backend import BackendContext, LocalFile
from pywharf_core.storage.config import ConfigSource, build_config

WORKFLOW_PATH = ".github/workflows/pywharf-update-index.yml"
TOKEN_ENV = "PYWHARF_GITHUB_TOKEN"  # noqa: S105 - the name of a variable, not a secret


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

    Triggers: ``release`` published / edited / deleted. pywharf creates a release, uploads its
    asset, then edits the release body (recording the asset's name), so the ``edited`` event
    comes after the file exists; yanks edit the body too. A schedule and manual dispatch
    catch anything missed. One run at a time: each rebuilds the whole index from the releases.
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
    """
    secret = _token(token, token_env, required=True)
    table = {"type": "github", "owner": str(owner), "repo": str(repo), "branch": str(branch),
             "index_filename": str(index_filename), "api_base_url": str(api_base_url)}
    config = build_config(GitHubConfig, str(name), table, ConfigSource("<command line>"))
    assert isinstance(config, GitHubConfig)
    client = GitHubClient(secret, ClientPolicy(config.api_base_url, config.timeout, config.max_rate_limit_wait),
                          lazy=False)
    created = _get_or_create_repo(client, config, private=not bool(public))
    gh_repo = client.github().get_repo(config.full_name)
    default_branch = raw(gh_repo).get("default_branch") or "main"
    workflow = render_workflow(config, _str(pywharf_version) or _pywharf_version(), bool(enable_gh_pages))
    wrote_workflow = put_file(client, config, WORKFLOW_PATH, workflow.encode(), default_branch,
                              "pywharf: index update workflow")
    if current_sha(client, config, config.index_filename, config.branch) is None:
        put_file(client, config, config.index_filename, dump_index([]), config.branch, "pywharf: empty index")
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
    print(
        "\n# config.toml (--config)\n"
        f'[{config.name}]\ntype = "github"\nowner = {_toml_str(config.owner)}\nrepo = {_toml_str(config.repo)}\n'
        f"{branch_line}{index_line}{extra}"
        "\n# admin_secret.toml (--admin_secret): a token that can push to the repository,\n"
        f"# read from ${TOKEN_ENV} (or write raw = \"<token>\" instead of env)\n"
        f'[{config.name}]\ntype = "github"\nenv = "{TOKEN_ENV}"\n'
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


def _anchor(record: FileRecord, href: str, with_metadata: bool) -> str:
    attrs = []
    if record.requires_python:
        attrs.append(f' data-requires-python="{escape(record.requires_python, quote=True)}"')
    if with_metadata and record.metadata_sha256:
        digest = f"sha256={record.metadata_sha256}"
        attrs.append(f' data-core-metadata="{digest}" data-dist-info-metadata="{digest}"')
    if record.yanked:
        attrs.append(f' data-yanked="{escape(record.yanked_reason, quote=True)}"')
    return (f'<a href="{escape(href, quote=True)}#sha256={record.sha256}"{"".join(attrs)}>'
            f"{escape(record.filename)}</a><br>\n")


def _page(title: str, lines: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"<title>{escape(title)}</title>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n"
        + "".join(lines)
        + "</body>\n</html>\n"
    )


def gen_gh_pages(
    owner: str,
    repo: str,
    output: str = "gh-pages",
    token: str | None = None,
    token_env: str | None = None,
    api_base_url: str = DEFAULT_API_BASE_URL,
    with_files: bool = False,
    push_branch: str | None = None,
) -> None:
    """Render a static PEP 503 (+ PEP 691 JSON) index of a repository's releases into a folder.

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
    """
    secret = _token(token, token_env, required=False)
    table = {"type": "github", "owner": str(owner), "repo": str(repo), "api_base_url": str(api_base_url)}
    config = build_config(GitHubConfig, "gh-pages", table, ConfigSource("<command line>"))
    assert isinstance(config, GitHubConfig)
    out = Path(str(output)).resolve()
    with tempfile.TemporaryDirectory(prefix="pywharf-gh-pages-") as scratch:
        backend = GitHubBackend(config, BackendContext(root=Path(scratch), admin_secret=secret))
        backend.use_token(secret)  # anonymous access is fine for public repositories
        _render_pages(backend, config, out, bool(with_files), _str(push_branch))


def _render_pages(backend: GitHubBackend, config: GitHubConfig, out: Path, with_files: bool,
                  branch: str | None) -> None:
    releases: dict[str, tuple[FileRecord, ReleaseInfo]] = {}
    for release in backend.iter_releases():
        record = record_from_release(release)
        if record is not None and record.filename not in releases:
            releases[record.filename] = (record, release)
    if out.exists():
        shutil.rmtree(out)
    simple = out / "simple"
    simple.mkdir(parents=True)
    projects: dict[str, list[tuple[FileRecord, ReleaseInfo]]] = {}
    for record, release in releases.values():
        projects.setdefault(record.distrib, []).append((record, release))
    written: list[Path] = []
    for project, entries in sorted(projects.items()):
        folder = simple / project
        folder.mkdir()
        entries.sort(key=lambda e: e[0].filename)
        anchors, files = [], []
        for record, release in entries:
            href, with_metadata = _file_href(backend, folder, record, release, with_files)
            anchors.append(_anchor(record, href, with_metadata))
            entry = file_json(record)
            entry["url"] = href
            if not with_metadata:
                entry["core-metadata"] = entry["dist-info-metadata"] = False
            files.append(entry)
        records = [r for r, _ in entries]
        (folder / "index.html").write_text(_page(f"Links for {project}", anchors), encoding="utf-8")
        (folder / "index.json").write_text(json.dumps(
            {"meta": {"api-version": API_VERSION}, "name": project, "versions": sorted_versions(records),
             "files": files}, separators=(",", ":")), encoding="utf-8")
        written += [folder / "index.html", folder / "index.json"]
    names = sorted(projects)
    (simple / "index.html").write_text(
        _page("Simple index", [f'<a href="{quote(n)}/">{escape(n)}</a><br>\n' for n in names]), encoding="utf-8")
    (simple / "index.json").write_text(json.dumps(
        {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]}), encoding="utf-8")
    (out / "index.html").write_text(_page(f"{config.full_name}: Python packages",
                                          ['<a href="simple/">simple/</a><br>\n']), encoding="utf-8")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve files as they are
    written += [simple / "index.html", simple / "index.json", out / "index.html", out / ".nojekyll"]
    print(f"pywharf github.gen_gh_pages: {len(releases)} files of {len(projects)} projects -> {out}")
    if branch:
        client = backend.admin()
        changed = 0
        for path in written:
            relative = path.relative_to(out).as_posix()
            message = f"pywharf gen_gh_pages: {relative}"
            changed += put_file(client, config, relative, path.read_bytes(), branch, message)
        print(f"pywharf github.gen_gh_pages: {changed} pages committed to {config.full_name}@{branch}")


def _file_href(backend: GitHubBackend, folder: Path, record: FileRecord, release: ReleaseInfo,
               with_files: bool) -> tuple[str, bool]:
    """The link to a file, and whether its PEP 658 metadata is reachable at link + ".metadata"."""
    asset = release.dist_asset()
    metadata = release.metadata_asset()
    assert asset is not None
    if with_files:
        backend.download_to(asset, folder / record.filename, record.sha256)
        has_metadata = False
        if metadata is not None:
            target = backend.cache_dir / "gh-pages-metadata" / f"{record.filename}.metadata"
            copy = backend.download_to(metadata, target, record.metadata_sha256)
            if isinstance(copy, LocalFile):
                shutil.move(str(copy.path), folder / f"{record.filename}.metadata")
                has_metadata = True
        return quote(record.filename), has_metadata
    # Release assets of a public repository download without auth from browser_download_url.
    has_metadata = metadata is not None and metadata.browser_download_url == f"{asset.browser_download_url}.metadata"
    return asset.browser_download_url, has_metadata
