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

# Real Accept headers are short (pip's is 98 characters, browsers' under 300). A longer one is
# answered 406 without parsing, so a client cannot make the event loop split megabytes.
MAX_ACCEPT_CHARS = 4096
# Media ranges looked at in one Accept header; the rest are ignored (no client sends 32).
MAX_MEDIA_RANGES = 32
# Only Accept values up to this length are memoised: with the cache's 512 entries that bounds
# it to about 128 KiB, whatever values clients make up.
MAX_CACHED_ACCEPT_CHARS = 256
_CACHE_ENTRIES = 512


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for item in header.split(",", MAX_MEDIA_RANGES)[:MAX_MEDIA_RANGES]:
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


def choose_content_type(accept: str | None, format_param: str | None = None) -> str | None:
    """The content type to answer with, or None when nothing acceptable is offered (406).

    No Accept header (or ``*/*``) means HTML, as PEP 691 requires for compatibility.
    ``?format=json|html|<content type>`` overrides negotiation. An Accept header over
    ``MAX_ACCEPT_CHARS`` is not acceptable.
    """
    if format_param:
        return _FORMAT_PARAM.get(format_param.strip().lower()) if len(format_param) <= MAX_ACCEPT_CHARS else None
    if not accept:
        return TEXT_HTML
    if len(accept) <= MAX_CACHED_ACCEPT_CHARS:
        return _choose_cached(accept)
    if len(accept) > MAX_ACCEPT_CHARS:
        return None
    return _choose(accept)


def _choose(accept: str) -> str | None:
    if not accept.strip():
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


# Memoised: clients send a handful of distinct Accept values, and this runs on every page.
_choose_cached = functools.lru_cache(maxsize=_CACHE_ENTRIES)(_choose)
