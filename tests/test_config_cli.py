"""The ``pywharf`` command line, run for real as a subprocess.

A misconfigured server must stop before it serves anything, with one line that tells the
operator which file, table and key to fix (never a traceback). The CLI entry points that CI and
docs rely on (help, environment mode for service containers, update_index, quickstart, the
README commands) are checked end to end.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import Server, free_port, fs_config, tool
from distbuilder import DistSpec, build_sdist, build_wheel

from pywharf_core.index.formats import parse_index

REPO_ROOT = Path(__file__).resolve().parent.parent
GOOD_CONFIG = fs_config()


def cli_env(**extra: str) -> dict[str, str]:
    """The test environment without any PYWHARF_COMMAND* variables (they switch on env mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYWHARF_")}
    env.update(PAGER="cat", NO_COLOR="1", **extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([tool("pywharf"), *args], capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), stdin=subprocess.DEVNULL)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_server_expecting_error(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``pywharf server`` and return its single stderr line, after checking that it failed
    without serving and without a traceback. A server that starts would hit the 20 s timeout."""
    port = free_port()
    cmd = ["server", str(root), "--port", str(port), "--host", "127.0.0.1", *args]
    try:
        result = run_cli(*cmd, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pywharf {' '.join(cmd)} kept running: it started serving a bad config")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in result.stderr, result.stderr
    assert "Uvicorn running" not in output and "Started server" not in output, output
    assert not port_is_open(port)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    return lines[0]


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen([tool("pywharf"), *args], stdout=handle, stderr=subprocess.STDOUT,
                                env=env or cli_env(), stdin=subprocess.DEVNULL)


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited early ({proc.returncode}):\n{log.read_text(errors='replace')}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            terminate(proc)
            pytest.fail(f"server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def terminate(proc: subprocess.Popen, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def legacy_upload(base: str, auth: tuple[str, str], path: Path, name: str, version: str,
                  filetype: str) -> requests.Response:
    """What twine sends: the legacy ``file_upload`` multipart form."""
    data = path.read_bytes()
    fields = {":action": "file_upload", "protocol_version": "1", "name": name, "version": version,
              "filetype": filetype, "pyversion": "py3" if filetype == "bdist_wheel" else "source",
              "metadata_version": "2.1", "summary": "A test package",
              "sha256_digest": hashlib.sha256(data).hexdigest()}
    return requests.post(f"{base}/simple/", auth=auth, data=fields,
                         files={"content": (path.name, data, "application/octet-stream")}, timeout=60)


# -- config errors -------------------------------------------------------------------------------

FS = 'type = "file_system"\nread_secret = "read-secret-00"\nwrite_secret = "write-secret"\n'

BAD_CONFIGS = {
    "unknown_type": ('[local]\ntype = "nope"\nread_secret = "read-secret-00"\nwrite_secret = "write-secret"\n',
                     ["[local]", "type", "nope"]),
    "missing_type": ('[local]\nread_secret = "read-secret-00"\nwrite_secret = "write-secret"\n',
                     ["[local]", "type", "missing"]),
    "type_is_a_list": ('[local]\ntype = ["file_system"]\nread_secret = "read-secret-00"\n'
                       'write_secret = "write-secret"\n',
                       ["[local]", "type"]),
    "missing_read_secret": ('[local]\ntype = "file_system"\nwrite_secret = "write-secret"\n',
                            ["[local]", "read_secret", "missing"]),
    "max_file_bytes_string": (f'[local]\n{FS}max_file_bytes = "big"\n', ["[local]", "max_file_bytes"]),
    "read_secret_int": ('[local]\ntype = "file_system"\nread_secret = 5\nwrite_secret = "write-secret"\n',
                        ["[local]", "read_secret"]),
    "unknown_key": (f'[local]\n{FS}colour = "red"\n', ["[local]", "colour"]),
    "repo_name_traversal": (f'["../evil"]\n{FS}', ['["../evil"]', "repo name"]),
    "repo_name_space": (f'["a b"]\n{FS}', ['["a b"]', "repo name"]),
    "repo_name_newline": (f'["local\\n"]\n{FS}', ["repo name"]),
    "invalid_toml": ('[local\ntype = "file_system"\n', ["TOML"]),
    "sync_index_interval_zero": (f"[local]\n{FS}sync_index_interval = 0\n",
                                 ["[local]", "sync_index_interval"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_stops_server_with_one_line(case: str, tmp_path: Path):
    """Each malformed config stops ``pywharf server`` before it listens, with one stderr line
    naming the config file, the table and the key (README promise)."""
    text, fragments = BAD_CONFIGS[case]
    config = tmp_path / "config.toml"
    config.write_text(text)
    line = run_server_expecting_error(tmp_path / "root", "--config", str(config))
    assert str(config) in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} missing from: {line}"


def test_missing_config_file_is_named(tmp_path: Path):
    """A typo in --config must say which path could not be read."""
    missing = tmp_path / "nowhere" / "config.toml"
    line = run_server_expecting_error(tmp_path / "root", "--config", str(missing))
    assert str(missing) in line
    assert "cannot read" in line


ADMIN_CASES = {
    "repo_not_in_config": ('[other]\ntype = "file_system"\nraw = "x"\n', ["[other]"]),
    "raw_and_env": ('[local]\ntype = "file_system"\nraw = "x"\nenv = "PYWHARF_TEST_TOKEN"\n',
                    ["[local]", "raw", "env"]),
    "neither_raw_nor_env": ('[local]\ntype = "file_system"\n', ["[local]", "raw", "env"]),
    "env_unset": ('[local]\ntype = "file_system"\nenv = "PYWHARF_TEST_UNSET_VARIABLE"\n',
                  ["[local]", "env", "PYWHARF_TEST_UNSET_VARIABLE"]),
    "type_mismatch": ('[local]\ntype = "github"\nraw = "x"\n', ["[local]", "type", "github"]),
    "raw_not_a_string": ('[local]\ntype = "file_system"\nraw = 5\n', ["[local]", "raw"]),
}


@pytest.mark.parametrize("case", sorted(ADMIN_CASES))
def test_bad_admin_secret_stops_server_with_one_line(case: str, tmp_path: Path):
    """Admin-secret mistakes name the admin-secret file (not the config), table and key."""
    text, fragments = ADMIN_CASES[case]
    config = tmp_path / "config.toml"
    config.write_text(GOOD_CONFIG)
    admin = tmp_path / "admin.toml"
    admin.write_text(text)
    line = run_server_expecting_error(tmp_path / "root", "--config", str(config), "--admin_secret", str(admin))
    assert str(admin) in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} missing from: {line}"


def test_config_as_text_starts_server(tmp_path: Path):
    """Service containers pass the config inline: --config_or_admin_secret_can_be_text."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = spawn(["server", str(tmp_path / "root"), "--config_or_admin_secret_can_be_text",
                  "--config", GOOD_CONFIG, "--port", str(port), "--host", "127.0.0.1",
                  "--extra_index_url="], log)
    try:
        wait_healthy(proc, port, log)
        response = requests.get(f"http://127.0.0.1:{port}/simple/", auth=("local", "read-secret-00"), timeout=5)
        assert response.status_code == 200
    finally:
        terminate(proc)
    assert "Traceback" not in log.read_text(errors="replace")


