"""Simple-repository pages: PEP 503 HTML and PEP 691 JSON (API version 1.1, PEP 700), with
PEP 658/714 metadata, PEP 592 yank and Requires-Python, and PEP 792 project status markers
(API version 1.4 on the page of a project that has one). Pure functions of records; the caller
caches the result per index snapshot (:class:`RenderedPage`), so a request costs a lookup.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from pywharf_core.http.negotiation import JSON_V1
from pywharf_core.model.lifecycle import ACTIVE, ProjectStatus
from pywharf_core.model.records import FileRecord

API_VERSION = "1.1"
STATUS_API_VERSION = "1.4"  # PEP 792: a page carrying a project status says 1.4
GZIP_MIN_BYTES = 1024

_HEAD = (
    "<!DOCTYPE html>\n<html>\n<head>\n"
    '<meta name="pypi:repository-version" content="{version}">\n{status}'
    "<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
)


def _marked(status: ProjectStatus | None) -> ProjectStatus | None:
    """The status a page shows: none for active (PEP 792 lets an index omit it)."""
    return status if status is not None and status.status != ACTIVE else None


def _head(title: str, status: ProjectStatus | None = None) -> str:
    status = _marked(status)
    if status is None:
        return _HEAD.format(version=API_VERSION, status="", title=title)
    tags = f'<meta name="pypi:project-status" content="{escape(status.status, quote=True)}">\n'
    if status.reason:
        tags += f'<meta name="pypi:project-status-reason" content="{escape(status.reason, quote=True)}">\n'
    return _HEAD.format(version=STATUS_API_VERSION, status=tags, title=title)
_TAIL = "</body>\n</html>\n"


@dataclass
class RenderedPage:
    """A rendered body with its strong ETag; the gzip variant is made on first demand."""

    body: bytes
    etag: str = ""
    _gzipped: bytes | None = field(default=None, repr=False)
    # (content type, gzip, max-age) -> (body, raw response headers), filled by the app.
    variants: dict[tuple[str, bool, int], tuple[bytes, list[tuple[bytes, bytes]]]] = field(
        default_factory=dict, repr=False
    )
    # The same variants as (body, HTTP/1.1 header lines): the fast lane's, filled on first use.
    wire: dict[tuple[str, bool, int], tuple[bytes, bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:40] + '"'

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzipped


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def sorted_versions(records: Iterable[FileRecord]) -> list[str]:
    return sorted({r.version for r in records}, key=_version_key)


# -- HTML -------------------------------------------------------------------------------------


def render_links_html(title: str, links: Iterable[tuple[str, str]]) -> bytes:
    """A page of ``(href, text)`` links (``href`` already quoted, both escaped here)."""
    parts = [_head(escape(title))]
    parts.extend(f'<a href="{escape(href, quote=True)}">{escape(text)}</a><br>\n' for href, text in links)
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


def render_root_html(project_names: Iterable[str]) -> bytes:
    return render_links_html("Simple index", ((f"{quote(n)}/", n) for n in project_names))


def _file_anchor(record: FileRecord, url: str | None = None) -> str:
    attrs = []
    if record.requires_python:
        attrs.append(f' data-requires-python="{escape(record.requires_python, quote=True)}"')
    if record.metadata_sha256:
        digest = f"sha256={escape(record.metadata_sha256, quote=True)}"
        attrs.append(f' data-core-metadata="{digest}" data-dist-info-metadata="{digest}"')
    if record.yanked:
        attrs.append(f' data-yanked="{escape(record.yanked_reason, quote=True)}"')
    base = quote(record.filename) if url is None else escape(url, quote=True)
    href = f"{base}#sha256={escape(record.sha256, quote=True)}"
    return f'<a href="{href}"{"".join(attrs)}>{escape(record.filename)}</a><br>\n'


def render_project_html(project: str, records: Sequence[FileRecord], urls: Mapping[str, str] | None = None,
                        status: ProjectStatus | None = None) -> bytes:
    """The project page; ``urls`` (filename -> URL) replaces the default relative links (static indexes)."""
    parts = [_head(f"Links for {escape(project)}", status)]
    parts.extend(_file_anchor(r, urls.get(r.filename) if urls else None) for r in records)
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


# -- JSON (PEP 691 / PEP 700) -----------------------------------------------------------------


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def render_root_json(project_names: Iterable[str]) -> bytes:
    return _dumps({"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in project_names]})


def file_json(record: FileRecord, url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": record.filename,
        "url": quote(record.filename) if url is None else url,
        "hashes": {"sha256": record.sha256},
        "requires-python": record.requires_python or None,
        "yanked": (record.yanked_reason or True) if record.yanked else False,
        "core-metadata": {"sha256": record.metadata_sha256} if record.metadata_sha256 else False,
        "dist-info-metadata": {"sha256": record.metadata_sha256} if record.metadata_sha256 else False,
        "gpg-sig": False,
    }
    if record.size:  # 0: unknown (a proxied file an HTML-only upstream listed, not fetched yet)
        entry["size"] = record.size
    if record.upload_time:
        entry["upload-time"] = record.upload_time
    return entry


def render_project_json(project: str, records: Sequence[FileRecord], urls: Mapping[str, str] | None = None,
                        status: ProjectStatus | None = None) -> bytes:
    # PEP 700 (1.1) makes "size" mandatory: a page with a file of unknown size (a proxy of an
    # HTML-only upstream) says 1.0 rather than claim a size of 0.
    version = API_VERSION if all(r.size for r in records) else "1.0"
    document: dict[str, Any] = {
        "meta": {"api-version": version},
        "name": project,
        "versions": sorted_versions(records),
        "files": [file_json(r, urls.get(r.filename) if urls else None) for r in records],
    }
    marked = _marked(status)
    if marked is not None:  # only hosted projects have one, and their sizes are known
        document["meta"]["api-version"] = STATUS_API_VERSION
        document["project-status"] = {"status": marked.status, **({"reason": marked.reason} if marked.reason else {})}
    return _dumps(document)


def render_root(project_names: Sequence[str], content_type: str) -> RenderedPage:
    if content_type == JSON_V1:
        return RenderedPage(render_root_json(project_names))
    return RenderedPage(render_root_html(project_names))


def render_project(project: str, records: Sequence[FileRecord], content_type: str,
                   status: ProjectStatus | None = None) -> RenderedPage:
    """A project's page; a quarantined project's lists no file (PEP 792), whatever ``records``."""
    if status is not None and not status.offers_files:
        records = ()
    if content_type == JSON_V1:
        return RenderedPage(render_project_json(project, records, status=status))
    return RenderedPage(render_project_html(project, records, status=status))
