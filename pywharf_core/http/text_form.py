"""Read a small form of UTF-8 text fields (``/initialize/``), strictly.

Why: Starlette decodes form fields leniently (undecodable bytes become Latin-1 or U+FFFD, an
unknown charset falls back to Latin-1), so a config with a mistyped byte would be installed
with a secret nobody can type. Here the body is read with a size cap, must be UTF-8 as a whole
(the fields are TOML, which is UTF-8 by definition), and any declared charset must be UTF-8;
anything else is a 400 saying so. URL-encoded bodies are split on ``&`` only (``curl -d`` sends
TOML as typed, and Starlette would also split it on ``;``).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

_UTF8_NAMES = frozenset({"utf-8", "ascii"})


async def read_body(request: Request, limit: int, too_big: str) -> bytes:
    """The whole body, or 413 as soon as it exceeds ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit():
        raise HTTPException(400, "Malformed Content-Length header.")
    if int(declared) > limit:
        raise HTTPException(413, too_big)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, too_big)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_charset(content_type: str) -> None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset":
            continue
        charset = value.strip().strip('"')
        try:
            name = codecs.lookup(charset).name
        except LookupError:
            raise HTTPException(400, f"Unknown charset {charset[:40]!r}: send the form as UTF-8.") from None
        if name not in _UTF8_NAMES:
            raise HTTPException(400, f"Unsupported charset {charset[:40]!r}: send the form as UTF-8.")


async def text_fields(request: Request, body: bytes, names: Iterable[str], field_limit: int,
                      too_big: str) -> dict[str, str | None]:
    """The fields ``names`` of a url-encoded or multipart ``body`` (values or uploaded files)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    _check_charset(content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"The body is not UTF-8 text (byte {exc.start}).") from None
    if media_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=10)
        except UnicodeDecodeError:
            raise HTTPException(400, "A %-escape in the body does not decode as UTF-8.") from None
        except ValueError:
            raise HTTPException(400, "Too many form fields.") from None
        fields = dict(pairs)
        values = {name: fields.get(name) or None for name in names}
        if any(len(v.encode()) > field_limit for v in values.values() if v):
            raise HTTPException(413, too_big)
        return values
    if media_type != "multipart/form-data":
        raise HTTPException(415, "Send config and admin_secret as form fields "
                                 "(application/x-www-form-urlencoded or multipart/form-data).")

    async def replay() -> Message:  # the body was read already: hand it to the multipart parser
        return {"type": "http.request", "body": body, "more_body": False}

    values: dict[str, str | None] = {}
    form_request = Request(request.scope, replay)
    async with form_request.form(max_files=2, max_fields=10, max_part_size=field_limit) as form:
        for name in names:
            value = form.get(name)
            if isinstance(value, UploadFile):
                data = await value.read(field_limit + 1)
                if len(data) > field_limit:
                    raise HTTPException(413, too_big)
                value = data.decode("utf-8")  # a slice of the UTF-8 body cut at ASCII bytes
            values[name] = value or None
    return values
