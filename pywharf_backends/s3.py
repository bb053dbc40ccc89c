"""The ``s3`` backend: package files in an S3-compatible bucket (AWS S3, Ceph RGW, SeaweedFS, MinIO...).

Several pywharf servers can run over one bucket behind a load balancer: the bucket is the only
state, every server holds caches only, and any of them may be killed at any time.

Layout under ``prefix`` (the same as a ``file_system`` storage folder, so either can be copied
into the other)::

    index.toml                      the remote index
    <filename>                      each package file, immutable once stored; its object
                                    metadata carries ``sha256`` (written atomically with it)
    .pywharf/<filename>.toml        the upload's metadata (incl. description) and yank state
    .pywharf/<filename>.metadata    the PEP 658 core-metadata file

Correctness rests on two conditional writes the S3 API offers (AWS since 2024, SeaweedFS,
recent MinIO and Ceph; ``pywharf s3.check_engine`` probes a store):

- **create-only files**: a file is written with ``If-None-Match: *`` (on ``PutObject``, or on
  ``CompleteMultipartUpload`` above ``multipart_threshold``), so of two servers racing on one
  filename exactly one wins; the loser compares sha256 and answers "identical" or 409. Nobody
  ever sees a partial object (S3 objects appear whole), and sidecars are written only by the
  winner, after it won.
- **compare-and-swap on the index**: after storing, the uploading server adds the file to
  ``index.toml`` with ``If-Match: <ETag>`` and retries on 412, so no concurrent update is lost
  and every server sees the upload at its next sync (a conditional GET: 304 when unchanged).
  Uploads arriving together on one server are committed together (one write for the batch),
  and a server starts from the copy it last wrote, so an uncontended update is a single PUT.
  ``update_index`` rebuilds the index from the bucket alone and merges what other servers added
  while it was listing.

A crash between steps leaves only states a retry or ``update_index`` repairs: a stored file
without sidecars (``update_index`` reads its metadata from the file; a byte-identical re-upload
writes them), a file missing from the index (same), or an incomplete multipart upload, which is
invisible (let a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` reclaim it).

``boto3`` is imported lazily, so installing pywharf without the ``s3`` extra costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import tomli_w

from pywharf_core.index.formats import IndexFormatError, dump_index, dump_record_entry, parse_index
from pywharf_core.model.errors import BackendUnavailable, ConfigError, FileConflict, InvalidName, PywharfError
from pywharf_core.model.metadata import description_of, extract_core_metadata, read_core_metadata
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord, freeze_meta, is_sha256_hex, utc_timestamp
from pywharf_core.storage.backend import (
    Backend,
    BackendContext,
    DownloadTarget,
    Permission,
    Redirect,
    RemoteIndex,
    StagedFile,
    StoreOutcome,
    StreamedFile,
)
from pywharf_core.storage.config import ConfigSource, PkgRepoConfig, build_config
from pywharf_core.storage.registry import BackendSpec
from pywharf_core.storage.shared_secrets import shared_secret_permission

if TYPE_CHECKING:  # pragma: no cover
    from botocore.exceptions import ClientError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

INDEX_NAME = "index.toml"
SIDECAR_DIR = ".pywharf/"
ABSENT = "absent"  # the token of a repository without a remote index yet
MIB = 1 << 20
CHUNK = 1 * MIB  # read/stream granularity
INDEX_CAS_DEADLINE_SECONDS = 60.0
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_RECORD_KEYS = frozenset({"sha256", "size", "upload_time", "metadata_sha256", "yanked", "yanked_reason"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
# AWS answers 409 when two conditional writes on one key overlap: retry, like a 412.
_CONFLICT_CODES = frozenset({"ConditionalRequestConflict", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, kw_only=True)
class S3Config(PkgRepoConfig):
    # Keys an admin-secret table may hold for this backend (instead of raw/env "ID:SECRET").
    admin_secret_keys: ClassVar[tuple[str, ...]] = ("aws_access_key_id", "aws_secret_access_key")

    read_secret: str = field(repr=False)  # client secret that may read
    write_secret: str = field(repr=False)  # client secret that may read and upload
    bucket: str  # the bucket (it must exist)
    prefix: str = ""  # key prefix, e.g. "team/pkgs": several repositories can share a bucket
    endpoint_url: str | None = None  # the store's URL for non-AWS stores (None: AWS, by region)
    # The URL clients reach the store at, for redirects (default: endpoint_url).
    public_endpoint_url: str | None = None
    region_name: str | None = None  # None: the standard AWS chain (AWS_REGION, ~/.aws/config)
    addressing_style: str = "auto"  # "auto" (path-style when endpoint_url is set), "path" or "virtual"
    max_file_bytes: int = 5 * 1024 * MIB  # largest accepted upload: 5 GiB (multipart allows more)
    # "redirect": 302 to a presigned GET, bytes never pass through pywharf; "stream": pywharf relays them.
    download: str = "redirect"
    presign_expires: int = 900  # seconds a presigned download URL stays valid
    multipart_threshold: int = 64 * MIB  # files at least this big go up as multipart uploads
    multipart_chunksize: int = 16 * MIB  # part size (S3's minimum is 5 MiB; raised to fit 10,000 parts)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if not self.read_secret:
            problems.append(("read_secret", "must not be empty"))
        if not self.write_secret:
            problems.append(("write_secret", "must not be empty"))
        if not _BUCKET_RE.fullmatch(self.bucket) or ".." in self.bucket:
            problems.append(("bucket", "must be an S3 bucket name (3-63 of a-z 0-9 . -)"))
        parts = self.prefix.strip("/").split("/") if self.prefix.strip("/") else []
        if "\\" in self.prefix or any(p in ("", ".", "..") for p in parts):
            problems.append(("prefix", "must be a plain key prefix like 'team/pkgs' (no '..', '//', '\\')"))
        for key in ("endpoint_url", "public_endpoint_url"):
            value = getattr(self, key)
            if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
                problems.append((key, "must be an http(s)://host[:port] URL"))
        if self.addressing_style not in ("auto", "path", "virtual"):
            problems.append(("addressing_style", "must be 'auto', 'path' or 'virtual'"))
        if self.download not in ("redirect", "stream"):
            problems.append(("download", "must be 'redirect' or 'stream'"))
        if not 1 <= self.presign_expires <= 604800:
            problems.append(("presign_expires", "must be between 1 and 604800 seconds (SigV4's limit)"))
        if self.multipart_chunksize < 5 * MIB:
            problems.append(("multipart_chunksize", "must be at least 5 MiB (5242880), S3's smallest part"))
        if self.multipart_threshold < self.multipart_chunksize:
            problems.append(("multipart_threshold", "must be at least multipart_chunksize"))
        return problems

    @property
    def key_prefix(self) -> str:
        """The prefix as keys start with it: '' or 'a/b/'."""
        stripped = self.prefix.strip("/")
        return f"{stripped}/" if stripped else ""


def parse_admin_secret(secret: str | None) -> dict[str, str]:
    """AWS keys from the admin secret: JSON from named keys, or ``ACCESS_KEY_ID:SECRET_ACCESS_KEY``.

    None or empty: no explicit keys, boto3's standard chain applies (env, ~/.aws, instance role).
    """
    if not secret:
        return {}
    if secret.lstrip().startswith("{"):
        try:
            data = json.loads(secret)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("aws_access_key_id") and data.get("aws_secret_access_key"):
            return {k: str(data[k]) for k in ("aws_access_key_id", "aws_secret_access_key")}
    else:
        key_id, sep, key = secret.partition(":")
        if sep and key_id.strip() and key:
            return {"aws_access_key_id": key_id.strip(), "aws_secret_access_key": key}
    raise ConfigError(
        "s3 admin secret: give aws_access_key_id and aws_secret_access_key, or raw/env "
        "'ACCESS_KEY_ID:SECRET_ACCESS_KEY'"
    )


def _boto3() -> Any:
    try:
        import boto3
    except ModuleNotFoundError as exc:
        raise ConfigError("backend 's3' needs boto3: pip install 'pywharf[s3]'") from exc
    return boto3


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is(exc: Exception, codes: frozenset[str], status: int) -> bool:
    """Whether ``exc`` is an S3 error with one of ``codes`` (or ``status`` when it has no code).

    By code first: a missing bucket is a 404 too, and must not pass for a missing key.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = _code(exc)
    return code in codes if code else _status(exc) == status


