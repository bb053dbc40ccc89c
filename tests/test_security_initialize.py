"""Security issue 13: ``POST /initialize/`` and configuration arriving over HTTP.

1. the "not configured yet" decision is taken again under the install lock after the body is
   read, so a request that started while the server was open cannot replace the config the
   rightful first initialisation installed;
2. a config sent over HTTP reads only ``PYWHARF_*`` variables and uses only the backends'
   default endpoints (or those of ``--allowed_endpoints``);
3. its ``storage_path`` stays under ROOT (or ``--allow_storage_path``), symlinks resolved;
4. ``--initialize_token`` has a minimum length and wrong tokens are rate limited (429);
5. deeply nested TOML, bodies that are not UTF-8 and unknown charsets are 400s, not 500s.

In-process (Starlette's TestClient, or the ASGI app called directly where the order in which
two bodies arrive is the point).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import tomli_w
from starlette.testclient import TestClient

import pywharf_core.cli as cli
import pywharf_core.http.serve as serve
from pywharf_core.http.app import create_app
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

READ, WRITE = "read-secret-123", "write-secret-123"
TOKEN = "initialize-token-0123456789"
FORM = "application/x-www-form-urlencoded"


def fs_config(name: str = "local", **table: Any) -> str:
    return tomli_w.dumps({name: {"type": "file_system", "read_secret": READ, "write_secret": WRITE,
                                 "sync_index_interval": 3600, **table}})


def s3_config(**table: Any) -> str:
    return tomli_w.dumps({"team": {"type": "s3", "bucket": "pkgs-bucket", "read_secret": READ,
                                   "write_secret": WRITE, "sync_index_interval": 3600,
                                   "region_name": "eu-west-1", **table}})


def github_config(**table: Any) -> str:
    return tomli_w.dumps({"gh": {"type": "github", "owner": "acme", "repo": "pkgs",
                                 "sync_index_interval": 3600, **table}})


GITHUB_ADMIN = '[gh]\ntype = "github"\nraw = "ghp_admin-token-value"\n'


class App:
    """One in-process server (its sync threads are stopped at the end of the test)."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.settings = ServerSettings(root=root, extra_index_url="", **settings)
        self.state = ServerState(self.settings)
        self.app = create_app(self.state)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def configure(self, config: str) -> None:
        self.state.install(build_repos(load_setup(config, None, is_text=True), self.settings))

    def initialize(self, config: str, admin_secret: str | None = None, token: str | None = None) -> Any:
        data = {"config": config, **({"admin_secret": admin_secret} if admin_secret else {})}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.post("/initialize/", data=data, headers=headers)


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        app.state.shutdown()


@pytest.fixture
def make_app(apps: list[App], tmp_path: Path) -> Any:
    def make(**settings: Any) -> App:
        app = App(tmp_path / "root", **settings)
        apps.append(app)
        return app
    return make


def can_read(app: App, repo: str) -> bool:
    return app.client.get("/simple/", auth=(repo, READ)).status_code == 200


# -- 1. open first initialisation: decided atomically, exactly once -----------------------------


def _asgi_post(app: Any, body: bytes, headers: list[tuple[bytes, bytes]], before_body: anyio.Event | None,
               reading: anyio.Event) -> Any:
    """An ASGI call of POST /initialize/ whose body is delivered only once ``before_body`` is set."""
    result: dict[str, Any] = {}

    async def run() -> None:
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            reading.set()
            if before_body is not None:
                await before_body.wait()
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                result["status"] = message["status"]
            elif message["type"] == "http.response.body":
                result["body"] = result.get("body", b"") + message.get("body", b"")

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/initialize/", "raw_path": b"/initialize/", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
                 "headers": [(b"content-type", FORM.encode()), (b"content-length", str(len(body)).encode()),
                             *headers]}
        await app(scope, receive, send)

    return run, result


