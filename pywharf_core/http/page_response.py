"""The HTTP response of a rendered simple page: ETag, 304, gzip, cache headers, built once.

The application (``pywharf_core.http.app``) and the protocol's fast lane
(``pywharf_core.http.fast_lane``) both answer pages through :func:`page_variant`, so the bytes
are the same whichever of them answers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pywharf_core.http.negotiation import TEXT_HTML
from pywharf_core.http.pages import GZIP_MIN_BYTES, RenderedPage
from pywharf_core.http.security_headers import SECURITY_HEADERS

RawHeaders = list[tuple[bytes, bytes]]


class CachedPageResponse(Response):
    """A cached page sent with raw headers built once per page variant.

    Building headers (Starlette's ``init_headers``) was a fifth of a cached page's cost."""

    def __init__(self, body: bytes, raw_headers: RawHeaders) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def uses_gzip(page: RenderedPage, accept_encoding: str) -> bool:
    return len(page.body) >= GZIP_MIN_BYTES and "gzip" in accept_encoding


def page_variant(page: RenderedPage, content_type: str, accept_encoding: str, max_age: int) -> tuple[bytes, RawHeaders]:
    """The body and complete raw headers (security headers included) of ``page`` for a client
    accepting ``accept_encoding``, made once per variant and kept on the page."""
    use_gzip = uses_gzip(page, accept_encoding)
    key = (content_type, use_gzip, max_age)
    variant = page.variants.get(key)
    if variant is None:
        body = page.gzipped() if use_gzip else page.body
        etag = page.gzip_etag if use_gzip else page.etag
        response = Response(
            body,
            media_type="text/html; charset=utf-8" if content_type == TEXT_HTML else content_type,
            headers={**page_headers(etag, max_age), **({"Content-Encoding": "gzip"} if use_gzip else {})},
        )
        # The security headers are baked in, so the middleware adds nothing to a cached page.
        variant = page.variants[key] = (body, [*response.raw_headers, *SECURITY_HEADERS])
    return variant


def page_wire(page: RenderedPage, content_type: str, accept_encoding: str, max_age: int) -> tuple[bytes, bytes]:
    """:func:`page_variant` as HTTP/1.1 header lines (``name: value\\r\\n`` each, no status
    line, no blank line) and the body: what the protocol's fast lane writes, made once per variant."""
    key = (content_type, uses_gzip(page, accept_encoding), max_age)
    wire = page.wire.get(key)
    if wire is None:
        body, raw_headers = page_variant(page, content_type, accept_encoding, max_age)
        wire = page.wire[key] = (body, b"".join(name + b": " + value + b"\r\n" for name, value in raw_headers))
    return wire


def page_headers(etag: str, max_age: int) -> dict[str, str]:
    return {"ETag": etag, "Vary": "Accept, Accept-Encoding", "Cache-Control": f"private, max-age={max_age}"}


def page_response(request: Request, page: RenderedPage, content_type: str) -> Response:
    """A cached page with a strong ETag (304 on match), gzip when accepted and worth it."""
    headers = request.headers
    accept_encoding = headers.get("accept-encoding", "")
    etag = page.gzip_etag if uses_gzip(page, accept_encoding) else page.etag
    if_none_match = headers.get("if-none-match", "")
    max_age = request.app.state.pywharf.settings.page_max_age
    if if_none_match and (etag in if_none_match or if_none_match.strip() == "*"):
        return Response(status_code=304, headers=page_headers(etag, max_age))
    return CachedPageResponse(*page_variant(page, content_type, accept_encoding, max_age))
