"""The ``pywharf`` command line, built on ``fire``.

``pywharf <command> [flags]``. Commands are the core ones below plus every command a backend
registers (shown as ``<backend>.<command>``). With no arguments at all, the command and its
flags are read from the environment (``PYWHARF_COMMAND``, ``PYWHARF_COMMAND_<FLAG>``), which is
how a CI service container, that cannot pass arguments, starts a server.
"""

from __future__ import annotations

import inspect
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fire
import fire.helptext
import fire.trace

from pywharf_core.cli.audit import audit
from pywharf_core.cli.lifecycle import delete, retention, status
from pywharf_core.cli.server_calls import call, secret_from
from pywharf_core.cli.tokens import token
from pywharf_core.http.limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_STALL_TIMEOUT,
)
from pywharf_core.index.formats import dump_index
from pywharf_core.model.errors import PywharfError
from pywharf_core.model.records import FileRecord
from pywharf_core.service.backends import open_backend, read_remote_index, rebuild_remote_index
from pywharf_core.service.repository import AuthExpiry
from pywharf_core.service.server_state import (
    DEFAULT_AUTH_FAILURE_LIMIT,
    DEFAULT_AUTH_FAILURE_WINDOW,
    DEFAULT_INITIALIZE_MAX_FAILURES,
    DEFAULT_OIDC_AUDIENCE,
    ServerSettings,
    ServerState,
    build_repos,
    load_setup,
)
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config
from pywharf_core.storage.config_limits import DEFAULT_HTTP_ENV_PREFIX
from pywharf_core.storage.registry import installed_backends
from pywharf_core.storage.services import StaticLink, provide


