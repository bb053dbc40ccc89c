"""End-to-end: the other publishers the README promises (pdm, hatch, flit) against a real
``pywharf server`` process.

Why: twine and ``uv publish`` are covered by tests/test_e2e_clients.py, but pdm, hatch and flit
each have their own upload code (own HTTP stack, own form fields, own credential lookup). The
cross-site write guard, the request-head limits and the 12-character secrets all sit in front
of the upload endpoint, so any of them could refuse one of these tools without the twine tests
noticing. Each test builds a small real project with the tool (``pdm build --no-isolation``,
hatch's ``hatchling build``, flit's own build inside ``flit publish``), publishes it, and checks
the files are listed in ``/simple/<project>/`` with their sha256 and that pip installs them from
pywharf. Before that, the same upload with a wrong secret (and with the read secret) must fail
with 401 (403) and leave the project unlisted.

Offline and isolated: HOME and every config / cache / data dir live in ``tmp_path``, keyring is
the null backend, update checks are off, and any proxy-respecting request to anything but
127.0.0.1 goes to a closed port (so it fails fast instead of reaching the network).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import Server, free_port, run, tool, wait_for
from test_e2e_clients import READ, REPO, WRITE, get, installed_version, pip_install, sha256_of, storage

# Like tests/test_web_ui.py: a stuck tool fails in a minute, not after the suite-wide 300 s.
pytestmark = pytest.mark.timeout(60)

WRONG = "wrong-secret-0000"  # as long as a real secret: refused for its value, not its length
assert len(WRONG) >= 12 and len(READ) >= 12 and len(WRITE) >= 12

def publisher_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The client environment plus: no keyring, no update checks, tool dirs in ``tmp_path``,
    and a dead proxy for everything except 127.0.0.1."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = {k: v for k, v in env.items()
           if not k.startswith(("PDM_", "HATCH_", "FLIT_")) and k.lower() not in ("http_proxy", "https_proxy",
                                                                                   "all_proxy", "no_proxy")}
    out.update(
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, ALL_PROXY=dead_proxy,
        http_proxy=dead_proxy, https_proxy=dead_proxy, all_proxy=dead_proxy,
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        # pdm
        PDM_CHECK_UPDATE="false",
        PDM_NON_INTERACTIVE="1",
        PDM_CACHE_DIR=str(tmp_path / "pdm-cache"),
        PDM_CONFIG_FILE=str(tmp_path / "pdm-config.toml"),
        PDM_HOME=str(tmp_path / "pdm-home"),
        PDM_PYTHON=sys.executable,  # build with the test venv (its hatchling), never a new project venv
        # hatch
        HATCH_CONFIG=str(tmp_path / "hatch-config.toml"),
        HATCH_DATA_DIR=str(tmp_path / "hatch-data"),
        HATCH_CACHE_DIR=str(tmp_path / "hatch-cache"),
        # tools' entry points and the interpreter they spawn come from the test venv
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )
    (tmp_path / "hatch-config.toml").write_text("")  # hatch insists the file it is pointed at exists
    return out


def ready(server: Server) -> Server:
    """Wait for ``/readyz`` (the fixture waits for ``/healthz``, liveness only): before the repo's
    index is loaded an unknown project is a 503, not the 404 the refused-upload checks expect."""
    wait_for(lambda: requests.get(f"{server.base}/readyz", timeout=2).status_code == 200, 20,
             lambda: f"/readyz never answered 200:\n{server.log()}")
    return server


def write_project(path: Path, name: str, version: str, backend: str, body: str) -> Path:
    """A one-module project (``<module>/__init__.py`` holding ``body``) with ``backend``."""
    module = name.replace("-", "_")
    build_system = {
        "flit_core": 'requires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n',
        "hatchling": 'requires = ["hatchling"]\nbuild-backend = "hatchling.build"\n',
    }[backend]
    (path / module).mkdir(parents=True)
    (path / module / "__init__.py").write_text(body)
    (path / "README.md").write_text(f"# {name}\n\nPublished by a test.\n")
    (path / "pyproject.toml").write_text(
        f"[build-system]\n{build_system}\n"
        "[project]\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
        f'description = "{name}: an end-to-end test package"\n'
        'readme = "README.md"\n'
        'requires-python = ">=3.8"\n'
    )
    return path


def dists(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".whl", ".tar.gz")))


def assert_nothing_listed(server: Server, project: str) -> None:
    """No file stored, and the project unknown (the fixture's server has fallback off: 404)."""
    stored = [p.name for p in storage(server).iterdir()] if storage(server).exists() else []
    assert not [n for n in stored if n.endswith((".whl", ".tar.gz"))], stored
    page = get(server, f"/simple/{project}/", allow_redirects=False)
    assert page.status_code == 404, (page.status_code, page.text)


def assert_published(server: Server, project: str, files: list[Path], env: dict[str, str],
                     tmp_path: Path, version: str, body: str) -> None:
    """Every built file is listed with its sha256, stored byte for byte, and pip installs it."""
    page = get(server, f"/simple/{project}/")
    assert page.status_code == 200, page.text
    for path in files:
        assert f'href="{path.name}#sha256={sha256_of(path)}"' in page.text, page.text
        assert (storage(server) / path.name).read_bytes() == path.read_bytes()
    target = tmp_path / "pip-target"
    pip_install(server.index_url(REPO, READ), target, f"{project}=={version}", env)
    module = project.replace("-", "_")
    assert (target / module / "__init__.py").read_text() == body
    assert installed_version(target, project) == version
    assert "refused cross-site" not in server.log()  # the issue-13 guard lets package tools in


# What pywharf answers the upload (every tool quotes the status in its error message).
REFUSAL = {WRONG: "401", READ: "403"}


def assert_refused(result: subprocess.CompletedProcess[str], secret: str, what: str) -> None:
    """Non-zero exit *because the server refused the secret* (a tool crashing for another reason,
    e.g. an incompatible dependency, must not pass for a refusal)."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{what} succeeded:\n{output}"
    assert REFUSAL[secret] in output, f"{what} failed, but not with {REFUSAL[secret]}:\n{output}"


# -- the three tools -------------------------------------------------------------------------------


def pdm_build(project: Path, env: dict[str, str]) -> list[Path]:
    """``pdm build --no-isolation``: pdm drives the project's PEP 517 backend (hatchling, installed
    in the test venv) without creating an isolated env, which would download it from PyPI."""
    run([tool("pdm"), "build", "--no-isolation", "-p", str(project), "-d", str(project / "dist")],
        env, cwd=project, timeout=120)
    return dists(project / "dist")


def pdm_publish(server: Server, project: Path, secret: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``pdm publish --no-build`` of what is in dist/, the repository given as a URL."""
    return run([tool("pdm"), "publish", "--no-build", "-p", str(project), "-d", str(project / "dist"),
                "--repository", f"{server.base}/simple/", "--username", REPO, "--password", secret],
               env, cwd=project, timeout=120, check=False)


