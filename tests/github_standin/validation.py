"""Validate HTTP exchanges against GitHub's own OpenAPI description (the subset in ``data/``) with openapi-core.

Usable on any `requests.Response` (``validate(response)``, which also checks every redirect hop) and on the
exchanges the stand-in records with ``GitHubStandIn.start(validate=True)``.

Decisions, each because the published description is incomplete rather than because GitHub is lenient:

- ``servers`` is replaced with the stand-in's layout (``http://{host}/api/v3``, uploads ``http://{host}/api/uploads``
  - the upload operation declares ``uploads.github.com`` as its own server).
- ``/repositories/{id}/...`` (the form GitHub uses in pagination links) is validated as ``/repos/{owner}/{repo}/...``.
- A status the operation does not document (e.g. 404 on "get a release", 502 from a fault) is not a violation by
  itself, but its body must still be GitHub's error shape (basic-error, or validation-error for 422).
- Paths outside the subset (``/git/blobs``, ``/git/refs`` listing, signed storage URLs, ``/raw``) are reported as
  not covered, and raw media-type answers (bytes, not JSON) as not applicable.
- ``format: uri`` is checked (openapi-core has no checker for it by default): GitHub's URLs are absolute.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from werkzeug.datastructures import Headers, ImmutableMultiDict

from .faults import Exchange

SPEC_FILE = Path(__file__).parent / "data" / "github-subset.openapi.json"
UPLOAD_PATH = "/repos/{owner}/{repo}/releases/{release_id}/assets"
RAW_TYPES = ("application/octet-stream", "application/vnd.github.raw", "text/plain")


@dataclass(frozen=True)
class Violation:
    """One way an exchange departs from GitHub's description."""

    method: str
    url: str
    status: int
    kind: str  # "response" | "request"
    message: str

    def __str__(self) -> str:
        return f"{self.kind} of {self.method} {self.url} -> {self.status}: {self.message}"


@dataclass
class Result:
    """Outcome for one exchange: ``covered`` is False when the operation is not in the subset."""

    covered: bool
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    operation: str | None = None  # GitHub's operationId, e.g. "repos/upload-release-asset"


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc) and not re.search(r"\s", value)


FORMATS = {"uri": _is_uri}


@lru_cache(maxsize=1)
def spec_dict() -> dict[str, Any]:
    """The subset, with ``servers`` rewritten for the stand-in's single-host layout (see module docstring)."""
    spec = copy.deepcopy(json.loads(SPEC_FILE.read_text()))
    host = {"host": {"default": "127.0.0.1"}}
    spec["servers"] = [{"url": "http://{host}/api/v3", "variables": host}]
    spec["paths"][UPLOAD_PATH]["post"]["servers"] = [{"url": "http://{host}/api/uploads", "variables": host}]
    return spec


@lru_cache(maxsize=1)
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(spec_dict(), config=Config(extra_format_validators=FORMATS))