def server(
    root: str,
    config: str | None = None,
    admin_secret: str | None = None,
    config_or_admin_secret_can_be_text: bool = False,
    auth_read_expires: int = 3600,
    auth_write_expires: int = 300,
    extra_index_url: str = "https://pypi.org/simple/",
    debug: bool = False,
    host: str = "0.0.0.0",
    port: int = 8888,
    server: str = "uvicorn",
    access_log: bool = False,
    initialize_token: str | None = None,
    page_max_age: int = 10,
    session_secret: str | None = None,
    auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT,
    auth_failure_window: int = DEFAULT_AUTH_FAILURE_WINDOW,
    initialize_max_failures: int = DEFAULT_INITIALIZE_MAX_FAILURES,
    initialize_env_prefix: str = DEFAULT_HTTP_ENV_PREFIX,
    allowed_endpoints: str = "",
    allow_storage_path: str = "",
    public_url: str | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    oidc_audience: str = DEFAULT_OIDC_AUDIENCE,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    workers: int | None = None,
    retention_interval: int = 0,
    metrics: bool = False,
    metrics_token: str | None = None,
    **waitress_options: Any,
) -> None:
    """Run the pywharf server.

    Args:
        root: Path to the root folder: logs, locks, local indexes and file_system storage.
        config: Path to the package repository config (TOML), or the TOML text itself if
            --config_or_admin_secret_can_be_text is set. Without it the server waits for
            POST /initialize/.
        admin_secret: Path to the admin secrets (TOML) used for index synchronisation, or
            the text itself (see above).
        config_or_admin_secret_can_be_text: Pass TOML text to --config / --admin_secret.
        auth_read_expires: Seconds a verified read secret stays trusted.
        auth_write_expires: Seconds a verified write secret stays trusted.
        extra_index_url: Index that unknown projects are redirected to; "" turns it off (404).
        debug: Verbose logging.
        host: The interface to bind to.
        port: The port to bind to.
        server: "uvicorn" (default, fastest measured) or "waitress".
        access_log: Log every request (method, path, status, content type, bytes, time).
        initialize_token: Bearer token that POST /initialize/ requires once the server is
            configured (16+ characters). Without it, only the first /initialize/ of a server
            started without --config is accepted.
        page_max_age: Cache-Control max-age (seconds) of simple pages; files are immutable.
        session_secret: Key of the browser UI's session cookies (16+ characters; default: the
            PYWHARF_SESSION_SECRET environment variable, else a random key kept in
            ROOT/session.key). Give every server behind one load balancer the same key.
        auth_failure_limit: Wrong secrets (basic auth and the login form together) one client
            address may send for one repository name within --auth_failure_window seconds;
            then 429 with Retry-After.
        auth_failure_window: Seconds over which --auth_failure_limit counts failures.
        initialize_max_failures: Wrong /initialize/ tokens one client may send per minute; then 429.
        initialize_env_prefix: A config sent to /initialize/ may only read environment variables
            (admin secrets' env = "...") whose names start with this (never PYWHARF_COMMAND*,
            PYWHARF_SESSION_SECRET). Configs given with --config may read any.
        allowed_endpoints: Comma-separated URLs a config sent to /initialize/ may point a backend
            at (github api_base_url, s3 endpoint_url / public_endpoint_url), besides each
            backend's default (api.github.com, AWS). Configs given with --config may use any.
        allow_storage_path: Comma-separated absolute folders, besides ROOT, under which a config
            sent to /initialize/ may put a file_system storage_path (relative paths are
            relative to ROOT). Configs given with --config may use any folder.
        public_url: The URL clients reach this server at (e.g. https://pypi.example.com/), used
            for every absolute URL it writes (JSON API, install lines); default: each request's
            Host header.
        max_header_bytes: Largest request line plus headers (bytes); larger requests get 431.
        header_timeout: Seconds a client has to send a complete request head (408 after).
        stall_timeout: Seconds an upload body or a download may make no progress before the
            connection is closed. (waitress: channel_timeout = the larger of the two timeouts.)
        max_connections: Open connections (uvicorn); past it the longest-idle one is closed, or
            the new one gets 503. (waitress: its own --connection_limit, default 100.)
        oidc_audience: The audience CI identity tokens must be made for (Trusted Publishing:
            GET /_/oidc/audience tells clients). Never "pypi": tokens made for pypi.org must not
            work here.
        ssl_certfile: Serve https with this certificate chain (PEM; uvicorn only). Trusted
            Publishing clients (uv, gh-action-pypi-publish) call https://HOST/_/oidc/... whatever
            the upload URL says: serve TLS here or through a reverse proxy.
        ssl_keyfile: The certificate's private key (PEM), with --ssl_certfile.
        workers: Worker processes serving one port, each on its own core: an upload through one
            is visible through all at once, one of them syncs the indexes, one that dies is
            replaced. Default: the CPUs this process may use, when started with --config (else
            1: a configuration sent to POST /initialize/ would reach one worker only). 1 serves
            from this process.
        retention_interval: Seconds between runs of each repository's retention rules
            (retention_* keys of its config; 0: never). Enable it on one server of those
            sharing a storage.
        metrics: Serve GET /metrics (Prometheus) to anyone who reaches the port: it names every
            repository and shows its traffic, so only behind a network boundary. Off by default.
        metrics_token: Serve GET /metrics only with "Authorization: Bearer <this>" (16+
            characters; default: the PYWHARF_METRICS_TOKEN environment variable). Turns
            /metrics on by itself.
        **waitress_options: Extra keyword options for waitress.serve (with --server waitress).
    """
    from pywharf_core.http.app import create_app
    from pywharf_core.http.limits import TransportLimits
    from pywharf_core.http.public_url import normalize_public_url
    from pywharf_core.http.serve import configure_logging, run

    try:
        limits = TransportLimits(int(max_header_bytes), float(header_timeout), float(stall_timeout),
                                 int(max_connections))
        base_url = normalize_public_url(str(public_url)) if _opt_str(public_url) else None
    except ValueError as exc:
        raise PywharfError(str(exc)) from None

    root_path = Path(str(root)).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    setup = load_setup(
        _opt_str(config), _opt_str(admin_secret), is_text=bool(config_or_admin_secret_can_be_text)
    )
    settings = ServerSettings(
        root=root_path,
        extra_index_url=_opt_str(extra_index_url) or "",
        auth_expiry=AuthExpiry(read=int(auth_read_expires), write=int(auth_write_expires)),
        initialize_token=_opt_str(initialize_token) or None,
        page_max_age=int(page_max_age),
        session_secret=_opt_str(session_secret) or os.environ.get("PYWHARF_SESSION_SECRET") or None,
        auth_failure_limit=int(auth_failure_limit),
        auth_failure_window=int(auth_failure_window),
        initialize_max_failures=int(initialize_max_failures),
        initialize_env_prefix=_opt_str(initialize_env_prefix) or "",
        allowed_endpoints=_csv(allowed_endpoints),
        allowed_storage_paths=tuple(Path(p) for p in _csv(allow_storage_path)),
        oidc_audience=str(oidc_audience),
        retention_interval=int(retention_interval),
        metrics=bool(metrics),
        metrics_token=_opt_str(metrics_token) or os.environ.get("PYWHARF_METRICS_TOKEN") or None,
    )
    tls = (str(ssl_certfile), str(ssl_keyfile)) if _opt_str(ssl_certfile) or _opt_str(ssl_keyfile) else None
    if tls is not None and not (_opt_str(ssl_certfile) and _opt_str(ssl_keyfile)):
        raise PywharfError("--ssl_certfile and --ssl_keyfile go together")
    if tls is not None and server != "uvicorn":
        raise PywharfError("--ssl_certfile needs --server uvicorn (waitress serves plain http: put TLS in front)")
    if settings.session_secret is not None and len(settings.session_secret) < 16:
        raise PywharfError("--session_secret (or PYWHARF_SESSION_SECRET) must be at least 16 characters")
    if waitress_options and server != "waitress":
        raise PywharfError(f"unknown flags for --server {server}: {', '.join(sorted(waitress_options))}")
    workers = _worker_count(workers, configured=config is not None,
                            initialize_token=bool(_opt_str(initialize_token)), process_local=setup.process_local())
    configure_logging(root_path, bool(debug), workers)
    state = ServerState(settings)
    repos = build_repos(setup, settings)
    app = create_app(state, public_url=base_url)
    if access_log:
        from pywharf_core.http.access_log import AccessLogMiddleware

        app = AccessLogMiddleware(app)
    options: dict[str, Any] = {"host": str(host), "port": int(port), "server": str(server), "debug": bool(debug),
                               "waitress_options": waitress_options, "limits": limits, "tls": tls}
    if workers > 1:
        from pywharf_core.http.workers import run_workers

        code = run_workers(workers, app, state, repos, **options)
        if code:
            raise SystemExit(code)
        return
    state.install(repos, configured=config is not None)
    run(app, state, **options)


