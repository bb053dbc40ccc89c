"""Retention: which files a repository's rules delete (issue 16), planned from a snapshot.

Two rules, each off unless configured on the repository (``pywharf_core.storage.config``):

- ``retention_keep_prereleases = N``: per project, the newest N pre-/dev-release *versions*
  stay; every file of an older pre-/dev-release goes (final releases are never touched);
- ``retention_max_age_days = D`` with ``retention_version_pattern = "<regex>"``: a file uploaded
  more than D days ago whose version the expression matches whole goes.

The plan is a pure function of the snapshot and the clock, so ``pywharf retention --dry_run``
prints exactly what a run at that moment deletes; a run deletes through the same path as
``pywharf delete`` (tombstone documents, index log, storage). It walks every file: it runs off the
request path (the CLI's request, or the sync thread every ``--retention_interval``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from packaging.version import InvalidVersion, Version

from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.records import FileRecord
from pywharf_core.service.repository import PkgRepo
from pywharf_core.storage.config import PkgRepoConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    keep_prereleases: int | None = None
    max_age_days: int | None = None
    version_pattern: str = ""

    @classmethod
    def of(cls, config: PkgRepoConfig) -> RetentionPolicy | None:
        """The repository's rules, or None when it has none."""
        policy = cls(config.retention_keep_prereleases, config.retention_max_age_days,
                     config.retention_version_pattern)
        return policy if policy.keep_prereleases is not None or policy.max_age_days is not None else None


@dataclass(frozen=True)
class Doomed:
    """A file a rule deletes, and the rule's words for why."""

    record: FileRecord
    why: str


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _uploaded(record: FileRecord) -> datetime | None:
    if not record.upload_time:
        return None  # unknown age: never old enough
    try:
        return datetime.strptime(record.upload_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def plan(snapshot: IndexSnapshot, policy: RetentionPolicy, now: datetime) -> list[Doomed]:
    """Every file the rules delete now, sorted by filename (each once, with its first rule)."""
    doomed: dict[str, Doomed] = {}
    if policy.keep_prereleases is not None:
        keep = policy.keep_prereleases
        for records in snapshot.projects.values():
            pre = sorted({v for r in records if (v := _version(r.version)) is not None and v.is_prerelease},
                         reverse=True)
            old = set(pre[keep:])
            for record in records:
                if _version(record.version) in old:
                    doomed.setdefault(record.filename, Doomed(
                        record, f"pre-/dev-release older than the newest {keep} of {record.distrib}"))
    if policy.max_age_days is not None:
        pattern = re.compile(policy.version_pattern)
        cutoff = now - timedelta(days=policy.max_age_days)
        for record in snapshot.files.values():
            uploaded = _uploaded(record)
            if uploaded is not None and uploaded < cutoff and pattern.fullmatch(record.version):
                doomed.setdefault(record.filename, Doomed(
                    record, f"uploaded {uploaded:%Y-%m-%d}, over {policy.max_age_days} days ago, "
                            f"version matches {policy.version_pattern!r}"))
    return [doomed[name] for name in sorted(doomed)]


def apply_retention(repo: PkgRepo, dry_run: bool, now: datetime | None = None) -> list[Doomed]:
    """Plan (and unless ``dry_run``, delete) what the repository's rules say; [] without rules.
    Blocking."""
    policy = RetentionPolicy.of(repo.config)
    if policy is None:
        return []
    doomed = plan(repo.snapshot, policy, now or datetime.now(timezone.utc))
    if doomed and not dry_run:
        repo.delete_records([d.record for d in doomed])
        log.info("repo %r: retention deleted %d files: %s", repo.name, len(doomed),
                 ", ".join(d.record.filename for d in doomed))
    return doomed
