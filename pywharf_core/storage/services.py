"""What the core lends to backend commands (``pywharf <type>.<command>``).

Backends import only the storage API and the model (the import contract in ``pyproject.toml``),
yet a command such as ``github.gen_gh_pages`` needs the core's reading of the remote index and
its page rendering. The core registers these services when its command line loads
(``pywharf_core.cli``) and a command asks for them here, so the dependency keeps pointing from
the core to the backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from pywharf_core.model.errors import PywharfError
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.api import Storage

# A file's link in a static index: (href, whether its PEP 658 file is at href + ".metadata"),
# or None to leave the file out. Called with the project's folder, where a copy may be put.
StaticLink = Callable[[FileRecord, Path], "tuple[str, bool] | None"]


class CoreServices(Protocol):
    def read_index(self, storage: Storage) -> list[FileRecord]:
        """The files the remote index of ``storage`` lists (base + index log), as servers serve them."""

    def empty_index(self) -> bytes:
        """The remote index document of a repository without files."""

    def write_static_index(self, records: Iterable[FileRecord], out: Path, link: StaticLink, title: str) -> list[Path]:
        """A static PEP 503 + PEP 691 tree in ``out`` (replaced); returns the pages written."""


_provided: CoreServices | None = None


def provide(services: CoreServices) -> None:
    global _provided
    _provided = services


def core_services() -> CoreServices:
    if _provided is None:
        raise PywharfError("the pywharf core services are not loaded (run backend commands through `pywharf`)")
    return _provided
