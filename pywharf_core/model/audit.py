"""Audit events: who changed (or tried to change) what in a repository, when and from where.

An event names its actor by the kind of secret (``write secret``) or by a token's id and
description (``api token 0123456789abcdef (release job)``), never by a secret or a token's text.
Every text field is bounded and stripped of control characters when the event is made, because
most of them come from clients (a filename, a reason, a refusal naming them): no client can
bloat the log or put terminal escapes into what ``pywharf audit`` prints.

Stored as JSON (``pywharf_core.service.audit``); :meth:`AuditEvent.from_dict` refuses anything
that is not a well-formed event, so a damaged entry is skipped, never shown half-read.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# What happened. A refused or failed attempt has the action it attempted and its 4xx/5xx status.
ACTIONS = (
    "upload", "yank", "unyank", "token-create", "token-revoke", "token-mint", "token-burn",
    "project-status", "delete",
)
# Longest text kept per field (characters); longer text is cut and ends with "…".
FIELD_LIMITS = {"repo": 64, "project": 200, "filename": 255, "actor": 300, "client": 64, "detail": 500}
MAX_SINCE_DAYS = 3660  # how far back one query may reach (ten years)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DURATION = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def bounded(text: object, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    line = _CONTROL.sub(" ", str(text))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def iso_time(timestamp: float) -> str:
    """UTC, millisecond precision: ``2026-12-01T08:36:41.123Z`` (sorts as text)."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def parse_since(text: str, now: float) -> float:
    """A point in time from ``2026-12-01``, ``2026-12-01T08:00:00Z`` (UTC unless an offset is
    given) or a duration back from ``now`` (``90m``, ``12h``, ``7d``, ``2w``).

    ValueError (with the accepted forms) for anything else, or a point more than
    :data:`MAX_SINCE_DAYS` back or in the future."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        moment = now - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if len(value) <= 40 else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValueError(f"since must be a date (2026-12-01), a UTC time (2026-12-01T08:00:00Z) or a duration "
                             f"(90m, 12h, 7d, 2w), not {bounded(value, 40)!r}")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        moment = parsed.timestamp()
    if moment < now - MAX_SINCE_DAYS * 86400:
        raise ValueError(f"since reaches back at most {MAX_SINCE_DAYS} days")
    if moment > now + 86400:
        raise ValueError("since is in the future")
    return moment


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit log entry (see the module docstring). ``status`` is the HTTP status answered:
    2xx done, 4xx refused, 5xx failed."""

    action: str
    time: float  # Unix time
    repo: str
    actor: str
    client: str
    status: int
    project: str = ""
    filename: str = ""
    detail: str = ""

    @classmethod
    def make(cls, action: str, *, repo: str, actor: str, client: str, status: int, project: str = "",
             filename: str = "", detail: str = "", when: float | None = None) -> AuditEvent:
        """An event with every field bounded (client-sent text is cut, never refused: the event
        is recorded whatever the client sent)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status!r}")
        return cls(
            action=action, time=time.time() if when is None else when, status=status,
            repo=bounded(repo, FIELD_LIMITS["repo"]), actor=bounded(actor, FIELD_LIMITS["actor"]),
            client=bounded(client, FIELD_LIMITS["client"]), project=bounded(project, FIELD_LIMITS["project"]),
            filename=bounded(filename, FIELD_LIMITS["filename"]), detail=bounded(detail, FIELD_LIMITS["detail"]),
        )

    @property
    def refused(self) -> bool:
        return self.status >= 400

    def to_dict(self) -> dict[str, Any]:
        return {"time": iso_time(self.time), "action": self.action, "status": self.status, "repo": self.repo,
                "project": self.project, "filename": self.filename, "actor": self.actor, "client": self.client,
                "detail": self.detail}

    def line(self) -> str:
        """One line of text (``pywharf audit``, ``GET /_/audit/<repo>`` as text)."""
        what = "/".join(part for part in (self.project, self.filename) if part) or "-"
        detail = f"  {self.detail}" if self.detail else ""
        return (f"{iso_time(self.time)[:19]}Z  {self.status}  {self.action:<13} {what}  by {self.actor}  "
                f"from {self.client}{detail}")

    @classmethod
    def from_dict(cls, raw: object) -> AuditEvent:
        """ValueError for anything that is not an event as :meth:`to_dict` writes it."""
        if not isinstance(raw, dict):
            raise ValueError("an event is a JSON object")
        texts = {}
        for name in ("time", "action", "repo", "project", "filename", "actor", "client", "detail"):
            value = raw.get(name, "")
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text")
            texts[name] = value
        status = raw.get("status")
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError("status must be an integer")
        try:
            moment = datetime.fromisoformat(texts["time"].replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"time {texts['time'][:40]!r} is not an ISO time") from None
        if moment.tzinfo is None:
            raise ValueError("time must be UTC")
        return cls.make(texts["action"], repo=texts["repo"], actor=texts["actor"], client=texts["client"],
                        status=status, project=texts["project"], filename=texts["filename"],
                        detail=texts["detail"], when=moment.timestamp())
