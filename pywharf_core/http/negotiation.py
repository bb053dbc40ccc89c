"""PEP 691 content negotiation between the JSON and HTML simple-API serialisations."""

from __future__ import annotations

import functools

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"

# Accept value -> the content type we answer with; listed in our order of preference for ties.
_OFFERS = {
    JSON_V1: JSON_V1,
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    HTML_V1: HTML_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
    TEXT_HTML: TEXT_HTML,
}
_PREFERENCE = {JSON_V1: 0, HTML_V1: 1, TEXT_HTML: 2}
_FORMAT_PARAM = {"json": JSON_V1, "html": HTML_V1, **{k: v for k, v in _OFFERS.items()}}


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


@functools.lru_cache(maxsize=512)
def choose_content_type(accept: str | None, format_param: str | None = None) -> str | None:
    """The content type to answer with, or None when nothing acceptable is offered (406).

    Memoised: clients send a handful of distinct Accept values, and this runs on every page.

    No Accept header (or ``*/*``) means HTML, as PEP 691 requires for compatibility.
    ``?format=json|html|<content type>`` overrides negotiation.
    """
    if format_param:
        return _FORMAT_PARAM.get(format_param.strip().lower())
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for media, quality in _parse_accept(accept):
        if quality <= 0:
            continue
        if media in _OFFERS:
            chosen = _OFFERS[media]
        elif media in ("*/*", "text/*"):
            chosen = TEXT_HTML
        elif media == "application/*":
            chosen = JSON_V1
        else:
            continue
        candidate = (quality, -_PREFERENCE[chosen], chosen)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None