def test_bad_config_text_names_config_text(tmp_path: Path):
    """With inline TOML there is no file to name: the error says ``<config text>``."""
    line = run_server_expecting_error(tmp_path / "root", "--config_or_admin_secret_can_be_text",
                                      "--config", f'[local]\n{FS}colour = "red"\n')
    assert "<config text>" in line
    assert "[local]" in line and "colour" in line


def test_bad_admin_secret_text_names_admin_secret_text(tmp_path: Path):
    """Inline admin secrets are named ``<admin secret text>`` in errors."""
    line = run_server_expecting_error(tmp_path / "root", "--config_or_admin_secret_can_be_text",
                                      "--config", GOOD_CONFIG,
                                      "--admin_secret", '[other]\ntype = "file_system"\nraw = "x"\n')
    assert "<admin secret text>" in line
    assert "[other]" in line


# -- help and commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "no-args"])
def test_top_level_help_lists_commands(args: list[str]):
    """``pywharf`` / ``pywharf --help`` must list the core commands and exit 0."""
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    for command in ("server", "update_index", "quickstart"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_command_exits_2():
    """A mistyped command is a usage error (exit 2) that says what was wrong."""
    result = run_cli("serve")
    assert result.returncode == 2
    assert "unknown command 'serve'" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_help_shows_flags_and_exits_0(tmp_path: Path):
    """``pywharf server --help`` is how operators discover flags: it must document --config and
    --admin_secret and exit 0 (it must not be taken as a waitress option or a usage error)."""
    result = subprocess.run([tool("pywharf"), "server", "--help"], capture_output=True, text=True,
                            timeout=20, env=cli_env(), stdin=subprocess.DEVNULL, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "--config" in output and "--admin_secret" in output, output
    assert "Traceback" not in output
    assert result.returncode == 0, f"exit {result.returncode}:\n{output}"


# -- environment mode ----------------------------------------------------------------------------


def test_environment_mode_starts_server_and_stops_cleanly(tmp_path: Path):
    """A CI service container cannot pass arguments: with none, PYWHARF_COMMAND* variables
    start the server; SIGTERM (docker stop) must end it with exit code 0."""
    config = tmp_path / "config.toml"
    config.write_text(GOOD_CONFIG)
    port = free_port()
    env = cli_env(PYWHARF_COMMAND="server", PYWHARF_COMMAND_ROOT=str(tmp_path / "root"),
                  PYWHARF_COMMAND_PORT=str(port), PYWHARF_COMMAND_HOST="127.0.0.1",
                  PYWHARF_COMMAND_CONFIG=str(config))
    log = tmp_path / "server.log"
    proc = spawn([], log, env=env)
    try:
        wait_healthy(proc, port, log)
        assert requests.get(f"http://127.0.0.1:{port}/simple/", auth=("local", "read-secret-00"),
                            timeout=5).status_code == 200
    finally:
        code = terminate(proc)
    assert (tmp_path / "root" / "cache" / "local").is_dir()
    assert code == 0, f"SIGTERM ended the server with exit code {code}:\n{log.read_text(errors='replace')}"


# -- update_index --------------------------------------------------------------------------------


def test_update_index_lists_uploaded_files(server_factory, tmp_path: Path):
    """``update_index`` rebuilds the remote index from storage: every uploaded file appears
    with its real sha256, and a running server then syncs it (journal caught up)."""
    server: Server = server_factory(fs_config(sync_index_interval=1), "--extra_index_url=")
    auth = ("local", "write-secret")
    wheel = build_wheel(DistSpec("Demo_Pkg", "1.0"), tmp_path / "dist")
    sdist = build_sdist(DistSpec("Demo_Pkg", "1.0"), tmp_path / "dist")
    other = build_wheel(DistSpec("other", "2.0+local.1"), tmp_path / "dist")
    for path, name, version, filetype in [(wheel, "Demo_Pkg", "1.0", "bdist_wheel"),
                                          (sdist, "Demo_Pkg", "1.0", "sdist"),
                                          (other, "other", "2.0+local.1", "bdist_wheel")]:
        response = legacy_upload(server.base, auth, path, name, version, filetype)
        assert response.status_code == 200, response.text

    storage = server.root / "cache" / "local" / "storage"
    result = run_cli("update_index", "file_system", "local", "--storage_path", str(storage), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    records = {r.filename: r for r in parse_index((storage / "index.toml").read_bytes())}
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (wheel, sdist, other)}
    assert {name: r.sha256 for name, r in records.items()} == expected
    assert records[wheel.name].distrib == "demo-pkg"
    assert records[other.name].version == "2.0+local.1"
    assert records[sdist.name].size == sdist.stat().st_size

    # The running server picks the new remote index up and drops its journal entries.
    journal = server.root / "cache" / "local" / "uploads.jsonl"
    deadline = time.monotonic() + 15
    while journal.exists() and journal.read_bytes().strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not journal.read_bytes().strip(), journal.read_text()
    page = requests.get(f"{server.base}/simple/demo-pkg/", auth=("local", "read-secret-00"), timeout=5)
    assert page.status_code == 200
    assert wheel.name in page.text and sdist.name in page.text


def test_update_index_rejects_traversal_repo_name(tmp_path: Path):
    """The repo NAME becomes ``ROOT/cache/<name>/storage``: ``../..`` must be refused, not
    create (and write an index into) a folder outside ROOT."""
    root = tmp_path / "root"
    result = run_cli("update_index", "file_system", "../../escaped", "--root", str(root))
    assert not (tmp_path / "escaped").exists(), "update_index wrote outside ROOT"
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


# -- README --------------------------------------------------------------------------------------


def readme_block_after(marker: str) -> str:
    """The body of the first fenced ``sh`` block after the line starting with ``marker``."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    opening = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    assert lines[opening].strip() == "```sh"
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[opening + 1:closing]).strip()


def test_readme_test_command_is_what_ci_runs():
    """CI must run exactly what the README tells contributors to run."""
    command = readme_block_after("**Run the tests**")
    assert command
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_start_command_uses_quickstart():
    """The first command a user copies must be the one-step quickstart."""
    command = readme_block_after("**Start a server**")
    assert "pywharf quickstart" in command


# -- quickstart ----------------------------------------------------------------------------------


def start_quickstart(root: Path, log_dir: Path, tag: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    out = log_dir / f"quickstart-{tag}.out"
    with open(out, "wb") as handle:
        proc = subprocess.Popen([tool("pywharf"), "quickstart", str(root), "--port", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, env=cli_env(),
                                stdin=subprocess.DEVNULL)
    wait_healthy(proc, port, out)
    return proc, port, out


def printed_secrets(text: str) -> tuple[str, str]:
    read = re.search(r"read secret:\s+(\S+)", text)
    write = re.search(r"write secret:\s+(\S+)", text)
    assert read and write, text
    return read.group(1), write.group(1)


def test_quickstart_prints_working_secrets_and_keeps_them(tmp_path: Path):
    """``pywharf quickstart`` is the README's first step: it must print secrets and client lines
    that work as printed, keep the secrets private (0600) and reuse them on restart."""
    root = tmp_path / "qs-root"
    proc, port, out = start_quickstart(root, tmp_path, "first")
    try:
        text = out.read_text(errors="replace")
        read, write = printed_secrets(text)
        assert read != write
        # The repository's own URL (issue 15), printed for every client.
        assert f"twine upload --repository-url http://127.0.0.1:{port}/repos/local/simple/ -u local -p {write}" in text
        assert f"pip install --index-url http://local:{read}@127.0.0.1:{port}/repos/local/simple/" in text
        assert "uv pip install" in text

        wheel = build_wheel(DistSpec("quick", "0.1"), tmp_path / "dist")
        base = f"http://127.0.0.1:{port}/repos/local"
        assert legacy_upload(base, ("local", read), wheel, "quick", "0.1", "bdist_wheel").status_code == 403
        response = legacy_upload(base, ("local", write), wheel, "quick", "0.1", "bdist_wheel")
        assert response.status_code == 200, response.text
        listing = requests.get(f"{base}/simple/", auth=("anyone", read), timeout=5)
        assert listing.status_code == 200
        assert "quick" in listing.text
        assert requests.get(f"{base}/simple/", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/simple/", auth=("local", read), timeout=5).status_code == 200
    finally:
        terminate(proc)

    config = root / "quickstart-config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert (root / "cache" / "local" / "storage" / wheel.name).is_file()

    proc, port, out = start_quickstart(root, tmp_path, "second")
    try:
        assert printed_secrets(out.read_text(errors="replace")) == (read, write)
        page = requests.get(f"http://127.0.0.1:{port}/simple/quick/", auth=("local", read), timeout=5)
        assert page.status_code == 200
        assert wheel.name in page.text
    finally:
        terminate(proc)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
