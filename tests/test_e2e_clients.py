"""End-to-end: real clients (twine, uv, pip, poetry) against a real ``pywharf server`` process.

Why: pywharf is only useful if the tools people already use work against it unchanged. These
tests publish with twine / ``uv publish``, install with pip / uv / poetry, and check what
actually lands on disk: installed modules and their versions, the bytes in storage, HTTP
statuses. No test talks to the internet: the public index is replaced by a static PEP 503 tree
served by ``python -m http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import Server, free_port, fs_config, run, tool, wait_for
from distbuilder import DistSpec, build_sdist, build_wheel

READ, WRITE = "read-secret-00", "write-secret"
REPO = "local"


# -- helpers -------------------------------------------------------------------------------------


def pip() -> list[str]:
    """pip of the test interpreter (the venv's pip, whatever PATH says)."""
    return [sys.executable, "-m", "pip"]


def twine_upload(server: Server, files: list[Path], env: dict[str, str],
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    """``twine upload`` to the legacy API, credentials from the environment as CI would pass them."""
    upload_env = {**env, "TWINE_USERNAME": REPO, "TWINE_PASSWORD": WRITE}
    cmd = [tool("twine"), "upload", "--repository-url", f"{server.base}/simple/",
           "--disable-progress-bar", "--non-interactive", *map(str, files)]
    return run(cmd, upload_env, timeout=120, check=check)


def uv_publish(server: Server, files: list[Path], env: dict[str, str],
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """``uv publish`` with explicit credentials (never trusted publishing / keyring)."""
    cmd = [tool("uv"), "publish", "--publish-url", f"{server.base}/simple/", "-u", REPO, "-p", WRITE,
           "--trusted-publishing", "never", *map(str, files)]
    return run(cmd, env, timeout=120, check=check)


def pip_install(index_url: str, target: Path, requirement: str, env: dict[str, str],
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """``pip install --target`` from exactly one index (no deps, nothing else consulted)."""
    cmd = [*pip(), "install", "--no-deps", "--no-cache-dir", "--target", str(target),
           "--index-url", index_url, requirement]
    return run(cmd, env, timeout=120, check=check)


def uv_install(index_url: str, target: Path, requirement: str, env: dict[str, str],
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """``uv pip install --target`` from exactly one index, for the test interpreter."""
    cmd = [tool("uv"), "pip", "install", "--no-deps", "--python", sys.executable, "--target", str(target),
           "--index-url", index_url, requirement]
    return run(cmd, env, timeout=120, check=check)


def installed_version(target: Path, project: str) -> str:
    """The version of ``project`` whose dist-info a client installed into ``target``."""
    found = [d for d in importlib.metadata.distributions(path=[str(target)])
             if d.metadata["Name"].lower().replace("_", "-") == project]
    listing = sorted(p.name for p in target.iterdir())
    assert len(found) == 1, f"expected one {project} dist-info in {target}: {listing}"
    return found[0].version


def assert_installed(target: Path, spec: DistSpec) -> None:
    """The module file is there with the body we built, and the dist-info says our version."""
    init = target / spec.module / "__init__.py"
    assert init.is_file(), f"{init} missing; target holds {sorted(p.name for p in target.iterdir())}"
    assert init.read_text() == spec.module_body
    assert installed_version(target, spec.name) == spec.version


def storage(server: Server) -> Path:
    """Where the file_system backend of repo ``local`` keeps package files (its default)."""
    return server.root / "cache" / REPO / "storage"


def get(server: Server, path: str, secret: str = READ, **kwargs: object) -> requests.Response:
    return requests.get(f"{server.base}{path}", auth=(REPO, secret), timeout=10, **kwargs)  # type: ignore[arg-type]


def legacy_upload(server: Server, path: Path, name: str, version: str) -> requests.Response:
    """A bare legacy-API upload (what twine sends, minus the extras), to read the raw answer."""
    data = path.read_bytes()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if path.name.endswith(".whl") else "sdist",
        "pyversion": "py3" if path.name.endswith(".whl") else "source",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    return requests.post(f"{server.base}/simple/", auth=(REPO, WRITE), data=fields,
                         files={"content": (path.name, data, "application/octet-stream")}, timeout=30)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# An in-tree PEP 517 backend with no requirements: enough for pip to prepare the metadata of an
# sdist (which ``pip download`` always does) in an isolated build env, with nothing to install.
# -- a stand-in for pypi.org ---------------------------------------------------------------------


@dataclass
class Upstream:
    """A static PEP 503 index served by ``python -m http.server`` (the "public index")."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def simple_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def add(self, spec: DistSpec, relative_links: bool = False) -> Path:
        """Publish a wheel of ``spec``. Like PyPI, pages link to a separate files area by
        absolute URL with ``#sha256=``; ``relative_links`` links beside the page instead, as
        other PEP 503 servers do (then the client must resolve it against the redirected URL)."""
        project = spec.name.lower().replace("_", "-")
        page_dir = self.root / "simple" / project
        page_dir.mkdir(parents=True, exist_ok=True)
        if relative_links:
            wheel = build_wheel(spec, page_dir)
            href = wheel.name
        else:
            wheel = build_wheel(spec, self.root / "files")
            href = f"http://127.0.0.1:{self.port}/files/{wheel.name}"
        attrs = f'href="{href}#sha256={sha256_of(wheel)}" data-requires-python="&gt;=3.8"'
        links = f"<a {attrs}>{wheel.name}</a>\n"
        (page_dir / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><head><title>Links for {project}</title></head>\n"
            f"<body><h1>Links for {project}</h1>\n{links}</body></html>\n"
        )
        return wheel

    def requested_paths(self) -> list[str]:
        """Paths http.server logged a GET for (its access log goes to stderr)."""
        return re.findall(r'"GET (\S+) HTTP', self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    """The public-index stand-in, started empty; tests ``add`` projects (files are served live)."""
    root = tmp_path / "upstream"
    (root / "simple").mkdir(parents=True)
    (root / "files").mkdir()
    port = free_port()
    log_path = tmp_path / "upstream.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(root)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    up = Upstream(root, port, proc, log_path)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"http.server exited early:\n{log_path.read_text()}")
        try:
            if requests.get(up.simple_url, timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            up.stop()
            raise AssertionError("http.server did not start")
        time.sleep(0.05)
    yield up
    up.stop()


# -- 1. publish with twine, install with pip / uv, download the sdist ------------------------------


def test_twine_upload_then_pip_uv_install_and_sdist_download(fs_server: Server, env: dict[str, str],
                                                              tmp_path: Path) -> None:
    """The basic promise: what twine publishes, pip and uv install, byte for byte."""
    spec = DistSpec("demo-pkg", "1.0", module_body="VALUE = 'demo 1.0'\n")
    wheel = build_wheel(spec, tmp_path / "dist")
    sdist = build_sdist(spec, tmp_path / "dist")

    twine_upload(fs_server, [wheel, sdist], env)
    assert (storage(fs_server) / wheel.name).read_bytes() == wheel.read_bytes()
    assert (storage(fs_server) / sdist.name).read_bytes() == sdist.read_bytes()
    page = get(fs_server, "/simple/demo-pkg/")
    assert page.status_code == 200
    assert f'href="{wheel.name}#sha256={sha256_of(wheel)}"' in page.text
    assert f'href="{sdist.name}#sha256={sha256_of(sdist)}"' in page.text

    index_url = fs_server.index_url(REPO, READ)
    pip_install(index_url, tmp_path / "pip-target", "demo-pkg", env)
    assert_installed(tmp_path / "pip-target", spec)

    uv_install(index_url, tmp_path / "uv-target", "demo-pkg", env)
    assert_installed(tmp_path / "uv-target", spec)

    downloads = tmp_path / "downloads"
    run([*pip(), "download", "--no-deps", "--no-binary", ":all:",
         "--index-url", index_url, "-d", str(downloads), "demo-pkg"], env, timeout=120)
    assert sorted(p.name for p in downloads.iterdir()) == [sdist.name]
    assert (downloads / sdist.name).read_bytes() == sdist.read_bytes()


# -- 2. idempotent re-upload -------------------------------------------------------------------------


def test_identical_reupload_with_twine_and_uv_publish_changes_nothing(
        fs_server: Server, env: dict[str, str], tmp_path: Path) -> None:
    """CI retries re-send the same file: both publishers must succeed and storage stay as is."""
    spec = DistSpec("idem-pkg", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    twine_upload(fs_server, [wheel], env)
    stored = storage(fs_server) / wheel.name
    before = stored.stat()
    time.sleep(0.05)  # a rewrite would show as a new mtime_ns

    twine_upload(fs_server, [wheel], env)
    uv_publish(fs_server, [wheel], env)

    after = stored.stat()
    assert stored.read_bytes() == wheel.read_bytes()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in storage(fs_server).iterdir() if not p.name.startswith(".")) == [wheel.name]
    assert not list(storage(fs_server).glob(".upload-*.part")), "staged upload left behind"
    page = get(fs_server, "/simple/idem-pkg/")
    assert page.status_code == 200
    assert page.text.count(f'href="{wheel.name}#') == 1, page.text


def test_uv_publish_first_upload_installs(fs_server: Server, env: dict[str, str], tmp_path: Path) -> None:
    """uv publish is a first-class publisher, not just a re-uploader: its upload installs."""
    spec = DistSpec("uvpub-pkg", "0.3", module_body="VALUE = 'uv'\n")
    wheel = build_wheel(spec, tmp_path / "dist")
    sdist = build_sdist(spec, tmp_path / "dist")
    uv_publish(fs_server, [wheel, sdist], env)
    assert (storage(fs_server) / wheel.name).read_bytes() == wheel.read_bytes()
    assert (storage(fs_server) / sdist.name).read_bytes() == sdist.read_bytes()
    pip_install(fs_server.index_url(REPO, READ), tmp_path / "target", "uvpub-pkg==0.3", env)
    assert_installed(tmp_path / "target", spec)


# -- 3. same filename, different bytes ----------------------------------------------------------------


def test_different_bytes_under_same_filename_is_rejected(fs_server: Server, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """A filename names one content forever (pip caches by it): a different file is a 409."""
    spec = DistSpec("clash-pkg", "1.0")
    original = build_wheel(spec, tmp_path / "first")
    other = build_wheel(spec, tmp_path / "second", extra_bytes=b"not the same file\n")
    assert original.name == other.name and original.read_bytes() != other.read_bytes()
    twine_upload(fs_server, [original], env)

    result = twine_upload(fs_server, [other], env, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "409" in result.stdout + result.stderr, result.stdout + result.stderr

    result = uv_publish(fs_server, [other], env, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "409" in result.stdout + result.stderr, result.stdout + result.stderr

    response = legacy_upload(fs_server, other, "clash-pkg", "1.0")
    assert response.status_code == 409, response.text
    assert response.text.startswith("File already exists"), response.text

    stored = storage(fs_server) / original.name
    assert stored.read_bytes() == original.read_bytes()
    assert not list(storage(fs_server).glob(".upload-*.part")), "rejected upload left behind"
    download = get(fs_server, f"/simple/clash-pkg/{original.name}")
    assert download.status_code == 200
    assert download.content == original.read_bytes()
    page = get(fs_server, "/simple/clash-pkg/")
    assert page.text.count(f'href="{original.name}#sha256={sha256_of(original)}"') == 1, page.text


# -- 4. fallback to the extra index (the public index stand-in) -----------------------------------


def assert_served_by_upstream(upstream: Upstream, wheel: Path) -> None:
    """The install really went through the public index: it served the page and the file."""
    paths = upstream.requested_paths()
    assert "/simple/upstream-only/" in paths, paths
    assert any(p.endswith(f"/{wheel.name}") for p in paths), paths


@pytest.fixture
def fallback_server(server_factory, upstream: Upstream) -> Server:
    """pywharf whose unknown projects are redirected to the stand-in public index."""
    server = server_factory(fs_config(), f"--extra_index_url={upstream.simple_url}")
    server.repos[REPO] = (READ, WRITE)
    # Until its index is loaded a repo redirects no name (503): wait for readiness, not liveness.
    wait_for(lambda: requests.get(f"{server.base}/readyz", timeout=2).status_code == 200, 20,
             lambda: f"/readyz never answered 200:\n{server.log()}")
    return server


def test_fallback_redirects_unknown_project(fallback_server: Server, upstream: Upstream) -> None:
    """The contract every client relies on: a 302 to <extra>/<normalised project>/."""
    upstream.add(DistSpec("upstream-only", "2.0"))
    response = get(fallback_server, "/simple/upstream-only/", allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"{upstream.simple_url}upstream-only/"


@pytest.mark.parametrize("relative_links", [False, True], ids=["pypi-style-links", "relative-links"])
def test_fallback_pip_install(fallback_server: Server, upstream: Upstream, env: dict[str, str],
                              tmp_path: Path, relative_links: bool) -> None:
    """pip follows the redirect to the public index and installs from there."""
    spec = DistSpec("upstream-only", "2.0", module_body="VALUE = 'upstream'\n")
    wheel = upstream.add(spec, relative_links=relative_links)
    pip_install(fallback_server.index_url(REPO, READ), tmp_path / "target", "upstream-only", env)
    assert_installed(tmp_path / "target", spec)
    assert_served_by_upstream(upstream, wheel)


@pytest.mark.parametrize("relative_links", [False, True], ids=["pypi-style-links", "relative-links"])
def test_fallback_uv_install(fallback_server: Server, upstream: Upstream, env: dict[str, str],
                             tmp_path: Path, relative_links: bool) -> None:
    """uv follows the cross-origin redirect to the public index and installs from there."""
    spec = DistSpec("upstream-only", "2.0", module_body="VALUE = 'upstream'\n")
    wheel = upstream.add(spec, relative_links=relative_links)
    uv_install(fallback_server.index_url(REPO, READ), tmp_path / "target", "upstream-only", env)
    assert_installed(tmp_path / "target", spec)
    assert_served_by_upstream(upstream, wheel)


def poetry_project(path: Path, server: Server, dependency: str, version: str) -> Path:
    """A package-mode=false poetry project whose only source is pywharf (so PyPI is off)."""
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        "[tool.poetry]\n"
        "package-mode = false\n\n"
        "[tool.poetry.dependencies]\n"
        'python = ">=3.10"\n'
        f'{dependency} = "{version}"\n\n'
        "[[tool.poetry.source]]\n"
        'name = "pywharf"\n'
        f'url = "{server.base}/simple/"\n'
        'priority = "primary"\n'
    )
    return path


def poetry_env(env: dict[str, str]) -> dict[str, str]:
    """Credentials for the 'pywharf' source through poetry's documented env variables; no
    keyring (there is no desktop session here, and a backend probe only costs time)."""
    return {
        **env,
        "POETRY_HTTP_BASIC_PYWHARF_USERNAME": REPO,
        "POETRY_HTTP_BASIC_PYWHARF_PASSWORD": READ,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "POETRY_REQUESTS_TIMEOUT": "60",
        # poetry picks the interpreter for the project's venv from PATH
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    }


def test_fallback_poetry_lock_and_install(fallback_server: Server, upstream: Upstream, env: dict[str, str],
                                          tmp_path: Path) -> None:
    """poetry (its own HTTP stack and resolver) follows the redirect, locks the upstream file
    with its hash, and installs it."""
    spec = DistSpec("upstream-only", "2.0", module_body="VALUE = 'upstream'\n")
    wheel = upstream.add(spec)
    project = poetry_project(tmp_path / "consumer", fallback_server, "upstream-only", "2.0")
    penv = poetry_env(env)

    run([tool("poetry"), "lock", "-vv"], penv, cwd=project, timeout=240)
    lock = (project / "poetry.lock").read_text()
    assert re.search(r'name = "upstream-only"\nversion = "2\.0"', lock), lock
    assert f'{{file = "{wheel.name}", hash = "sha256:{sha256_of(wheel)}"}}' in lock, lock
    assert_served_by_upstream(upstream, wheel)

    run([tool("poetry"), "install", "--no-root", "-vv"], penv, cwd=project, timeout=240)
    site_packages = list((project / ".venv").glob("lib/python*/site-packages"))
    assert len(site_packages) == 1, list((project / ".venv").rglob("site-packages"))
    assert_installed(site_packages[0], spec)


def test_owned_project_never_falls_through(fallback_server: Server, upstream: Upstream,
                                           env: dict[str, str], tmp_path: Path) -> None:
    """Dependency-confusion defence: a name pywharf holds is served from pywharf only, even if
    the public index has a higher version; the public index is not even asked."""
    ours = DistSpec("shared-name", "1.0", module_body="VALUE = 'private'\n")
    theirs = DistSpec("shared-name", "9.0", module_body="VALUE = 'public attacker'\n")
    upstream.add(theirs)
    twine_upload(fallback_server, [build_wheel(ours, tmp_path / "dist")], env)

    response = get(fallback_server, "/simple/shared-name/", allow_redirects=False)
    assert response.status_code == 200
    # A non-normalised spelling is only renamed (same server), never sent to the public index.
    response = get(fallback_server, "/simple/Shared_Name/", allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"].endswith("/simple/shared-name/")

    index_url = fallback_server.index_url(REPO, READ)
    pip_install(index_url, tmp_path / "pip-target", "shared-name", env)
    assert_installed(tmp_path / "pip-target", ours)
    uv_install(index_url, tmp_path / "uv-target", "Shared_Name", env)
    assert_installed(tmp_path / "uv-target", ours)
    # Asking for the public version explicitly must fail, not fetch it from the public index.
    result = pip_install(index_url, tmp_path / "pip-9", "shared-name==9.0", env, check=False)
    assert result.returncode != 0
    assert not (tmp_path / "pip-9" / "shared_name").exists()

    assert not [p for p in upstream.requested_paths() if "shared" in p.lower()], upstream.requested_paths()


def test_owned_project_never_falls_through_poetry(fallback_server: Server, upstream: Upstream,
                                                  env: dict[str, str], tmp_path: Path) -> None:
    """The same defence seen through poetry's resolver: it locks pywharf's 1.0."""
    ours = DistSpec("shared-name", "1.0", module_body="VALUE = 'private'\n")
    upstream.add(DistSpec("shared-name", "9.0"))
    wheel = build_wheel(ours, tmp_path / "dist")
    twine_upload(fallback_server, [wheel], env)
    project = poetry_project(tmp_path / "consumer", fallback_server, "shared-name", "*")
    run([tool("poetry"), "lock"], poetry_env(env), cwd=project, timeout=240)
    lock = (project / "poetry.lock").read_text()
    assert re.search(r'name = "shared-name"\nversion = "1\.0"', lock), lock
    assert f'hash = "sha256:{sha256_of(wheel)}"' in lock, lock
    assert not [p for p in upstream.requested_paths() if "shared" in p.lower()], upstream.requested_paths()


def test_fallback_disabled_answers_404(fs_server: Server, upstream: Upstream, env: dict[str, str],
                                       tmp_path: Path) -> None:
    """``--extra_index_url=`` turns fallback off: unknown projects are 404 and installs fail,
    even though the project exists on the (unused) public index."""
    upstream.add(DistSpec("upstream-only", "2.0"))
    response = get(fs_server, "/simple/upstream-only/", allow_redirects=False)
    assert response.status_code == 404, (response.status_code, response.headers)
    assert "upstream-only" in response.text

    result = pip_install(fs_server.index_url(REPO, READ), tmp_path / "target", "upstream-only", env,
                         check=False)
    assert result.returncode != 0
    assert not (tmp_path / "target" / "upstream_only").exists()
    assert upstream.requested_paths() == ["/simple/"]  # only the fixture's readiness probe