def hatch_build(project: Path, env: dict[str, str]) -> list[Path]:
    """``hatchling build``: hatch's own builder, run in the test venv. (``hatch build`` first
    creates a ``hatch-build`` env and installs hatchling into it from PyPI: not offline.)"""
    run([tool("hatchling"), "build"], env, cwd=project, timeout=120)
    return dists(project / "dist")


def hatch_publish(server: Server, project: Path, secret: str,
                  env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``hatch publish`` of the built files, never prompting."""
    return run([tool("hatch"), "publish", "--repo", f"{server.base}/simple/", "--user", REPO,
                "--auth", secret, "--no-prompt", *map(str, dists(project / "dist"))],
               env, cwd=project, timeout=120, check=False)


def flit_publish(server: Server, project: Path, secret: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``flit publish`` builds (flit_core, in-process) and uploads; the index and credentials come
    from FLIT_INDEX_URL / FLIT_USERNAME / FLIT_PASSWORD (no ~/.pypirc exists in the test HOME)."""
    flit_env = {**env, "FLIT_INDEX_URL": f"{server.base}/simple/", "FLIT_USERNAME": REPO, "FLIT_PASSWORD": secret}
    return run([tool("flit"), "publish", "--no-use-vcs"], flit_env, cwd=project, timeout=120, check=False)


# -- tests -----------------------------------------------------------------------------------------


# pdm and hatch: each builds a hatchling project itself, then publishes its two files.
BUILD_AND_PUBLISH = {"pdm": (pdm_build, pdm_publish), "hatch": (hatch_build, hatch_publish)}


@pytest.mark.parametrize("secret", [WRONG, READ], ids=["wrong-secret", "read-secret"])
@pytest.mark.parametrize("tool_name", list(BUILD_AND_PUBLISH))
def test_pdm_and_hatch_publish(fs_server: Server, env: dict[str, str], tmp_path: Path, secret: str,
                               tool_name: str) -> None:
    """pdm / hatch build a hatchling project and publish it; the refused secret publishes nothing."""
    build, publish = BUILD_AND_PUBLISH[tool_name]
    penv = publisher_env(env, tmp_path)
    ready(fs_server)
    name, version, body = f"{tool_name}pub-pkg", "1.0", f"VALUE = 'published by {tool_name}'\n"
    project = write_project(tmp_path / "project", name, version, "hatchling", body)
    files = build(project, penv)
    assert [p.name for p in files] == [f"{tool_name}pub_pkg-1.0-py3-none-any.whl", f"{tool_name}pub_pkg-1.0.tar.gz"]

    assert_refused(publish(fs_server, project, secret, penv), secret, f"{tool_name} publish")
    assert_nothing_listed(fs_server, name)

    result = publish(fs_server, project, WRITE, penv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_published(fs_server, name, files, penv, tmp_path, version, body)


@pytest.mark.parametrize("secret", [WRONG, READ], ids=["wrong-secret", "read-secret"])
def test_flit_publish(fs_server: Server, env: dict[str, str], tmp_path: Path, secret: str) -> None:
    """flit builds its own (flit_core) project and publishes it; the refused secret publishes nothing."""
    penv = publisher_env(env, tmp_path)
    ready(fs_server)
    name, version, body = "flitpub-pkg", "1.0", '"""A flit test package."""\nVALUE = "published by flit"\n'
    project = write_project(tmp_path / "project", name, version, "flit_core", body)

    assert_refused(flit_publish(fs_server, project, secret, penv), secret, "flit publish")
    assert_nothing_listed(fs_server, name)

    result = flit_publish(fs_server, project, WRITE, penv)
    assert result.returncode == 0, result.stdout + result.stderr
    files = dists(project / "dist")
    assert [p.name for p in files] == ["flitpub_pkg-1.0-py3-none-any.whl", "flitpub_pkg-1.0.tar.gz"]
    assert_published(fs_server, name, files, penv, tmp_path, version, body)


def test_publisher_env_blocks_the_network(env: dict[str, str], tmp_path: Path) -> None:
    """The isolation the tests rely on: a proxy-respecting request off 127.0.0.1 fails at once."""
    penv = publisher_env(env, tmp_path)
    start = time.monotonic()
    result = run([sys.executable, "-c", "import requests; requests.get('https://pypi.org/simple/', timeout=5)"],
                 penv, check=False, timeout=60)
    assert result.returncode != 0 and "ProxyError" in result.stderr, result.stderr
    assert time.monotonic() - start < 10