F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """botocore's errors as one-line BackendUnavailable (503), after boto3's own retries."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        message = str(exc.response.get("Error", {}).get("Message") or "")
        raise BackendUnavailable(f"S3 {what}: {_code(exc) or _status(exc)} {message}".strip()) from exc
    except BotoCoreError as exc:
        raise BackendUnavailable(f"S3 {what}: {exc}") from exc


def _reports_unavailable(what: str) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _unavailable(what):
                return method(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class _Exists(Exception):
    """A create-only write lost: the key already holds an object."""


class _FileSlice(io.RawIOBase):
    """A seekable read-only window on a file: one multipart part, streamed from disk, not memory."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._offset, self._length, self._pos = offset, length, 0
        self._handle.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        self._handle.seek(self._offset + self._pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = self._handle.readinto(view[: max(0, min(len(view), self._length - self._pos))])
        self._pos += count or 0
        return count or 0

    def close(self) -> None:
        self._handle.close()
        super().close()


class _BodyChunks(Iterator[bytes]):
    """An S3 GET body as 1 MiB chunks; closing it (or exhausting it) returns the connection."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._chunks = body.iter_chunks(CHUNK)

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()

    def __del__(self) -> None:
        self.close()


class S3Backend(Backend):
    config: S3Config

    def __init__(self, config: S3Config, context: BackendContext) -> None:  # type: ignore[override]
        super().__init__(config, context)
        boto3 = _boto3()
        from botocore.config import Config

        credentials = parse_admin_secret(context.admin_secret)
        style = config.addressing_style
        if style == "auto" and config.endpoint_url:
            style = "path"  # what S3-compatible stores reliably support
        client_config = Config(
            s3={"addressing_style": style},
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=10,
            read_timeout=120,
            # boto3 >= 1.36 adds CRC checksums by default, which several S3-compatible stores
            # reject; pywharf checks sha256 itself.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(region_name=config.region_name, **credentials)
        self.s3 = session.client("s3", endpoint_url=config.endpoint_url, config=client_config)
        public = config.public_endpoint_url
        self.presigner = (
            session.client("s3", endpoint_url=public, config=client_config)
            if public and public != config.endpoint_url
            else self.s3
        )
        self.bucket = config.bucket
        self.prefix = config.key_prefix
        self._staging = Path(context.root) / "cache" / config.name / "staging"
        self._existing: set[str] = set()  # keys known to exist (files are immutable)
        self._etag_unquoted = False  # the store wants If-Match ETags without quotes
        self._index_base: tuple[str | None, dict[str, FileRecord]] | None = None
        self._index_cache: tuple[str, bytes | None] | None = None  # (ETag, document) last read or written
        self._batch: list[tuple[Callable[[bytes | None], bytes | None], Future[bool]]] = []
        self._batch_leader = False
        self._batch_cv = threading.Condition()
        self._lock = threading.Lock()
        _remove_stale_parts(self._staging)

    # -- keys --------------------------------------------------------------------------------

    def _file_key(self, filename: str) -> str:
        """The key of a validated distribution filename (never a path outside the prefix)."""
        parse_dist_filename(filename)
        if "/" in filename or "\\" in filename:
            raise InvalidName(f"invalid distribution filename {filename!r}")
        return self.prefix + filename

    def _sidecar_key(self, filename: str) -> str:
        return f"{self.prefix}{SIDECAR_DIR}{filename}.toml"

    def _metadata_key(self, filename: str) -> str:
        return f"{self.prefix}{SIDECAR_DIR}{filename}.metadata"

    @property
    def _index_key(self) -> str:
        return self.prefix + INDEX_NAME

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Permission:
        return shared_secret_permission(secret, self.config.read_secret, self.config.write_secret)

    # -- store -------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """Uploads are received on local disk (hashed, size-checked) before going to the bucket."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    @_reports_unavailable("upload")
    def store(
        self,
        record: FileRecord,
        staged: StagedFile,
        metadata: Mapping[str, Any],
        core_metadata: bytes | None,
    ) -> StoreOutcome:
        key = self._file_key(record.filename)
        # The upload's digests too, so an index rebuilt from the bucket equals the one uploads built.
        metadata = {**metadata, "md5_digest": staged.md5, "blake2_256_digest": staged.blake2_256}
        try:
            if staged.size >= self.config.multipart_threshold and self._exists_now(key):
                raise _Exists  # skip sending gigabytes only to lose the conditional write
            self._put_create_only(key, staged)
        except _Exists:
            if self._stored_sha256(record.filename) != staged.sha256:
                raise FileConflict(
                    f"File already exists: {record.filename!r} is stored with different content."
                ) from None
            # Same bytes: finish whatever an earlier attempt (maybe killed) left undone.
            self._write_sidecars(record.filename, metadata, core_metadata, overwrite=False)
            self._index_add(record, replace=False)
            return StoreOutcome.IDENTICAL
        self._existing.add(key)
        self._write_sidecars(record.filename, metadata, core_metadata, overwrite=True)
        self._index_add(record, replace=True)
        return StoreOutcome.CREATED

    def _put_create_only(self, key: str, staged: StagedFile) -> None:
        """Upload the staged file to ``key`` unless ``key`` exists (then raise _Exists)."""
        args = {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": "application/octet-stream",
            "Metadata": {"sha256": staged.sha256},
        }
        for attempt in range(5):
            try:
                if staged.size < self.config.multipart_threshold:
                    with open(staged.path, "rb") as body:
                        self.s3.put_object(Body=body, ContentLength=staged.size, IfNoneMatch="*", **args)
                else:
                    self._multipart_create_only(args, staged)
                return
            except Exception as exc:
                if _is(exc, _PRECONDITION_CODES, 412):
                    raise _Exists from None
                if not _is(exc, _CONFLICT_CODES, 409) or attempt == 4:
                    raise
                time.sleep(random.uniform(0.05, 0.2))

    def _multipart_create_only(self, args: Mapping[str, Any], staged: StagedFile) -> None:
        """Parts straight from disk (4 at a time), then a completion that is the create-only write.

        Until the completion nothing is visible under ``key``; on any failure the upload is
        aborted (a killed server leaves an invisible incomplete upload for the lifecycle rule).
        """
        part_size = max(self.config.multipart_chunksize, -(-staged.size // 10_000))
        upload_id = self.s3.create_multipart_upload(**args)["UploadId"]
        bucket, key = args["Bucket"], args["Key"]
        try:
            def send(number: int) -> dict[str, Any]:
                offset = (number - 1) * part_size
                length = min(part_size, staged.size - offset)
                with _FileSlice(staged.path, offset, length) as body:
                    etag = self.s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=body, ContentLength=length,
                    )["ETag"]
                return {"PartNumber": number, "ETag": etag}

            count = max(1, -(-staged.size // part_size))
            with ThreadPoolExecutor(max_workers=min(4, count), thread_name_prefix="pywharf-s3-part") as pool:
                parts = list(pool.map(send, range(1, count + 1)))
            self.s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def _exists_now(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return False
            raise
        return True

    def _stored_sha256(self, filename: str) -> str:
        """The stored file's sha256: from its object metadata, else by reading it."""
        key = self._file_key(filename)
        for _ in range(3):
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _is(exc, _MISSING_CODES, 404):  # deleted between the write and now
                    time.sleep(0.1)
                    continue
                raise
            stored = head.get("Metadata", {}).get("sha256")
            if stored:
                return str(stored)
            digest = hashlib.sha256()
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()
        return ""

    def _write_sidecars(
        self, filename: str, metadata: Mapping[str, Any], core_metadata: bytes | None, *, overwrite: bool
    ) -> None:
        """The upload's metadata and PEP 658 file; ``overwrite=False`` only fills in missing ones."""
        pending = [(self._sidecar_key(filename), tomli_w.dumps(dict(metadata)).encode(), "application/toml")]
        if core_metadata is not None:
            pending.append((self._metadata_key(filename), core_metadata, "text/plain; charset=utf-8"))
        for key, data, content_type in pending:
            extra = {} if overwrite else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra)
            except Exception as exc:
                if overwrite or not _is(exc, _PRECONDITION_CODES | _CONFLICT_CODES, 412):
                    raise

    def _read_sidecar(self, filename: str) -> dict[str, Any] | None:
        try:
            data = self.s3.get_object(Bucket=self.bucket, Key=self._sidecar_key(filename))["Body"].read()
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None
            raise
        try:
            return tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return None

    # -- downloads ---------------------------------------------------------------------------

    @_reports_unavailable("download")
    def locate(self, filename: str) -> DownloadTarget | None:
        try:
            key = self._file_key(filename)
        except InvalidName:
            return None
        return self._target(key)

    @_reports_unavailable("download")
    def locate_metadata(self, filename: str) -> DownloadTarget | None:
        try:
            self._file_key(filename)
        except InvalidName:
            return None
        return self._target(self._metadata_key(filename))

    def _target(self, key: str) -> DownloadTarget | None:
        if self.config.download == "stream":
            try:
                response = self.s3.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _is(exc, _MISSING_CODES, 404):
                    return None
                raise
            return StreamedFile(_BodyChunks(response["Body"]), int(response["ContentLength"]))
        # Redirect: the client fetches the bytes from the store; pywharf only signs a URL.
        if key not in self._existing:
            if not self._exists_now(key):
                return None
            with self._lock:
                if len(self._existing) > 100_000:
                    self._existing.clear()
                self._existing.add(key)
        url = self.presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.config.presign_expires
        )
        return Redirect(url)

    @_reports_unavailable("read")
    def read_description(self, filename: str) -> tuple[str, str] | None:
        """The upload's long description, from the sidecar (too large for the index)."""
        try:
            self._file_key(filename)
        except InvalidName:
            return None
        return description_of(self._read_sidecar(filename) or {})

    # -- yank --------------------------------------------------------------------------------

    @_reports_unavailable("yank")
    def set_yanked(self, filename: str, yanked: bool, reason: str) -> None:
        key = self._file_key(filename)
        if not self._exists_now(key):
            raise FileNotFoundError(filename)
        meta = self._read_sidecar(filename)
        if meta is None:
            meta = self._metadata_from_file(filename)[0]
        meta.update(yanked=yanked, yanked_reason=reason if yanked else "")
        self.s3.put_object(
            Bucket=self.bucket, Key=self._sidecar_key(filename), Body=tomli_w.dumps(meta).encode(),
            ContentType="application/toml",
        )

        def change(records: dict[str, FileRecord]) -> bool:
            old = records.get(filename)
            if old is None or (old.yanked, old.yanked_reason) == (yanked, meta["yanked_reason"]):
                return False
            records[filename] = dataclasses.replace(old, yanked=yanked, yanked_reason=meta["yanked_reason"])
            return True

        self._update_index(lambda data: self._apply(data, change), what=f"yank {filename}")

    # -- remote index ------------------------------------------------------------------------

    @_reports_unavailable("index sync")
    def fetch_remote_index(self, known_token: str | None) -> RemoteIndex | None:
        conditional = {"IfNoneMatch": known_token} if known_token and known_token != ABSENT else {}
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self._index_key, **conditional)
        except Exception as exc:
            if _is(exc, frozenset({"304", "NotModified"}), 304):
                return None
            if _is(exc, _MISSING_CODES, 404):
                return None if known_token == ABSENT else RemoteIndex(ABSENT, None)
            raise
        with contextlib.closing(response["Body"]) as body:
            if response["ETag"] == known_token:  # a store that ignores If-None-Match
                return None
            return RemoteIndex(response["ETag"], body.read())

    def _read_index(self) -> tuple[str | None, bytes | None]:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self._index_key)
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None, None
            raise
        with contextlib.closing(response["Body"]) as body:
            return response["ETag"], body.read()

    def _index_etag(self) -> str | None:
        try:
            return str(self.s3.head_object(Bucket=self.bucket, Key=self._index_key)["ETag"])
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None
            raise

    def _update_index(self, change: Callable[[bytes | None], bytes | None], what: str) -> bool:
        """Apply ``change`` (old document -> new, or None: nothing to do) with compare-and-swap.

        Concurrent calls on this server are applied together (group commit): one caller leads
        and writes every queued change in one compare-and-swap, so N simultaneous uploads cost
        about one index write per server instead of N writes racing each other.
        Returns False when nothing needed changing.
        """
        future: Future[bool] = Future()
        with self._batch_cv:
            self._batch.append((change, future))
            while self._batch_leader and not future.done():
                self._batch_cv.wait()
            if future.done():
                return future.result()
            self._batch_leader = True  # lead one batch, ours included
            batch, self._batch = self._batch, []
        try:
            def combined(data: bytes | None) -> bytes | None:
                changed = False
                for each, _ in batch:
                    new = each(data)
                    if new is not None:
                        data, changed = new, True
                return data if changed else None

            try:
                result = self._compare_and_swap_index(combined, what)
            except BaseException as exc:
                for _, waiting in batch:
                    waiting.set_exception(exc)
            else:
                for _, waiting in batch:
                    waiting.set_result(result)
        finally:
            with self._batch_cv:
                self._batch_leader = False
                self._batch_cv.notify_all()
        return future.result()

    def _compare_and_swap_index(self, change: Callable[[bytes | None], bytes | None], what: str) -> bool:
        """One read-change-conditional-write loop on index.toml.

        Starts from the copy this server last read or wrote (no download when nobody else wrote
        since); on 412 (someone else changed the index first) it re-reads and retries with
        jittered backoff. A store that rejects a quoted ETag in ``If-Match`` while the index
        provably did not change gets the ETag unquoted from then on.
        """
        deadline = time.monotonic() + INDEX_CAS_DEADLINE_SECONDS
        attempt = 0
        cached, self._index_cache = self._index_cache, None
        while True:
            if cached is not None:
                (etag, data), cached, from_cache = cached, None, True
            else:
                (etag, data), from_cache = self._read_index(), False
            new = change(data)
            if new is None:
                if from_cache:
                    continue  # "nothing to do" must be decided on the current index
                self._index_cache = (etag, data) if etag is not None else None
                return False
            condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": self._etag_form(etag)}
            try:
                response = self.s3.put_object(
                    Bucket=self.bucket, Key=self._index_key, Body=new, ContentType="application/toml", **condition
                )
                written = response.get("ETag")
                self._index_cache = (str(written), new) if written else None
                return True
            except Exception as exc:
                if not _is(exc, _PRECONDITION_CODES | _CONFLICT_CODES, 412) and not _is(exc, _MISSING_CODES, 404):
                    raise
            if etag is not None and _is_quoted(etag) and not self._etag_unquoted and self._index_etag() == etag:
                log.info("s3 %s: the store rejects quoted ETags in If-Match; sending them unquoted", self.bucket)
                self._etag_unquoted = True
                cached = (etag, data)
                continue
            if from_cache:
                continue  # the copy was stale: expected, re-read at once
            attempt += 1
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"could not update the remote index ({what}): too much contention")
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** min(attempt, 10))))

    def _etag_form(self, etag: str) -> str:
        return etag.strip('"') if self._etag_unquoted else etag

    @staticmethod
    def _apply(data: bytes | None, change: Callable[[dict[str, FileRecord]], bool]) -> bytes | None:
        records = {r.filename: r for r in parse_index(data)} if data else {}
        return dump_index(records.values()) if change(records) else None

    def _index_add(self, record: FileRecord, *, replace: bool) -> None:
        """Make ``record`` visible to every server at its next sync.

        A failure is logged, not raised: the file is safely stored and this server lists it
        already; a byte-identical re-upload or ``update_index`` completes the index.
        """

        def change(data: bytes | None) -> bytes | None:
            if data is None:
                return dump_index([record])
            # Fast path for big indexes: a new file is one appended table, no parse/dump. Safe
            # only when the name occurs nowhere in the document (so it cannot be a duplicate key).
            if data.startswith(b"format = 2\n") and record.filename.encode() not in data:
                return data.rstrip(b"\n") + b"\n\n" + dump_record_entry(record)

            def put(records: dict[str, FileRecord]) -> bool:
                old = records.get(record.filename)
                if old is not None and (not replace or old.state_key() == record.state_key()):
                    return False
                records[record.filename] = record
                return True

            return self._apply(data, put)

        try:
            self._update_index(change, what=f"add {record.filename}")
        except Exception as exc:  # store down, corrupt index, contention: the upload itself succeeded
            log.error("s3 %s: %s is stored but the remote index was not updated: %s: %s", self.bucket,
                      record.filename, type(exc).__name__, exc)

    # -- update_index ------------------------------------------------------------------------

    def list_files(self) -> Iterator[FileRecord]:
        """Every file in the bucket, with metadata from its sidecar (or the file itself)."""
        with _unavailable("listing"):
            yield from self._list_files()

    def _list_files(self) -> Iterator[FileRecord]:
        etag, data = self._read_index()
        try:
            base = {r.filename: r for r in parse_index(data)} if data else {}
        except IndexFormatError:
            base = {}
        self._index_base = (etag, base)
        files: dict[str, tuple[int, datetime]] = {}
        sidecars: set[str] = set()
        metadata_files: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix):]
                if rel.startswith(SIDECAR_DIR):
                    name = rel[len(SIDECAR_DIR):]
                    if name.endswith(".toml"):
                        sidecars.add(name[: -len(".toml")])
                    elif name.endswith(".metadata"):
                        metadata_files.add(name[: -len(".metadata")])
                    continue
                if "/" in rel or rel == INDEX_NAME:
                    continue
                try:
                    parse_dist_filename(rel)
                except InvalidName:
                    continue
                files[rel] = (int(obj["Size"]), obj["LastModified"])

        def build(filename: str) -> FileRecord:
            size, modified = files[filename]
            return self._record_for(filename, size, modified, filename in sidecars, filename in metadata_files)

        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="pywharf-s3-list") as pool:
            yield from pool.map(build, sorted(files))

    def _record_for(
        self, filename: str, size: int, modified: datetime, has_sidecar: bool, has_metadata_file: bool
    ) -> FileRecord:
        dist = parse_dist_filename(filename)
        meta = (self._read_sidecar(filename) if has_sidecar else None) or {}
        sha256 = meta.get("sha256") if meta.get("size") == size and is_sha256_hex(meta.get("sha256")) else None
        if has_metadata_file and is_sha256_hex(meta.get("metadata_sha256")):
            metadata_sha256 = str(meta["metadata_sha256"])
        elif has_metadata_file:
            data = self.s3.get_object(Bucket=self.bucket, Key=self._metadata_key(filename))["Body"].read()
            metadata_sha256 = hashlib.sha256(data).hexdigest()
        elif sha256 and "metadata_sha256" not in meta:
            metadata_sha256 = ""  # uploaded without a PEP 658 file (e.g. an old sdist)
        else:
            metadata_sha256 = None  # to be extracted from the file
        if sha256 is None or metadata_sha256 is None:
            file_meta, sha256, metadata_sha256 = self._metadata_from_file(filename, size, modified)
            meta = meta if meta.get("sha256") == sha256 else file_meta
        return FileRecord(
            filename=filename,
            distrib=dist.project,
            version=str(meta.get("version") or dist.version),
            sha256=sha256,
            size=size,
            upload_time=str(meta.get("upload_time") or utc_timestamp(modified)),
            requires_python=str(meta.get("requires_python", "")),
            meta=freeze_meta({k: v for k, v in meta.items() if k not in _RECORD_KEYS}),
            metadata_sha256=metadata_sha256 or "",
            yanked=bool(meta.get("yanked", False)),
            yanked_reason=str(meta.get("yanked_reason", "")),
        )

    def _metadata_from_file(
        self, filename: str, size: int | None = None, modified: datetime | None = None
    ) -> tuple[dict[str, Any], str, str]:
        """Download a file without (usable) sidecars: its core metadata, sha256, PEP 658 digest.

        Writes the missing sidecars create-only, so the next ``update_index`` need not download
        it again and a concurrent real upload's sidecars always win.
        """
        with tempfile.TemporaryDirectory(prefix="pywharf-s3-") as folder:
            path = Path(folder) / filename
            response = self.s3.get_object(Bucket=self.bucket, Key=self._file_key(filename))
            digest = hashlib.sha256()
            with open(path, "wb") as handle, contextlib.closing(response["Body"]) as body:
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
            size = path.stat().st_size if size is None else size
            modified = modified or response.get("LastModified")
            meta = read_core_metadata(path)
            core = extract_core_metadata(path, filename)
        sha256 = digest.hexdigest()
        meta.update(sha256=sha256, size=size, upload_time=utc_timestamp(modified) if modified else "")
        metadata_sha256 = hashlib.sha256(core).hexdigest() if core is not None else ""
        if core is not None:
            meta["metadata_sha256"] = metadata_sha256
        self._write_sidecars(filename, meta, core, overwrite=False)
        return meta, sha256, metadata_sha256

    @_reports_unavailable("index publish")
    def publish_remote_index(self, data: bytes) -> None:
        """Write a rebuilt index, keeping what other servers added while the bucket was listed.

        The write is conditional on the index being the one ``list_files`` started from; on 412
        the entries that changed meanwhile (new uploads, yanks) are merged in and it retries.
        """
        rebuilt = {r.filename: r for r in parse_index(data)}
        base_etag, base = self._index_base or (self._index_etag(), None)
        deadline = time.monotonic() + INDEX_CAS_DEADLINE_SECONDS
        while True:
            condition = {"IfNoneMatch": "*"} if base_etag is None else {"IfMatch": self._etag_form(base_etag)}
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self._index_key, Body=dump_index(rebuilt.values()),
                    ContentType="application/toml", **condition,
                )
                self._index_base = None
                return
            except Exception as exc:
                if not _is(exc, _PRECONDITION_CODES | _CONFLICT_CODES, 412) and not _is(exc, _MISSING_CODES, 404):
                    raise
            current_etag, current_data = self._read_index()
            if (
                current_etag is not None and current_etag == base_etag and _is_quoted(current_etag)
                and not self._etag_unquoted
            ):
                self._etag_unquoted = True
                continue
            try:
                current = {r.filename: r for r in parse_index(current_data)} if current_data else {}
            except IndexFormatError:
                current = {}
            if base is not None:
                for filename, record in current.items():
                    if base.get(filename) != record and (filename in rebuilt or filename not in base):
                        rebuilt[filename] = record
            base_etag, base = current_etag, current
            if time.monotonic() > deadline:
                raise BackendUnavailable("could not publish the remote index: too much contention")
            time.sleep(random.uniform(0, 0.1))


