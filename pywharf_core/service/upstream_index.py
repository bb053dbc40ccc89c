"""The client of an upstream simple index (PyPI, devpi, another pywharf...) for proxy repositories.

A proxy repository offers what an upstream index lists, so everything here treats the upstream
as untrusted input and fails closed:

- **Pages.** :meth:`UpstreamIndex.fetch_project` asks for PEP 691 JSON first and falls back to
  PEP 503 HTML (the ``Accept`` header pip sends), with ``If-None-Match`` so an unchanged page
  costs a 304. The body is read in chunks and refused past ``max_page_bytes`` (decompressed
  bytes are counted, so a gzip bomb is refused too) or past an overall deadline; a page with
  more than ``max_files`` files, an unknown major API version, a name that is not the project
  asked for, or values of the wrong type is *malformed*: :class:`UpstreamUnavailable`, never a
  crash, never a partial page (a truncated page could make a resolver pick an older release).
- **Files a page lists** are kept only when the filename parses as a wheel or sdist of the
  project asked for (``parse_dist_filename``: eggs, ``.tar.bz2``, ``.exe`` and names of other
  projects are skipped, counted in :attr:`UpstreamPage.skipped` and logged once per page) and
  the URL resolves to http(s). Relative URLs are resolved against the page's final URL (after
  redirects) or the HTML page's ``<base href>``, as pip does.
- **404 (and 410) is an answer, not a failure**: ``fetch_project`` returns None, the caller can
  cache "not upstream" like a page. Network errors, timeouts, 5xx, 401/403, 429 and malformed
  pages raise :class:`UpstreamUnavailable` (the caller serves its last good page).
- **Credentials** (``auth``) go only to the upstream's own origin (scheme, host and port of
  ``base_url``): never to a CDN host file URLs may point at (PyPI's files.pythonhosted.org),
  never over a redirect to another origin, never after a downgrade to plain http. Redirects are
  followed by hand (at most :data:`MAX_REDIRECTS`) to enforce that.

:func:`to_record` turns an upstream file into pywharf's :class:`FileRecord` (the page renderer's
input), and :func:`filter_cooldown` implements ``exclude_newer_than``.
"""

from __future__ import annotations

import html.parser
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import requests

from pywharf_core.model.errors import InvalidName, PywharfError
from pywharf_core.model.names import normalize_project, parse_dist_filename
from pywharf_core.model.records import FileRecord, is_sha256_hex, utc_timestamp

log = logging.getLogger(__name__)

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
# pip's own preference order: JSON, then the versioned HTML, then any HTML.
PAGE_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01"
DEFAULT_UPSTREAM = "https://pypi.org/simple/"

MAX_PAGE_BYTES = 32 << 20  # PyPI's largest project pages are a few MiB of JSON
MAX_FILES = 100_000  # files per page; the busiest nightly projects on PyPI list tens of thousands
MAX_REDIRECTS = 5
READ_CHUNK = 64 << 10
FILE_CHUNK = 1 << 20
# Longest value kept from a page, per field: an upstream cannot grow pywharf's pages or memory
# by sending megabytes of "requires-python".
MAX_URL_CHARS = 8192
MAX_REQUIRES_PYTHON_CHARS = 1024
MAX_YANKED_REASON_CHARS = 1024
MAX_ETAG_CHARS = 1024
_SUPPORTED_MAJOR = "1"


