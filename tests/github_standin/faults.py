"""Injected faults, GitHub's primary rate limit, and the request log.

Faults model what GitHub's edge does to a client: 5xx from the load balancer, 403 secondary rate limits with
``Retry-After``, 429s - and the two hazards PyGithub's retries run into, where the operation *was applied* and
the client still sees an error (``apply_first``): a 502 after an asset upload created the asset (the retry
then gets 422 ``already_exists``) and a 503 after a contents PUT committed (the retry then gets 409).
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
    (lower-case names), ``status`` the status code sent back."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]


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


@dataclass
class Fault:
    """The next ``times`` requests matching ``method`` (``*`` = any) and ``path_regex`` (``re.search`` on the URL
    path) are answered with ``status``; ``apply_first`` performs the operation before answering."""

    method: str
    path_regex: str
    status: int
    times: int = 1
    apply_first: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and re.search(self.path_regex, path)

    def render(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and a GitHub-style JSON error body (or the body given by the test)."""
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

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, apply_first: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.apply_first == apply_first and fault.hits < fault.times and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def peek(self, method: str, path: str) -> Fault | None:
        """The apply-first fault that would fire for this request, without using it up."""
        with self._lock:
            for fault in self._faults:
                if fault.apply_first and fault.hits < fault.times and fault.matches(method, path):
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
