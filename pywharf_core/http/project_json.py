"""``GET /pypi/<project>/json`` and ``/pypi/<project>/<version>/json``: pypi.org's JSON API.

The bots that read it (pip-audit, renovate, dependabot) are written against pypi.org, so every
key pypi.org always sends is sent (docs.pypi.org/api/json/; the deprecated ones with the
constant values pypi.org gives them: ``downloads`` -1, ``has_sig`` false, ``bugtrack_url``
null), and every URL in it names a page this server has:

- ``package_url`` / ``project_url``: the browser page ``<base>project/<name>/``;
- ``release_url``: ``<base>project/<name>/<version>/``;
- file ``url``: the download under the simple index the request came through;

where ``<base>`` is the repository's own URL prefix (``/repos/<repo>/``) when the JSON was
asked for through it, so the pages answer for the same repository (and the same credentials,
an API token included) as the JSON did.

Not sent: ``info.description`` is empty (the long description is kept beside each file, not in
the index: reading it would put storage I/O on this request; the ``release_url`` page shows it),
and ``ownership`` (pypi.org's accounts; this server has none).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from pywharf_core.http.pages import sorted_versions
from pywharf_core.model.records import FileRecord

_INFO_FIELDS = (
    "author", "author_email", "maintainer", "maintainer_email", "license", "keywords", "summary",
    "home_page", "download_url", "description_content_type", "requires_python", "platform",
    "license_expression",
)
_LIST_FIELDS = ("classifiers", "requires_dist", "provides_extra", "dynamic", "license_files")
# pypi.org stopped counting downloads; it still sends these, always -1.
_NO_DOWNLOADS = {"last_day": -1, "last_month": -1, "last_week": -1}
# JSON numbers past 2**53 lose precision in JavaScript (renovate): serials stay below.
_SERIAL_BYTES = 6


@dataclass(frozen=True)
class JsonApiUrls:
    """Where the document's URLs point: ``files`` the simple index (``.../simple/``), ``pages``
    the site or repository base the browser pages live under (``.../`` or ``.../repos/<r>/``)."""

    files: str
    pages: str

    def project_page(self, project: str, version: str | None = None) -> str:
        return f"{self.pages}project/{quote(project)}/" + (f"{quote(version, safe='')}/" if version else "")


def last_serial(records: Sequence[FileRecord]) -> int:
    """A number that changes whenever the project changes, the same on every server.

    pypi.org's ``last_serial`` is the id of the project's latest event in one global journal;
    servers sharing a store have no such counter per project (the index log is per repository,
    and a compacted base document forgets which entry added which file). So the serial is
    derived from the project's state: a 48-bit digest of every file's name, sha256, metadata
    sha256 and yank state. An upload, a yank, an un-yank or a re-sync to a different state
    changes it; two servers showing the same files agree on it. It is an opaque change marker:
    it does not grow (un-yanking returns to the serial of the state before the yank), which is
    how bots use it (compare with the last one seen, refetch when different).

    Cost: one pass over the project's own files, which rendering the document makes anyway;
    nothing that grows with the rest of the repository.
    """
    digest = hashlib.blake2b(digest_size=_SERIAL_BYTES)
    for record in sorted(records, key=lambda r: r.filename):
        digest.update(json.dumps([record.filename, *record.state_key()]).encode())
        digest.update(b"\n")
    return int.from_bytes(digest.digest(), "big") or 1


def _as_str(value: str | tuple[str, ...] | None) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    return value or ""


def _python_version(record: FileRecord) -> str:
    """The upload's ``pyversion``; for a wheel without one its python tag, for an sdist "source"."""
    given = _as_str(record.meta.get("pyversion"))
    if given:
        return given
    if record.filename.endswith(".whl"):
        parts = record.filename[: -len(".whl")].split("-")
        return parts[-3] if len(parts) >= 5 else ""
    return "source"


def _release_file(record: FileRecord, urls: JsonApiUrls) -> dict[str, Any]:
    upload_time = record.upload_time.rstrip("Z").split(".")[0] if record.upload_time else None
    md5 = _as_str(record.meta.get("md5_digest"))
    return {
        "comment_text": "",
        "core-metadata": {"sha256": record.metadata_sha256} if record.metadata_sha256 else False,
        "digests": {
            "blake2b_256": _as_str(record.meta.get("blake2_256_digest")),
            "md5": md5,
            "sha256": record.sha256,
        },
        "downloads": -1,
        "filename": record.filename,
        "has_sig": False,
        "md5_digest": md5,
        "packagetype": "bdist_wheel" if record.filename.endswith(".whl") else "sdist",
        "python_version": _python_version(record),
        "requires_python": record.requires_python or None,
        "size": record.size,
        "upload_time": upload_time,
        "upload_time_iso_8601": record.upload_time or None,
        "url": f"{urls.files}{quote(record.distrib)}/{quote(record.filename)}",
        "yanked": record.yanked,
        "yanked_reason": record.yanked_reason or None,
    }


def _latest(versions: Sequence[str], records: Sequence[FileRecord]) -> str:
    """Newest non-yanked final release, else newest non-yanked, else newest."""
    live = {r.version for r in records if not r.yanked}
    for accept in (lambda v: v in live and not _is_pre(v), lambda v: v in live, lambda v: True):
        candidates = [v for v in versions if accept(v)]
        if candidates:
            return candidates[-1]
    return versions[-1]


def _is_pre(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False


def render_project_json_api(
    project: str, records: Sequence[FileRecord], version: str | None, urls: JsonApiUrls
) -> tuple[bytes, int] | None:
    """The JSON document and its ``last_serial``, or None when the project (or the asked
    version) is unknown."""
    versions = sorted_versions(records)
    if not versions:
        return None
    chosen = version if version is not None else _latest(versions, records)
    if chosen not in versions:
        matching = [v for v in versions if _same(v, chosen)]
        if not matching:
            return None
        chosen = matching[0]
    files = [r for r in records if r.version == chosen]
    meta = files[0].meta
    info: dict[str, Any] = {key: _as_str(meta.get(key)) or None for key in _INFO_FIELDS}
    for key in _LIST_FIELDS:
        value = meta.get(key)
        info[key] = list(value) if isinstance(value, tuple) else ([value] if value else None)
    info["classifiers"] = info["classifiers"] or []
    project_urls = {}
    for entry in meta.get("project_urls", ()) if isinstance(meta.get("project_urls"), tuple) else ():
        label, _, url = entry.partition(",")
        project_urls[label.strip()] = url.strip()
    info.update(
        bugtrack_url=None,
        description="",
        docs_url=None,
        downloads=dict(_NO_DOWNLOADS),
        name=_as_str(meta.get("name")) or project,
        version=chosen,
        project_urls=project_urls or None,
        yanked=all(r.yanked for r in files),
        yanked_reason=next((r.yanked_reason for r in files if r.yanked_reason), None),
        package_url=urls.project_page(project),
        project_url=urls.project_page(project),
        release_url=urls.project_page(project, chosen),
    )
    serial = last_serial(records)
    document: dict[str, Any] = {
        "info": dict(sorted(info.items())),
        "last_serial": serial,
        "urls": [_release_file(r, urls) for r in files],
        "vulnerabilities": [],
    }
    if version is None:
        document["releases"] = {v: [_release_file(r, urls) for r in records if r.version == v] for v in versions}
    return json.dumps(document, ensure_ascii=False).encode("utf-8"), serial


def _same(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False
