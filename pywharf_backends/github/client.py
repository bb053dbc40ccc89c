"""Talking to GitHub: PyGithub construction, the retry / rate-limit policy, errors.

Why this module exists rather than ``Github(token)`` at each call site:

- **Bounded waiting.** PyGithub's default ``GithubRetry`` sleeps as long as ``Retry-After`` says
  (a 403 or 429 with ``Retry-After: 3600`` blocks a request thread for an hour) and only caps
  the rate-limit *message* path with ``max_rate_limit_wait``. :class:`BoundedGithubRetry` caps
  every wait (``Retry-After`` on any status, ``X-RateLimit-Reset``, 429 without ``Retry-After``,
  which PyGithub does not retry at all) and raises ``RateLimitExceededExceedsMaxWait`` beyond
  the cap, which :func:`describe` turns into one clear line.
- **Bounded 5xx retries** with exponential backoff, then the last response is surfaced (not a
  bare ``RetryError``), so the message says what GitHub answered.
- **No blind POST retries where they are hazardous.** A retried upload POST after a 502 that
  GitHub had applied gets 422 ``already_exists``; :mod:`storage` therefore uploads with a
  session that never retries and reconciles by looking at what GitHub holds.
- **Thread safety.** PyGithub's connection object keeps the pending request in attributes
  between ``request()`` and ``getresponse()``, so one ``Github`` shared by the server's worker
  threads can send one thread's request to another's URL. Each thread gets its own ``Github``
  and ``requests.Session``; PyGithub objects are never kept across calls, only plain data.
- **No secrets in logs.** Tokens live only in request headers; messages never include them,
  and URLs are reported without their query (signed download URLs carry a credential there).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3.exceptions
from github import Auth, Github, GithubException, GithubRetry, RateLimitExceededExceedsMaxWait
from github.Repository import Repository
from urllib3 import Retry

from pywharf_core.model.errors import BackendUnavailable

log = logging.getLogger(__name__)

USER_AGENT = "pywharf-github-backend"
API_VERSION = "2022-11-28"
JSON_ACCEPT = "application/vnd.github+json"


class GitHubUnavailable(BackendUnavailable):
    """GitHub could not do what was asked (after the bounded retries); the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClientPolicy:
    """Where GitHub is and how long we are prepared to wait for it."""

    api_base_url: str
    timeout: int = 60
    max_rate_limit_wait: float = 30
    retries: int = 4  # per request, for 5xx / connection errors / rate limits within the cap
    backoff_factor: float = 0.5  # waits 0, 1, 2, 4 s between those retries (urllib3 schedule)
    per_page: int = 100  # list pages (GitHub's maximum: fewest calls)

    @property
    def base(self) -> str:
        return self.api_base_url.rstrip("/")


class BoundedGithubRetry(GithubRetry):
    """``GithubRetry`` whose waits are all capped at ``max_rate_limit_wait`` seconds.

    Extends the retried statuses with 429 (GitHub's secondary limits answer 429, with or
    without ``Retry-After``).
    """

    def __init__(self, max_rate_limit_wait: float | None = 30, secondary_rate_wait: float = 60, **kwargs: Any) -> None:
        kwargs.setdefault("status_forcelist", [*range(500, 600), 429])
        kwargs.setdefault("raise_on_status", False)  # surface GitHub's last answer, not RetryError
        super().__init__(secondary_rate_wait=secondary_rate_wait, max_rate_limit_wait=max_rate_limit_wait, **kwargs)

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if response is not None:
            cap = self.max_rate_limit_wait
            retry_after = response.headers.get("Retry-After")
            if retry_after is not None:
                wait = self.parse_retry_after(retry_after)
                if cap is not None and wait > cap:
                    raise _too_long(response, wait)
            elif response.status == 429:
                # PyGithub does not retry a 429 without Retry-After; GitHub documents waiting
                # for X-RateLimit-Reset when remaining is 0, else at least a minute.
                wait = float(self.secondary_rate_wait)
                reset = response.headers.get("X-RateLimit-Reset", "")
                if response.headers.get("X-RateLimit-Remaining") == "0" and reset.isdigit():
                    wait = max(0.0, int(reset) - time.time()) + 1
                if cap is not None and wait > cap:
                    raise _too_long(response, wait)
                retry = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
                retry.get_backoff_time = lambda: wait  # type: ignore[method-assign]
                return retry
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _too_long(response: Any, wait: float) -> RateLimitExceededExceedsMaxWait:
    try:
        data = json.loads(response.data or b"{}")
    except ValueError:
        data = {"message": "rate limited"}
    return RateLimitExceededExceedsMaxWait(response.status, data, dict(response.headers), wait=wait)


