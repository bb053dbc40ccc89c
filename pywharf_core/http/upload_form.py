"""The legacy upload API (``POST /simple/``): stream the form to disk, then validate it.

The multipart body is parsed incrementally with ``python-multipart`` (Starlette's own form
backend) instead of ``request.form()``, because Starlette spools files to the system temp folder
and caps text fields at 1 MB. Here the ``content`` part is written straight into the backend's
staging folder while its md5/sha256/blake2b digests are computed, the size limit is enforced
byte by byte, and text fields get a generous separate budget so long descriptions upload.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from pywharf_core.model.errors import InvalidName, UploadRejected
from pywharf_core.model.names import DistFilename, parse_dist_filename
from pywharf_core.service.upload import ReceivedUpload
from pywharf_core.storage.backend import StagedFile

# All text fields of one upload together (descriptions can be long; PyPI allows a few MB).
FIELD_BYTES_LIMIT = 64 * 1024 * 1024
MAX_FIELDS = 5_000
# After refusing an oversize upload, read (and discard) at most this much more of the body so
# the client is still listening when the 413 arrives; past it the connection is just closed.
DRAIN_LIMIT = 256 * 1024 * 1024
# python-multipart refuses longer boundaries (RFC 2046 allows 70 characters).
MAX_BOUNDARY_BYTES = 256

log = logging.getLogger(__name__)


class _StagingWriter:
    """Writes the file part to a temp file in the staging folder, hashing as it goes."""

    def __init__(self, staging_dir: Path, limit: int) -> None:
        staging_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging_dir, prefix=".upload-", suffix=".part")
        self.path = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self.limit = limit
        self.size = 0
        self.hashes = (hashlib.md5(usedforsecurity=False), hashlib.sha256(), hashlib.blake2b(digest_size=32))

    def count(self, nbytes: int) -> None:
        self.size += nbytes
        if self.size > self.limit:
            raise UploadRejected(413, f"File too large: the limit of this repository is {self.limit} bytes.")

    def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.handle.write(chunk)
            for h in self.hashes:
                h.update(chunk)

    def finish(self) -> StagedFile:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        md5, sha256, blake2 = (h.hexdigest() for h in self.hashes)
        return StagedFile(self.path, self.size, sha256, md5, blake2)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _FormCollector:
    """python-multipart callbacks: text fields into memory (bounded), ``content`` to disk."""

    def __init__(self, open_file: Callable[[str], _StagingWriter], charset: str = "utf-8") -> None:
        self.fields: dict[str, list[str]] = {}
        self.writer: _StagingWriter | None = None
        self.pending: list[bytes] = []
        self._open_file = open_file
        self._charset = charset
        self._field_bytes = 0
        self._field_count = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_name = ""
        self._part_is_file = False
        self._part_data = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self._charset)
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part_data = bytearray()
        self._part_is_file = False
        self._field_count += 1
        if self._field_count > MAX_FIELDS:
            raise UploadRejected(400, "Too many form fields.")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise UploadRejected(400, "Malformed form: a part has no name.")
        self._part_name = self._decode(options[b"name"])
        if self._part_name == "content":
            if self.writer is not None:
                raise UploadRejected(400, "Only one 'content' file may be uploaded at a time.")
            if b"filename" not in options:
                raise UploadRejected(400, "The 'content' field must be a file.")
            self.writer = self._open_file(self._decode(options[b"filename"]))
            self._part_is_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            assert self.writer is not None
            self.writer.count(end - start)
            self.pending.append(bytes(data[start:end]))
        else:
            self._field_bytes += end - start
            if self._field_bytes > FIELD_BYTES_LIMIT:
                raise UploadRejected(413, "Form fields too large.")
            self._part_data += data[start:end]

    def on_part_end(self) -> None:
        if not self._part_is_file and self._part_name != "content":
            self.fields.setdefault(self._part_name, []).append(self._decode(bytes(self._part_data)))
        self._part_data = bytearray()


async def receive_upload(request: Request, staging_dir: Path, max_file_bytes: int) -> ReceivedUpload:
    """Stream the upload form; the staged file is deleted on any failure."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRejected(400, "Uploads must be multipart/form-data (the legacy upload API).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_file_bytes + FIELD_BYTES_LIMIT + DRAIN_LIMIT:
        raise UploadRejected(413, f"File too large: the limit of this repository is {max_file_bytes} bytes.")
    charset = _charset(params.get(b"charset", b"utf-8"))
    boundary = params[b"boundary"]
    if not boundary or len(boundary) > MAX_BOUNDARY_BYTES:
        log.warning("upload refused: multipart boundary of %d bytes", len(boundary))
        raise UploadRejected(400, f"Malformed multipart body: the boundary must be 1 to {MAX_BOUNDARY_BYTES} bytes.")

    dist_box: list[DistFilename] = []

    def open_file(filename: str) -> _StagingWriter:
        try:
            dist_box.append(parse_dist_filename(filename))
        except InvalidName as exc:
            raise UploadRejected(400, str(exc)) from exc
        return _StagingWriter(staging_dir, max_file_bytes)

    collector = _FormCollector(open_file, charset)
    parser = MultipartParser(boundary, collector.callbacks())
    stream = request.stream()
    try:
        try:
            async for chunk in stream:
                parser.write(chunk)
                if collector.pending:
                    chunks, collector.pending = collector.pending, []
                    await anyio.to_thread.run_sync(collector.writer.write, chunks)  # type: ignore[union-attr]
            parser.finalize()
        except FormParserError as exc:
            raise UploadRejected(400, f"Malformed multipart body: {exc}") from exc
        except ClientDisconnect:
            # Gone (or cut off by --stall_timeout): no one reads the answer, but it is a 4xx.
            log.warning("upload abandoned: the client disconnected before sending the whole body")
            raise UploadRejected(400, "The client disconnected during the upload.") from None
        except UploadRejected as exc:
            if exc.status == 413:
                await _drain(stream)
            raise
        if collector.writer is None:
            raise UploadRejected(400, "The upload has no 'content' file.")
        staged = await anyio.to_thread.run_sync(collector.writer.finish)
    except BaseException:
        if collector.writer is not None:
            collector.writer.discard()
        raise
    return ReceivedUpload(collector.fields, dist_box[0], staged)


def _charset(raw: bytes) -> str:
    """The form's declared charset, if Python knows it (else 400, not a LookupError's 500)."""
    name = raw.decode("latin-1").strip()
    try:
        codec = codecs.lookup(name)
        if not getattr(codec, "_is_text_encoding", True):  # rot13, base64...: bytes.decode refuses them
            raise LookupError(name)
        return codec.name
    except LookupError:
        log.warning("upload refused: unknown multipart charset %r", name[:40])
        raise UploadRejected(400, f"Unsupported form charset {name[:40]!r}: use utf-8.") from None


async def _drain(stream: Any) -> None:
    drained = 0
    with contextlib.suppress(ClientDisconnect, OSError):
        async for chunk in stream:
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                return
