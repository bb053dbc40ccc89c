"""Backend discovery through the ``pywharf.backends`` entry-point group.

A third-party distribution adds a backend by declaring, in its ``pyproject.toml``::

    [project.entry-points."pywharf.backends"]
    my_store = "my_package.backend:BACKEND"

where ``BACKEND`` is a :class:`BackendSpec`. Its ``commands`` appear in the CLI as
``pywharf my_store.<command>``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from pywharf_core.storage.api import Storage
from pywharf_core.storage.backend import Backend
from pywharf_core.storage.config import PkgRepoConfig

ENTRY_POINT_GROUP = "pywharf.backends"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """What a backend registers: its type name, config schema, implementation and commands."""

    type: str
    config_class: type[PkgRepoConfig]
    # A storage adapter (what new backends implement; the core wraps it in its PackageStore), or
    # a class implementing the whole Backend interface itself.
    backend_class: type[Storage] | type[Backend]
    commands: Mapping[str, Callable[..., object]] = field(default_factory=dict)
    # Whether index sync needs an admin secret (e.g. a GitHub token); file_system does not.
    admin_secret_required: bool = False
    # Whether the store lives in the server process's own memory (``memory``): another process
    # (a second worker of ``--workers N``, an ``update_index`` run) cannot see what it holds.
    process_local: bool = False


@functools.cache
def installed_backends() -> Mapping[str, BackendSpec]:
    """All backends installed in this environment, keyed by type name."""
    specs: dict[str, BackendSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plugin must not take the server down
            log.error("cannot load backend %r from %s: %s", ep.name, ep.value, exc)
            continue
        if not isinstance(spec, BackendSpec) or spec.type != ep.name:
            log.error("entry point %r (%s) is not a BackendSpec named %r", ep.name, ep.value, ep.name)
            continue
        specs[spec.type] = spec
    return specs
