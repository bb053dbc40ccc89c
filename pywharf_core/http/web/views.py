"""What the browser pages show, computed from an index snapshot (pure functions, no I/O).

Kept apart from the templates so the choices (which version is "latest", how sizes and times
read) are testable without HTML, and apart from the routes so they can be cached per snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from pywharf_core.http.pages import sorted_versions
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.records import FileRecord


def _is_pre(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False


def latest_version(records: Sequence[FileRecord]) -> str:
    """Newest non-yanked final release, else newest non-yanked, else newest (what pip would pick)."""
    versions = sorted_versions(records)
    live = {r.version for r in records if not r.yanked}
    for candidates in (
        [v for v in versions if v in live and not _is_pre(v)],
        [v for v in versions if v in live],
        versions,
    ):
        if candidates:
            return candidates[-1]
    return ""


def meta_text(meta: Mapping[str, str | tuple[str, ...]], key: str) -> str:
    value = meta.get(key, "")
    return ", ".join(value) if isinstance(value, tuple) else value


def meta_list(meta: Mapping[str, str | tuple[str, ...]], key: str) -> list[str]:
    value = meta.get(key, ())
    return [v for v in ((value,) if isinstance(value, str) else value) if v]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def human_time(timestamp: str) -> str:
    """``2026-11-23T12:00:00.000000Z`` -> ``2026-11-23 12:00 UTC`` ("" when unknown)."""
    if not timestamp:
        return ""
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class ProjectSummary:
    name: str
    latest: str
    summary: str
    updated: str  # ISO upload time of the newest file, "" when unknown

    @property
    def url(self) -> str:
        return f"/project/{quote(self.name)}/"

    def matches(self, query: str) -> bool:
        query = query.strip().lower()
        return not query or query in self.name.lower() or query in self.summary.lower()


def project_summaries(snapshot: IndexSnapshot) -> list[ProjectSummary]:
    summaries = []
    for name in snapshot.project_names:
        records = snapshot.projects[name]
        latest = latest_version(records)
        files = [r for r in records if r.version == latest] or list(records)
        summaries.append(
            ProjectSummary(
                name=name,
                latest=latest,
                summary=meta_text(files[0].meta, "summary"),
                updated=max((r.upload_time for r in records), default=""),
            )
        )
    return summaries


@dataclass(frozen=True)
class FileRow:
    record: FileRecord
    url: str

    @property
    def kind(self) -> str:
        return "wheel" if self.record.filename.endswith(".whl") else "sdist"

    @property
    def size(self) -> str:
        return human_size(self.record.size)

    @property
    def uploaded(self) -> str:
        return human_time(self.record.upload_time)


@dataclass(frozen=True)
class VersionRow:
    version: str
    url: str
    uploaded: str
    yanked: bool
    prerelease: bool
    current: bool


@dataclass(frozen=True)
class ReleaseView:
    """One version of a project, as its page shows it."""

    project: str
    version: str
    latest: str
    files: list[FileRow]
    versions: list[VersionRow]  # newest first
    meta: Mapping[str, str | tuple[str, ...]]
    page_url: str  # the project's page (its latest version)

    @property
    def summary(self) -> str:
        return meta_text(self.meta, "summary")

    @property
    def requires_python(self) -> str:
        return next((f.record.requires_python for f in self.files if f.record.requires_python), "") or meta_text(
            self.meta, "requires_python"
        )

    @property
    def dependencies(self) -> list[str]:
        return meta_list(self.meta, "requires_dist")

    @property
    def license(self) -> str:
        return meta_text(self.meta, "license_expression") or meta_text(self.meta, "license")

    @property
    def author(self) -> str:
        return meta_text(self.meta, "author") or meta_text(self.meta, "author_email")

    @property
    def project_urls(self) -> list[tuple[str, str]]:
        """``(label, url)`` pairs, http(s) only (nothing else becomes a link)."""
        urls = []
        home = meta_text(self.meta, "home_page")
        if home:
            urls.append(("Homepage", home))
        for entry in meta_list(self.meta, "project_urls"):
            label, _, url = entry.partition(",")
            urls.append((label.strip() or url.strip(), url.strip()))
        return [(label, url) for label, url in urls if url.lower().startswith(("https://", "http://"))]

    @property
    def yanked(self) -> bool:
        return bool(self.files) and all(f.record.yanked for f in self.files)

    @property
    def yanked_reason(self) -> str:
        return next((f.record.yanked_reason for f in self.files if f.record.yanked_reason), "")


def release_view(project: str, records: Sequence[FileRecord], version: str | None,
                 prefix: str = "") -> ReleaseView | None:
    """The page of ``version`` (default: the latest) of ``project``, or None if there is no such
    version. ``prefix``: ``/repos/<repo>`` when the page was asked for under a repository's own
    URL (its links stay there), else ""."""
    versions = sorted_versions(records)
    latest = latest_version(records)
    chosen = latest if version is None else _match_version(versions, version)
    if chosen is None:
        return None
    files = [r for r in records if r.version == chosen]
    base = f"{prefix}/simple/{quote(project)}/"
    page = f"{prefix}/project/{quote(project)}/"
    rows = []
    for v in reversed(versions):
        of_version = [r for r in records if r.version == v]
        rows.append(
            VersionRow(
                version=v,
                url=f"{page}{quote(v, safe='')}/",
                uploaded=human_time(min((r.upload_time for r in of_version if r.upload_time), default="")),
                yanked=all(r.yanked for r in of_version),
                prerelease=_is_pre(v),
                current=v == chosen,
            )
        )
    wheel_first = sorted(files, key=lambda r: (not r.filename.endswith(".whl"), r.filename))
    return ReleaseView(
        project=project,
        version=chosen,
        latest=latest,
        files=[FileRow(r, base + quote(r.filename)) for r in wheel_first],
        versions=rows,
        meta=wheel_first[0].meta,
        page_url=page,
    )


def _match_version(versions: Sequence[str], wanted: str) -> str | None:
    if wanted in versions:
        return wanted
    try:
        parsed = Version(wanted)
    except InvalidVersion:
        return None
    for v in versions:
        try:
            if Version(v) == parsed:
                return v
        except InvalidVersion:
            continue
    return None
