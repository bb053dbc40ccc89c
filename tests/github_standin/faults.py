"""Injected faults, GitHub's primary rate limit, and the request log.

Faults model what GitHub's edge does to a client: 5xx from the load balancer, 403 secondary rate limits with
``Retry-After``, 429s - and the two hazards PyGithub's retries run into, where the operation *was applied* and
the client still sees an error (``apply_first``): a 502 after an asset upload created the asset (the retry
then gets 422 ``already_exists``) and a 503 after a contents PUT committed (the retry then gets 409).

Two more modes exist because clients must survive them and cannot be tested without them:

- ``delay``: the answer comes late (a slow GitHub, or a client timeout shorter than GitHub's response time).
  The sleep is an ``asyncio`` sleep, so the stand-in keeps answering other requests meanwhile; combined with
  ``apply_first`` it models the worst case, an operation GitHub applied while the client had already given up.
- ``starter``: an upload that GitHub accepts half-way and then fails (502): the asset exists in a not-uploaded
  state with part of the bytes, and holds the name, so a retry of the same name gets 422 ``already_exists``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DOCS = "https://docs.github.com/rest"

_DEFAULT_FAULT_MESSAGES: dict[int, str] = {
    403: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    429: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request.",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in answered. ``path`` is the full URL path (``/api/v3/...``, ``/api/uploads/...``,
    ``/api/_storage/...``), ``query`` the decoded query (last value wins), ``headers`` the request headers
    (lower-case names), ``status`` the status code sent back (499, nginx's "client closed request", when the
    client hung up before the stand-in could read its request body, e.g. after a client-side timeout)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    delay: float = 0.0  # seconds an injected ``delay`` held the answer back (0 for a normal answer)


@dataclass
class Exchange:
    """A request/response pair kept for (deferred) OpenAPI validation."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int
    response_headers: dict[str, str]
    response_body: bytes | None


# When a fault fires relative to the operation it answers.
BEFORE, AFTER, STARTER = "before", "after", "starter"


@dataclass
class Fault:
    """The next ``times`` requests matching ``method`` (``*`` = any) and ``path_regex`` (``re.search`` on the URL
    path) are answered with ``status`` after ``delay`` seconds.

    ``apply_first`` performs the operation before answering; ``status=None`` (with a ``delay``) answers what the
    operation itself answers, only late; ``starter`` (uploads only) stores a partial asset, then answers."""

    method: str
    path_regex: str
    status: int | None
    times: int = 1
    apply_first: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    hits: int = 0
    delay: float = 0.0
    starter: bool = False

    @property
    def mode(self) -> str:
        """``before`` (instead of the operation), ``after`` (apply_first) or ``starter``."""
        return STARTER if self.starter else AFTER if self.apply_first else BEFORE

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and bool(re.search(self.path_regex, path))

    def render(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and a GitHub-style JSON error body (or the body given by the test)."""
        assert self.status is not None, "a delay-only fault has no answer of its own"
        body = self.body
        if body is None:
            message = _DEFAULT_FAULT_MESSAGES.get(self.status, "Injected fault")
            body = {"message": message, "documentation_url": DOCS, "status": str(self.status)}
        return (
            self.status,
            {"content-type": "application/json; charset=utf-8", **self.headers},
            json.dumps(body).encode(),
        )


class FaultTable:
    """Faults in the order they were added; the first live match wins and uses up one of its ``times``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, mode: str) -> Fault | None:
        """The first live fault of ``mode`` (`BEFORE`, `AFTER`, `STARTER`) matching the request, used up once."""
        with self._lock:
            for fault in self._faults:
                if fault.mode == mode and fault.hits < fault.times and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.hits < f.times]


@dataclass
class Bucket:
    """One identity's ``core`` rate-limit window."""

    limit: int
    used: int
    reset: int


class RateLimiter:
    """GitHub's primary (``core``) rate limit: per user, or per client address for anonymous calls.

    GitHub gives 5000/h to tokens and 60/h to anonymous callers. 304 answers to conditional requests and
    ``GET /rate_limit`` do not count, and an exhausted window answers 403 "API rate limit exceeded ..." with
    ``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset``.
    """

    def __init__(self, limit: int = 5000, anonymous_limit: int = 60, window: float = 3600.0) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.anonymous_limit = anonymous_limit
        self.window = window
        self._buckets: dict[str, Bucket] = {}
        self._preset: tuple[int | None, float | None] = (None, None)

    def bucket(self, identity: str) -> Bucket:
        """The identity's current window; a window whose reset time passed starts afresh."""
        with self._lock:
            now = time.time()
            bucket = self._buckets.get(identity)
            if bucket is None or now >= bucket.reset:
                limit = self.anonymous_limit if identity.startswith("ip:") else self.limit
                fresh = Bucket(limit=limit, used=0, reset=int(now + self.window))
                if bucket is None:  # a preset from configure() applies to identities not seen yet
                    self._apply(fresh, *self._preset)
                bucket = self._buckets[identity] = fresh
            return bucket

    @staticmethod
    def _apply(bucket: Bucket, remaining: int | None, reset_in: float | None) -> None:
        if remaining is not None:
            bucket.used = max(0, bucket.limit - remaining)
        if reset_in is not None:
            bucket.reset = int(time.time() + reset_in)

    def exhausted(self, identity: str) -> bool:
        bucket = self.bucket(identity)
        return bucket.used >= bucket.limit

    def spend(self, identity: str) -> None:
        bucket = self.bucket(identity)
        with self._lock:
            bucket.used = min(bucket.limit, bucket.used + 1)

    def headers(self, identity: str) -> dict[str, str]:
        bucket = self.bucket(identity)
        return {
            "x-ratelimit-limit": str(bucket.limit),
            "x-ratelimit-remaining": str(max(0, bucket.limit - bucket.used)),
            "x-ratelimit-reset": str(bucket.reset),
            "x-ratelimit-used": str(bucket.used),
            "x-ratelimit-resource": "core",
        }

    def configure(self, limit: int | None, remaining: int | None, reset_in: float | None) -> None:
        """Change the token limit; ``remaining``/``reset_in`` rewrite current windows and preset new ones."""
        with self._lock:
            if limit is not None:
                self.limit = limit
            self._preset = (remaining, reset_in)
            for identity, bucket in self._buckets.items():
                if limit is not None and not identity.startswith("ip:"):
                    bucket.limit = limit
                self._apply(bucket, remaining, reset_in)