def _worker_count(given: int | None, *, configured: bool, initialize_token: bool, process_local: list[str]) -> int:
    """``--workers``, or its default: every CPU this process may use where workers can serve."""
    if given is None:
        if not configured or initialize_token or process_local:
            return 1
        from pywharf_core.http.cpu_budget import usable_cpus

        return usable_cpus()
    try:
        count = int(given)
    except (TypeError, ValueError):
        raise PywharfError(f"--workers must be a whole number, got {given!r}") from None
    if count < 1 or count > 256:
        raise PywharfError("--workers must be between 1 and 256")
    if count > 1 and (not configured or initialize_token):
        raise PywharfError("--workers needs --config and no --initialize_token: a configuration sent to "
                           "POST /initialize/ would reach one worker only")
    if count > 1 and process_local:
        raise PywharfError(f"--workers {count}: repository {process_local[0]!r} keeps its store in this process's "
                           "memory, which other worker processes cannot see: use --workers 1")
    return count


def update_index(
    type: str,  # the flag name users know from pywharf 0.2.3
    name: str,
    secret: str | None = None,
    secret_env: str | None = None,
    root: str | None = None,
    **pkg_repo_configs: Any,
) -> None:
    """Rebuild the remote index of a package repository from what its backend holds.

    Args:
        type: Backend type (e.g. file_system).
        name: Package repository name.
        secret: A secret with write permission.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
        root: A server ROOT, for backends whose default storage lives under it (file_system).
        **pkg_repo_configs: Any backend config key, e.g. --storage_path PATH.
    """
    spec = installed_backends().get(str(type))
    if spec is None:
        raise PywharfError(f"unknown backend type {type!r} (known: {', '.join(sorted(installed_backends()))})")
    if secret_env:
        secret = os.environ.get(str(secret_env))
        if not secret:
            raise PywharfError(f"environment variable {secret_env!r} is not set")
    table: dict[str, Any] = {"type": spec.type, **pkg_repo_configs}
    for key in ("read_secret", "write_secret"):
        if key in {f for f in inspect.signature(spec.config_class).parameters} and key not in table:
            table[key] = "unused-by-update-index"  # shared secrets are for clients, not this command
    repo_config = build_config(spec.config_class, str(name), table, ConfigSource("<command line>"))
    context = BackendContext(root=Path(str(root or ".")).resolve(), admin_secret=_opt_str(secret))
    count = rebuild_remote_index(open_backend(spec, repo_config, context))
    print(f"update_index: {name}: wrote an index of {count} files")


