"""A small in-memory limit on failed authentications per key (client address + repository).

Why: basic auth and ``POST /login/`` are oracles for guessing secrets (see ``secret_check``).
After ``limit`` failures within ``window`` seconds, a client gets 429 (with ``Retry-After``)
without its guess being checked, until its oldest failure leaves the window. In memory per
process: a restart forgives, and N servers allow N times the rate, which still turns a brute
force from millions of guesses per minute into a handful. Behind a reverse proxy the address
is the proxy's unless it forwards the client's (uvicorn honours ``X-Forwarded-For`` from
trusted proxies).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _live(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
        return failures

    def retry_after(self, client: str) -> float:
        """0 when ``client`` may try; else the seconds until it may (a full window at most)."""
        with self._lock:
            now = self._clock()
            failures = self._live(client, now)
            if len(failures) < self.limit:
                return 0.0
            return max(0.0, failures[-self.limit] + self.window - now)

    def record_failure(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            if client not in self._failures and len(self._failures) >= self._max_clients:
                self._prune(now)
            failures = self._failures.setdefault(client, deque())
            failures.append(now)
            while len(failures) > self.limit:
                failures.popleft()  # only the last `limit` failures matter

    def _prune(self, now: float) -> None:
        """Bound memory: forget expired clients, then the oldest ones if still too many."""
        for client in list(self._failures):
            self._live(client, now)
        excess = len(self._failures) - self._max_clients + 1
        if excess > 0:
            oldest = sorted(self._failures, key=lambda c: self._failures[c][-1])[:excess]
            for client in oldest:
                del self._failures[client]
