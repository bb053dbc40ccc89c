"""``GET /pypi/<project>/json`` and ``/pypi/<project>/<version>/json``: pypi.org's JSON API
shape, for the fields the index holds (pip-audit, renovate and dependabot read it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def _as_str(value: str | tuple[str, ...] | None) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    return value or ""


def _release_file(record: FileRecord, base: str) -> dict[str, Any]:
    upload_time = record.upload_time.rstrip("Z").split(".")[0] if record.upload_time else None
    return {
        "filename": record.filename,
        "url": f"{base}{quote(record.distrib)}/{quote(record.filename)}",
        "digests": {
            "sha256": record.sha256,
            "md5": _as_str(record.meta.get("md5_digest")),
            "blake2b_256": _as_str(record.meta.get("blake2_256_digest")),
        },
        "size": record.size,
        "packagetype": "bdist_wheel" if record.filename.endswith(".whl") else "sdist",
        "python_version": _as_str(record.meta.get("pyversion")) or "source",
        "requires_python": record.requires_python or None,
        "upload_time": upload_time,
        "upload_time_iso_8601": record.upload_time or None,
        "yanked": record.yanked,
        "yanked_reason": record.yanked_reason or None,
        "has_sig": False,
        "comment_text": "",
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
    project: str, records: Sequence[FileRecord], version: str | None, base: str
) -> bytes | None:
    """The JSON document, or None when the project (or the asked version) is unknown."""
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
    urls = {}
    for entry in meta.get("project_urls", ()) if isinstance(meta.get("project_urls"), tuple) else ():
        label, _, url = entry.partition(",")
        urls[label.strip()] = url.strip()
    info.update(
        name=_as_str(meta.get("name")) or project,
        version=chosen,
        project_urls=urls or None,
        yanked=all(r.yanked for r in files),
        yanked_reason=next((r.yanked_reason for r in files if r.yanked_reason), None),
        package_url=f"{base}{quote(project)}/",
        project_url=f"{base}{quote(project)}/",
        release_url=f"{base}{quote(project)}/{quote(chosen)}/",
    )
    document: dict[str, Any] = {
        "info": info,
        "last_serial": 0,
        "urls": [_release_file(r, base) for r in files],
        "vulnerabilities": [],
    }
    if version is None:
        document["releases"] = {v: [_release_file(r, base) for r in records if r.version == v] for v in versions}
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _same(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False