def _change_yank(
    action: str,
    project: str,
    file_or_version: str,
    reason: str,
    url: str,
    repo: str,
    secret: str | None,
    secret_env: str | None,
) -> None:
    """POST /yank/ or /unyank/ to a running server: it persists the change through its backend
    (so ``update_index`` keeps it) and serves it at once; other servers see it after a sync."""
    secret = secret_from(secret, secret_env)
    target = f"{str(url).rstrip('/')}/{action}/{quote(str(project))}/{quote(str(file_or_version), safe='')}"
    response = call(action, "POST", target, data={"reason": _opt_str(reason) or ""}, auth=(str(repo), secret))
    for filename in response.text.split():
        print(f"{action}: {filename}")


def yank(
    project: str,
    file_or_version: str,
    reason: str = "",
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Yank (PEP 592) one file or every file of a version: pip skips it unless pinned exactly.

    Args:
        project: Project name.
        file_or_version: A filename, or a version (all its files).
        reason: Shown to users by pip (data-yanked / "yanked_reason").
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
    """
    _change_yank("yank", project, file_or_version, reason, url, repo, secret, secret_env)


def unyank(
    project: str,
    file_or_version: str,
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Undo a yank of one file or of every file of a version.

    Args:
        project: Project name.
        file_or_version: A filename, or a version (all its files).
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
    """
    _change_yank("unyank", project, file_or_version, "", url, repo, secret, secret_env)


def quickstart(root: str = "./pywharf-root", host: str = "127.0.0.1", port: int = 8888,
               proxy: bool | str = False) -> None:
    """Start a server with one file_system repo named "local" under ROOT; print how to use it.

    The secrets are generated once and kept in ROOT/quickstart-config.toml (mode 0600).

    Args:
        root: Path to the root folder (created if missing); the files land in ROOT/cache/local/storage.
        host: The interface to bind to (127.0.0.1: this machine only).
        port: The port to bind to.
        proxy: Also create a proxy "pypi" of PyPI (or of the index URL given: --proxy=URL) and a
            group "all" of local and pypi with the same secrets, and print the group's URL: one
            URL for private and public packages.
    """
    root_path = Path(str(root)).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    config_path = root_path / "quickstart-config.toml"
    if not config_path.exists():
        read, write = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f'[local]\ntype = "file_system"\nread_secret = "{read}"\nwrite_secret = "{write}"\n')
    from pywharf_core.storage.config import read_toml_source

    document, _ = read_toml_source(str(config_path), is_text=False, what="config")
    read, write = document["local"]["read_secret"], document["local"]["write_secret"]
    repo = "local"
    if proxy:
        upstream = proxy if isinstance(proxy, str) and proxy.strip() else "https://pypi.org/simple/"
        if "all" not in document:  # added once (kept with its secrets, like the first table)
            with open(config_path, "a", encoding="utf-8") as handle:
                handle.write(f'\n[pypi]\ntype = "proxy"\nupstream = {_toml_string(upstream)}\nread_secret = "{read}"\n'
                             f'\n[all]\ntype = "group"\nmembers = ["local", "pypi"]\nread_secret = "{read}"\n'
                             f'write_secret = "{write}"\n')
        repo = "all"
    # The repository's own URL (/repos/<repo>/simple/): clients keep credentials per URL, so it
    # combines with other repositories of the server (the shared /simple/ still works).
    url = f"http://{host}:{port}/repos/{repo}/simple/"
    auth_url = f"http://{repo}:{read}@{host}:{port}/repos/{repo}/simple/"
    what = "file_system repo 'local'" + (", proxy 'pypi', group 'all' of both" if repo == "all" else "")
    print(
        f"pywharf quickstart: {what}, files in {root_path}/cache/local/storage\n"
        f"  read secret:  {read}\n  write secret: {write}\n"
        f"  upload:  twine upload --repository-url {url} -u {repo} -p {write} dist/*\n"
        f"  install: pip install --index-url {auth_url} PACKAGE\n"
        f"  uv:      uv pip install --index-url {auth_url} PACKAGE\n",
        flush=True,
    )
    server(str(root_path), config=str(config_path), host=host, port=port)