def _form(config: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode({"config": config}).encode()


@pytest.mark.parametrize("initialize_token", [TOKEN, None])
def test_a_request_started_while_open_cannot_replace_the_first_initialisation(
        make_app: Any, initialize_token: str | None) -> None:
    """Request A passes the "not configured" check, then its body arrives only after request B
    (the rightful first initialisation) has been answered: A must be refused, B's config stays."""
    server = make_app(initialize_token=initialize_token)
    late_headers: list[tuple[bytes, bytes]] = []

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        b_done, a_reading, b_reading = anyio.Event(), anyio.Event(), anyio.Event()
        run_a, result_a = _asgi_post(server.app, _form(fs_config("evil")), late_headers, b_done, a_reading)
        run_b, result_b = _asgi_post(server.app, _form(fs_config("local")), [], None, b_reading)
        async with anyio.create_task_group() as group:
            group.start_soon(run_a)
            with anyio.fail_after(10):
                await a_reading.wait()  # A is past the cheap check, waiting for its body
            await run_b()
            b_done.set()
        return result_a, result_b

    result_a, result_b = anyio.run(scenario)
    assert result_b["status"] == 200, result_b
    assert result_a["status"] == 403, f"the late request also initialised the server: {result_a}"
    assert can_read(server, "local") and not can_read(server, "evil")


def test_a_request_started_while_open_with_the_token_still_succeeds(make_app: Any) -> None:
    """The same interleaving, but the late request presented the token: it may reconfigure."""
    server = make_app(initialize_token=TOKEN)

    async def scenario() -> dict[str, Any]:
        b_done, a_reading, b_reading = anyio.Event(), anyio.Event(), anyio.Event()
        headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
        run_a, result_a = _asgi_post(server.app, _form(fs_config("second")), headers, b_done, a_reading)
        run_b, _ = _asgi_post(server.app, _form(fs_config("local")), [], None, b_reading)
        async with anyio.create_task_group() as group:
            group.start_soon(run_a)
            with anyio.fail_after(10):
                await a_reading.wait()
            await run_b()
            b_done.set()
        return result_a

    assert anyio.run(scenario)["status"] == 200
    assert can_read(server, "second") and not can_read(server, "local")


def test_a_late_request_with_the_token_may_still_reconfigure(make_app: Any) -> None:
    server = make_app(initialize_token=TOKEN)
    assert server.initialize(fs_config("local")).status_code == 200
    assert server.initialize(fs_config("second"), token=TOKEN).status_code == 200
    assert can_read(server, "second")
    refused = server.initialize(fs_config("third"))
    assert refused.status_code == 403 and can_read(server, "second")


def test_the_open_first_initialisation_ignores_an_authorization_header(make_app: Any) -> None:
    server = make_app()
    assert server.initialize(fs_config(), token="whatever-the-ci-sends").status_code == 200
    assert server.initialize(fs_config("evil"), token="whatever-the-ci-sends").status_code == 403


# -- 2. environment variables and endpoints named by a config from HTTP -------------------------


@pytest.mark.parametrize("variable", ["SOME_CLOUD_SECRET", "PYWHARF_COMMAND_INITIALIZE_TOKEN",
                                      "PYWHARF_SESSION_SECRET"])
def test_http_config_may_not_read_variables_outside_the_prefix(make_app: Any, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture,
                                                               variable: str) -> None:
    monkeypatch.setenv(variable, "the-value-of-the-variable")
    server = make_app()
    admin = f'[local]\ntype = "file_system"\nenv = "{variable}"\n'
    with caplog.at_level("INFO", logger="pywharf_core"):
        response = server.initialize(fs_config(), admin)
    assert response.status_code == 400, response.text
    assert "PYWHARF_*" in response.text and "'env'" in response.text
    assert "the-value-of-the-variable" not in response.text
    refusals = [r for r in caplog.records if r.name == "pywharf_core.http.initialize"]
    assert len(refusals) == 1 and "(400)" in refusals[0].getMessage()
    assert not any(secret in caplog.text for secret in ("the-value-of-the-variable", READ, WRITE))
    assert not can_read(server, "local")


def test_http_config_reads_variables_under_the_prefix(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYWHARF_LOCAL_ADMIN", "admin-secret-value")
    monkeypatch.setenv("CI_ONLY_ADMIN", "admin-secret-value")
    server = make_app()
    assert server.initialize(fs_config(), '[local]\ntype = "file_system"\nenv = "PYWHARF_LOCAL_ADMIN"\n'
                             ).status_code == 200
    other = make_app(initialize_env_prefix="CI_ONLY_")  # the prefix is the admin's choice
    assert other.initialize(fs_config(), '[local]\ntype = "file_system"\nenv = "CI_ONLY_ADMIN"\n'
                            ).status_code == 200


@pytest.mark.parametrize("config, admin, key", [
    (github_config(api_base_url="http://127.0.0.1:9"), GITHUB_ADMIN, "api_base_url"),
    (github_config(api_base_url="https://api.github.com.attacker.example"), GITHUB_ADMIN, "api_base_url"),
    (s3_config(endpoint_url="http://127.0.0.1:9"), None, "endpoint_url"),
    (s3_config(public_endpoint_url="http://127.0.0.1:9"), None, "public_endpoint_url"),
])
def test_http_config_may_not_point_a_backend_at_any_host(make_app: Any, config: str, admin: str | None,
                                                         key: str) -> None:
    server = make_app()
    response = server.initialize(config, admin)
    assert response.status_code == 400, response.text
    assert f"'{key}'" in response.text and "--allowed_endpoints" in response.text
    assert not server.state.configured


def test_allowed_endpoints_and_defaults_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backends' defaults always pass; other endpoints only when the admin lists them (also
    below a listed path, never a look-alike host); a config from the command line may use any."""
    limits = ServerSettings(root=tmp_path).http_config_limits()
    load_setup(github_config(api_base_url="https://api.github.com"), GITHUB_ADMIN, is_text=True, limits=limits)
    load_setup(s3_config(), None, is_text=True, limits=limits)
    with pytest.raises(ConfigError, match="endpoint_url"):
        load_setup(s3_config(endpoint_url="http://minio.internal:9000"), None, is_text=True, limits=limits)

    allowed = ServerSettings(root=tmp_path, allowed_endpoints=("http://minio.internal:9000",
                                                              "https://ghe.example/api/v3")).http_config_limits()
    load_setup(s3_config(endpoint_url="http://minio.internal:9000"), None, is_text=True, limits=allowed)
    load_setup(github_config(api_base_url="https://ghe.example/api/v3"), GITHUB_ADMIN, is_text=True, limits=allowed)
    for url in ("https://ghe.example/api/v30", "https://ghe.example.attacker/api/v3", "http://ghe.example/api/v3"):
        with pytest.raises(ConfigError, match="api_base_url"):
            load_setup(github_config(api_base_url=url), GITHUB_ADMIN, is_text=True, limits=allowed)

    # The admin's own file keeps full power.
    load_setup(s3_config(endpoint_url="http://anywhere.example:9000"), None, is_text=True)
    monkeypatch.setenv("SOME_CLOUD_SECRET", "cloud-secret-value")
    load_setup(fs_config(), '[local]\ntype = "file_system"\nenv = "SOME_CLOUD_SECRET"\n', is_text=True)


# -- 3. storage_path of a config from HTTP --------------------------------------------------------


def test_http_storage_path_outside_root_is_refused(make_app: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret-1.0-py3-none-any.whl").write_bytes(b"not for clients")
    server = make_app()
    for path in (str(outside), "../outside", "cache/../../outside"):
        response = server.initialize(fs_config(storage_path=path))
        assert response.status_code == 400, (path, response.text)
        assert "'storage_path'" in response.text and "--allow_storage_path" in response.text
    assert not server.state.configured


def test_http_storage_path_symlink_escape_is_refused(make_app: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    server = make_app()
    server.settings.root.mkdir(parents=True)
    (server.settings.root / "link").symlink_to(outside, target_is_directory=True)
    response = server.initialize(fs_config(storage_path="link"))
    assert response.status_code == 400, response.text
    assert str(outside) in response.text


def test_http_storage_path_is_relative_to_root(make_app: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    server = make_app()
    response = server.initialize(fs_config(storage_path="pkgs"))
    assert response.status_code == 200, response.text
    assert (server.settings.root / "pkgs" / ".pywharf").is_dir()
    assert not (cwd / "pkgs").exists(), "a relative storage_path resolved against the working directory"


def test_allow_storage_path_admits_listed_folders(make_app: Any, tmp_path: Path) -> None:
    shared = tmp_path / "srv-pkgs"
    server = make_app(allowed_storage_paths=(shared,))
    response = server.initialize(fs_config(storage_path=str(shared / "team")))
    assert response.status_code == 200, response.text
    assert (shared / "team" / ".pywharf").is_dir()


def test_cli_config_storage_path_keeps_full_power(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin's own config may put storage anywhere; a relative path is relative to ROOT."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    settings = ServerSettings(root=tmp_path / "root")
    build_repos(load_setup(fs_config(storage_path=str(tmp_path / "anywhere")), None, is_text=True), settings)
    assert (tmp_path / "anywhere" / ".pywharf").is_dir()
    build_repos(load_setup(fs_config(storage_path="relative"), None, is_text=True), settings)
    assert (tmp_path / "root" / "relative" / ".pywharf").is_dir() and not (cwd / "relative").exists()


# -- 4. the initialize token ----------------------------------------------------------------------


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``pywharf server`` runs everything up to serving; ``run`` records instead of serving."""
    started: list[Any] = []
    monkeypatch.setattr(serve, "run", lambda app, state, **kwargs: started.append(state))
    monkeypatch.setattr(serve, "configure_logging", lambda root, debug, workers=1: None)
    return started


def test_a_short_initialize_token_stops_the_server(tmp_path: Path, no_serving: list[Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["server", str(tmp_path / "root"), "--initialize_token=x"])
    assert exit_info.value.code == 1
    assert "--initialize_token must be at least 16 characters" in capsys.readouterr().err
    assert no_serving == []
    with pytest.raises(ConfigError):
        ServerSettings(root=tmp_path, initialize_token="fifteen-chars-!")


def test_server_flags_reach_the_settings(tmp_path: Path, no_serving: list[Any]) -> None:
    cli.main(["server", str(tmp_path / "root"), f"--initialize_token={TOKEN}", "--initialize_max_failures=3",
              "--initialize_env_prefix=CI_", "--allowed_endpoints=https://ghe.example/api/v3,http://minio:9000",
              f"--allow_storage_path={tmp_path / 'a'},{tmp_path / 'b'}"])
    (state,) = no_serving
    settings = state.settings
    assert (settings.initialize_max_failures, settings.initialize_env_prefix) == (3, "CI_")
    assert settings.allowed_endpoints == ("https://ghe.example/api/v3", "http://minio:9000")
    assert settings.allowed_storage_paths == (tmp_path / "a", tmp_path / "b")


def test_wrong_tokens_are_rate_limited(make_app: Any) -> None:
    server = make_app(initialize_token=TOKEN)
    server.configure(fs_config())
    for attempt in range(5):
        response = server.initialize(fs_config("evil"), token=f"guess-number-{attempt:04d}-xx")
        assert response.status_code == 403, (attempt, response.text)
    limited = server.initialize(fs_config("evil"), token="guess-number-last-xx")
    assert limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    # While limited, even the right token is not checked (a guess that hit would look the same).
    assert server.initialize(fs_config("second"), token=TOKEN).status_code == 429
    assert can_read(server, "local") and not can_read(server, "evil")


def test_the_failure_limit_is_configurable(make_app: Any) -> None:
    server = make_app(initialize_token=TOKEN, initialize_max_failures=1)
    server.configure(fs_config())
    assert server.initialize(fs_config("evil")).status_code == 403  # no token at all counts too
    assert server.initialize(fs_config("evil"), token="guess-number-0001-xx").status_code == 429


# -- 5. malformed bodies --------------------------------------------------------------------------


def test_deeply_nested_toml_is_a_400(make_app: Any) -> None:
    server = make_app()
    for config, admin in (("a = " + "[" * 100_000, None), ("a = " + "{b=" * 100_000, None),
                          (fs_config(), "a = " + "[" * 100_000), ("a = " + "[" * 40 + "]" * 40, None)):
        response = server.initialize(config, admin)
        assert response.status_code == 400, response.text[:200]
        assert "nested too deeply" in response.text
    assert server.initialize(fs_config()).status_code == 200


def test_deeply_nested_cli_config_is_a_clear_error(tmp_path: Path, no_serving: list[Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("a = " + "[" * 100_000)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["server", str(tmp_path / "root"), f"--config={config}"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"{config}: invalid TOML: arrays or tables nested too deeply" in err
    assert "Traceback" not in err and no_serving == []


def _multipart(parts: list[tuple[str, bytes, bool]], content_type: str = "multipart/form-data; boundary=XX") -> Any:
    body = b""
    for name, value, as_file in parts:
        filename = f'; filename="{name}.toml"' if as_file else ""
        body += f'--XX\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + value + b"\r\n"
    return body + b"--XX--\r\n", content_type


BAD_SECRET_CONFIG = (b'[local]\ntype = "file_system"\nread_secret = "read-\xffsecret-123"\n'
                     b'write_secret = "write-secret-123"\n')


@pytest.mark.parametrize("body, content_type, expected", [
    (b"config=" + BAD_SECRET_CONFIG, FORM, "not UTF-8"),
    (b"config=" + BAD_SECRET_CONFIG.replace(b"\xff", b"%FF"), FORM, "UTF-8"),
    (*_multipart([("config", BAD_SECRET_CONFIG, False)]), "not UTF-8"),
    (*_multipart([("config", BAD_SECRET_CONFIG, True)]), "not UTF-8"),
    (*_multipart([("config", fs_config().encode(), False)], "multipart/form-data; boundary=XX; charset=bogus-9"),
     "Unknown charset"),
    (b"config=" + fs_config().encode(), FORM + "; charset=no-such-charset", "Unknown charset"),
])
def test_bodies_that_are_not_utf8_text_are_400(make_app: Any, body: bytes, content_type: str, expected: str) -> None:
    """Starlette would decode them leniently (Latin-1, U+FFFD) and install a mangled secret."""
    server = make_app()
    response = server.client.post("/initialize/", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert expected in response.text
    assert not server.state.configured


def test_a_plain_curl_d_body_still_works(make_app: Any) -> None:
    """``curl -d "config=${CONFIG}"`` sends the TOML as typed (newlines, quotes, '=', ';')."""
    server = make_app()
    config = fs_config() + "# a comment; with a semicolon\n"
    response = server.client.post("/initialize/", content=b"config=" + config.encode(),
                                  headers={"Content-Type": FORM})
    assert response.status_code == 200, response.text
    assert can_read(server, "local")