def make_retry(policy: ClientPolicy, *, retry_posts: bool = True) -> BoundedGithubRetry:
    # PATCH replaces a release body with a complete new one: idempotent, so safe to repeat.
    methods = Retry.DEFAULT_ALLOWED_METHODS | {"GET", "PATCH"} | ({"POST"} if retry_posts else set())
    return BoundedGithubRetry(
        max_rate_limit_wait=policy.max_rate_limit_wait,
        total=policy.retries,
        backoff_factor=policy.backoff_factor,
        backoff_max=max(8.0, float(policy.max_rate_limit_wait)),
        allowed_methods=methods,
    )


class GitHubClient:
    """GitHub access with one token: PyGithub for the API, raw requests where PyGithub can't.

    Per-thread ``Github`` / ``requests.Session`` objects (see the module docstring). The token is
    never part of ``repr`` or any message.
    """

    def __init__(self, token: str | None, policy: ClientPolicy, *, lazy: bool = True) -> None:
        self._token = token
        self.policy = policy
        self.lazy = lazy  # lazy: PyGithub objects cost no request until a missing attribute is read
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"GitHubClient({self.policy.base!r})"

    # -- PyGithub ---------------------------------------------------------------------------

    def github(self) -> Github:
        gh = getattr(self._local, "github", None)
        if gh is None:
            gh = Github(
                auth=Auth.Token(self._token) if self._token else None,  # no token: anonymous (public repos)
                base_url=self.policy.base,
                timeout=int(self.policy.timeout),
                retry=make_retry(self.policy),
                per_page=self.policy.per_page,
                seconds_between_requests=0,
                seconds_between_writes=0,
                user_agent=USER_AGENT,
                lazy=self.lazy,
            )
            self._local.github = gh
        return gh

    def repo(self, full_name: str) -> Repository:
        """``owner/repo``: no request when lazy, else one ``GET /repos/{owner}/{repo}``."""
        return self.github().get_repo(full_name)

    def close(self) -> None:
        """Close this thread's connections (for short-lived clients, e.g. one per auth check)."""
        gh = getattr(self._local, "github", None)
        if gh is not None:
            gh.close()
        for name in ("session", "session_once"):
            session = getattr(self._local, name, None)
            if session is not None:
                session.close()
        self._local = threading.local()

    # -- raw requests -----------------------------------------------------------------------

    def _session(self, name: str, retry: Retry | int) -> requests.Session:
        session = getattr(self._local, name, None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = True
            session.headers.update({"User-Agent": USER_AGENT, "X-GitHub-Api-Version": API_VERSION})
            if self._token:
                session.headers["Authorization"] = f"token {self._token}"
            setattr(self._local, name, session)
        return session

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.policy.base}/{path_or_url.lstrip('/')}"

    def request(self, method: str, path_or_url: str, *, retry: bool = True, what: str | None = None,
                **kwargs: Any) -> requests.Response:
        """One HTTP request with the token; ``retry=False`` for non-idempotent writes.

        Raises GitHubUnavailable for transport failures and over-long rate-limit waits, naming
        ``what`` was attempted (default: the method and URL); HTTP error statuses are returned
        for the caller to interpret.
        """
        session = (
            self._session("session", make_retry(self.policy))
            if retry
            else self._session("session_once", Retry(total=0, raise_on_status=False, redirect=0))
        )
        kwargs.setdefault("timeout", (min(10, self.policy.timeout), self.policy.timeout))
        headers = {"Accept": JSON_ACCEPT, **kwargs.pop("headers", {})}
        url = self.url(path_or_url)
        what = what or f"{method} {redact(url)}"
        try:
            return session.request(method, url, headers=headers, **kwargs)
        except RateLimitExceededExceedsMaxWait as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy), 429) from None
        except GithubException as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy), exc.status) from None
        except requests.RequestException as exc:
            raise GitHubUnavailable(describe(exc, what, self.policy)) from None

    def paginate(self, path: str, what: str) -> Iterator[Any]:
        """The items of a list endpoint, page by page (``per_page`` a page, GitHub's ``Link: rel="next"``)."""
        url: str | None = self.url(path)
        params: dict[str, Any] | None = {"per_page": self.policy.per_page}
        while url:
            response = check_response(self.request("GET", url, params=params, what=what), what)
            yield from response.json()
            url, params = response.links.get("next", {}).get("url"), None  # the next URL carries the query