def _toml_string(value: str) -> str:
    import json

    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _csv(value: Any) -> tuple[str, ...]:
    """A comma-separated flag (fire may already have split ``a,b`` into a tuple)."""
    items = value if isinstance(value, (list, tuple)) else (_opt_str(value) or "").split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _opt_str(value: Any) -> str | None:
    """fire turns ``--flag=`` into True/'' and numeric text into numbers: normalise to str."""
    if value is None or value is True:
        return "" if value is True else None
    return str(value)


class CoreServices:
    """The core's side of ``pywharf_core.storage.services``: what backend commands may use."""

    read_index = staticmethod(read_remote_index)

    @staticmethod
    def empty_index() -> bytes:
        return dump_index([])

    @staticmethod
    def write_static_index(records: Iterable[FileRecord], out: Path, link: StaticLink, title: str) -> list[Path]:
        from pywharf_core.http.static_index import write_static_index

        return write_static_index(records, out, link, title)


provide(CoreServices())


CORE_COMMANDS: Mapping[str, Callable[..., Any]] = {
    "server": server,
    "update_index": update_index,
    "quickstart": quickstart,
    "yank": yank,
    "unyank": unyank,
    "status": status,
    "delete": delete,
    "retention": retention,
    "token": token,
    "audit": audit,
}


def all_commands() -> dict[str, Callable[..., Any]]:
    commands = dict(CORE_COMMANDS)
    for spec in installed_backends().values():
        for command_name, function in spec.commands.items():
            commands[f"{spec.type}.{command_name}"] = function
    return commands


def usage(commands: Mapping[str, Callable[..., Any]]) -> str:
    lines = ["SYNOPSIS", "    pywharf <command> <command_flags>", "", "SUPPORTED COMMANDS"]
    for command_name, function in commands.items():
        summary = (inspect.getdoc(function) or "").splitlines()[0:1]
        lines.append(f"    {command_name:<24} {summary[0] if summary else ''}".rstrip())
    lines += ["", "Run `pywharf <command> --help` for a command's flags."]
    return "\n".join(lines)


ENV_PREFIX = "PYWHARF_COMMAND"


def argv_from_environment(environ: Mapping[str, str]) -> list[str]:
    """Environment mode: PYWHARF_COMMAND=server PYWHARF_COMMAND_ROOT=/r -> [server, /r]."""
    command = environ.get(ENV_PREFIX)
    if not command:
        return []
    function = all_commands().get(command)
    if function is None:
        return [command]
    argv = [command]
    positional_done = False
    params = inspect.signature(function).parameters
    for param in params.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        value = environ.get(f"{ENV_PREFIX}_{param.name.upper()}")
        if value is None:
            positional_done = positional_done or param.default is inspect.Parameter.empty
            continue
        if param.default is inspect.Parameter.empty and not positional_done:
            argv.append(value)
        else:
            argv.append(f"--{param.name}={value}")
    return argv


# fire evaluates arguments as Python literals: the version "1.10" would become the float 1.1.
# These commands take versions and free text, so their arguments are passed as string literals.
VERBATIM_ARGUMENT_COMMANDS = frozenset({"yank", "unyank", "status", "delete", "retention", "token", "audit"})


def _verbatim(arg: str) -> str:
    if arg.startswith("--"):
        flag, sep, value = arg.partition("=")
        return f"{flag}={value!r}" if sep else arg
    return repr(arg)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = argv_from_environment(os.environ)
    commands = all_commands()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(commands))
        return
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"pywharf: unknown command {name!r}\n\n{usage(commands)}", file=sys.stderr)
        raise SystemExit(2)
    if "--help" in rest:
        # fire would treat --help as one of **waitress_options (and complain ROOT is missing).
        function = commands[name]
        print(fire.helptext.HelpText(function, trace=fire.trace.FireTrace(function, name=f"pywharf {name}")))
        return
    if name in VERBATIM_ARGUMENT_COMMANDS:
        rest = [_verbatim(arg) for arg in rest]
    try:
        fire.Fire(commands[name], command=rest, name=f"pywharf {name}")
    except PywharfError as exc:
        print(f"pywharf {name}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