@lru_cache(maxsize=8)
def component_validator(name: str) -> OAS30Validator:
    """A validator for one component schema (used for error bodies of undocumented statuses)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec_dict()["components"]}
    checker = copy.deepcopy(oas30_format_checker)
    checker.checks("uri")(_is_uri)
    return OAS30Validator(schema, format_checker=checker)


@lru_cache(maxsize=1)
def _multi_segment_paths() -> list[re.Pattern[str]]:
    """Regexes for the paths whose last parameter spans segments (``x-multi-segment``: contents paths, tags,
    refs, branches). openapi-core matches a parameter within one segment only, so `lookup_path` escapes the
    slashes inside such a value; without this every nested contents path would silently go unvalidated."""
    spec = spec_dict()
    patterns = []
    for template, item in spec["paths"].items():
        multi = set()
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if "$ref" in param:
                    param = spec["components"]["parameters"][param["$ref"].rsplit("/", 1)[-1]]
                if param.get("in") == "path" and param.get("x-multi-segment"):
                    multi.add(param["name"])
        if multi:
            regex = re.sub(
                r"\\\{(\w+)\\\}",
                lambda m, multi=frozenset(multi): f"(?P<{m.group(1)}>.+)" if m.group(1) in multi else "[^/]+",
                re.escape(template),
            )
            patterns.append(re.compile(f"^(?P<prefix>/api/(?:v3|uploads)){regex}$"))
    return patterns


def lookup_path(path: str) -> str:
    """The URL path as the description's templates can match it (see `_multi_segment_paths`), with
    ``/repositories/{id}`` (GitHub's pagination-link form) mapped to ``/repos/{owner}/{repo}``."""
    path = re.sub(r"^/api/v3/repositories/\d+(?=/|$)", "/api/v3/repos/_owner_/_repo_", path)
    for pattern in _multi_segment_paths():
        match = pattern.match(path)
        if match:
            for name, value in match.groupdict().items():
                if name != "prefix" and "/" in value:
                    start, end = match.span(name)
                    path = path[:start] + value.replace("/", "%2F") + path[end:]
            break
    return path


class _Request:
    """openapi-core's request protocol over a recorded exchange."""

    def __init__(self, exchange: Exchange) -> None:
        parts = urlsplit(exchange.url)
        path = lookup_path(parts.path)
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.path = path
        self.method = exchange.method.lower()
        self.body = exchange.request_body
        self.content_type = exchange.request_headers.get("content-type", "")
        # Empty values (PyGithub always sends ``label=`` on uploads, which GitHub accepts) count as absent:
        # OpenAPI's default ``allowEmptyValue: false`` would otherwise flag a request GitHub is fine with.
        query = parse_qs(parts.query)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict([(k, v) for k, values in query.items() for v in values]),
            header=Headers(exchange.request_headers),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    def __init__(self, exchange: Exchange) -> None:
        self.status_code = exchange.status
        self.headers = Headers(exchange.response_headers)
        self.content_type = exchange.response_headers.get("content-type", "")
        self.data = exchange.response_body if exchange.response_body is not None else b""


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _schema_errors(error: BaseException) -> list[Any]:
    found: list[Any] = []
    cause: BaseException | None = error
    while cause is not None:
        found.extend(getattr(cause, "schema_errors", None) or [])
        cause = cause.__cause__ or cause.__context__
    return found


def _only_ambiguous_one_of(error: BaseException) -> bool:
    """True when the only complaint is that a ``oneOf`` matched several alternatives.

    The description's 409 for contents PUT is ``oneOf [basic-error, repository-rule-violation-error]``, and any
    GitHub error body satisfies both (neither has required members): that is a flaw of the description (it
    means ``anyOf``), not of the answer, so it is reported as a note.
    """
    errors = _schema_errors(error)
    return bool(errors) and all(e.validator == "oneOf" and "is valid under each of" in e.message for e in errors)


def _describe(error: BaseException) -> str:
    """The most specific message openapi-core has: the schema errors with their JSON paths (best match first,
    values shortened) when there are any, else the exception's own text."""
    messages = []
    for schema_error in _schema_errors(error):
        for detail in [schema_error, *sorted(schema_error.context or [], key=lambda e: len(e.absolute_path))][:4]:
            where = "/".join(str(p) for p in detail.absolute_path) or "(root)"
            messages.append(f"at {where}: {_shorten(detail.message)}")
    if not messages:
        messages.append(_shorten(str(error)))
    return f"{type(error).__name__}: " + "; ".join(dict.fromkeys(messages))


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def operation_id(method: str, url: str) -> str | None:
    """The description's operationId for a (lookup-form) URL, or None outside the subset."""
    try:
        found = APICallPathFinder(openapi().spec, base_url=None).find(method.lower(), url)
    except PathError:
        return None
    with found.operation.open() as operation:
        return operation.get("operationId")


def check_exchange(exchange: Any) -> Result:
    """Validate one exchange (the stand-in's recorded `app.Exchange` or this module's `Exchange`)."""
    if not urlsplit(exchange.url).path.startswith(("/api/v3", "/api/uploads")):
        return Result(covered=False, notes=["not a GitHub REST API path (storage/web)"])
    request, response = _Request(exchange), _Response(exchange)
    result = Result(covered=True, operation=operation_id(request.method, request.host_url + request.path))

    def violation(kind: str, message: str) -> None:
        result.violations.append(Violation(exchange.method, exchange.url, exchange.status, kind, message))

    api = openapi()
    try:
        if not _directory_listing(exchange, request, violation, result):
            api.validate_response(request, response)
    except PathError as error:
        return Result(covered=False, notes=[f"operation not in the OpenAPI subset: {error}"])
    except ResponseNotFound:
        _check_undocumented(exchange, violation, result)
    except Exception as error:
        if _caused_by(error, MediaTypeNotFound) and response.content_type.split(";")[0].strip() in RAW_TYPES:
            result.notes.append("raw media type answer (Accept: application/vnd.github.raw): no schema applies")
        elif _only_ambiguous_one_of(error):
            result.notes.append("body matches several oneOf alternatives (the description means anyOf)")
        else:
            violation("response", _describe(error))
    if exchange.status < 400 and exchange.status != 304:
        try:
            api.validate_request(request)
        except PathError:
            pass
        except Exception as error:
            violation("request", _describe(error))
    return result


def _directory_listing(exchange: Any, request: _Request, violation: Any, result: Result) -> bool:
    """A directory listing from ``GET /contents``: the description's ``oneOf`` uses a discriminator on ``type``,
    which cannot select the array alternative (content-directory), so that alternative is checked directly."""
    if exchange.method != "GET" or exchange.status != 200 or not re.search(r"/contents(/|$)", request.path):
        return False
    try:
        body = json.loads(exchange.response_body or b"")
    except ValueError:
        return False
    if not isinstance(body, list):
        return False
    result.notes.append("directory listing checked against content-directory (discriminator cannot pick arrays)")
    for error in component_validator("content-directory").iter_errors(body):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        violation("response", f"not a content-directory at {where}: {error.message}")
    return True


def _check_undocumented(exchange: Any, violation: Any, result: Result) -> None:
    """A status the subset does not list: 304 must be empty, errors must be GitHub's error shape."""
    result.notes.append(f"status {exchange.status} not documented for this operation")
    if exchange.status == 304:
        if exchange.response_body:
            violation("response", "304 with a body")
        return
    if exchange.status < 400:
        violation("response", f"undocumented success status {exchange.status}")
        return
    try:
        body = json.loads(exchange.response_body or b"")
    except ValueError:
        violation("response", f"error status {exchange.status} without a JSON body")
        return
    schema = (
        "validation-error" if exchange.status == 422 and isinstance(body, dict) and "errors" in body else "basic-error"
    )
    for error in component_validator(schema).iter_errors(body):
        violation("response", f"not a {schema}: {error.message}")
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        violation("response", "error body without a message")


def exchanges_of(response: Any) -> list[Exchange]:
    """The exchanges behind a `requests.Response`, redirect hops first."""
    out = []
    for hop in [*response.history, response]:
        prepared = hop.request
        body = prepared.body
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = None  # a streamed file: the schema has nothing to say about raw bytes
        out.append(
            Exchange(
                method=prepared.method,
                url=prepared.url,
                request_headers={k.lower(): v for k, v in prepared.headers.items()},
                request_body=body,
                status=hop.status_code,
                response_headers={k.lower(): v for k, v in hop.headers.items()},
                response_body=hop.content,
            )
        )
    return out


def validate(response: Any, require_covered: bool = False) -> list[Result]:
    """Assert that a `requests.Response` (and each redirect hop) conforms to GitHub's OpenAPI description.

    Raises AssertionError listing every violation; with ``require_covered`` also when the final exchange's
    operation is not in the subset. Returns the per-hop results for further assertions.
    """
    results = [check_exchange(e) for e in exchanges_of(response)]
    problems = [str(v) for r in results for v in r.violations]
    if require_covered and not results[-1].covered:
        problems.append(f"{response.request.method} {response.url} is not covered: {results[-1].notes}")
    assert not problems, "GitHub OpenAPI violations:\n" + "\n".join(problems)
    return results