def redact(url: str) -> str:
    """``url`` without query or fragment: signed URLs carry their credential in the query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def github_message(data: Any) -> str:
    """GitHub's ``message`` (+ error codes) from an error body, as one short line."""
    if isinstance(data, Mapping):
        message = str(data.get("message") or "").strip()
        codes = [
            str(e.get("code") or e.get("message") or "")
            for e in data.get("errors", []) or []
            if isinstance(e, Mapping)
        ]
        if codes:
            message = f"{message} ({', '.join(c for c in codes if c)})"
        return " ".join(message.split())[:300]  # one line: it ends up in a log line or an HTTP reason
    if isinstance(data, (str, bytes)):
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return " ".join(text.split())[:300]
    return ""


def response_message(response: requests.Response) -> str:
    try:
        return github_message(response.json())
    except ValueError:
        return github_message(response.text)


def _timed_out(exc: BaseException) -> bool:
    """Whether a requests error is a timeout, including after urllib3 used up its retries: requests then
    raises ``ConnectionError(MaxRetryError(reason=ReadTimeoutError))``, which would otherwise be reported as
    GitHub being unreachable and send an operator looking at the network instead of at ``timeout``."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if isinstance(exc, requests.ConnectionError) and exc.args else None
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError  # a refused connection (a subclass, for history's sake)
    )


def describe(exc: BaseException, what: str, policy: ClientPolicy | None = None) -> str:
    """One line for a failed GitHub call: what was attempted and what GitHub (or the network) said."""
    if isinstance(exc, RateLimitExceededExceedsMaxWait):
        cap = f" (max_rate_limit_wait is {policy.max_rate_limit_wait:g}s)" if policy else ""
        return f"GitHub rate limit on {what}: retry in {exc.wait:.0f}s{cap}"
    if isinstance(exc, GithubException):
        message = github_message(exc.data) or "no message"
        return f"GitHub answered {exc.status} to {what}: {message}"
    if _timed_out(exc):
        limit = f" (timeout is {policy.timeout}s)" if policy else ""
        return f"GitHub timed out on {what}{limit}"
    if isinstance(exc, requests.RequestException):
        return f"cannot reach GitHub for {what}: {type(exc).__name__}"
    return f"{what} failed: {type(exc).__name__}"


def check_response(response: requests.Response, what: str, ok: tuple[int, ...] = (200,)) -> requests.Response:
    """``response`` if its status is acceptable, else GitHubUnavailable with GitHub's message."""
    if response.status_code in ok:
        return response
    message = response_message(response) or response.reason or "no message"
    raise GitHubUnavailable(f"GitHub answered {response.status_code} to {what}: {message}", response.status_code)
