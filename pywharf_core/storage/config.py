"""Package repository config and admin secrets: TOML in, validated dataclasses out.

Each backend declares its config as a frozen dataclass subclassing :class:`PkgRepoConfig`. The
loader here validates any such dataclass generically from its fields and type hints, so every
backend gets the same error messages: they name the file, the table and the key, and nothing
half-configured is ever returned.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pywharf_core.model.api_tokens import parse_token
from pywharf_core.model.errors import ConfigError, InvalidName
from pywharf_core.model.names import validate_repo_name
from pywharf_core.storage.config_limits import FULL_POWER, ConfigLimits
from pywharf_core.storage.trusted_publishers import (
    GITHUB_ACTIONS_ISSUER,
    MAX_TRUSTED_PUBLISHERS,
    TrustedPublisher,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if typing.TYPE_CHECKING:
    from pywharf_core.storage.registry import BackendSpec


@dataclass(frozen=True, kw_only=True)
class PkgRepoConfig:
    """Settings every package repository has, whatever its backend."""

    # True for kinds of repository nothing is ever uploaded to (proxies): the core never grants
    # them WRITE, whatever a secret or token says.
    read_only: ClassVar[bool] = False

    name: str
    type: str  # the backend, by the name it registers (e.g. "file_system")
    max_file_bytes: int  # largest accepted upload, enforced while streaming (413)
    sync_index_interval: int = 60  # seconds between syncs of the local index from the remote one
    # CI workflows that may trade an OIDC token for an upload token: [[name.trusted_publishers]] tables with
    # repository, workflow (required), issuer, environment, repository_owner_id, projects (see TrustedPublisher)
    trusted_publishers: tuple[TrustedPublisher, ...] = ()
    # A deleted filename may be uploaded again with different bytes (pypi.org never allows it:
    # an installer that cached or pinned the old file's hash would get other code under its name).
    allow_reupload_of_deleted: bool = False
    # Retention (pywharf retention; applied by a server started with --retention_interval): keep
    # the newest N pre-/dev-release versions of each project, delete the files of older ones
    retention_keep_prereleases: int | None = None
    # Retention: delete files uploaded more than this many days ago whose version matches
    # retention_version_pattern
    retention_max_age_days: int | None = None
    # Retention: a regular expression a whole version must match for retention_max_age_days
    # (e.g. ".*\\.dev\\d+" for dev releases, ".*" for every version)
    retention_version_pattern: str = ""

    def check(self) -> list[tuple[str, str]]:
        """Backend-specific semantic checks: a list of (key, problem); empty when valid."""
        problems = []
        if self.max_file_bytes <= 0:
            problems.append(("max_file_bytes", "must be a positive integer"))
        if self.sync_index_interval <= 0:
            problems.append(("sync_index_interval", "must be a positive integer"))
        problems.extend(self._retention_problems())
        if len(self.trusted_publishers) > MAX_TRUSTED_PUBLISHERS:
            problems.append(("trusted_publishers", f"at most {MAX_TRUSTED_PUBLISHERS} publishers per repository, "
                                                   f"got {len(self.trusted_publishers)}"))
        seen: dict[tuple[str, str, str, str], int] = {}
        for index, publisher in enumerate(self.trusted_publishers):
            # Two entries that match the same tokens make the choice between them arbitrary.
            identity = (publisher.issuer, publisher.repository.lower(), publisher.workflow,
                        publisher.environment.lower())
            if identity in seen:
                problems.append((f"trusted_publishers[{index}]", f"same issuer, repository, workflow and environment "
                                                                 f"as trusted_publishers[{seen[identity]}]"))
            seen.setdefault(identity, index)
        return problems

    def relocated(self, folder: str) -> PkgRepoConfig | None:
        """These settings pointed at ``folder`` (a relative key path like ``.pywharf/proxy/pypi``)
        inside this repository's store, or None when the backend cannot nest a store.

        A proxy's cache (``storage = "<repo>"``) is kept this way: an instance of the lending
        repository's own backend, with its settings (bucket, credentials, folder), whose files
        sit under a companion folder the lending repository's index never lists.
        """
        return None

    def _retention_problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.retention_keep_prereleases is not None and self.retention_keep_prereleases < 0:
            problems.append(("retention_keep_prereleases", "must be 0 or more"))
        if self.retention_max_age_days is not None and self.retention_max_age_days < 1:
            problems.append(("retention_max_age_days", "must be a positive integer"))
        pattern = self.retention_version_pattern
        if (self.retention_max_age_days is None) != (not pattern):
            problems.append(("retention_version_pattern", "goes with retention_max_age_days (both or neither; "
                                                          "'.*' matches every version)"))
        elif len(pattern) > MAX_RETENTION_PATTERN_CHARS:
            problems.append(("retention_version_pattern", f"at most {MAX_RETENTION_PATTERN_CHARS} characters"))
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(("retention_version_pattern", f"not a regular expression: {exc}"))
        return problems


MAX_RETENTION_PATTERN_CHARS = 200

# Shortest shared secret accepted (``min_secret_chars`` per repository changes it). Secrets are
# tried over the network, 10 failures a minute per address and name (secret_check): 12 random
# characters are far beyond reach, while a word or a one-letter test secret is not.
MIN_SECRET_CHARS = 12


@dataclass(frozen=True, kw_only=True)
class SharedSecretConfig(PkgRepoConfig):
    """A repository whose clients authenticate with one of two configured secrets (the core
    compares them, in constant time); for stores that keep no user accounts of their own."""

    read_secret: str = dataclasses.field(repr=False)  # clients with it may read (install)
    write_secret: str = dataclasses.field(repr=False)  # clients with it may read and upload
    min_secret_chars: int = MIN_SECRET_CHARS  # shortest read_secret / write_secret accepted

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.min_secret_chars < 1:
            problems.append(("min_secret_chars", "must be a positive integer"))
        for key in ("read_secret", "write_secret"):
            problem = secret_problem(getattr(self, key), self.min_secret_chars)
            if problem:
                problems.append((key, problem))
        return problems


def secret_problem(value: str, min_chars: int) -> str | None:
    """Why ``value`` may not be a shared secret (None: it may). One rule set for every kind of
    repository that takes shared secrets (hosted stores, proxies), so they cannot drift apart."""
    if not value:
        return "must not be empty"
    if not value.strip():
        return "must not be only whitespace"
    if parse_token(value) is not None:
        return ("has the form of a pywharf API token (pywharf-<repo>-<id>-<secret>), which is "
                "only ever checked as a token: choose another secret")
    if len(value) < min_chars:
        # The message never shows the secret, only its length.
        return (f"is {len(value)} characters: at least {min_chars} are required "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return None


# Keys set by the loader, never read from a table.
_IMPLICIT_KEYS = frozenset({"name"})


@dataclass(frozen=True)
class ConfigSource:
    """Where a TOML document came from, for error messages."""

    label: str  # a file path, or "<config text>" when passed inline

    def error(self, message: str, table: str | None = None, key: str | None = None) -> ConfigError:
        where = self.label
        if table is not None:
            # Quote names that are not bare TOML keys, so the message stays one readable line.
            bare = re.fullmatch(r"[A-Za-z0-9_-]+", table) is not None
            where += f": [{table}]" if bare else f": [{json.dumps(table)}]"
        if key is not None:
            where += f" key {key!r}"
        return ConfigError(f"{where}: {message}")


def read_toml_source(value: str, *, is_text: bool, what: str) -> tuple[dict[str, Any], ConfigSource]:
    """Parse ``value`` as a TOML file path, or as TOML text when ``is_text``."""
    if is_text:
        source = ConfigSource(f"<{what} text>")
        text = value
    else:
        source = ConfigSource(str(value))
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise source.error(f"cannot read {what} file: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise source.error(f"{what} file is not UTF-8 text") from exc
    return parse_toml(text, source), source


# No valid config or admin secret nests deeper than a table of tables of values; deeper
# documents are refused before anything walks them (repr, type checks) and hits the recursion limit.
MAX_TOML_DEPTH = 32


def parse_toml(text: str, source: ConfigSource) -> dict[str, Any]:
    """Parse TOML; a deeply nested document is a ConfigError, never a RecursionError (tomllib
    recurses once per ``[`` / ``{``, so ``a = [[[[...`` exhausts the stack)."""
    too_deep = f"invalid TOML: arrays or tables nested too deeply (at most {MAX_TOML_DEPTH} levels)"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise source.error(f"invalid TOML: {exc}") from exc
    except RecursionError:
        raise source.error(too_deep) from None
    if _depth(document) > MAX_TOML_DEPTH:
        raise source.error(too_deep)
    return document


def _depth(value: Any) -> int:
    """Nesting depth of parsed TOML, iteratively (the point is to not recurse); stops early."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_TOML_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "bool": "a boolean", "float": "a number"}.get(
            tp.__name__, tp.__name__
        )
    return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


# Longest array a config value may be (each entry is validated, and some are walked per request).
MAX_CONFIG_ARRAY = 1000


def _item_type(tp: Any) -> Any | None:
    """``X`` for a ``tuple[X, ...]`` field (a TOML array, loaded as a tuple), else None."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _load_value(value: Any, tp: Any, source: ConfigSource, table: str, key: str) -> Any:
    """Check ``value`` against the field type ``tp``; arrays become tuples, tables of a
    dataclass type become that dataclass (validated like a repository table, so errors name
    the entry: ``key 'trusted_publishers[1].workflow'``)."""
    item_type = _item_type(tp)
    if item_type is None:
        if not _matches(value, tp):
            raise source.error(f"must be {_type_name(tp)}, got {type(value).__name__}", table, key)
        return value
    is_table = dataclasses.is_dataclass(item_type)
    if not isinstance(value, list):
        what = f"an array of tables ([[{table}.{key}]])" if is_table else f"an array, each {_type_name(item_type)}"
        raise source.error(f"must be {what}, got {type(value).__name__}", table, key)
    if len(value) > MAX_CONFIG_ARRAY:
        raise source.error(f"at most {MAX_CONFIG_ARRAY} entries, got {len(value)}", table, key)
    items = []
    for index, item in enumerate(value):
        item_key = f"{key}[{index}]"
        if not is_table:
            items.append(_load_value(item, item_type, source, table, item_key))
            continue
        if not isinstance(item, dict):
            raise source.error(f"must be a table, got {type(item).__name__}", table, item_key)
        assert isinstance(item_type, type)
        fields = {f.name: f for f in dataclasses.fields(item_type)}
        entry = item_type(**_load_fields(item_type, fields, item, source, table, f"{item_key}."))
        for entry_key, problem in entry.check():
            raise source.error(problem, table, f"{item_key}.{entry_key}")
        items.append(entry)
    return tuple(items)


def _load_fields(
    cls: type,
    fields: Mapping[str, dataclasses.Field[Any]],
    data: Mapping[str, Any],
    source: ConfigSource,
    table: str,
    prefix: str,
) -> dict[str, Any]:
    """The constructor arguments for ``cls`` from ``data``: unknown and missing keys and wrong
    types are errors naming ``prefix + key``; absent optional keys are left to the defaults."""
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise source.error(f"unknown key (allowed: {allowed})", table, prefix + key)
    kwargs: dict[str, Any] = {}
    for key, field in fields.items():
        if key not in data:
            no_default = (
                field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise source.error("missing required key", table, prefix + key)
            continue
        kwargs[key] = _load_value(data[key], hints[key], source, table, prefix + key)
    return kwargs


def build_config(
    config_class: type[PkgRepoConfig],
    name: str,
    table: Mapping[str, Any],
    source: ConfigSource,
    limits: ConfigLimits = FULL_POWER,
) -> PkgRepoConfig:
    """Validate one ``[name]`` table against ``config_class`` and build it.

    ``limits`` restrict the class's ``endpoint_keys`` and ``path_keys`` (configs from HTTP);
    a confined path is replaced by its resolved form, so what was checked is what is used.
    """
    try:
        validate_repo_name(name)
    except InvalidName as exc:
        raise source.error(str(exc), name) from exc
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.name not in _IMPLICIT_KEYS}
    kwargs: dict[str, Any] = {"name": name, **_load_fields(config_class, fields, table, source, name, "")}
    _apply_limits(config_class, fields, kwargs, limits, name, source)
    config = config_class(**kwargs)
    for key, problem in config.check():
        raise source.error(problem, name, key)
    return config


def _apply_limits(
    config_class: type[PkgRepoConfig],
    fields: Mapping[str, dataclasses.Field[Any]],
    kwargs: dict[str, Any],
    limits: ConfigLimits,
    name: str,
    source: ConfigSource,
) -> None:
    for key in getattr(config_class, "endpoint_keys", ()):
        value = kwargs.get(key)
        # Unset, or the backend's own default (GitHub's public API): nothing the sender chose.
        if value is None or value == fields[key].default:
            continue
        problem = limits.endpoint_problem(value)
        if problem:
            raise source.error(problem, name, key)
    for index, publisher in enumerate(kwargs.get("trusted_publishers", ())):
        # Tokens are checked with keys fetched from the issuer: an HTTP config naming one makes the
        # server fetch from it, so it is an endpoint like the backends' (GitHub's own is the default).
        if publisher.issuer != GITHUB_ACTIONS_ISSUER:
            problem = limits.endpoint_problem(publisher.issuer)
            if problem:
                raise source.error(problem, name, f"trusted_publishers[{index}].issuer")
    for key in getattr(config_class, "path_keys", ()):
        value = kwargs.get(key)
        if not value:
            continue
        kwargs[key], problem = limits.confine_path(value)
        if problem:
            raise source.error(problem, name, key)


def load_repo_configs(
    document: Mapping[str, Any],
    source: ConfigSource,
    backends: Mapping[str, BackendSpec],
    limits: ConfigLimits = FULL_POWER,
) -> dict[str, PkgRepoConfig]:
    """Validate a whole config document: one table per package repository."""
    configs: dict[str, PkgRepoConfig] = {}
    for name, table in document.items():
        try:
            validate_repo_name(name)
        except InvalidName as exc:
            raise source.error(str(exc), name) from exc
        if not isinstance(table, dict):
            raise source.error("must be a table ([name] section)", name)
        backend_type = table.get("type")
        if backend_type is None:
            raise source.error("missing required key", name, "type")
        if not isinstance(backend_type, str):
            raise source.error(f"must be a string, got {type(backend_type).__name__}", name, "type")
        if backend_type not in backends:
            known = ", ".join(sorted(backends)) or "none installed"
            raise source.error(f"unknown backend type {backend_type!r} (known: {known})", name, "type")
        configs[name] = build_config(backends[backend_type].config_class, name, table, source, limits)
    return configs


def load_admin_secrets(
    document: Mapping[str, Any],
    source: ConfigSource,
    configs: Mapping[str, PkgRepoConfig],
    environ: Mapping[str, str] = os.environ,
    limits: ConfigLimits = FULL_POWER,
) -> dict[str, str]:
    """Validate the admin-secret document and resolve each secret (``raw`` or ``env``).

    ``limits.env_prefix`` restricts which variables ``env`` may name (configs from HTTP)."""
    secrets: dict[str, str] = {}
    for name, table in document.items():
        if not isinstance(table, dict):
            raise source.error("must be a table ([name] section)", name)
        if name not in configs:
            raise source.error("no package repository of this name in the config", name)
        # A backend may take a several-part admin secret as named keys (s3: an access key pair).
        own_keys: tuple[str, ...] = getattr(type(configs[name]), "admin_secret_keys", ())
        allowed = sorted({"type", "raw", "env", *own_keys})
        for key in table:
            if key not in allowed:
                raise source.error(f"unknown key (allowed: {', '.join(allowed)})", name, key)
        if "type" not in table:
            raise source.error("missing required key", name, "type")
        if not isinstance(table["type"], str) or table["type"] != configs[name].type:
            raise source.error(
                f"type {table['type']!r} does not match the config's {configs[name].type!r}", name, "type"
            )
        if own_keys and any(k in table for k in own_keys):
            for k in own_keys:
                if not isinstance(table.get(k), str) or not table[k]:
                    raise source.error("must be a non-empty string", name, k)
            if "raw" in table or "env" in table:
                raise source.error(f"give either 'raw'/'env' or {', '.join(own_keys)}, not both", name, "raw")
            secrets[name] = json.dumps({k: table[k] for k in own_keys})  # the backend decodes it
            continue
        if ("raw" in table) == ("env" in table):
            raise source.error("exactly one of 'raw' or 'env' must be given", name, "raw")
        key = "raw" if "raw" in table else "env"
        if not isinstance(table[key], str) or not table[key]:
            raise source.error("must be a non-empty string", name, key)
        if key == "raw":
            secrets[name] = table["raw"]
        else:
            problem = limits.env_problem(table["env"])
            if problem:
                raise source.error(problem, name, "env")
            value = environ.get(table["env"])
            if not value:
                raise source.error(f"environment variable {table['env']!r} is not set", name, "env")
            secrets[name] = value
    return secrets
