"""What a config that arrived over HTTP may make the server do, unlike the admin's own file.

Why: whoever POSTs ``/initialize/`` (anyone, on a server started without ``--config``) writes a
config the server then acts on with its own privileges: its environment, its network position,
its file system. A config given on the command line is the admin's and keeps full power
(:data:`FULL_POWER`); one that came over HTTP is limited to

- environment variables under a prefix (``env = "..."`` of admin secrets), so it cannot read,
  say, ``AWS_SECRET_ACCESS_KEY`` or the initialize token and send it to a host of its choosing;
- backend endpoints (GitHub's API root, an S3 endpoint) that are the backend's default or that
  the admin listed, so the server's credentials (the admin token, the AWS chain's role) only
  ever go to hosts the admin chose;
- storage folders under ROOT (or folders the admin listed), checked after resolving symlinks
  and ``..``, so it cannot make every dist-shaped file of some other folder downloadable.

Config classes name the keys these rules apply to (``endpoint_keys``, ``path_keys``), so the
core checks every backend the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# Variables an HTTP config may read: pywharf's own namespace, which an admin fills on purpose
# (the examples use PYWHARF_GITHUB_TOKEN); a machine's other variables (cloud keys) stay out.
DEFAULT_HTTP_ENV_PREFIX = "PYWHARF_"
# pywharf's own settings live under that prefix too; an HTTP config never reads them (the
# initialize token in environment mode, the session key).
RESERVED_ENV_PREFIXES = ("PYWHARF_COMMAND", "PYWHARF_SESSION_SECRET")

_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_endpoint(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path without trailing '/') of a plain http(s) URL, else None.

    URLs with credentials, a query or a fragment are not endpoints (and could hide the host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.password is not None or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/")


def endpoint_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """True when ``url`` is one of ``allowed`` (same scheme, host and port) or below its path."""
    target = parse_endpoint(url)
    if target is None:
        return False
    for entry in allowed:
        base = parse_endpoint(entry)
        if base is None or target[:3] != base[:3]:
            continue
        if target[3] == base[3] or target[3].startswith(base[3] + "/"):
            return True
    return False


@dataclass(frozen=True)
class ConfigLimits:
    """Limits on one config document; the defaults allow everything (the admin's own file)."""

    # "" : any variable; else names must start with it (and not with a reserved prefix).
    env_prefix: str = ""
    # None: any endpoint; else the backend's default or one of these.
    endpoints: tuple[str, ...] | None = None
    # None: storage anywhere; else under ROOT or one of these, after resolving symlinks.
    storage_roots: tuple[Path, ...] | None = None
    # What relative storage paths are relative to (ROOT) when storage is confined.
    root: Path | None = None

    def env_problem(self, name: str) -> str | None:
        """Why an admin secret may not be read from variable ``name`` (None: it may)."""
        if not self.env_prefix:
            return None
        if not name.startswith(self.env_prefix) or name.startswith(RESERVED_ENV_PREFIXES):
            return (f"a config sent over HTTP may only read environment variables named "
                    f"{self.env_prefix}* (not {', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)}); "
                    f"see the server's --initialize_env_prefix")
        return None

    def endpoint_problem(self, url: str) -> str | None:
        """Why ``url`` may not be a backend endpoint (None: it may)."""
        if self.endpoints is None or endpoint_allowed(url, self.endpoints):
            return None
        allowed = ", ".join(self.endpoints) or "none"
        return (f"a config sent over HTTP may only use the backend's default endpoint or one the server "
                f"allows with --allowed_endpoints (allowed: {allowed})")

    def confine_path(self, value: str) -> tuple[str, str | None]:
        """(the resolved path, why it is refused or None). Relative paths are relative to ROOT."""
        if self.storage_roots is None:
            return value, None
        path = Path(value)
        if not path.is_absolute():
            if self.root is None:
                return value, "must be an absolute path"
            path = self.root / path
        resolved = path.resolve()
        for allowed in self.storage_roots:
            base = allowed.resolve()
            if resolved == base or resolved.is_relative_to(base):
                return str(resolved), None
        roots = ", ".join(str(r) for r in self.storage_roots)
        return str(resolved), (f"a config sent over HTTP may only store files under {roots} "
                               f"(resolved: {resolved}); see the server's --allow_storage_path")


# The admin's own config (command line): every variable, endpoint and folder.
FULL_POWER = ConfigLimits()
