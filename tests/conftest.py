"""Shared fixtures: a real ``pywharf server`` process on 127.0.0.1, and client environments.

Client subprocesses (pip, uv, twine, poetry) get an environment stripped of the machine's own
index settings, so they talk only to the servers a test starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import requests

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a console script installed beside the test interpreter (pywharf, twine, uv...)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (install the [test] extra)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_env(tmp: Path) -> dict[str, str]:
    """An environment for pip/uv/twine/poetry that ignores the machine's index configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "POETRY_", "TWINE_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_CACHE_DIR="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        POETRY_CACHE_DIR=str(tmp / "poetry-cache"),
        POETRY_CONFIG_DIR=str(tmp / "poetry-config"),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        POETRY_NO_INTERACTION="1",
        HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        NO_COLOR="1",
    )
    (tmp / "home").mkdir(exist_ok=True)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    repos: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (read, write)
    ca: Path | None = None  # the test CA of a server started with TLS (https)

    @property
    def base(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def index_url(self, repo: str, secret: str) -> str:
        return f"http://{repo}:{secret}@127.0.0.1:{self.port}/simple/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float, describe: Callable[[], str]) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``describe()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(describe())
        time.sleep(0.1)


def start_server(root: Path, config_text: str | None = None, *extra: str, admin_text: str | None = None,
                 wait: bool = True, env: dict[str, str] | None = None, tls: Mapping[str, Path] | None = None,
                 workers: int | None = 1) -> Server:
    """``tls``: serve https with ``tls["cert"]`` / ``tls["key"]``, trusting ``tls["ca"]``.

    ``workers``: ``--workers`` unless ``extra`` gives it; None leaves the server's default."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [tool("pywharf"), "server", str(root), "--host", "127.0.0.1", "--port", str(port)]
    if config_text is not None:
        (root.parent / f"{root.name}-config.toml").write_text(config_text)
        cmd += ["--config", str(root.parent / f"{root.name}-config.toml")]
    if admin_text is not None:
        (root.parent / f"{root.name}-admin.toml").write_text(admin_text)
        cmd += ["--admin_secret", str(root.parent / f"{root.name}-admin.toml")]
    cmd += list(extra)
    if workers is not None and not any(arg.startswith("--workers") for arg in extra):
        # One process unless the test asks for workers (the default is one per CPU): tests count
        # per-process things (failure budgets, log lines) and start many servers at once.
        cmd += ["--workers", str(workers)]
    if tls is not None:
        cmd += ["--ssl_certfile", str(tls["cert"]), "--ssl_keyfile", str(tls["key"])]
    log_path = root.parent / f"{root.name}-server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(root, port, proc, log_path, ca=tls["ca"] if tls is not None else None)
    if wait:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited early ({proc.returncode}):\n{server.log()}")
            try:
                verify = str(server.ca) if server.ca else True
                if requests.get(f"{server.base}/healthz", timeout=1, verify=verify).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"server did not start:\n{server.log()}")
            time.sleep(0.05)
    return server


def fs_config(name: str = "local", read: str = "read-secret-00", write: str = "write-secret", **extra: object) -> str:
    lines = [f"[{name}]", 'type = "file_system"', f'read_secret = "{read}"', f'write_secret = "{write}"']
    for key, value in extra.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def factory(config_text: str | None = None, *extra: str, root_name: str = "root", **kwargs) -> Server:
        server = start_server(tmp_path / root_name, config_text, *extra, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def fs_server(server_factory) -> Server:
    """A server with one file_system repo 'local' (read-secret / write-secret), no fallback."""
    server = server_factory(fs_config(), "--extra_index_url=")
    server.repos["local"] = ("read-secret-00", "write-secret")
    return server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return client_env(tmp_path)


def journal_entries(folder: Path) -> dict[str, dict]:
    """The local journal (``uploads.jsonl``) of a repository's ROOT/cache/<repo> folder as
    {filename: index table}; every line must be whole JSON (the latest line per file wins)."""
    import json

    path = folder / "uploads.jsonl"
    entries: dict[str, dict] = {}
    if not path.exists():
        return entries
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
    for line in data.splitlines():
        table = json.loads(line)
        if "filename" in table:  # not a deletion or a project status (pywharf_core.model.lifecycle)
            entries[table.pop("filename")] = table
    return entries