def _is_quoted(etag: str) -> bool:
    return len(etag) >= 2 and etag.startswith('"') and etag.endswith('"')


def _remove_stale_parts(staging: Path, max_age: float = 86400.0) -> None:
    """Staged uploads a killed server left behind (they never reached the bucket)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(staging):
            if entry.name.startswith(".upload-") and entry.name.endswith(".part"):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > max_age:
                        os.unlink(entry.path)


# -- CLI: pywharf s3.check_engine ---------------------------------------------------------------


def check_engine(
    bucket: str,
    endpoint_url: str | None = None,
    prefix: str = "",
    region_name: str | None = None,
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Probe an S3 store for the conditional writes the s3 backend relies on.

    Writes and deletes a few small objects under PREFIX/.pywharf/. Exits 1 if the store lets a
    second create-only write or a stale compare-and-swap through.

    Args:
        bucket: The bucket (it must exist).
        endpoint_url: The store's endpoint, for non-AWS stores.
        prefix: The key prefix pywharf will use.
        region_name: The region (default: the standard AWS chain).
        secret: AWS keys as ACCESS_KEY_ID:SECRET_ACCESS_KEY (default: the standard AWS chain).
        secret_env: Name of an environment variable holding that secret, instead of --secret.
    """
    if secret_env:
        secret = os.environ.get(str(secret_env))
        if not secret:
            raise PywharfError(f"environment variable {secret_env!r} is not set")
    table: dict[str, Any] = {"type": "s3", "bucket": str(bucket), "prefix": str(prefix or ""),
                             "read_secret": "unused", "write_secret": "unused"}
    if endpoint_url:
        table["endpoint_url"] = str(endpoint_url)
    if region_name:
        table["region_name"] = str(region_name)
    config = build_config(S3Config, "check", table, ConfigSource("<command line>"))
    backend = S3Backend(config, BackendContext(root=Path(tempfile.gettempdir()), admin_secret=secret or None))
    results = probe_conditional_writes(backend)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not all(ok for _, ok, _ in results):
        raise PywharfError("this store does not honour the conditional writes pywharf needs")