class UpstreamError(PywharfError):
    """Base of the upstream client's errors."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not answer usefully: network error, timeout, 5xx, refused credentials,
    rate limit, a page too large or malformed. The caller keeps serving what it had."""


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404/410 for a file URL its own page listed."""


@dataclass(frozen=True, slots=True)
class NotModified:
    """The page is unchanged since the ETag the caller sent (HTTP 304)."""

    etag: str


@dataclass(frozen=True, slots=True)
class UpstreamFile:
    """One distribution file as an upstream page lists it (validated, never trusted further).

    ``url`` is absolute, http(s), without fragment. ``sha256`` is 64 lowercase hex digits or
    None (the page gave none, or not a well-formed one). ``core_metadata_sha256``: None when the
    upstream offers no PEP 658 metadata file; ``""`` when it offers one without a usable sha256
    (it cannot be verified, so :func:`to_record` does not advertise it); else the digest.
    ``upload_time`` is normalised to pywharf's ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (None: unknown).
    """

    filename: str
    url: str
    sha256: str | None
    size: int | None = None
    requires_python: str = ""
    yanked: bool = False
    yanked_reason: str = ""
    core_metadata_sha256: str | None = None
    upload_time: str | None = None

    @property
    def metadata_url(self) -> str:
        """Where PEP 658 puts the metadata file: the file URL plus ``.metadata``."""
        return self.url + ".metadata"


@dataclass(frozen=True, slots=True)
class UpstreamPage:
    """A project page of the upstream, reduced to the files pywharf can offer."""

    project: str  # normalised (PEP 503)
    files: tuple[UpstreamFile, ...]
    etag: str | None  # the upstream's ETag, to send back as If-None-Match
    api_version: str  # "1.0", "1.1"...: the page's meta api-version (HTML: 1.0 unless it says)
    url: str  # the page's final URL, after redirects
    skipped: int = 0  # entries dropped: not a wheel/sdist of this project, non-http URL, duplicate


@dataclass
class UpstreamBody:
    """An upstream file download that has answered 200: its chunks, length (if sent) and close."""

    response: requests.Response
    content_length: int | None

    def chunks(self, size: int = FILE_CHUNK) -> Iterator[bytes]:
        # Raw bytes (``decode_content=False``), as pip downloads: the sha256 is of the file as
        # stored upstream, whatever Content-Encoding a misconfigured server adds.
        return self.response.raw.stream(size, decode_content=False)

    def close(self) -> None:
        self.response.close()


class UpstreamIndex:
    """A ``requests`` session to one upstream simple index (thread-safe for concurrent GETs)."""

    def __init__(
        self,
        base_url: str = DEFAULT_UPSTREAM,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 10.0,
        max_page_bytes: int = MAX_PAGE_BYTES,
        max_files: int = MAX_FILES,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream index URL must be http(s)://host/...: {base_url!r}")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.origin = _origin(self.base_url)
        self.auth = auth
        self.timeout = timeout
        self.max_page_bytes = max_page_bytes
        self.max_files = max_files
        self.session = session or requests.Session()

    def page_url(self, project: str) -> str:
        return urljoin(self.base_url, f"{normalize_project(project)}/")

    # -- pages -----------------------------------------------------------------------------------

    def fetch_project(self, project: str, etag: str | None = None) -> UpstreamPage | NotModified | None:
        """The upstream's page for ``project`` (None when it answers 404/410: no such project).

        Raises :class:`UpstreamUnavailable` for everything else that is not a usable page, and
        ``InvalidName`` for a name that is not a project name (never sent upstream).
        """
        name = normalize_project(project)
        headers = {"Accept": PAGE_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        deadline = time.monotonic() + 3 * self.timeout
        response = self._get(self.page_url(name), headers, deadline)
        with response:
            if response.status_code == 304:
                return NotModified(_header(response, "ETag") or etag or "")
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise UpstreamUnavailable(f"upstream page {response.url}: HTTP {response.status_code}")
            body = self._read_capped(response, deadline)
            media_type, charset = _content_type(response)
            final_url = response.url
            page_etag = _header(response, "ETag")
        if media_type in (JSON_V1, "application/json"):
            api_version, entries = _parse_json_page(body, name, final_url)
        elif media_type in (HTML_V1, "text/html"):
            api_version, entries = _parse_html_page(body, charset, final_url, self.max_files)
        else:
            raise UpstreamUnavailable(f"upstream page {final_url}: unexpected content type {media_type!r}")
        return self._page(name, api_version, entries, page_etag, final_url)

    def _page(self, name: str, api_version: str, entries: Iterable[UpstreamFile | None], etag: str | None,
              url: str) -> UpstreamPage:
        files: list[UpstreamFile] = []
        seen: set[str] = set()
        skipped = 0
        for count, entry in enumerate(entries, 1):
            if count > self.max_files:
                raise UpstreamUnavailable(f"upstream page {url}: more than {self.max_files} files")
            if entry is None or entry.filename in seen or not _belongs_to(entry.filename, name):
                skipped += 1
                continue
            seen.add(entry.filename)
            files.append(entry)
        if skipped:
            log.info("upstream page %s: skipped %d entries (not a wheel or sdist of %r, or unusable)",
                     url, skipped, name)
        return UpstreamPage(name, tuple(files), etag, api_version, url, skipped)

    # -- files -----------------------------------------------------------------------------------

    def open_file(self, url: str) -> UpstreamBody:
        """Start downloading ``url`` (a file or ``.metadata`` URL from a page): an open 200 response.

        Raises :class:`UpstreamNotFound` for 404/410 and :class:`UpstreamUnavailable` for anything
        else that is not a 200. ``timeout`` bounds connecting and each read, not the whole body
        (a 500 MB wheel legitimately takes minutes)."""
        headers = {"Accept-Encoding": "identity"}  # the bytes as stored, as pip asks for them
        response = self._get(url, headers, deadline=None)
        if response.status_code == 200:
            length = _header(response, "Content-Length")
            return UpstreamBody(response, int(length) if length and length.isdigit() else None)
        response.close()
        if response.status_code in (404, 410):
            raise UpstreamNotFound(f"upstream file {url}: HTTP {response.status_code}")
        raise UpstreamUnavailable(f"upstream file {url}: HTTP {response.status_code}")

    # -- transport -------------------------------------------------------------------------------

    def _get(self, url: str, headers: Mapping[str, str], deadline: float | None) -> requests.Response:
        """GET ``url`` following at most MAX_REDIRECTS redirects by hand (see the module docstring
        for where credentials go); the final response is open (streamed), the caller closes it."""
        for _ in range(MAX_REDIRECTS + 1):
            auth = self.auth if self.auth is not None and _origin(url) == self.origin else None
            try:
                response = self.session.get(url, headers=dict(headers), auth=auth, timeout=self.timeout,
                                            stream=True, allow_redirects=False)
            except requests.RequestException as exc:
                raise UpstreamUnavailable(f"upstream {url}: {type(exc).__name__}: {exc}") from exc
            if not response.is_redirect:
                return response
            location = _header(response, "Location") or ""
            response.close()
            target = urldefrag(urljoin(url, location))[0]
            if urlsplit(target).scheme not in ("http", "https"):
                raise UpstreamUnavailable(f"upstream {url}: redirected to a non-http URL {target!r}")
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http":
                raise UpstreamUnavailable(f"upstream {url}: redirected from https to plain http {target!r}")
            if deadline is not None and time.monotonic() > deadline:
                raise UpstreamUnavailable(f"upstream {url}: redirects took longer than {3 * self.timeout:g} s")
            url = target
        raise UpstreamUnavailable(f"upstream {url}: more than {MAX_REDIRECTS} redirects")

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes:
        length = _header(response, "Content-Length")
        if length and length.isdigit() and int(length) > self.max_page_bytes:
            raise UpstreamUnavailable(f"upstream page {response.url}: larger than {self.max_page_bytes} bytes")
        body = bytearray()
        try:
            # Decoded bytes are counted: a small gzip body cannot expand past the cap.
            for chunk in response.iter_content(READ_CHUNK):
                body += chunk
                if len(body) > self.max_page_bytes:
                    raise UpstreamUnavailable(f"upstream page {response.url}: larger than {self.max_page_bytes} bytes")
                if time.monotonic() > deadline:
                    raise UpstreamUnavailable(f"upstream page {response.url}: took longer than {3 * self.timeout:g} s")
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"upstream page {response.url}: {type(exc).__name__}: {exc}") from exc
        return bytes(body)


# -- converting and filtering --------------------------------------------------------------------


def to_record(file: UpstreamFile) -> FileRecord | None:
    """The :class:`FileRecord` a proxy page renders for ``file``; None when it cannot be offered.

    A file without a sha256 is not offered: the proxy must verify what it caches and serves
    (otherwise whoever sits between pywharf and the upstream chooses the bytes every client
    installs), and pywharf's pages always carry the hash. The size is 0 when the upstream did
    not say (PEP 503 HTML pages never do): FileRecord needs an int and HTML pages do not render
    it, but a PEP 700 JSON page would claim ``"size": 0``, so whoever renders a proxy page must
    omit it or use the size of the cached blob. The metadata file is advertised only with a
    sha256 it can be verified against.
    """
    if file.sha256 is None:
        return None
    try:
        dist = parse_dist_filename(file.filename)
    except InvalidName:
        return None
    return FileRecord(
        filename=file.filename,
        distrib=dist.project,
        version=str(dist.version),
        sha256=file.sha256,
        size=file.size or 0,
        upload_time=file.upload_time or "",
        requires_python=file.requires_python,
        metadata_sha256=file.core_metadata_sha256 or "",
        yanked=file.yanked,
        yanked_reason=file.yanked_reason,
    )


def filter_cooldown(files: Iterable[UpstreamFile], cooldown_seconds: float | None,
                    now: datetime) -> tuple[UpstreamFile, ...]:
    """``exclude_newer_than``: the files uploaded at least ``cooldown_seconds`` before ``now``.

    None: no cooldown, every file. With a cooldown, a file without an upload time is dropped
    too (its age is unknown, and a fresh malicious release is what the cooldown is for); so is
    one "uploaded" in the future. ``now`` must be timezone-aware.
    """
    if cooldown_seconds is None:
        return tuple(files)
    cutoff = now - timedelta(seconds=cooldown_seconds)
    kept = []
    for file in files:
        uploaded = parse_upload_time(file.upload_time) if file.upload_time else None
        if uploaded is not None and uploaded <= cutoff:
            kept.append(file)
    return tuple(kept)


_ISO_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?", re.ASCII
)


def parse_upload_time(value: str) -> datetime | None:
    """A PEP 700 ``upload-time`` (ISO 8601) as an aware UTC datetime; None when it is not one.

    By hand rather than ``datetime.fromisoformat``: before Python 3.11 that refuses the ``Z``
    and fractions of other than 3 or 6 digits, both of which upstreams send."""
    match = _ISO_TIME.fullmatch(value.strip()) if isinstance(value, str) and len(value) <= 64 else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          int((fraction or "0")[:6].ljust(6, "0")), tzinfo=timezone.utc)
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment


# -- parsing: PEP 691 JSON -----------------------------------------------------------------------


def _parse_json_page(body: bytes, name: str, url: str) -> tuple[str, Iterator[UpstreamFile | None]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _malformed(url, f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _malformed(url, "not a JSON object")
    api_version = _api_version(_field(document, "meta", dict, url).get("api-version"), url)
    page_name = _field(document, "name", str, url)
    try:
        same = normalize_project(page_name) == name
    except InvalidName:
        same = False
    if not same:
        raise _malformed(url, f"it is the page of {page_name!r}, not of {name!r}")
    entries = _field(document, "files", list, url)
    return api_version, (_json_file(entry, url) for entry in entries)


def _json_file(entry: Any, page_url: str) -> UpstreamFile | None:
    if not isinstance(entry, dict):
        raise _malformed(page_url, "a file entry is not an object")
    filename = _field(entry, "filename", str, page_url)
    href = _field(entry, "url", str, page_url)
    hashes = _field(entry, "hashes", dict, page_url)
    requires_python = _optional(entry, "requires-python", str, page_url) or ""
    size = _optional(entry, "size", int, page_url)
    if size is not None and size < 0:
        raise _malformed(page_url, f"negative size for {filename!r}")
    yanked_value = entry.get("yanked", False)
    if not isinstance(yanked_value, (bool, str)):
        raise _malformed(page_url, f"'yanked' of {filename!r} is neither a boolean nor a string")
    # pip's reading: true or a non-empty reason means yanked; false or "" means not.
    yanked = bool(yanked_value)
    reason = yanked_value if isinstance(yanked_value, str) else ""
    metadata: Any = False
    for key in ("core-metadata", "dist-info-metadata", "data-dist-info-metadata"):  # PEP 714's order
        if key in entry:
            metadata = entry[key]
            break
    if isinstance(metadata, bool):
        metadata_sha256 = "" if metadata else None
    elif isinstance(metadata, dict):
        metadata_sha256 = _sha256(metadata.get("sha256")) or ""
    else:
        raise _malformed(page_url, f"'core-metadata' of {filename!r} is neither a boolean nor an object")
    upload_value = _optional(entry, "upload-time", str, page_url)
    uploaded = parse_upload_time(upload_value) if upload_value else None
    return _file(filename, href, page_url, sha256=_sha256(hashes.get("sha256")), size=size,
                 requires_python=requires_python, yanked=yanked, yanked_reason=reason,
                 core_metadata_sha256=metadata_sha256,
                 upload_time=utc_timestamp(uploaded) if uploaded else None)


def _field(document: Mapping[str, Any], key: str, kind: type, url: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(url, f"{key!r} is not a {kind.__name__}")
    return value


def _optional(document: Mapping[str, Any], key: str, kind: type, url: str) -> Any:
    return None if document.get(key) is None else _field(document, key, kind, url)


# -- parsing: PEP 503 HTML -----------------------------------------------------------------------


class _AnchorParser(html.parser.HTMLParser):
    """Collects ``<a href>`` attributes, ``<base href>`` and the repository-version meta tag.

    ``html.parser`` unescapes attribute values (``&lt;`` -> ``<``), as PEP 503 requires."""

    def __init__(self, max_anchors: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_anchors = max_anchors  # one more is kept, so the page is refused, not cut
        self.anchors: list[dict[str, str | None]] = []
        self.base: str | None = None
        self.api_version = "1.0"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            if len(self.anchors) <= self.max_anchors:
                self.anchors.append(values)
        elif tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        elif tag == "meta" and values.get("name") == "pypi:repository-version" and values.get("content"):
            self.api_version = str(values["content"])


def _parse_html_page(body: bytes, charset: str, url: str,
                     max_files: int) -> tuple[str, Iterator[UpstreamFile | None]]:
    try:
        text = body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        text = body.decode("utf-8", errors="replace")
    parser = _AnchorParser(max_files)
    parser.feed(text)
    parser.close()
    api_version = _api_version(parser.api_version, url)
    base = urljoin(url, parser.base) if parser.base else url
    return api_version, (_html_file(anchor, base) for anchor in parser.anchors)


def _html_file(anchor: Mapping[str, str | None], base: str) -> UpstreamFile | None:
    href = anchor.get("href") or ""
    absolute = urljoin(base, href) if len(href) <= MAX_URL_CHARS else ""
    _, fragment = urldefrag(absolute)
    digests = dict(part.partition("=")[::2] for part in fragment.split("&") if "=" in part)
    # The filename is the URL's last path segment (pip's reading), not the anchor's text.
    filename = unquote(urlsplit(absolute).path.rpartition("/")[2])
    metadata: str | None = None
    for key in ("data-core-metadata", "data-dist-info-metadata"):  # PEP 714's order
        if key in anchor:
            metadata = anchor[key] or ""
            break
    if metadata is None or metadata.lower() == "false":
        metadata_sha256 = None
    else:
        algorithm, _, digest = metadata.partition("=")
        metadata_sha256 = (_sha256(digest) or "") if algorithm.lower() == "sha256" else ""
    yanked = "data-yanked" in anchor
    return _file(filename, href, base, sha256=_sha256(digests.get("sha256")), size=None,
                 requires_python=anchor.get("data-requires-python") or "", yanked=yanked,
                 yanked_reason=(anchor.get("data-yanked") or "") if yanked else "",
                 core_metadata_sha256=metadata_sha256, upload_time=None)


# -- shared --------------------------------------------------------------------------------------


def _file(filename: str, href: str, base: str, *, sha256: str | None, size: int | None, requires_python: str,
          yanked: bool, yanked_reason: str, core_metadata_sha256: str | None,
          upload_time: str | None) -> UpstreamFile | None:
    """The validated entry, or None when it cannot be offered (skipped and counted)."""
    if len(href) > MAX_URL_CHARS or len(requires_python) > MAX_REQUIRES_PYTHON_CHARS:
        return None
    url = urldefrag(urljoin(base, href))[0]
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        return None
    return UpstreamFile(
        filename=filename,
        url=url,
        sha256=sha256,
        size=size,
        requires_python=requires_python.strip(),
        yanked=yanked,
        yanked_reason=yanked_reason[:MAX_YANKED_REASON_CHARS],
        core_metadata_sha256=core_metadata_sha256,
        upload_time=upload_time,
    )


def _belongs_to(filename: str, project: str) -> bool:
    try:
        return parse_dist_filename(filename).project == project
    except InvalidName:
        return False


def _sha256(value: object) -> str | None:
    digest = value.lower() if isinstance(value, str) else None
    return digest if is_sha256_hex(digest) else None


def _api_version(value: object, url: str) -> str:
    if not isinstance(value, str) or value.split(".", 1)[0] != _SUPPORTED_MAJOR or len(value) > 16:
        raise _malformed(url, f"unsupported api-version {value!r}")
    return value


def _malformed(url: str, why: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"upstream page {url} is malformed: {why}")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _header(response: requests.Response, name: str) -> str | None:
    value = response.headers.get(name)
    return value if value is not None and len(value) <= MAX_ETAG_CHARS else None


def _content_type(response: requests.Response) -> tuple[str, str]:
    raw = response.headers.get("Content-Type", "")
    media_type, _, params = raw.partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"')
    return media_type.strip().lower(), charset
