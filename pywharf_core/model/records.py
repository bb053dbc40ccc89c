"""One record per stored distribution file, and the metadata fields it carries.

Records are immutable; equal metadata values are shared between records so that a big index
stays small in memory.
"""


from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from pywharf_core.model.errors import InvalidDigest, InvalidName
from pywharf_core.model.names import DIST_SUFFIXES, check_safe_filename, parse_dist_filename

# Form fields of the legacy upload API that may repeat (PEP 345/566 multiple-use fields).
MULTI_VALUED_FIELDS = frozenset(
    {
        "classifiers",
        "requires_dist",
        "provides_dist",
        "obsoletes_dist",
        "requires_external",
        "project_urls",
        "platform",
        "supported_platform",
        "provides_extra",
        "dynamic",
        "license_file",  # what twine sends for License-File
        "license_files",  # what parsing METADATA names it (pywharf_core.model.metadata)
    }
)
# The upload contract: the core-metadata form fields of the legacy upload API, as Warehouse's
# ``forklift/legacy.py`` accepts them. Only these are taken from an upload's form and kept;
# everything else a client sends is ignored, so a form can never set what the server decides
# (``yanked``, ``sha256``, ``size``, ``upload_time``, ``metadata_sha256``...) or grow the index.
UPLOAD_METADATA_FIELDS = frozenset(
    {
        "metadata_version", "name", "version", "summary", "description", "description_content_type",
        "author", "author_email", "maintainer", "maintainer_email", "license", "license_expression",
        "license_file", "keywords", "classifiers", "platform", "supported_platform", "home_page",
        "download_url", "requires_python", "requires_dist", "provides_dist", "obsoletes_dist",
        "requires_external", "project_urls", "provides_extra", "dynamic", "pyversion", "filetype",
        "comment",
    }
)
# Digests the server computes from the received bytes and keeps in a record's metadata.
SERVER_DIGEST_FIELDS = frozenset({"md5_digest", "blake2_256_digest"})
# What a record's metadata may hold when rebuilt from a sidecar: the upload contract, the
# server's digests, and ``license_files`` (the name METADATA parsing gives License-File).
STORED_METADATA_FIELDS = UPLOAD_METADATA_FIELDS | SERVER_DIGEST_FIELDS | {"license_files"}
# Fields that describe the transfer, not the distribution: never stored.
TRANSPORT_FIELDS = frozenset({":action", "protocol_version", "content", "gpg_signature", "attestations"})
# Fields kept beside the file instead of in the index, because of their size.
SIDECAR_ONLY_FIELDS = frozenset({"description"})


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a sha256 as the index stores it: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``, the form PEP 700 ``upload-time`` uses."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Everything the index knows about one stored distribution file."""

    filename: str
    distrib: str
    version: str
    sha256: str
    size: int
    upload_time: str
    requires_python: str = ""
    meta: Mapping[str, str | tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # sha256 of the PEP 658 metadata file stored beside the distribution; "" when there is none.
    metadata_sha256: str = ""
    # PEP 592: yanked files stay installable by exact pin but are skipped by resolvers.
    yanked: bool = False
    yanked_reason: str = ""

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.sha256) or (self.metadata_sha256 and not is_sha256_hex(self.metadata_sha256)):
            raise InvalidDigest(f"index entry {self.filename!r} has a malformed sha256")

    def state_key(self) -> tuple[str, str, bool, str]:
        """What a remote index must agree on before a local journal entry can be dropped."""
        return (self.sha256, self.metadata_sha256, self.yanked, self.yanked_reason)

    def to_toml_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {
            "distrib": self.distrib,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "upload_time": self.upload_time,
            "requires_python": self.requires_python,
        }
        if self.metadata_sha256:
            table["metadata_sha256"] = self.metadata_sha256
        if self.yanked:
            table["yanked"] = True
            table["yanked_reason"] = self.yanked_reason
        meta = {k: list(v) if isinstance(v, tuple) else v for k, v in self.meta.items()}
        if meta:
            table["meta"] = meta
        return table

    @classmethod
    def from_toml_table(cls, filename: str, table: Mapping[str, Any]) -> FileRecord:
        check_safe_filename(filename)
        if not filename.endswith(DIST_SUFFIXES):
            raise InvalidName(f"Invalid distribution filename {filename!r}")
        distrib, version = table.get("distrib"), table.get("version")
        if not distrib or not version:  # parse only when needed: it dominates load time
            parsed = parse_dist_filename(filename)
            distrib, version = distrib or parsed.project, version or str(parsed.version)
        meta = table.get("meta", {})
        if not isinstance(meta, dict):
            raise TypeError("'meta' must be a table")
        meta = freeze_meta(meta)
        return cls(
            filename=filename,
            distrib=str(distrib),
            version=str(version),
            sha256=str(table["sha256"]).lower(),
            size=int(table.get("size", 0)),
            upload_time=str(table.get("upload_time", "")),
            requires_python=_shared_str(str(table.get("requires_python", ""))),
            meta=meta,
            metadata_sha256=str(table.get("metadata_sha256", "")),
            yanked=bool(table.get("yanked", False)),
            yanked_reason=str(table.get("yanked_reason", "")),
        )


# Most metadata values repeat across files (classifiers, requires_dist, filetype, pyversion,
# Requires-Python): sharing one object per distinct value keeps a 50,000-file index at a
# fraction of the memory a parser's fresh copies take (benchmarks/README.md, "Memory").
_SHARE_MAX_LEN = 256


def _shared_str(value: str) -> str:
    return sys.intern(value) if len(value) <= _SHARE_MAX_LEN else value


@functools.lru_cache(maxsize=1 << 16)
def _shared_tuple(values: tuple[str, ...]) -> tuple[str, ...]:
    return values


def freeze_meta(fields: Mapping[str, Any]) -> Mapping[str, str | tuple[str, ...]]:
    """Metadata as an immutable mapping: multi-valued fields become tuples, others strings.

    Equal values are shared between records (see ``_shared_str``)."""
    frozen: dict[str, str | tuple[str, ...]] = {}
    for key, value in fields.items():
        if key in TRANSPORT_FIELDS or key in SIDECAR_ONLY_FIELDS:
            continue
        key = _shared_str(key)
        if isinstance(value, (list, tuple)):
            values = _shared_tuple(tuple(_shared_str(str(v)) for v in value))
            frozen[key] = values if key in MULTI_VALUED_FIELDS or len(values) != 1 else values[0]
        elif key in MULTI_VALUED_FIELDS:
            frozen[key] = _shared_tuple((_shared_str(str(value)),)) if value != "" else ()
        else:
            frozen[key] = _shared_str(str(value))
    return MappingProxyType(frozen)