def probe_conditional_writes(backend: S3Backend) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for each conditional-request behaviour the backend depends on."""
    s3, bucket = backend.s3, backend.bucket
    key = f"{backend.prefix}{SIDECAR_DIR}probe-{uuid.uuid4().hex}"
    results: list[tuple[str, bool, str]] = []

    def outcome(call: Callable[[], Any]) -> str:
        try:
            call()
        except Exception as exc:
            if _is(exc, _PRECONDITION_CODES, 412):
                return "412"
            if _is(exc, frozenset({"304", "NotModified"}), 304):
                return "304"
            return f"error {type(exc).__name__}: {exc}"
        return "200"

    try:
        first = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*"))
        results.append(("PutObject If-None-Match: * (new key)", first == "200", first))
        second = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*"))
        results.append(("PutObject If-None-Match: * (existing key)", second == "412", f"{second} (want 412)"))
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        stale = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch='"0"'))
        results.append(("PutObject If-Match (stale ETag)", stale == "412", f"{stale} (want 412)"))
        fresh = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag))
        if fresh != "200":
            fresh_unquoted = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag.strip('"')))
            fresh = f"{fresh}; unquoted: {fresh_unquoted}"
        results.append(("PutObject If-Match (current ETag)", fresh.endswith("200"), fresh))
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        cached = outcome(lambda: s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag))
        results.append(("GetObject If-None-Match (unchanged)", cached == "304", f"{cached} (want 304; optional)"))
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"5")["ETag"]
        complete = outcome(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, IfNoneMatch="*",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]},
        ))
        with contextlib.suppress(Exception):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        results.append(("CompleteMultipartUpload If-None-Match: * (existing key)", complete == "412",
                        f"{complete} (want 412)"))
    finally:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
    # The GET 304 is an optimisation (sync falls back to comparing ETags): never a failure.
    return [(n, ok or "optional" in d, d) for n, ok, d in results]


BACKEND = BackendSpec(
    type="s3", config_class=S3Config, backend_class=S3Backend, commands={"check_engine": check_engine}
)
